"""A model's memory on ONNX Runtime's CPU provider, measured in a fresh process.

The memory estimate that refuses a slide before any pixel is read (:mod:`tseg.runtime.wsi.limits`)
counts the backend's working memory for one tile, and that depends on the network far more than on
anything else: for one 2048 px tile, the bundled demonstration model needed +496 MiB and a
paper-sized network (eca_nfnet_l3 encoder, DeepLabV3+ decoder) +1345 MiB, on the same machine and
ONNX Runtime. A constant measured on one model under-counts the other, so each model is measured:

* a child process (``python -m tseg.runtime.execution.working_memory MODEL SIDE``) loads the model
  exactly as the runtime does on the CPU (:class:`~tseg.runtime.execution.backends.onnxruntime.
  OnnxRuntimeBackend`: all graph optimisations, one intra-op thread per CPU, memory arena off);
* the growth of its resident set while loading is the **session** (weights, pre-packed kernels);
* it then resets its peak resident set (``/proc/self/clear_refs``, Linux) and runs one tile of
  ``SIDE`` x ``SIDE`` px: the peak above the loaded level is the **working memory** of that tile.

Two tiles are measured, each in its own process: ``SIDE`` is the model's tile size, at most
:data:`MAX_MEASURE_PX` (2048 px: one tile of the paper's network at 7680 px takes minutes on a
laptop's CPU), rounded up to the model's divisor, and half of it. Per tile pixel, the working
memory falls as tiles grow (fixed costs spread out): the bundled model needed 220 B/px at 1024 px,
124 at 2048, 91 at 4096 and 88 at 7680; the paper-sized network 257 to 322 at 1024, 336 at 2048
and about 300 at 3000 x 2000. The line through the two points (:func:`fit_line`) is what the estimate
scales to the model's tile; for the bundled model it over-counted a 7680 px tile by 4 to 6 % in
three measurements.

``tseg-rt export`` records the result in the model contract (``working_memory["cpu"]``, schema in
:mod:`tseg.runtime.execution.contract`); :func:`tseg.export.working_memory.record_working_memory`
adds it to a model exported before. The figures depend on ONNX Runtime's version and the CPU count,
which are recorded with them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from tseg.runtime.errors import ModelError
from tseg.runtime.wsi.limits import UNMEASURED_CPU, BackendMemory

log = logging.getLogger(__name__)

#: The largest tile side measured (px); larger tiles scale its per-pixel figure.
MAX_MEASURE_PX = 2048


def measure_side(tile_size: int, divisor: int = 1) -> int:
    """The tile side a model is measured at: its tile size, at most :data:`MAX_MEASURE_PX`,
    rounded up to a multiple of ``divisor`` (the graph pads to it anyway)."""
    side = max(1, min(int(tile_size), MAX_MEASURE_PX))
    d = max(1, int(divisor))
    return -(-side // d) * d


def measure_cpu(path: str | os.PathLike[str], side: int | None = None, timeout_s: float = 1800) -> dict[str, Any]:
    """Measure ``path``'s session and working memory on ONNX Runtime's CPU provider, each tile in a
    fresh process: one tile of ``side`` px (rounded up to the divisor; default :func:`measure_side`
    of its contract) and one of half that side. Returns the contract's ``working_memory["cpu"]``
    entry: ``session_bytes``, the two points (``side``, ``tile_bytes``; ``half_side``,
    ``half_tile_bytes``), the line through them (``fixed_bytes`` + ``bytes_per_px`` per tile
    pixel; :func:`fit_line`), ``threads``, ``onnxruntime``. Raises :class:`ModelError` naming the
    model when it cannot be measured (not Linux, the model does not run, out of time)."""
    path = Path(path)
    full = _measure_in_child(path, side, timeout_s)
    half = _measure_in_child(path, max(1, full["side"] // 2), timeout_s)
    fixed, per_px = fit_line((half["side"] ** 2, half["tile_bytes"]), (full["side"] ** 2, full["tile_bytes"]))
    entry = {"session_bytes": full["session_bytes"], "side": full["side"], "tile_bytes": full["tile_bytes"],
             "half_side": half["side"], "half_tile_bytes": half["tile_bytes"], "fixed_bytes": fixed,
             "bytes_per_px": per_px, "threads": full["threads"], "onnxruntime": full["onnxruntime"]}
    log.info("%s: session %.0f MiB; working memory %.0f MiB for one %d px tile, %.0f MiB for %d px: %.0f MiB + "
             "%.1f B per tile pixel", path.name, entry["session_bytes"] / 2**20, entry["tile_bytes"] / 2**20,
             entry["side"], entry["half_tile_bytes"] / 2**20, entry["half_side"], fixed / 2**20, per_px)
    return entry


def fit_line(small: tuple[int, int], large: tuple[int, int]) -> tuple[int, float]:
    """``(fixed bytes, bytes per pixel)`` of the line through two ``(tile pixels, bytes)`` points,
    never below either point where it is used: the fixed part is at least 0 (a negative one, when
    the smaller tile reused memory the loading had freed, would under-count small tiles), the
    slope then what the larger point needs. Per pixel, the working memory falls as tiles grow (the
    bundled model: 124 B/px at 2048 px, 91 at 4096, 88 at 7680), so the line through 1024 and 2048
    px over-counted 7680 px tiles by 4 to 6 % where the 2048 px figure alone over-counted them by 41 %."""
    (p0, b0), (p1, b1) = small, large
    slope = (b1 - b0) / (p1 - p0) if p1 > p0 else b1 / max(p1, 1)
    fixed = b1 - slope * p1
    if fixed < 0:
        fixed, slope = 0.0, b1 / max(p1, 1)
    return int(fixed), round(max(slope, 0.0), 2)


def _measure_in_child(path: Path, side: int | None, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", __name__, str(path)] + ([str(int(side))] if side else [])
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ModelError(path, f"measuring its working memory took more than {timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ModelError(path, f"could not measure its working memory on the CPU: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def recorded_memory(path: str | os.PathLike[str], label: str = "") -> BackendMemory:
    """The CPU :class:`~tseg.runtime.wsi.limits.BackendMemory` an ONNX model's contract records
    (read from its metadata, no session), :data:`~tseg.runtime.wsi.limits.UNMEASURED_CPU` when
    it records none; ``label`` names the model in the basis (``info``'s "memory_model")."""
    import onnx

    from tseg.runtime.execution.contract import METADATA_KEY, ModelContract

    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as exc:  # an unreadable model fails where it is loaded, with the reason
        log.debug("%s: no contract read (%s)", path, exc)
        props = {}
    entry = ModelContract.from_json(props[METADATA_KEY], str(path)).working_memory.get("cpu") \
        if METADATA_KEY in props else None
    memory = BackendMemory.measured_cpu(entry) if entry else UNMEASURED_CPU
    return replace(memory, basis=f"{label}: {memory.basis}") if label else memory


def _status_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def _measure_here(path: Path, side: int | None) -> dict[str, Any]:
    """The child's side of :func:`measure_cpu` (this process must be fresh: nothing else loaded)."""
    import numpy as np
    import onnxruntime as ort

    from tseg.runtime.execution.backends.onnxruntime import OnnxRuntimeBackend

    before = _status_bytes("VmRSS")
    backend = OnnxRuntimeBackend(path, providers="cpu")
    loaded = _status_bytes("VmRSS")
    c = backend.contract
    if side:  # as asked, on the divisor
        side = -(-int(side) // c.divisor) * c.divisor
    else:
        side = measure_side(c.tile_size, c.divisor)
    tile = np.full((1, side, side, 3), 200, np.uint8)
    tile[:, ::7, ::5] = 90  # not flat: no kernel takes a shortcut on a constant image
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError as exc:
        raise OSError(f"cannot reset the peak resident set here ({exc}): measuring needs Linux") from None
    backend.infer(tile)
    peak = _status_bytes("VmHWM")
    tile_bytes = max(0, peak - loaded)
    return {"session_bytes": max(0, loaded - before), "tile_bytes": tile_bytes, "side": side,
            "bytes_per_px": round(tile_bytes / (side * side), 2), "threads": os.cpu_count() or 1,
            "onnxruntime": ort.__version__}


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``MODEL [SIDE]``; prints the entry as one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        sys.stderr.write("usage: python -m tseg.runtime.execution.working_memory MODEL.onnx [SIDE]\n")
        return 2
    try:
        entry = _measure_here(Path(args[0]), int(args[1]) if len(args) > 1 else None)
    except Exception as exc:  # the parent reports the last stderr line, naming the model
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(entry) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
