"""``tseg-rt bench --check``: one command that verifies a GPU box and measures its table rows.

Steps, each in its own process with its own time limit (a hung CUDA call, a slow
``torch.compile`` or an out-of-memory kill ends that step alone, and each step starts with the
GPU's memory free); the whole check stops within ``time_limit_s``:

1. ``executor``: the CUDA executor at 7680² on three streams with a CuPy stand-in compute:
   copies overlap compute, outputs bit-identical (:mod:`tseg.runtime.bench.executor_check`);
2. ``pytorch``: the paper's network in PyTorch, fp32 / fp16 / bf16 / channels-last /
   ``torch.compile`` (:mod:`tseg.runtime.bench.torch_network`), where PyTorch, timm and
   segmentation-models-pytorch are installed: the bound an engine must beat;
3. ``engine``: the model (``--engine``, default the bundled one) on TensorRT and on ONNX Runtime's
   CUDA provider where installed, verified and timed (:mod:`tseg.runtime.bench.gpu_engines`).

Without a CUDA GPU every step is skipped with the reason (nothing fails). A step that cannot run
for want of a package says which to install. :func:`table_rows` turns the result into the rows of
the GPU table of docs/performance.md.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tseg.runtime.bench.machine import gpu_label
from tseg.runtime.bench.result import new_result
from tseg.runtime.errors import InvalidArgumentError

log = logging.getLogger(__name__)

STEPS = ("executor", "pytorch", "engine")
#: Each step's own limit in seconds (the whole check's limit may cut them shorter).
STEP_LIMITS = {"executor": 90.0, "pytorch": 300.0, "engine": 300.0}
#: A step is not started with less time than this left.
MIN_STEP_S = 20.0


@dataclass(frozen=True)
class CheckSettings:
    tile: int = 7680
    time_limit_s: float = 600.0
    engine: Path | None = None
    steps: tuple[str, ...] = STEPS
    torch_config: str = "paper"
    compile_timeout_s: float = 150.0
    device: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.steps) - set(STEPS)
        if unknown:
            raise InvalidArgumentError(f"unknown check steps {sorted(unknown)}: choose from {', '.join(STEPS)}")
        if self.time_limit_s < MIN_STEP_S:
            raise InvalidArgumentError(f"the check needs at least {MIN_STEP_S:g} s, got {self.time_limit_s:g}")


def run_step(step: str, args: dict[str, Any], limit_s: float) -> dict[str, Any]:
    """Run ``step`` in a child process (``python -m tseg.runtime.bench.child``), killing its whole
    process group after ``limit_s``; its JSON result, or what went wrong with the log's tail."""
    with tempfile.TemporaryDirectory(prefix=f"tseg-check-{step}-") as tmp:
        out, log_path = Path(tmp) / "result.json", Path(tmp) / "log.txt"
        t0 = time.perf_counter()
        with open(log_path, "wb") as log_file:
            child = subprocess.Popen([sys.executable, "-m", "tseg.runtime.bench.child", step, json.dumps(args), str(out)],
                                     stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = child.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                code = None
        seconds = time.perf_counter() - t0
        tail = log_path.read_text(errors="replace")[-3000:]
        if code is None:
            stopped = {"error": f"did not finish within {limit_s:.0f} s (stopped)", "seconds": seconds,
                       "log_tail": tail}
            if out.exists():  # a step that reports progress: keep what it measured
                return dict(json.loads(out.read_text()), **stopped)
            return stopped
        if not out.exists():
            return {"error": f"the step's process ended with exit status {code} and no result", "seconds": seconds,
                    "log_tail": tail}
        result = json.loads(out.read_text())
        result["seconds"] = seconds
        if "error" in result:
            result["log_tail"] = tail
        return result


def run_check(settings: CheckSettings = CheckSettings(),
              on_step: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the check's steps (module docstring) and return everything, with the table rows."""
    from tseg.runtime.bench.engine import default_model
    from tseg.runtime.execution.cuda import cuda_status

    deadline = time.monotonic() + settings.time_limit_s
    status = cuda_status()
    engine = Path(settings.engine) if settings.engine else default_model()
    result = new_result("check")
    result.update({"tile": [settings.tile, settings.tile], "engine_model": str(engine), "steps": {}})
    args = {"executor": {"side": settings.tile, "device": settings.device},
            "pytorch": {"size": settings.tile, "config": settings.torch_config, "device": f"cuda:{settings.device}",
                        "compile_timeout": settings.compile_timeout_s},
            "engine": {"model": str(engine), "tile": settings.tile, "device": settings.device}}
    for step in settings.steps:
        left = deadline - time.monotonic()
        if status.count <= settings.device:
            outcome = {"skipped": f"no CUDA device {settings.device}: {status.reason or 'not visible'}"}
        elif left < MIN_STEP_S:
            outcome = {"skipped": f"the check's time limit ({settings.time_limit_s:g} s) is spent"}
        else:
            limit = min(STEP_LIMITS[step], left)
            step_args = dict(args[step])
            if step == "pytorch":  # the compile runs inside the step: it gets what is left of the step
                step_args["time_budget_s"] = limit
            if step == "engine":
                step_args["time_limit_s"] = max(10.0, limit / 3)
            outcome = run_step(step, step_args, limit)
        result["steps"][step] = outcome
        if on_step:
            on_step(step, outcome)
    result["ok"] = all("error" not in s and s.get("ok", True) for s in result["steps"].values())
    result["rows"] = table_rows(result)
    return result


def table_rows(result: dict[str, Any]) -> list[str]:
    """The rows of the GPU table (docs/performance.md) (``| GPU | what | s per tile | TFLOP/s | fp16 vs fp32 | measured |``)."""
    gpu, day = gpu_label(result["machine"]["gpu"].get("devices") or []), result["created"][:10]
    side = result["tile"][0]
    rows = []
    torch_rows = result["steps"].get("pytorch") or {}
    for mode, m in (torch_rows.get("modes") or {}).items():
        if not m.get("seconds_per_tile"):
            continue
        a = m.get("agreement_with_fp32")
        vs = (f"max {a['max_level_difference']} levels, {100 * a['fraction_differing']:.2f} % of pixels differ, "
              f"median-split DSC {a['mask_dsc']:.4f}") if a else "reference"
        tflops = f"{m['tflop_per_s']:.1f}" if m.get("tflop_per_s") else ""
        rows.append(f"| {gpu} | PyTorch {torch_rows.get('torch', '')} {mode}, {torch_rows['config']} network, "
                    f"{side}² | {m['seconds_per_tile']:.3f} | {tflops} | {vs} | {day}, `tseg-rt bench --check` |")
    engine_rows = result["steps"].get("engine") or {}
    for kind, label in (("tensorrt", "TensorRT engine"), ("onnxruntime_cuda", "ONNX Runtime CUDA")):
        row = engine_rows.get(kind) or {}
        timing = row.get("timing")
        if not timing:
            continue
        tflops = f"{timing['tflop_per_s']:.1f}" if timing.get("tflop_per_s") else ""
        streamed = timing.get("streamed_s_per_tile")
        seconds = streamed or timing["s_per_tile"]["median"]
        parity = row.get("parity_vs_onnxruntime_cpu")
        vs = (f"vs ONNX Runtime CPU: max {parity['max_level_difference']} levels, median-split DSC "
              f"{parity['mask_dsc']:.4f}") if parity else ""
        name = Path(row.get("model", "")).name
        what = " ".join(filter(None, (label, row.get("tensorrt"))))
        rows.append(f"| {gpu} | {what} ({name}), {timing['tile'][0]}²"
                    f"{', streamed' if streamed else ''} | {seconds:.3f} | {tflops} | {vs} | {day}, "
                    "`tseg-rt bench --check` |")
    return rows
