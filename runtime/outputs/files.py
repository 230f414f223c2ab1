"""Per-slide output files, written so that nothing half-written is ever left under a final name.

In ``OUT/<slide name>/``:

* ``probability.png`` — tumour probability x 255 at 5 µm/px (uint8);
* ``mask.png`` — the post-processed tumour mask at 5 µm/px (0/255);
* ``foreground.png`` — the background segmentation (0/255), and ``overview.png`` — the slide at
  5 µm/px; with ``probability.png`` these let ``tseg-rt postprocess`` redo the thresholds
  without the network;
* ``overlay.png`` — the heatmap over the slide, transparent at 0 to yellow at 255 (as the
  paper's Fig. 1), with the mask's outline in blue;
* ``tumour.geojson`` — tumour polygons (holes kept) in level-0 pixels, class "Tumor", for QuPath;
* ``probability.tif`` — a pyramidal tiled TIFF of the probability map at the model's
  resolution (1 µm/px) with resolution tags;
* ``summary.json`` — areas, tiles, timings, model contract, settings and versions; written
  last, so a folder with a ``summary.json`` is complete.

Every file is written to a temporary name and renamed; a full disk raises
:class:`~tseg.runtime.errors.OutputError` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tseg.runtime.util.atomic import atomic_write
from tseg.runtime.errors import OutputError
from tseg.runtime.method.polygons import mask_to_geojson
from tseg.runtime.method.postprocess import segment_smoothed, smooth_probability
from tseg.runtime.execution.segmenter import Result, areas_mm2
from tseg.runtime.outputs.summary import SUMMARY, read_summary
from tseg.runtime.wsi.mpp import OVERVIEW_MPP
from tseg.runtime.wsi.tiff import pyramid_from_array, write_pyramid

PROBABILITY = "probability.png"
MASK = "mask.png"
FOREGROUND = "foreground.png"
OVERVIEW = "overview.png"
OVERLAY = "overlay.png"
GEOJSON = "tumour.geojson"
PROBABILITY_TIFF = "probability.tif"
OUTPUT_FILES = (PROBABILITY, MASK, FOREGROUND, OVERVIEW, OVERLAY, GEOJSON, PROBABILITY_TIFF, SUMMARY)

YELLOW = np.array([255.0, 255.0, 0.0])
OUTLINE = (0, 90, 255)


def overlay_image(overview: np.ndarray, probability: np.ndarray, mask: np.ndarray | None = None,
                  outline_px: int = 2) -> np.ndarray:
    """RGB overlay: yellow with opacity ``p / 255`` over the overview, plus the mask outline."""
    alpha = (probability.astype(np.float32) / 255.0)[..., None]
    out = overview.astype(np.float32) * (1.0 - alpha) + YELLOW * alpha
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if mask is not None and mask.any():
        m = mask.astype(np.uint8)
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        edge = m - cv2.erode(m, kernel, iterations=max(1, outline_px), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        out[edge > 0] = OUTLINE
    return out


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG (RGB or grey) atomically."""
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image

    def writer(tmp: Path) -> None:
        ok, buf = cv2.imencode(".png", data)
        if not ok:
            raise OutputError(path, "PNG encoding failed")
        with open(tmp, "wb") as fh:
            fh.write(buf.tobytes())

    atomic_write(path, writer)


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"

    def writer(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(path, writer)


def write_probability_tiff(path: Path, probability: np.ndarray, mpp: float) -> None:
    levels = pyramid_from_array(probability, min_size=256, factor=2)
    write_pyramid(path, levels, mpp, tile=256, compression="zlib", description="tseg-rt tumour probability x 255")


def write_outputs(result: Result, folder: str | os.PathLike[str], model_mpp: float | None = None) -> list[Path]:
    """Write every output of ``result`` into ``folder`` (created if needed); summary last."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create the output folder: {exc.strerror or exc}") from exc
    written = []
    for name, image in ((PROBABILITY, result.probability),
                        (MASK, result.mask.astype(np.uint8) * 255),
                        (FOREGROUND, result.foreground.astype(np.uint8) * 255),
                        (OVERVIEW, result.overview),
                        (OVERLAY, overlay_image(result.overview, result.probability, result.mask))):
        write_png(folder / name, image)
        written.append(folder / name)
    write_json(folder / GEOJSON, result.geojson)
    written.append(folder / GEOJSON)
    if result.probability_full is not None:
        mpp = model_mpp if model_mpp is not None else result.summary["model"]["contract"]["mpp"]
        write_probability_tiff(folder / PROBABILITY_TIFF, result.probability_full, mpp)
        written.append(folder / PROBABILITY_TIFF)
    summary = dict(result.summary)
    summary["outputs"] = sorted(p.name for p in written) + [SUMMARY]
    write_json(folder / SUMMARY, summary)
    written.append(folder / SUMMARY)
    return written


def _read_image(path: Path, flags: int) -> np.ndarray:
    """Read a PNG without OpenCV printing warnings for missing files: OutputError instead."""
    if not path.is_file():
        raise OutputError(path, "missing; this result folder is incomplete: rerun `tseg-rt run --overwrite` "
                                "for its slide")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise OutputError(path, f"unreadable: {exc.strerror or exc}") from exc
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise OutputError(path, "corrupt (not a readable PNG); rerun `tseg-rt run --overwrite` for its slide")
    return image


def _read_grey(path: Path) -> np.ndarray:
    return _read_image(path, cv2.IMREAD_UNCHANGED)


def repostprocess(folder: str | os.PathLike[str], low: int, high: int, prune: bool = True) -> dict[str, Any]:
    """Redo thresholds and pruning from a result folder's saved maps, without the network.

    Rewrites ``mask.png``, ``overlay.png``, ``tumour.geojson`` and ``summary.json`` (areas and
    settings); the result equals a fresh run with the new thresholds.
    """
    folder = Path(folder)
    summary_path = folder / SUMMARY
    summary = read_summary(folder)
    if summary is None:
        raise OutputError(folder, f"no {SUMMARY}: not a finished tseg-rt result folder")
    if not isinstance(summary.get("model"), dict) or not isinstance(summary.get("slide", {}), dict):
        raise OutputError(summary_path, "not a tseg-rt summary (no model / slide sections)")
    probability = _read_grey(folder / PROBABILITY)
    foreground = _read_grey(folder / FOREGROUND) > 0
    overview = cv2.cvtColor(_read_image(folder / OVERVIEW, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if probability.ndim != 2 or probability.shape != foreground.shape or overview.shape[:2] != probability.shape:
        raise OutputError(folder, "probability, foreground and overview maps differ in size; rerun `tseg-rt run "
                                  "--overwrite` for its slide")
    mask = segment_smoothed(smooth_probability(probability), foreground, low, high, prune)
    slide = summary.get("slide", {})
    if "mpp_level0" in slide:
        scale = (OVERVIEW_MPP / slide["mpp_level0"][0], OVERVIEW_MPP / slide["mpp_level0"][1])
    else:
        f = OVERVIEW_MPP / summary["model"]["contract"]["mpp"]
        scale = (f, f)
    write_png(folder / MASK, mask.astype(np.uint8) * 255)
    write_png(folder / OVERLAY, overlay_image(overview, probability, mask))
    write_json(folder / GEOJSON, mask_to_geojson(mask, scale))
    summary["areas"] = areas_mm2(mask, foreground, (OVERVIEW_MPP, OVERVIEW_MPP))
    summary["settings"] = dict(summary.get("settings", {}), low=low, high=high, prune=prune)
    summary.setdefault("history", []).append({"postprocess": {"low": low, "high": high, "prune": prune}})
    write_json(summary_path, summary)
    return summary
