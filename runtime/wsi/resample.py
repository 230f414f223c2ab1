"""Area resampling (OpenCV ``INTER_AREA`` semantics) that can be done block by block.

The paper reads each tile from the pyramid level just finer than the target resolution and
shrinks it with ``cv2.resize(..., interpolation=cv2.INTER_AREA)`` (*Downsampling*). For a
7680 x 7680 tile at 1 µm/px from a 0.25 µm/px level 0 that source region is ~30k x 30k pixels,
so :mod:`tseg.runtime.wsi.slide` reads it in blocks. For the blocks to assemble into exactly the
one-shot result, each output pixel must average exactly the source interval
``[start + j * ratio, start + (j + 1) * ratio)`` even when block edges fall between source
pixels. That is what INTER_AREA computes for a whole image (a box filter with fractional
coverage at the ends); :func:`area_resample` computes it for any sub-range.

**How it is fast.** When a block's edges are whole source pixels and the ratio is whole (every
whole-factor read) the block goes to ``cv2.resize(INTER_AREA)`` itself. Otherwise (every real
scanner: 0.499 or 0.2527 µm/px at level 0) the area average is a separable linear map: output
rows are ``Wy @ P`` and output columns ``(Wy @ P) @ Wx.T`` per colour plane ``P``, with ``Wy``
and ``Wx`` the exact per-axis coverage weights (at most ``ceil(ratio) + 1`` non-zeros per
output). ``Wy`` is applied as a SciPy sparse matrix (row axpys, contiguous), ``Wx`` as dense
float32 bands of 16 outputs (BLAS matrix products on strided views, no transposes). Weights are
computed in float64 and applied in float32; the result is within one 8-bit level of
:func:`area_resample_reference` (float64 throughout; tests/runtime/wsi/test_resample.py).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import sparse

_EPS = 1e-9
#: Output columns per dense band of the horizontal pass (see the module docstring).
_BAND = 16
#: Output rows per strip of the vertical pass.
_STRIP = 64


def _is_integer(value: float) -> bool:
    return abs(value - round(value)) < 1e-7


def _coverage(n: int, start: float, ratio: float, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact area weights of one axis: ``(rows, source index, weight)`` arrays, row-sorted.

    Output ``j`` is the mean of the (piecewise constant) source signal over
    ``[start + j * ratio, start + (j + 1) * ratio)``, clipped to ``[0, n)``: source pixel ``k``
    weighs ``|[k, k + 1) ∩ interval| / |interval|``.
    """
    edges = np.clip(start + ratio * np.arange(count + 1, dtype=np.float64), 0.0, float(n))
    lo, hi = edges[:-1], edges[1:]
    lengths = hi - lo
    if np.any(lengths <= 0):
        raise ValueError("area resampling interval outside the source")
    first = np.floor(lo + _EPS).astype(np.int64)
    taps = int(np.max(np.ceil(hi - _EPS).astype(np.int64) - first)) + 1
    k = first[:, None] + np.arange(taps, dtype=np.int64)[None, :]
    overlap = np.minimum(hi[:, None], k + 1.0) - np.maximum(lo[:, None], k.astype(np.float64))
    keep = (overlap > 0) & (k < n)
    rows = np.broadcast_to(np.arange(count)[:, None], k.shape)[keep]
    weights = (overlap / lengths[:, None])[keep]
    return rows, k[keep], weights


def _row_matrix(n: int, start: float, ratio: float, count: int) -> sparse.csr_matrix:
    rows, cols, weights = _coverage(n, start, ratio, count)
    return sparse.csr_matrix((weights.astype(np.float32), (rows, cols)), shape=(count, n))


def _column_bands(n: int, start: float, ratio: float, count: int) -> list[tuple[int, int, int, int, np.ndarray]]:
    """``(j0, j1, k0, k1, D)`` per band of outputs: ``out[:, j0:j1] = P[:, k0:k1] @ D``."""
    rows, cols, weights = _coverage(n, start, ratio, count)
    bands = []
    bounds = np.searchsorted(rows, np.arange(0, count + _BAND, _BAND).clip(max=count))
    for b in range(len(bounds) - 1):
        a, z = int(bounds[b]), int(bounds[b + 1])
        if a == z:
            continue
        j0 = b * _BAND
        j1 = min(count, j0 + _BAND)
        k0, k1 = int(cols[a:z].min()), int(cols[a:z].max()) + 1
        dense = np.zeros((k1 - k0, j1 - j0), np.float32)
        dense[cols[a:z] - k0, rows[a:z] - j0] = weights[a:z]
        bands.append((j0, j1, k0, k1, dense))
    return bands


