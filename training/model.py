"""The segmentation network (paper, *Segmentation network*, *Network optimisation*).

``build_model(config)``: segmentation_models_pytorch's DeepLabV3+ (output stride 16, 256 decoder
channels, atrous rates 12/24/36, x4 upsampling, 3 classes) on a timm encoder (``eca_nfnet_l3``
in the paper), with every BatchNorm replaced by a GroupNorm with groups of 8 channels
(73,472,403 parameters in the paper's configuration; a small encoder built around BatchNorm may
keep its own, ``replace_encoder_batchnorm = false``), initialised as the paper says:

* encoder convolutions: weights ~ N(0, 1/fan_in), biases 0 (eq. 3);
* decoder and segmentation-head convolutions: weights and biases ~ U(-a, a), a = sqrt(3/fan_in)
  (eq. 4);

where fan_in = input channels per group x kernel height x kernel width. Norm layers keep weight 1
and bias 0; NFNet's gains keep timm's initialisation (ones).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .config import ModelConfig


def _groups(channels: int, group_channels: int) -> int:
    """Number of groups: ``channels // group_channels``, adjusted to divide ``channels``."""
    target = max(1, channels // group_channels)
    for g in range(target, 0, -1):
        if channels % g == 0:
            return g
    return 1


def replace_batchnorm(module: nn.Module, group_channels: int = 8) -> int:
    """Replace every BatchNorm in ``module`` by a GroupNorm in place; returns how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            c = child.num_features
            gn = nn.GroupNorm(_groups(c, group_channels), c, eps=child.eps, affine=child.affine)
            setattr(module, name, gn)
            count += 1
        else:
            count += replace_batchnorm(child, group_channels)
    return count


def fan_in(weight: torch.Tensor) -> int:
    """Input volume of a convolution (c_in/groups x kernel size): ``weight[0].numel()``."""
    return int(weight[0].numel())


@torch.no_grad()
def paper_init(model: nn.Module) -> None:
    """Equations (3) and (4) of the paper (see the module docstring)."""
    for module in model.encoder.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            module.weight.normal_(0.0, math.sqrt(1.0 / fan_in(module.weight)))
            if module.bias is not None:
                module.bias.zero_()
    for part in (model.decoder, model.segmentation_head):
        for module in part.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                a = math.sqrt(3.0 / fan_in(module.weight))
                module.weight.uniform_(-a, a)
                if module.bias is not None:
                    module.bias.uniform_(-a, a)


def build_model(config: ModelConfig | dict[str, Any]) -> nn.Module:
    """The network for ``config`` (a :class:`ModelConfig` or its dict), in training mode."""
    import segmentation_models_pytorch as smp

    from .config import model_config_from_dict

    if isinstance(config, dict):
        config = model_config_from_dict(config)
    model = smp.DeepLabV3Plus(
        encoder_name=config.encoder,
        encoder_depth=config.encoder_depth,
        encoder_weights=None,
        encoder_output_stride=config.encoder_output_stride,
        decoder_channels=config.decoder_channels,
        decoder_atrous_rates=tuple(config.decoder_atrous_rates),
        in_channels=3,
        classes=len(config.classes),
        activation=None,
        upsampling=config.upsampling,
    )
    if config.replace_encoder_batchnorm:
        replace_batchnorm(model, config.group_channels)
    else:
        replace_batchnorm(model.decoder, config.group_channels)
        replace_batchnorm(model.segmentation_head, config.group_channels)
    if config.init == "paper":
        paper_init(model)
    elif config.init != "default":
        raise ValueError(f"unknown init {config.init!r}: use 'paper' or 'default'")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """NFNet's exceptions (Brock et al.): no weight decay on gains and biases (incl. norm affines)."""
    last = name.rsplit(".", 1)[-1]
    return param.ndim <= 1 or last == "bias" or "gain" in last


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if no_weight_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
