"""Training throughput: images/s and memory per training step.

CPU (default): the tiny configuration, compute only (random tensors) against full steps through
the real data pipeline (generated slide -> prepared tiles -> augmentations), so the ratio shows
what data loading costs. ``--cuda``: the paper's configuration at 3 x 1536² per GPU, with AMP
against FP32 (ratio), and peak GPU memory.

    python -m benchmarks.train_throughput [--quick] [--cuda] [--steps N] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from benchmarks.common import cached_slide, peak_rss_mb, write_json


def _compute_only(config, batch: int, crop: int, steps: int, device: str, amp: bool) -> dict:
    import torch

    from tseg.training.losses import SegmentationLoss
    from tseg.training.model import build_model, parameter_groups

    torch.manual_seed(0)
    model = build_model(config.model).to(device).train()
    optimizer = torch.optim.SGD(parameter_groups(model, 2e-5), lr=1e-3, momentum=0.9, nesterov=True)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    criterion = SegmentationLoss()
    x = torch.randn(batch, 3, crop, crop, device=device)
    y = torch.randint(0, len(config.model.classes), (batch, crop, crop), device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.float16, enabled=amp):
            out = model(x)
        loss = criterion(out, y)[0]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    s = sum(times) / len(times)
    result = {"images_per_s": batch / s, "s_per_step": s, "batch": batch, "crop": crop, "amp": amp}
    if device.startswith("cuda"):
        result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cuda", action="store_true", help="paper configuration on the GPU")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from tseg.training.config import load_config

    if args.cuda:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--cuda needs a CUDA GPU")
        cfg = load_config("paper")
        steps = args.steps or 10
        amp = _compute_only(cfg, 3, 1536, steps, "cuda", amp=True)
        fp32 = _compute_only(cfg, 3, 1536, steps, "cuda", amp=False)
        out = {"benchmark": "train_throughput", "config": "paper", "device": torch.cuda.get_device_name(),
               "amp": amp, "fp32": fp32, "speedup_amp_over_fp32": amp["images_per_s"] / fp32["images_per_s"]}
        write_json(args.json, out)
        return out
    from tseg.training.prepare import prepare_dataset
    from tseg.training.train import fit

    cfg = load_config("tiny")
    steps = args.steps or (5 if args.quick else 30)
    crop = cfg.data.crop_size
    compute = _compute_only(cfg, cfg.optim.micro_batch, crop, steps, "cpu", amp=False)  # = global_batch in tiny
    slide = cached_slide("train", seed=7, width_mm=2.0, height_mm=1.5, mpp=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "slides.csv"
        csv.write_text(f"path,annotation,cancer_type,cohort\n{slide},{slide.with_suffix('.geojson')},colon,A\n")
        index = prepare_dataset(csv, Path(tmp) / "ds", tile_size=cfg.data.tile_size).index
        run_cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, steps=steps + 1, checkpoint_every=10**9))
        t0 = time.perf_counter()
        stamps = []
        fit(run_cfg, index, Path(tmp) / "run", progress=False, on_step=lambda s, l: stamps.append(time.perf_counter()))
        per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    full = {"images_per_s": cfg.optim.global_batch / per_step, "s_per_step": per_step}
    out = {"benchmark": "train_throughput", "config": "tiny", "device": "cpu", "compute_only": compute,
           "full_steps_with_data_pipeline": full,
           "ratio_full_over_compute_only_time": per_step / compute["s_per_step"],
           "peak_rss_mb": peak_rss_mb(), "total_s": time.perf_counter() - t0}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
