"""The paper's network in PyTorch on a GPU: the bound an engine must beat (the check's PyTorch rows).

Needs PyTorch, timm and segmentation-models-pytorch (``pip install 'tseg-rt[export]'``), imported
only here and only when called: the runtime never needs them. For one tile (7680 x 7680, the
paper's) of H&E-like pixels (a mosaic of the Kather et al. 2016 tiles when ``$TSEG_SHARED_DATA``
or ``../shared/data`` has them, or carries them as :data:`CARRIED_TILES`; else synthetic texture),
the whole tile computation (:class:`tseg.export.network.TileModel`: uint8 NHWC in, normalisation,
network, softmax, uint8 probability out) with the export's graph fixes and random weights drawn
with the paper's initialisation (the published weights are not distributed), in modes:

* ``fp32``: the reference, TF32 off (also timed);
* ``fp16`` / ``bf16``: eager under ``torch.autocast``;
* ``fp16-cl``: the same with channels-last weights (the NHWC input is channels-last already);
* ``fp16-compile``: ``torch.compile`` of the channels-last model, in a child process killed after
  ``compile_timeout`` seconds so that a slow compile cannot spend a lent GPU's time.

Per mode: seconds per tile (median of ``repeats`` after a warm-up), TFLOP/s against the network's
FLOP counted by ``torch.utils.flop_counter.FlopCounterMode`` at this size (42.0 TFLOP per 7680²
tile for the paper's network; 1 multiply-add = 2 FLOP, as :mod:`tseg.runtime.bench.flops`), peak
GPU memory, and agreement with the FP32 reference: largest and mean level difference, share of
pixels that differ, and the DSC of masks thresholded at the reference's median probability
(random weights give no tumour call, so the median split is what is compared).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ALL_MODES = ("fp32", "fp16", "bf16", "fp16-cl", "fp16-compile")
CARRIED_TILES = "kather2016_1um.npz"  # benchmarks/gpu_carry.sh: the Kather tiles at 1 µm/px, no OpenCV needed
PUBLISHED_MEAN = (0.8297992, 0.7106879, 0.8241846)
PUBLISHED_STD = (0.1051075, 0.1543867, 0.09917571)
#: With a time budget, the compile is given what is left less this margin, and skipped below the minimum.
COMPILE_MARGIN_S = 20.0
MIN_COMPILE_S = 30.0


def model_config(config: str) -> Any:
    """``paper`` (the paper's network) or a training configuration's name (``tiny`` for smoke runs)."""
    from tseg.training.config import ModelConfig, load_config

    return ModelConfig() if config == "paper" else load_config(config).model


def torch_flops(config: str, size: int) -> int:
    """FLOP of the network on one ``size``² tile, counted by PyTorch's ``FlopCounterMode`` on the
    meta device (no weights, no arithmetic: instant even for the paper's network)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tseg.training.model import build_model

    with torch.device("meta"):
        network = build_model(model_config(config)).eval()
        x = torch.zeros((1, 3, size, size))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(x)
    return int(counter.get_total_flops())


def build_tile_model(config: str, seed: int = 0) -> Any:
    """The whole tile computation with the export's fixes, weights from the paper's initialisation."""
    import torch

    from tseg.export.network import TileModel, prepare_network
    from tseg.training.model import build_model

    cfg = model_config(config)
    torch.manual_seed(seed)
    network, _ = prepare_network(build_model(cfg))
    return TileModel(network, PUBLISHED_MEAN, PUBLISHED_STD, cfg.tumour_index).eval()


def he_tile(size: int) -> tuple[np.ndarray, str]:
    """A ``size`` x ``size`` H&E mosaic: from the carried tiles on a GPU machine without the data
    folder, else as the export's parity check makes them (Kather tiles, or synthetic texture)."""
    from tseg.export.parity import mosaic, parity_inputs

    carried = Path(os.environ.get("TSEG_SHARED_DATA", "/nonexistent")) / CARRIED_TILES
    if carried.exists():
        with np.load(carried) as data:
            tiles = [data[k] for k in sorted(data.files)]
        return mosaic(tiles, size, size), f"kather2016 mosaic ({carried})"
    images, source = parity_inputs([(size, size)])
    return images[0], source


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    diff = np.abs(reference.astype(np.int16) - other.astype(np.int16))
    cut = np.median(reference)
    a, b = reference > cut, other > cut
    denominator = int(a.sum()) + int(b.sum())
    return {"max_level_difference": int(diff.max()), "mean_level_difference": float(diff.mean()),
            "fraction_differing": float((diff > 0).mean()), "mask_threshold": float(cut),
            "mask_dsc": 2 * int((a & b).sum()) / denominator if denominator else 1.0}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_mode(model: Any, x: Any, mode: str, device: str, repeats: int,
              tflop: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Run ``model`` on ``x`` in ``mode`` (one warm-up, then ``repeats`` timed runs)."""
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode.split("-")[0])
    autocast = torch.autocast(device.split(":")[0], dtype=dtype) if dtype else contextlib.nullcontext()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode(), autocast:
        out = model(x)
        _sync(device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = model(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    seconds = float(np.median(times)) if times else None
    stats = {"seconds_per_tile": seconds, "seconds_all": times,
             "tflop_per_s": tflop / seconds if tflop and seconds else None,
             "peak_gpu_memory_gb": (torch.cuda.max_memory_allocated() / 1e9) if device.startswith("cuda") else None}
    return out[0, 0].cpu().numpy(), stats


def _compile_child(config: str, size: int, device: str, repeats: int, tflop: float | None, queue: Any) -> None:
    import torch

    try:
        model = build_tile_model(config).to(device).to(memory_format=torch.channels_last)
        tile, _ = he_tile(size)
        x = torch.from_numpy(tile[None]).to(device)
        t0 = time.perf_counter()
        compiled = torch.compile(model)
        with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=torch.float16):
            compiled(x)
        _sync(device)
        compile_s = time.perf_counter() - t0
        out, stats = time_mode(compiled, x, "fp16", device, repeats, tflop)
        stats["compile_seconds"] = compile_s
        queue.put(("ok", out, stats))
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        queue.put(("error", None, {"error": f"{type(exc).__name__}: {exc}"[:2000]}))


def run_compiled(config: str, size: int, device: str, repeats: int, tflop: float | None,
                 timeout: float) -> tuple[np.ndarray | None, dict[str, Any]]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_compile_child, args=(config, size, device, repeats, tflop, queue))
    child.start()
    try:
        status, out, stats = queue.get(timeout=timeout)
    except Exception:  # noqa: BLE001 - queue.Empty: the compile took too long
        child.kill()
        child.join()
        return None, {"error": f"torch.compile did not finish within {timeout:g} s (killed)"}
    child.join()
    return out, stats


def network_rows(size: int = 7680, config: str = "paper", device: str = "cuda", modes: tuple[str, ...] = ALL_MODES,
                 repeats: int = 3, compile_timeout: float = 150.0, time_budget_s: float | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Time the tile computation in each of ``modes`` (module docstring). With ``time_budget_s``,
    the compile gets at most what is left of it (less a margin), or is skipped; ``on_progress``
    receives the result after each mode (so a caller that must stop early keeps what was measured)."""
    import torch

    started = time.monotonic()

    unknown = set(modes) - set(ALL_MODES)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)} (choose from {ALL_MODES})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU visible to PyTorch"}
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    flop = torch_flops(config, size)
    model = build_tile_model(config).to(device)
    tile, source = he_tile(size)
    x = torch.from_numpy(tile[None]).to(device)
    tflop = flop / 1e12
    result: dict[str, Any] = {
        "config": config, "tile": [size, size], "input": source, "weights": "random, paper initialisation (seed 0)",
        "flop_per_tile": flop, "tflop_per_tile": tflop, "flop_counted_by": "torch.utils.flop_counter.FlopCounterMode",
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else device,
        "torch": torch.__version__, "modes": {}, "setup_seconds": time.perf_counter() - t0,
    }
    reference, stats = time_mode(model, x, "fp32", device, repeats if "fp32" in modes else 0, tflop)
    if "fp32" in modes:
        result["modes"]["fp32"] = stats
    if on_progress:
        on_progress(result)
    for mode in modes:
        if mode in ("fp32", "fp16-compile"):
            continue
        m = model.to(memory_format=torch.channels_last) if mode.endswith("-cl") else model
        out, stats = time_mode(m, x, mode, device, repeats, tflop)
        stats["agreement_with_fp32"] = agreement(reference, out)
        result["modes"][mode] = stats
        model = model.to(memory_format=torch.contiguous_format)
        if on_progress:
            on_progress(result)
    if "fp16-compile" in modes:
        del model, x
        if device.startswith("cuda"):
            torch.cuda.empty_cache()  # the compile runs in another process: leave it the memory
        limit = compile_timeout
        if time_budget_s is not None:
            limit = min(limit, time_budget_s - (time.monotonic() - started) - COMPILE_MARGIN_S)
        if limit < MIN_COMPILE_S:
            result["modes"]["fp16-compile"] = {"error": f"skipped: {max(limit, 0):.0f} s of the time budget left"}
        else:
            out, stats = run_compiled(config, size, device, repeats, tflop, limit)
            if out is not None:
                stats["agreement_with_fp32"] = agreement(reference, out)
            result["modes"]["fp16-compile"] = stats
    timed = {k: v["seconds_per_tile"] for k, v in result["modes"].items() if v.get("seconds_per_tile")}
    if timed:
        best = min(timed, key=timed.get)
        result["best"] = {"mode": best, "seconds_per_tile": timed[best], "tflop_per_s": tflop / timed[best]}
    return result
