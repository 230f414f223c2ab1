"""The paper's network in PyTorch on a GPU: the bound a TensorRT engine must beat.

For one tile (default 7680 x 7680, the paper's) of real H&E (a mosaic of the Kather et al. 2016
tiles when ``../shared/data`` or ``$TSEG_SHARED_DATA`` has them, else synthetic texture), the whole
tile computation (:class:`tseg.export.network.TileModel`: uint8 NHWC in, normalisation, network,
softmax, uint8 probability out) with the export's graph fixes, random weights drawn with the
paper's initialisation (the published weights are not distributed with the project), in modes:

* ``fp32``: the reference, TF32 off (also timed);
* ``fp16`` / ``bf16``: eager under ``torch.autocast``;
* ``fp16-cl``: the same with channels-last weights (the NHWC input is channels-last already);
* ``fp16-compile``: ``torch.compile`` of the channels-last model, in a child process killed after
  ``--compile-timeout`` seconds so that a slow compile cannot spend a lent GPU's time.

Per mode: seconds per tile (median of ``--repeats`` after a warm-up), TFLOP/s against the
42 TFLOP per 7680² tile of SPEC.md (scaled by pixel count at other sizes), peak GPU memory, and
agreement with the FP32 reference: largest and mean level difference, share of pixels that
differ, and the DSC of masks thresholded at the reference's median probability (random weights
give no tumour call, so the median split is what is compared).

    python -m benchmarks.network_gpu [--size 7680] [--config paper] [--modes fp32,fp16,bf16,fp16-cl,fp16-compile]
                                     [--repeats 3] [--compile-timeout 240] [--json out.json]

``--device cpu --size 256 --config tiny --modes fp32,bf16`` is a smoke run for machines without a GPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from typing import Any

import numpy as np

from benchmarks.common import write_json

TFLOP_PER_7680_TILE = 42.0
ALL_MODES = ("fp32", "fp16", "bf16", "fp16-cl", "fp16-compile")


def tile_tflop(size: int) -> float:
    return TFLOP_PER_7680_TILE * (size / 7680) ** 2


def build_tile_model(config: str, seed: int = 0) -> Any:
    """The whole tile computation with the export's fixes, weights from the paper's initialisation."""
    import torch

    from tseg.export.network import TileModel, prepare_network
    from tseg.training.config import ModelConfig, load_config
    from tseg.training.model import build_model

    cfg = ModelConfig() if config == "paper" else load_config(config).model
    torch.manual_seed(seed)
    network, _ = prepare_network(build_model(cfg))
    mean, std = (0.8297992, 0.7106879, 0.8241846), (0.1051075, 0.1543867, 0.09917571)  # the published model's
    return TileModel(network, mean, std, cfg.tumour_index).eval()


CARRIED_TILES = "kather2016_1um.npz"  # benchmarks/gpu_carry.sh: the Kather tiles at 1 µm/px, no OpenCV needed


def he_tile(size: int) -> tuple[np.ndarray, str]:
    """A ``size`` x ``size`` H&E mosaic: from the carried tiles on a GPU machine without OpenCV,
    else as the export's parity check makes them (Kather tiles, or synthetic texture)."""
    import os
    from pathlib import Path

    from tseg.export.parity import mosaic

    carried = Path(os.environ.get("TSEG_SHARED_DATA", "/nonexistent")) / CARRIED_TILES
    if carried.exists():
        with np.load(carried) as data:
            tiles = [data[k] for k in sorted(data.files)]
        return mosaic(tiles, size, size), f"kather2016 mosaic ({carried})"
    from tseg.export.parity import parity_inputs

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
              paper_network: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Run ``model`` on ``x`` in ``mode`` (one warm-up, then ``repeats`` timed runs); TFLOP/s only
    for the paper network (the 42 TFLOP count is its own)."""
    import contextlib

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
    seconds = float(np.median(times))
    flop = tile_tflop(x.shape[1]) if paper_network else None
    stats = {"seconds_per_tile": seconds, "seconds_all": times, "tflop_per_s": flop / seconds if flop else None,
             "peak_gpu_memory_gb": (torch.cuda.max_memory_allocated() / 1e9) if device.startswith("cuda") else None}
    return out[0, 0].cpu().numpy(), stats


def _compile_child(args: argparse.Namespace, queue: Any) -> None:
    import torch

    try:
        model = build_tile_model(args.config).to(args.device).to(memory_format=torch.channels_last)
        tile, _ = he_tile(args.size)
        x = torch.from_numpy(tile[None]).to(args.device)
        t0 = time.perf_counter()
        compiled = torch.compile(model)
        with torch.inference_mode(), torch.autocast(args.device.split(":")[0], dtype=torch.float16):
            compiled(x)
        _sync(args.device)
        compile_s = time.perf_counter() - t0
        out, stats = time_mode(compiled, x, "fp16", args.device, args.repeats, args.config == "paper")
        stats["compile_seconds"] = compile_s
        queue.put(("ok", out, stats))
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        queue.put(("error", None, {"error": f"{type(exc).__name__}: {exc}"[:2000]}))


def run_compiled(args: argparse.Namespace) -> tuple[np.ndarray | None, dict[str, Any]]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_compile_child, args=(args, queue))
    child.start()
    try:
        status, out, stats = queue.get(timeout=args.compile_timeout)
    except Exception:  # noqa: BLE001 - queue.Empty: the compile took too long
        child.kill()
        child.join()
        return None, {"error": f"torch.compile did not finish within {args.compile_timeout} s (killed)"}
    child.join()
    return out, stats


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=7680)
    parser.add_argument("--config", default="paper", help="paper, or a training config name (tiny for smoke runs)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--modes", default=",".join(ALL_MODES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile-timeout", type=float, default=240.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import torch

    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(ALL_MODES)
    if unknown:
        raise SystemExit(f"benchmarks.network_gpu: unknown modes {sorted(unknown)} (choose from {ALL_MODES})")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("benchmarks.network_gpu: no CUDA GPU visible to PyTorch; skipped")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    model = build_tile_model(args.config).to(args.device)
    tile, source = he_tile(args.size)
    x = torch.from_numpy(tile[None]).to(args.device)
    result: dict[str, Any] = {
        "benchmark": "network_gpu", "config": args.config, "tile": [args.size, args.size], "input": source,
        "weights": "random, paper initialisation (seed 0)",
        "tflop_per_tile": tile_tflop(args.size) if args.config == "paper" else None,
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device,
        "torch": torch.__version__, "modes": {}, "setup_seconds": None,
    }
    result["setup_seconds"] = time.perf_counter() - t0
    paper = args.config == "paper"
    reference, stats = time_mode(model, x, "fp32", args.device, args.repeats if "fp32" in modes else 0, paper)
    if "fp32" in modes:
        result["modes"]["fp32"] = stats
    for mode in modes:
        if mode in ("fp32", "fp16-compile"):
            continue
        m = model.to(memory_format=torch.channels_last) if mode.endswith("-cl") else model
        out, stats = time_mode(m, x, mode, args.device, args.repeats, paper)
        stats["agreement_with_fp32"] = agreement(reference, out)
        result["modes"][mode] = stats
        model = model.to(memory_format=torch.contiguous_format)
    if "fp16-compile" in modes:
        out, stats = run_compiled(args)
        if out is not None:
            stats["agreement_with_fp32"] = agreement(reference, out)
        result["modes"]["fp16-compile"] = stats
    timed = {k: v["seconds_per_tile"] for k, v in result["modes"].items() if "seconds_per_tile" in v}
    if timed:
        best = min(timed, key=timed.get)
        result["best"] = {"mode": best, "seconds_per_tile": timed[best],
                          "tflop_per_s": tile_tflop(args.size) / timed[best] if paper else None}
    write_json(args.json, result)
    for k, v in result["modes"].items():
        line = {kk: v.get(kk) for kk in ("seconds_per_tile", "tflop_per_s", "peak_gpu_memory_gb", "compile_seconds", "error")}
        print(k, json.dumps(line, default=str), json.dumps(v.get("agreement_with_fp32", {})))
    return result


if __name__ == "__main__":
    main()
