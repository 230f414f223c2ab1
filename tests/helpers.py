"""Helpers shared by the tests (importable as ``helpers``: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$TSEG_SHARED_DATA`` or ``../shared/data`` beside the repository, if it exists."""
    env = os.environ.get("TSEG_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "slides").is_dir():
            return c
    return None


def real_slide(shared: Path, name: str) -> Path:
    p = shared / "slides" / name
    if not p.exists():
        pytest.skip(f"{p} is absent from the shared data")
    return p


def textured_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random but spatially smooth-ish RGB texture (not uniform noise)."""
    rng = np.random.default_rng(seed)
    import cv2

    base = rng.random((height // 4 + 1, width // 4 + 1, 3)).astype(np.float32)
    img = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 0.08, img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)
