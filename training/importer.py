"""Import of the paper's published checkpoint (``model.tar``) into a tseg checkpoint.

The published file is a dict whose ``network_state`` holds the weights, possibly with a
``module.`` prefix (DataParallel), named as timm 0.4.12 and segmentation_models_pytorch 0.2.1
named them. Tensors are mapped onto :func:`build_model`'s network by name where the names match
(and the shapes agree), and the rest by order with a shape check. Every tensor that does not map
is reported by name, and nothing is written unless every tensor of the model received a value:
a half-loaded model is refused.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from tseg.runtime.errors import ModelError, ModelNotFoundError

from .config import PAPER_MEAN, PAPER_STD, ModelConfig
from .checkpoint import load_weights, save_checkpoint

log = logging.getLogger(__name__)


@dataclass
class ImportReport:
    by_name: int = 0
    by_order: list[tuple[str, str]] = field(default_factory=list)
    unmapped_source: list[str] = field(default_factory=list)
    unmapped_target: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unmapped_target and not self.unmapped_source

    def as_dict(self) -> dict[str, Any]:
        return {"by_name": self.by_name, "by_order": [list(p) for p in self.by_order],
                "unmapped_source": self.unmapped_source, "unmapped_target": self.unmapped_target}


def strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def map_state_dict(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ImportReport]:
    """Map ``source`` tensors onto the keys of ``target``: by name, then by order with shapes."""
    report = ImportReport()
    mapped: dict[str, torch.Tensor] = {}
    src = {k: v for k, v in source.items() if isinstance(v, torch.Tensor)}
    rest_src = []
    for key, value in src.items():
        if key in target and tuple(target[key].shape) == tuple(value.shape):
            mapped[key] = value
            report.by_name += 1
        else:
            rest_src.append(key)
    rest_tgt = [k for k in target if k not in mapped]
    i = j = 0
    while i < len(rest_src) and j < len(rest_tgt):
        s, t = rest_src[i], rest_tgt[j]
        if tuple(src[s].shape) == tuple(target[t].shape):
            mapped[t] = src[s]
            report.by_order.append((s, t))
            i += 1
            j += 1
        else:
            # Orders diverge here: stop pairing; what is left is reported, not guessed.
            break
    report.unmapped_source = rest_src[i:]
    report.unmapped_target = rest_tgt[j:]
    return mapped, report


def import_published(path: str | os.PathLike[str], out: str | os.PathLike[str],
                     config: ModelConfig | None = None, trust: bool = False,
                     tile_size: int = 7680) -> ImportReport:
    """Convert a published ``model.tar`` into a self-describing tseg checkpoint at ``out``.

    ``trust=True`` allows full unpickling (only for files from a source you trust); by default
    only tensors and plain containers are loaded.
    """
    from .model import build_model

    p = Path(path)
    if not p.exists():
        raise ModelNotFoundError(p, "no such checkpoint")
    try:
        state = torch.load(p, map_location="cpu", weights_only=not trust)
    except Exception as exc:
        hint = "" if trust else " If you trust the file, retry with --trust (full unpickling)."
        raise ModelError(p, f"cannot load the checkpoint: {str(exc).splitlines()[0][:300]}.{hint}") from exc
    if not isinstance(state, dict) or "network_state" not in state:
        raise ModelError(p, "not a published tumour-segmentation checkpoint: no 'network_state' entry "
                            f"(keys: {sorted(state)[:10] if isinstance(state, dict) else type(state).__name__})")
    config = config or ModelConfig()
    model = build_model(config)
    target = model.state_dict()
    mapped, report = map_state_dict(strip_prefix(state["network_state"]), target)
    if not report.complete:
        raise ModelError(p, "the checkpoint does not fit the model "
                            f"({config.encoder}, DeepLabV3+ with GroupNorm): "
                            f"{len(report.unmapped_target)} model tensors got no value "
                            f"(first: {report.unmapped_target[:8]}), {len(report.unmapped_source)} checkpoint "
                            f"tensors were not used (first: {report.unmapped_source[:8]}); nothing was written")
    load_weights(model, mapped, p)
    save_checkpoint(out, model, config, mean=PAPER_MEAN, std=PAPER_STD, mpp=1.0, tile_size=2048,
                    step=int(state.get("step", 0) or 0),
                    provenance={"imported_from": str(p.resolve()), "import_report": report.as_dict(),
                                "inference_tile_size": tile_size})
    log.info("imported %s: %d tensors by name, %d by order", p, report.by_name, len(report.by_order))
    return report
