"""Area resampling (OpenCV ``INTER_AREA`` semantics) that can be done block by block.

The paper reads each tile from the pyramid level just finer than the target resolution and
shrinks it with ``cv2.resize(..., interpolation=cv2.INTER_AREA)`` (*Downsampling*). For a
7680 x 7680 tile at 1 µm/px from a 0.25 µm/px level 0 that source region is ~30k x 30k pixels,
so :mod:`tseg.runtime.slide` reads it in blocks. For the blocks to assemble into exactly the
one-shot result, each output pixel must average exactly the source interval
``[start + j * ratio, start + (j + 1) * ratio)`` even when block edges fall between source
pixels. That is what INTER_AREA computes for a whole image (a box filter with fractional
coverage at the ends); :func:`area_resample` computes it for any sub-range.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_EPS = 1e-9


def _is_integer(value: float) -> bool:
    return abs(value - round(value)) < 1e-7


def _area_axis(src: np.ndarray, start: float, ratio: float, count: int, axis: int) -> np.ndarray:
    """Average ``src`` over ``count`` consecutive intervals of length ``ratio`` from ``start``.

    Output ``j`` is the mean of the (piecewise constant) source signal over
    ``[start + j * ratio, start + (j + 1) * ratio)``, clipped to the source. Works along
    ``axis`` in C loops (``np.add.reduceat``) with fractional end pixels added and removed.
    """
    n = src.shape[axis]
    edges = np.clip(start + ratio * np.arange(count + 1, dtype=np.float64), 0.0, float(n))
    ceil = np.ceil(edges - _EPS).astype(np.int64)
    ceil = np.clip(ceil, 0, n)
    lengths = np.diff(edges)
    if np.any(lengths <= 0):
        raise ValueError("area resampling interval outside the source")
    starts = np.minimum(ceil[:-1], n - 1)
    limit = int(ceil[-1])
    src_limited = np.take(src, np.arange(max(limit, 1)), axis=axis) if limit < n else src
    full = np.add.reduceat(src_limited, starts, axis=axis, dtype=np.float32)
    empty = ceil[1:] <= ceil[:-1]
    shape = [1] * src.ndim
    shape[axis] = count
    if np.any(empty):
        full = full * (~empty).reshape(shape)
    # Remove the part of the pixel ceil(b) - 1 beyond b; add the part of ceil(a) - 1 after a.
    right_w = (ceil[1:] - edges[1:]).astype(np.float32)
    left_w = (ceil[:-1] - edges[:-1]).astype(np.float32)
    right_px = np.take(src, np.clip(ceil[1:] - 1, 0, n - 1), axis=axis).astype(np.float32)
    left_px = np.take(src, np.clip(ceil[:-1] - 1, 0, n - 1), axis=axis).astype(np.float32)
    total = full - right_w.reshape(shape) * right_px + left_w.reshape(shape) * left_px
    return total / lengths.astype(np.float32).reshape(shape)


def area_resample(
    src: np.ndarray,
    out_size: tuple[int, int],
    ratio: tuple[float, float],
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Shrink ``src`` (uint8, H x W or H x W x C) by ``ratio = (rx, ry)`` source px per output px.

    Output pixel ``(i, j)`` (``out_size = (width, height)``) averages the source rectangle
    ``[ox + j*rx, ox + (j+1)*rx) x [oy + i*ry, oy + (i+1)*ry)`` with ``offset = (ox, oy)``.
    When the rectangle edges are whole source pixels and the output spans the whole source this
    is literally ``cv2.resize(..., INTER_AREA)``; otherwise the same average is computed with
    fractional pixel coverage so that blocks read separately assemble into the one-shot result
    (to within one 8-bit level, from rounding).
    """
    out_w, out_h = int(out_size[0]), int(out_size[1])
    rx, ry = float(ratio[0]), float(ratio[1])
    ox, oy = float(offset[0]), float(offset[1])
    src_h, src_w = src.shape[:2]
    aligned = (
        _is_integer(ox)
        and _is_integer(oy)
        and round(ox) == 0
        and round(oy) == 0
        and _is_integer(out_w * rx)
        and _is_integer(out_h * ry)
        and round(out_w * rx) == src_w
        and round(out_h * ry) == src_h
    )
    if aligned:
        if (out_w, out_h) == (src_w, src_h):
            return np.ascontiguousarray(src)
        if rx >= 1.0 and ry >= 1.0:
            return cv2.resize(src, (out_w, out_h), interpolation=cv2.INTER_AREA)
    if math.isclose(rx, 1.0) and math.isclose(ry, 1.0) and _is_integer(ox) and _is_integer(oy):
        x0, y0 = int(round(ox)), int(round(oy))
        return np.ascontiguousarray(src[y0 : y0 + out_h, x0 : x0 + out_w])
    # Reduce the axis that shrinks most first: it makes the second pass cheaper.
    if rx >= ry:
        tmp = _area_axis(src, ox, rx, out_w, axis=1)
        out = _area_axis(tmp, oy, ry, out_h, axis=0)
    else:
        tmp = _area_axis(src, oy, ry, out_h, axis=0)
        out = _area_axis(tmp, ox, rx, out_w, axis=1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
