"""Which pyramid level a resolution is read from, and how (paper, *Downsampling*).

Pure functions of the pyramid's geometry; :class:`~tseg.runtime.wsi.slide.Slide` applies them.
The target downsampling factor is ``target_mpp / level0_mpp`` per axis; pixels come from the
coarsest level whose downsample does not exceed it on either axis (no upsampling), where a
level over only by the integer rounding of its size counts as not exceeding it. Opt-in, never
default: ``level_tolerance`` (a level within P % of the target, resized slightly up) and DCT
scaling (JPEG tiles decoded at 1/2, 1/4 or 1/8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tseg.runtime.errors import InvalidArgumentError, ResolutionError
from tseg.runtime.wsi.mpp import MPP_FIX, UPSAMPLE_TOLERANCE

#: A level may exceed the target downsample only by the rounding of its integer size: by at
#: most this many level-0 pixels over its extent (``level0_size - level_size * factor``).
LEVEL_ROUNDING_PX = 1.0


@dataclass(frozen=True)
class ReadPlan:
    """How a resolution is read: the pyramid level and its pixels per target pixel.

    ``scale`` > 1: the level's JPEG tiles are decoded at ``1 / scale`` in the DCT domain
    (opt-in), and ``ratio`` counts pixels of that reduced decode.
    """

    level: int
    ratio: tuple[float, float]  # (decoded) level pixels per target pixel, x and y
    scale: int = 1


def target_factors(path: Path, mpp: float, level0_mpp: tuple[float, float]) -> tuple[float, float]:
    """Target downsampling factor per axis: ``mpp / level0_mpp``; ResolutionError when ``mpp``
    is finer than level 0 (beyond :data:`UPSAMPLE_TOLERANCE`): tseg-rt never upsamples."""
    if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise InvalidArgumentError(f"mpp must be a positive number, got {mpp!r}")
    mpp_x, mpp_y = level0_mpp
    fx, fy = mpp / mpp_x, mpp / mpp_y
    if min(fx, fy) < 1.0 - UPSAMPLE_TOLERANCE:
        raise ResolutionError(
            path,
            f"{mpp} µm/px is finer than the slide's level 0 ({mpp_x:.4g} x "
            f"{mpp_y:.4g} µm/px); tseg-rt never upsamples. If the slide's resolution "
            f"metadata is wrong:", MPP_FIX,
        )
    return (fx, fy)


def size_at_factors(dimensions: tuple[int, int], factors: tuple[float, float]) -> tuple[int, int]:
    """``(width, height)`` of a level-0 ``dimensions`` shrunk by ``factors``: floor, at least 1."""
    (w0, h0), (fx, fy) = dimensions, factors
    return (max(1, int(math.floor(w0 / fx + 1e-9))), max(1, int(math.floor(h0 / fy + 1e-9))))


def level_allowed(level_dimensions: Sequence[tuple[int, int]], downsample: tuple[float, float], level: int,
                  factors: tuple[float, float], level_tolerance: float) -> bool:
    """Whether ``level`` may be read for ``factors`` (see the module docstring)."""
    w0, h0 = level_dimensions[0]
    lw, lh = level_dimensions[level]
    dx, dy = downsample
    fx, fy = factors
    tolerance = 1.0 + level_tolerance / 100.0
    ok = []
    for d, f, size0, size in ((dx, fx, w0, lw), (dy, fy, h0, lh)):
        ok.append(d <= f * (1 + 1e-9)  # the paper: never upsample
                  or size0 - size * f <= LEVEL_ROUNDING_PX + 1e-9  # only the rounding of its size
                  or d <= f * tolerance * (1 + 1e-9))  # opt-in: within level_tolerance %
    return all(ok)


def choose_level(level_dimensions: Sequence[tuple[int, int]], level_downsamples: Sequence[tuple[float, float]],
                 factors: tuple[float, float], level_tolerance: float = 0.0) -> int:
    """The coarsest allowed level (the largest downsample area; the later one on a tie)."""
    best = 0
    for level, (dx, dy) in enumerate(level_downsamples):
        if level_allowed(level_dimensions, (dx, dy), level, factors, level_tolerance):
            if dx * dy >= level_downsamples[best][0] * level_downsamples[best][1]:
                best = level
    return best


def plan_read(level: int, downsample: tuple[float, float], factors: tuple[float, float],
              dct_scales: Callable[[int], Sequence[int]] | None = None) -> ReadPlan:
    """How to read ``factors`` from ``level``. With ``dct_scales`` (opt-in DCT scaling: the
    level's possible JPEG reductions), the largest power of two the JPEG decoder can reduce by
    that still leaves at least one decoded pixel per target pixel (no upsampling)."""
    (fx, fy), (dx, dy) = factors, downsample
    rx, ry = fx / dx, fy / dy
    scale = 1
    if dct_scales is not None:
        for s in sorted(dct_scales(level), reverse=True):
            if min(rx, ry) >= s * (1 - 1e-9):
                scale = s
                break
    return ReadPlan(level, (rx / scale, ry / scale), scale)
