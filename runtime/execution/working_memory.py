"""A model's memory on ONNX Runtime's CPU provider, measured in a fresh process.

The memory estimate that refuses a slide before any pixel is read (:mod:`tseg.runtime.wsi.limits`)
counts the backend's working memory for one tile, and that depends on the network far more than on
anything else: for one 2048 px tile, the bundled demonstration model needed +479 MiB and a
paper-sized network (eca_nfnet_l3 encoder, DeepLabV3+ decoder) +1345 MiB, on the same machine and
ONNX Runtime. A constant measured on one model under-counts the other, so each model is measured:

* a child process (``python -m tseg.runtime.execution.working_memory MODEL SIDE``) loads the model
  exactly as the runtime does on the CPU (:class:`~tseg.runtime.execution.backends.onnxruntime.
  OnnxRuntimeBackend`: all graph optimisations, one intra-op thread per CPU, memory arena off);
* the growth of its resident set while loading is the **session** (weights, pre-packed kernels);
* it then resets its peak resident set (``/proc/self/clear_refs``, Linux) and runs one tile of
  ``SIDE`` x ``SIDE`` px: the peak above the loaded level is the **working memory** of that tile.

``SIDE`` is the model's tile size, at most :data:`MAX_MEASURE_PX` (2048 px: one tile of the paper's
network at 7680 px takes minutes on a laptop's CPU), rounded up to the model's divisor. Per tile
pixel, the working memory falls as tiles grow (fixed costs spread out): measured here, the bundled
model needed 225 B/px at 1024 px, 120 at 2048 and 97 at 7680; the paper-sized network 336 at 2048
and about 290 at 3000 x 2000. Scaling the figure of a 2048 px tile to a larger tile therefore
over-counts a little, never under-counts.

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
    """Measure ``path``'s session and per-tile working memory on ONNX Runtime's CPU provider in a
    fresh process (one tile of ``side`` px; default :func:`measure_side` of its contract). Returns
    the contract's ``working_memory["cpu"]`` entry: ``session_bytes``, ``tile_bytes``, ``side``,
    ``bytes_per_px``, ``threads``, ``onnxruntime``. Raises :class:`ModelError` naming the model when
    the measurement cannot be made (not Linux, the model does not run, out of time)."""
    path = Path(path)
    cmd = [sys.executable, "-m", __name__, str(path)] + ([str(int(side))] if side else [])
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ModelError(path, f"measuring its working memory took more than {timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ModelError(path, f"could not measure its working memory on the CPU: {tail}")
    entry = json.loads(done.stdout.strip().splitlines()[-1])
    log.info("%s: session %.0f MiB, working memory %.0f MiB for one %d px tile (%.0f B/px)", path.name,
             entry["session_bytes"] / 2**20, entry["tile_bytes"] / 2**20, entry["side"], entry["bytes_per_px"])
    return entry


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
    side = measure_side(side or c.tile_size, c.divisor)
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