def _separable(src: np.ndarray, out_size: tuple[int, int], ratio: tuple[float, float],
               offset: tuple[float, float]) -> np.ndarray:
    out_w, out_h = out_size
    src_h, src_w = src.shape[:2]
    channels = 1 if src.ndim == 2 else src.shape[2]
    wy = _row_matrix(src_h, offset[1], ratio[1], out_h)
    bands = _column_bands(src_w, offset[0], ratio[0], out_w)
    # Vertical pass in strips of output rows, so every temporary stays small (large fresh
    # arrays cost page faults on every block); its result is kept one plane per channel.
    rows = np.empty((channels, out_h, src_w), np.float32)
    flat = src.reshape(src_h, src_w * channels)
    for i0 in range(0, out_h, _STRIP):
        i1 = min(out_h, i0 + _STRIP)
        cols = wy.indices[wy.indptr[i0] : wy.indptr[i1]]
        k0, k1 = int(cols.min()), int(cols.max()) + 1
        strip = wy[i0:i1, k0:k1] @ flat[k0:k1].astype(np.float32)  # (i1 - i0, src_w * channels)
        np.copyto(rows[:, i0:i1], strip.reshape(i1 - i0, src_w, channels).transpose(2, 0, 1))
    out = np.empty((out_h, out_w) if src.ndim == 2 else (out_h, out_w, channels), np.uint8)
    result = np.empty((out_h, out_w), np.float32)
    for c in range(channels):
        plane = rows[c]
        for j0, j1, k0, k1, dense in bands:
            np.matmul(plane[:, k0:k1], dense, out=result[:, j0:j1])
        np.rint(result, out=result)
        np.clip(result, 0, 255, out=result)
        np.copyto(out if src.ndim == 2 else out[..., c], result, casting="unsafe")
    return out


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
    (to within one 8-bit level, from rounding). A ratio below 1 (a level a hair coarser than
    the target, see :meth:`tseg.runtime.wsi.slide.Slide.level_for`) is the same area average.
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
    return _separable(src, (out_w, out_h), (rx, ry), (ox, oy))


def _integral_axis(values: np.ndarray, start: float, ratio: float, count: int, axis: int) -> np.ndarray:
    """Means over ``[start + j * ratio, start + (j + 1) * ratio)`` along ``axis`` from the
    piecewise-linear running integral ``F(t) = C[floor t] + frac(t) * v[floor t]`` (float64)."""
    v = np.moveaxis(values.astype(np.float64), axis, 0)
    n = v.shape[0]
    running = np.concatenate([np.zeros((1,) + v.shape[1:]), np.cumsum(v, axis=0)])
    padded = np.concatenate([v, np.zeros((1,) + v.shape[1:])])
    t = np.clip(start + ratio * np.arange(count + 1, dtype=np.float64), 0.0, float(n))
    whole = np.floor(t).astype(np.int64)
    frac = (t - whole).reshape((-1,) + (1,) * (v.ndim - 1))
    integral = running[whole] + frac * padded[whole]
    means = (integral[1:] - integral[:-1]) / np.diff(t).reshape(frac[1:].shape)
    return np.moveaxis(means, 0, axis)


def area_resample_reference(
    src: np.ndarray,
    out_size: tuple[int, int],
    ratio: tuple[float, float],
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The exact area average of :func:`area_resample`, computed independently in float64 from
    running integrals. Slow; the reference for tests and benchmarks."""
    rows = _integral_axis(src, float(offset[1]), float(ratio[1]), int(out_size[1]), axis=0)
    out = _integral_axis(rows, float(offset[0]), float(ratio[0]), int(out_size[0]), axis=1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
