"""Train, export and measure the bundled demonstration model (``runtime/models/default.onnx``).

    python -m tseg.export.demo_model --out build/demo [--steps N] [--install]

1. Generate training slides with :mod:`tseg.runtime.evaluation.synthetic` (seeds 100-107) and prepare them
   with ``train prepare`` (512 px tiles at 1 µm/px, masks from their GeoJSON).
2. When ``../shared/data/tiles/kather2016`` is present, build 512 px mosaics at 1 µm/px from the
   Kather et al. 2016 H&E tiles (CC BY 4.0), labelled per tile: 01_TUMOR -> tumour (255),
   08_EMPTY -> background (0), the other classes -> tissue (127). The first tile of every class
   (sorted by name) is held out for evaluation.
3. Dataset mean/std by equations (1)-(2); train ``training/configs/demo.toml``; export to ONNX
   with the model contract (7680 px tiles, 1024 px overlap, 1 µm/px, thresholds 85/229).
4. Measure: DSC of the full pipeline on held-out generated slides (seeds 900-903) against their
   known masks; tile-level accuracy on the held-out Kather tiles (a tile is called tumour when
   its mean tumour probability exceeds 50%); the time of one 7680 x 7680 tile on this CPU.
   Everything goes to ``OUT/demo_model.json``; ``--install`` copies the ONNX into the package.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

TRAIN_SEEDS = list(range(100, 108))
EVAL_SEEDS = [900, 901, 902, 903]
KATHER_LABELS = {"01_TUMOR": 255, "08_EMPTY": 0}
MOSAIC = 512


def _synthetic_slides(folder: Path, seeds: list[int]) -> list[dict[str, Any]]:
    from tseg.runtime.evaluation.synthetic import generate_slide

    rows = []
    for i, seed in enumerate(seeds):
        width, height = (4.0, 3.0) if i % 2 == 0 else (3.5, 3.5)
        g = generate_slide(folder / f"syn{seed}.tiff", seed=seed, width_mm=width, height_mm=height, mpp=0.5,
                           n_sections=1 + (i % 3 == 2), n_tumours=1 + i % 3)
        rows.append({"path": str(g.path), "annotation": str(g.geojson_path), "cancer_type": "synthetic",
                     "cohort": "generated", "mask": str(g.mask_path)})
    return rows


def _kather_mosaics(folder: Path, count: int, seed: int) -> tuple[list[dict[str, Any]], list[tuple[str, np.ndarray, str]]]:
    """Training mosaics and the held-out tiles (name, RGB at 1 µm/px, class)."""
    from tseg.export.parity import KATHER_MPP, kather_dir

    directory = kather_dir()
    if directory is None:
        log.warning("Kather tiles not found (../shared/data absent): training on generated slides only")
        return [], []
    train: list[tuple[np.ndarray, int]] = []
    held_out: list[tuple[str, np.ndarray, str]] = []
    for class_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        label = KATHER_LABELS.get(class_dir.name, 127)
        for j, path in enumerate(sorted(class_dir.glob("*.tif"))):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            size = (round(bgr.shape[1] * KATHER_MPP), round(bgr.shape[0] * KATHER_MPP))
            rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_AREA)
            if j == 0:
                held_out.append((path.name, rgb, class_dir.name))
            else:
                train.append((rgb, label))
    rng = np.random.default_rng(seed)
    (folder / "tiles").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for m in range(count):
        image = np.zeros((MOSAIC, MOSAIC, 3), np.uint8)
        mask = np.zeros((MOSAIC, MOSAIC), np.uint8)
        th, tw = train[0][0].shape[:2]
        # Mostly one class per mosaic (regions of tumour and of other tissue), some mixed.
        focus = rng.integers(len(train))
        for y in range(0, MOSAIC, th):
            for x in range(0, MOSAIC, tw):
                k = focus if rng.random() < 0.5 else rng.integers(len(train))
                tile, label = train[int(k)]
                tile = np.rot90(tile, int(rng.integers(4)))
                h, w = min(th, MOSAIC - y), min(tw, MOSAIC - x)
                image[y : y + h, x : x + w] = tile[:h, :w]
                mask[y : y + h, x : x + w] = label
        ip, mp = folder / "tiles" / f"mosaic{m:03d}.jpg", folder / "masks" / f"mosaic{m:03d}.png"
        cv2.imwrite(str(ip), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(mp), mask)
        rows.append({"ImagePath": str(ip), "MaskPath": str(mp), "slide": f"kather-group{m % 8}",
                     "cancer_type": "kather-crc", "cohort": "kather2016", "background_fraction": float((mask == 0).mean()),
                     "has_tumour": int((mask == 255).any()), "x": 0, "y": 0, "width": MOSAIC, "height": MOSAIC})
    return rows, held_out


def _evaluate(onnx: Path, folder: Path, held_out: list[tuple[str, np.ndarray, str]]) -> dict[str, Any]:
    from tseg.export.parity import mosaic
    from tseg.runtime.execution.backends import load_backend
    from tseg.runtime.evaluation.metrics import dsc, mean_ci
    from tseg.runtime.execution.segmenter import Segmenter

    segmenter = Segmenter(onnx, providers="cpu")
    slides = _synthetic_slides(folder / "eval", EVAL_SEEDS)
    per_slide = []
    for row in slides:
        result = segmenter.segment_slide(row["path"])
        reference = cv2.imread(row["mask"], cv2.IMREAD_GRAYSCALE) > 0
        per_slide.append({"slide": Path(row["path"]).name,
                          "dsc": dsc(result.mask, reference & result.foreground, result.foreground)})
    values = [s["dsc"] or 0.0 for s in per_slide]
    ci = mean_ci(values)
    out: dict[str, Any] = {"generated_slides": {"seeds": EVAL_SEEDS, "per_slide": per_slide, "mean_dsc": ci.mean,
                                                "ci95": [ci.low, ci.high]}}
    backend = load_backend(onnx, providers="cpu")
    if held_out:
        calls = []
        for name, rgb, cls in held_out:
            image = mosaic([rgb, rgb[::-1], rgb[:, ::-1], rgb[::-1, ::-1]], 256, 256)
            p = float(backend.infer(image[None])[0, 0].mean()) / 255.0
            calls.append({"tile": name, "class": cls, "mean_tumour_probability": round(p, 4),
                          "called_tumour": p > 0.5, "is_tumour": cls == "01_TUMOR"})
        correct = sum(c["called_tumour"] == c["is_tumour"] for c in calls)
        out["kather_held_out"] = {"tiles": calls, "accuracy": correct / len(calls), "n": len(calls)}
    tile = np.random.default_rng(0).integers(0, 256, (1, 7680, 7680, 3), dtype=np.uint8)
    backend.infer(tile[:, :1024, :1024])
    t0 = time.perf_counter()
    backend.infer(tile)
    out["cpu_seconds_per_7680_tile"] = round(time.perf_counter() - t0, 2)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--config", default="demo")
    parser.add_argument("--steps", type=int, default=None, help="override the config's steps")
    parser.add_argument("--mosaics", type=int, default=80)
    parser.add_argument("--install", action="store_true", help="copy the ONNX into runtime/models/default.onnx")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from tseg.export.onnx_export import export_checkpoint
    from tseg.training.config import load_config
    from tseg.training.prepare import INDEX_COLUMNS, prepare_dataset, read_index
    from tseg.training.stats import dataset_stats
    from tseg.runtime.util.atomic import write_csv
    from tseg.training.train import fit

    t_start = time.perf_counter()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config)
    if args.steps:
        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, steps=args.steps))
    slides = _synthetic_slides(out / "slides", TRAIN_SEEDS)
    write_csv(out / "slides.csv", slides, ["path", "annotation", "cancer_type", "cohort"])
    report = prepare_dataset(out / "slides.csv", out / "dataset", tile_size=config.data.tile_size)
    rows = read_index(report.index)
    mosaic_rows, held_out = _kather_mosaics(out / "dataset" / "kather", args.mosaics, config.optim.seed)
    rows += mosaic_rows
    index = out / "dataset" / "index.csv"
    write_csv(index, rows, INDEX_COLUMNS)
    stats = dataset_stats(r["ImagePath"] for r in rows)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, mean=tuple(stats["mean"]),
                                                                   std=tuple(stats["std"])))
    result = fit(config, index, out / "run", progress=False)
    onnx = out / "default.onnx"
    export = export_checkpoint(result.checkpoint, onnx, tile_size=7680, min_overlap=1024, overwrite=True,
                               traced_size=(256, 256), name="tseg-rt demonstration model (NOT for diagnosis)")
    evaluation = _evaluate(onnx, out, held_out)
    summary = {
        "command": f"python -m tseg.export.demo_model --out {out}" + (f" --steps {args.steps}" if args.steps else ""),
        "config": config.to_dict(), "train_seeds": TRAIN_SEEDS, "training_tiles": len(rows),
        "kather_mosaics": len(mosaic_rows), "dataset_stats": stats, "final_loss": result.last_loss,
        "onnx_bytes": onnx.stat().st_size, "parity": export.parity, "evaluation": evaluation,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    (out / "demo_model.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if args.install:
        target = Path(__file__).resolve().parents[1] / "runtime" / "models" / "default.onnx"
        shutil.copyfile(onnx, target)
        log.info("installed %s", target)
    print(json.dumps({k: summary[k] for k in ("onnx_bytes", "final_loss", "evaluation", "total_seconds")}, indent=2,
                     default=str))
    return summary


if __name__ == "__main__":
    main()
