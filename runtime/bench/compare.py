"""``tseg-rt bench --compare a.json b.json``: two machines or engines side by side.

Each row is one figure both results have: its value in A and in B, the ratio B / A, and which is
better by how much (``B 2.10x faster``: for times B's speed-up, A's seconds over B's; for rates,
B's rate over A's). Figures only one result has are left out; descriptive fields (the GPU, the
limiting stage) are shown without a ratio. Files of another schema are refused when loaded
(:func:`tseg.runtime.bench.result.load_result`).

Two results measured on different tile sizes are compared per megapixel (a 2048² tile is not a
7680² tile), and a comparison of slides/hour over different slide sets says so
(:func:`caveats`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from tseg.runtime.bench.machine import gpu_label
from tseg.runtime.bench.stages import STAGES

#: (label, getter, better): "lower" for times and memory, "higher" for rates, None for text.
Getter = Callable[[Mapping[str, Any]], Any]


def _get(*keys: str | int) -> Getter:
    def get(data: Mapping[str, Any]) -> Any:
        value: Any = data
        for k in keys:
            if isinstance(value, Mapping) and k in value:
                value = value[k]
            elif isinstance(value, list) and isinstance(k, int) and k < len(value):
                value = value[k]
            else:
                return None
        return value
    return get


def metrics(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Getter, str | None]]:
    rows: list[tuple[str, Getter, str | None]] = [
        ("GPU", lambda d: gpu_label(_get("machine", "gpu", "devices")(d) or []), None),
        ("CPU", _get("machine", "cpu", "model"), None),
        ("CPU cores usable", _get("machine", "cpu", "usable_cores"), "higher"),
        ("model", lambda d: Path(_get("engine", "model", "path")(d) or "").name or None, None),
        ("backend", _get("engine", "model", "kind"), None),
        ("engine: tile side (px)", _get("engine", "tile", 0), None),
        ("engine: s/tile median", _get("engine", "s_per_tile", "median"), "lower"),
        ("engine: s/tile min", _get("engine", "s_per_tile", "min"), "lower"),
        ("engine: s/tile p99", _get("engine", "s_per_tile", "p99"), "lower"),
        ("engine: s/tile streamed", _get("engine", "streamed_s_per_tile"), "lower"),
        ("engine: s/megapixel median", _per_megapixel(_get("engine", "s_per_tile", "median")), "lower"),
        ("engine: s/megapixel min", _per_megapixel(_get("engine", "s_per_tile", "min")), "lower"),
        ("engine: megapixels/s", _get("engine", "megapixels_per_s"), "higher"),
        ("engine: TFLOP/s", _get("engine", "tflop_per_s"), "higher"),
        ("engine: TFLOP per tile", _get("engine", "flop", "tflop"), None),
        ("engine: device memory used (GB)", lambda d: _gb(_get("engine", "device_memory", "used_by_this_run_bytes")(d)),
         "lower"),
        ("engine: host peak above start (GB)",
         lambda d: _gb(_get("engine", "host_memory", "peak_above_before_load_bytes")(d)), "lower"),
        ("copy: pinned host->device GB/s", _get("engine", "copy_rates", "pinned_h2d", "gb_per_s_median"), "higher"),
        ("copy: pinned device->host GB/s", _get("engine", "copy_rates", "pinned_d2h", "gb_per_s_median"), "higher"),
        ("copy: pageable host->device GB/s", _get("engine", "copy_rates", "pageable_h2d", "gb_per_s_median"), "higher"),
        ("end to end: slides/hour", _get("end_to_end", "slides_per_hour"), "higher"),
        ("end to end: backend busy", _get("end_to_end", "backend_busy"), "higher"),
        ("end to end: limiting stage", _get("end_to_end", "limiting_stage"), None),
    ]
    rows += [(f"end to end: {stage} share %", _get("end_to_end", "stage_shares_percent", stage), None)
             for stage in STAGES]
    modes = set(_get("steps", "pytorch", "modes")(a) or {}) & set(_get("steps", "pytorch", "modes")(b) or {})
    rows += [(f"check: PyTorch {m} s/tile", _get("steps", "pytorch", "modes", m, "seconds_per_tile"), "lower")
             for m in sorted(modes)]
    rows += [("check: executor pipelined s/tile", _get("steps", "executor", "pipelined_s_per_tile"), "lower"),
             ("check: TensorRT s/tile", _get("steps", "engine", "tensorrt", "timing", "s_per_tile", "median"), "lower"),
             ("check: ONNX Runtime CUDA s/tile",
              _get("steps", "engine", "onnxruntime_cuda", "timing", "s_per_tile", "median"), "lower")]
    return rows


def _tile(data: Mapping[str, Any]) -> tuple[int, int] | None:
    tile = _get("engine", "tile")(data)
    return (int(tile[0]), int(tile[1])) if isinstance(tile, (list, tuple)) and len(tile) == 2 else None


def _per_megapixel(get: Getter) -> Getter:
    def per(data: Mapping[str, Any]) -> float | None:
        seconds, tile = get(data), _tile(data)
        if not isinstance(seconds, (int, float)) or tile is None:
            return None
        return seconds / (tile[0] * tile[1] / 1e6)
    return per


def _slide_set(data: Mapping[str, Any]) -> list[tuple[str, tuple[int, ...]]] | None:
    per = _get("end_to_end", "per_slide")(data)
    if not isinstance(per, list):
        return None
    return sorted((str(s.get("name")), tuple(s.get("size_at_model_mpp") or ())) for s in per)


def caveats(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What makes A and B measure different work: other tile sizes, other slides."""
    notes = []
    ta, tb = _tile(a), _tile(b)
    if ta and tb and ta != tb:
        notes.append(f"The tile sizes differ (A {ta[0]}x{ta[1]} px, B {tb[0]}x{tb[1]} px): per-tile times are "
                     "not compared; the engines are compared per megapixel.")
    sa, sb = _slide_set(a), _slide_set(b)
    if sa is not None and sb is not None and sa != sb:
        def count(s: list) -> str:
            return f"{len(s)} slide" + ("s" if len(s) != 1 else "")
        notes.append(f"The slide sets differ (A: {count(sa)}, B: {count(sb)}; names or sizes): slides/hour "
                     "compares different work, not only the machines.")
    return notes


