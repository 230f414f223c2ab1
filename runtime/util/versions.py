"""Versions of tseg-rt and the libraries it ran with (derived from the loaded modules)."""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import sys
from typing import Any


def _dist(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    """tseg-rt, Python and the runtime libraries, as installed (None when absent)."""
    out: dict[str, Any] = {
        "tseg-rt": _dist("tseg-rt"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in ("numpy", "opencv-python-headless", "opencv-python", "openslide-python", "openslide-bin",
                 "tifffile", "onnxruntime", "onnxruntime-gpu", "scipy", "shapely"):
        v = _dist(name)
        if v is not None:
            out[name] = v
    try:
        import openslide

        out["openslide-library"] = openslide.__library_version__
    except Exception:  # pragma: no cover - openslide is a dependency
        pass
    return out
