"""The check's engine rows: the model on the GPU backends installed here, verified and timed.

* **TensorRT** (where ``tensorrt`` imports): a ``.plan`` is used as given; an ``.onnx`` model is
  built into a temporary plan first (profile 512² / tile / tile, FP16, as ``tseg-rt build-engine``).
  Verified: tiles streamed through the CUDA executor (``infer_many``: copies overlapping compute)
  are bit-identical to the same tiles run one at a time, and the engine agrees with ONNX Runtime
  FP32 on the CPU (H&E-like inputs of ``parity_size``², levels of difference, when the model's
  ONNX graph is at hand). Timed: :func:`tseg.runtime.bench.engine.bench_engine`.
* **ONNX Runtime's CUDA provider** (where ``onnxruntime-gpu`` offers it, for an ``.onnx`` model):
  timed the same way.

Without either, the reason and the install line are reported; nothing fails.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tseg.runtime.bench.engine import EngineSettings, bench_engine, graph_for
from tseg.runtime.errors import BackendUnavailableError, TsegError


def _parity_images(size: int) -> tuple[list[np.ndarray], str]:
    """H&E-like inputs: synthetic texture from the runtime (no PyTorch, no data folder needed)."""
    from tseg.runtime.evaluation.synthetic import SyntheticSlide

    slide = SyntheticSlide(seed=11, width_um=3.0 * size, height_um=2.0 * size, n_tumours=2)
    image = slide.render(slide.width_um / 2 - size / 2, slide.height_um / 2 - size / 2, size, size, 1.0)
    return [image], "synthetic H&E texture (centre of a generated section: tumour and normal tissue)"


def tensorrt_row(model: Path, tile: int, device: int, time_limit_s: float, parity_size: int = 1024) -> dict[str, Any]:
    """Build (if needed), verify and time a TensorRT engine (module docstring)."""
    from tseg.engines.build import BuildSettings, build_engine
    from tseg.runtime.execution.backends.tensorrt_loader import import_tensorrt
    from tseg.runtime.execution.backends import load_backend

    trt = import_tensorrt()
    row: dict[str, Any] = {"tensorrt": str(trt.__version__), "model": str(model)}
    with tempfile.TemporaryDirectory(prefix="tseg-bench-trt-") as tmp:
        plan, onnx = Path(model), None
        if plan.suffix.lower() == ".onnx":
            onnx, plan = plan, Path(tmp) / "model.plan"
            manifest = build_engine(onnx, plan, BuildSettings(min_tile=512, opt_tile=tile, max_tile=tile, device=device))
            row["built"] = {"profile": manifest.profile, "precision": manifest.precision,
                            "device_memory_bytes": manifest.device_memory_bytes}
        else:
            onnx, _ = graph_for(plan)
        result, engine = bench_engine(plan, EngineSettings(tile=tile, tiles=5, warmup=2, time_limit_s=time_limit_s,
                                                           onnx=onnx), device=device)
        try:
            row["timing"] = result
            tiles = [np.random.default_rng(i).integers(0, 256, (1, 512, 512, 3), dtype=np.uint8) for i in range(4)]
            streamed = [out for _, out in engine.infer_many(enumerate(tiles))]
            alone = [engine.infer(t) for t in tiles]
            row["streamed_identical_to_one_at_a_time"] = all(np.array_equal(a, b) for a, b in zip(streamed, alone))
            if onnx is not None:
                from tseg.runtime.bench.torch_network import agreement

                reference = load_backend(onnx, providers="cpu")
                images, source = _parity_images(parity_size // engine.contract.divisor * engine.contract.divisor)
                ours = engine.infer(images[0][None])[0, 0]
                theirs = reference.infer(images[0][None])[0, 0]
                row["parity_vs_onnxruntime_cpu"] = {"input": source, **agreement(theirs, ours)}
                reference.close()
        finally:
            engine.close()
    return row


def onnxruntime_cuda_row(model: Path, tile: int, device: int, time_limit_s: float) -> dict[str, Any]:
    result, backend = bench_engine(model, EngineSettings(tile=tile, tiles=5, warmup=2, time_limit_s=time_limit_s),
                                   providers="cuda", device=device)
    backend.close()
    return {"model": str(model), "timing": result}


def _row(make: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``make(*args)``, or ``{"skipped": reason}`` when its backend is not installed, or ``{"error": ...}``."""
    try:
        return make(*args)
    except BackendUnavailableError as exc:
        return {"skipped": str(exc)}
    except TsegError as exc:
        return {"error": str(exc)}


def engine_rows(model: str, tile: int = 7680, device: int = 0, time_limit_s: float = 120.0) -> dict[str, Any]:
    """Every GPU backend this machine has, on ``model`` (module docstring)."""
    path = Path(model)
    rows: dict[str, Any] = {"tensorrt": _row(tensorrt_row, path, tile, device, time_limit_s)}
    if path.suffix.lower() != ".onnx":
        rows["onnxruntime_cuda"] = {"skipped": "an .onnx model is needed for ONNX Runtime"}
    else:
        rows["onnxruntime_cuda"] = _row(onnxruntime_cuda_row, path, tile, device, time_limit_s)
    # A backend that failed, or an engine whose streamed tiles differ from single ones, fails the check.
    rows["ok"] = all("error" not in r and r.get("streamed_identical_to_one_at_a_time", True)
                     for r in rows.values() if isinstance(r, dict))
    return rows
