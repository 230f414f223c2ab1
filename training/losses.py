"""The loss ``l = l1 + l2`` (paper, *Network optimisation*).

``l1``: segmentation_models_pytorch's ``DiceLoss(mode="multiclass")``.
``l2``: "top-90" cross entropy: per-pixel cross entropy over every pixel of the mini-batch, then
the mean over the 90% of pixels with the highest values (the 10% easiest pixels are ignored).
The number kept is ``ceil(0.9 * n)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def top_fraction_cross_entropy(logits: torch.Tensor, target: torch.Tensor, fraction: float = 0.9) -> torch.Tensor:
    """Mean per-pixel cross entropy over the ``fraction`` of pixels with the highest values."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ce = F.cross_entropy(logits.float(), target, reduction="none").flatten()
    k = max(1, math.ceil(fraction * ce.numel()))
    if k == ce.numel():
        return ce.mean()
    return torch.topk(ce, k, sorted=False).values.mean()


class SegmentationLoss(torch.nn.Module):
    """Dice (multiclass) + top-90 cross entropy; returns (total, dice, ce)."""

    def __init__(self, top_fraction: float = 0.9) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.dice = DiceLoss(mode="multiclass")
        self.top_fraction = top_fraction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dice = self.dice(logits.float(), target)
        ce = top_fraction_cross_entropy(logits, target, self.top_fraction)
        return dice + ce, dice, ce
