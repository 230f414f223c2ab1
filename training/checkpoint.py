"""Self-describing checkpoints: weights + everything needed to rebuild and use the model.

A checkpoint (``torch.save`` of a plain dict, loadable with ``weights_only=True``) holds:
``format`` = "tseg-checkpoint" and its version, the model config (enough for
:func:`tseg.training.model.build_model`), the training config, the classes and their mask
labels, mean/std, MPP and training tile size, the weights, the optimiser and AMP scaler state,
the number of completed steps and the RNG state (for exact resumption), and provenance (data
index sha256, library versions, time, world size). Files are written to a temporary name and
renamed, so an interrupted save never leaves a truncated checkpoint under the final name.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from tseg.runtime.util.atomic import atomic_write
from tseg.runtime.errors import ModelError, ModelNotFoundError

from .config import ModelConfig, model_config_from_dict

FORMAT = "tseg-checkpoint"
FORMAT_VERSION = 1


def library_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("tseg-rt", "torch", "timm", "segmentation-models-pytorch", "albumentations", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: str | os.PathLike[str], model: torch.nn.Module, model_config: ModelConfig,
                    *, mean: Any, std: Any, mpp: float, tile_size: int, step: int,
                    train_config: dict[str, Any] | None = None, optimizer: Any = None, scaler: Any = None,
                    rng: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model_config.to_dict(),
        "train_config": train_config or {},
        "classes": list(model_config.classes),
        "class_labels": list(model_config.class_labels),
        "tumour_index": model_config.tumour_index,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "mpp": float(mpp),
        "tile_size": int(tile_size),
        "step": int(step),
        "state_dict": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng or {},
        "provenance": {"versions": library_versions(), "saved": datetime.now(timezone.utc).isoformat(),
                       **(provenance or {})},
    }
    return atomic_write(path, lambda tmp: torch.save(content, tmp))


def load_weights(model: torch.nn.Module, state_dict: dict[str, Any], source: str | os.PathLike[str]) -> None:
    """Strictly load weights (bypassing segmentation_models_pytorch's lenient override)."""
    try:
        torch.nn.Module.load_state_dict(unwrap(model), state_dict, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][:6]
        raise ModelError(source, "the weights do not fit the model config: " + " ".join(lines)[:800]) from None


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint dict, validated as a tseg checkpoint (errors name the file)."""
    p = Path(path)
    if not p.exists():
        raise ModelNotFoundError(p, "no such checkpoint")
    try:
        content = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(p, f"not a readable tseg checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
                            "A published `model.tar` must be converted first: `tseg-rt train import`") from exc
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ModelError(p, "not a tseg checkpoint (no 'format': 'tseg-checkpoint'); for the paper's "
                            "published model.tar use `tseg-rt train import`")
    if content.get("format_version") != FORMAT_VERSION:
        raise ModelError(p, f"checkpoint format version {content.get('format_version')} is not supported")
    if "model_config" not in content or "state_dict" not in content:
        raise ModelError(p, "the checkpoint has no model config or no weights")
    return content


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module
    config: ModelConfig
    content: dict[str, Any]

    @property
    def mean(self) -> list[float]:
        return self.content["mean"]

    @property
    def std(self) -> list[float]:
        return self.content["std"]


def load_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Rebuild the model from the checkpoint file alone (in eval mode, on the CPU)."""
    from .model import build_model

    content = read_checkpoint(path)
    try:
        config = model_config_from_dict(content["model_config"])
    except Exception as exc:
        raise ModelError(path, f"invalid model config in the checkpoint: {exc}") from exc
    model = build_model(config)
    load_weights(model, content["state_dict"], path)
    model.eval()
    return LoadedCheckpoint(model, config, content)