def _gb(value: Any) -> float | None:
    return value / 1e9 if isinstance(value, (int, float)) else None


def _speed(label: str) -> bool:
    return any(t in label for t in ("s/tile", "/s", "/hour"))


def change(label: str, a: float, b: float, better: str) -> str:
    """``B 2.10x faster`` / ``B 1.30x slower`` for times and rates, ``better``/``worse`` otherwise:
    for a figure where lower is better, A / B; where higher is better, B / A."""
    if a <= 0 or b <= 0:
        return ""
    gain = (a / b) if better == "lower" else (b / a)
    good, bad = ("faster", "slower") if _speed(label) else ("better", "worse")
    if abs(gain - 1) < 0.005:
        return "same"
    return f"B {gain:.2f}x {good}" if gain > 1 else f"B {1 / gain:.2f}x {bad}"


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of the module docstring."""
    out = []
    ta, tb = _tile(a), _tile(b)
    other_tiles = ta is not None and tb is not None and ta != tb
    sa, sb = _slide_set(a), _slide_set(b)
    other_slides = sa is not None and sb is not None and sa != sb
    for label, get, better in metrics(a, b):
        va, vb = get(a), get(b)
        if va is None or vb is None:
            continue
        row: dict[str, Any] = {"metric": label, "a": va, "b": vb, "ratio_b_over_a": None, "change": ""}
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
        if numbers and va:
            row["ratio_b_over_a"] = vb / va
            if other_tiles and label.startswith("engine: s/tile"):
                better = None  # per megapixel instead (the rows below)
            if better:
                row["change"] = change(label, float(va), float(vb), better)
            if other_slides and label.startswith("end to end:") and row["change"]:
                row["change"] += " (different slides)"
        out.append(row)
    return out
