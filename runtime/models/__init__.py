"""Models shipped with the runtime: the demonstration model (see MODEL_CARD.md beside it)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelNotFoundError

DEFAULT_MODEL = "default.onnx"


def default_model_path() -> Path:
    """Path of the bundled demonstration model (a small network, not a diagnostic one)."""
    path = Path(__file__).with_name(DEFAULT_MODEL)
    if not path.exists():
        raise ModelNotFoundError(
            path, "the bundled demonstration model is missing from this installation; pass --engine "
            "MODEL.onnx|MODEL.plan, or reinstall tseg-rt")
    return path
