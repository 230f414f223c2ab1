"""Per-slide output files, written so that nothing half-written is ever left under a final name.

In ``OUT/<slide name>/``:

* ``probability.png`` — tumour probability x 255 at 5 µm/px (uint8);
* ``mask.png`` — the post-processed tumour mask at 5 µm/px (0/255);
* ``foreground.png`` — the background segmentation (0/255), and ``overview.png`` — the slide at
  5 µm/px; with ``probability.png`` these let ``tseg-rt postprocess`` redo the thresholds
  without the network;
* ``overlay.png`` — the picture to read: the tumour mask over the slide at 5 µm/px as a
  translucent fill with a contour (or the contour alone, or a heat map of the probability),
  background outside the tissue dimmed, and a legend below (slide name, scale bar, areas,
  thresholds, pruning, model); :mod:`tseg.runtime.outputs.overlay` draws it, in the style and
  opacity of the summary's settings (``overlay_style``, ``overlay_opacity``);
* ``tumour.geojson`` — tumour polygons (holes kept) in level-0 pixels, class "Tumor" with the
  overlay's tumour colour, for QuPath;
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
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tseg.runtime.util.atomic import atomic_write, linked_copy, remove_path, replace_folder, why_not_written
from tseg.runtime.util.display import printable
from tseg.runtime.util.safeio import UnsafeFileError, read_bytes
from tseg.runtime.errors import InvalidArgumentError, OutputError
from tseg.runtime.method.polygons import TUMOUR_COLOUR, mask_to_geojson
from tseg.runtime.method.postprocess import (
    DEFAULT_HIGH,
    DEFAULT_LOW,
    check_thresholds,
    segment_smoothed,
    smooth_probability,
)
from tseg.runtime.execution.segmenter import (
    DEFAULT_OVERLAY_OPACITY,
    DEFAULT_OVERLAY_STYLE,
    OVERLAY_STYLES,
    Result,
    areas_mm2,
    check_overlay,
)
from tseg.runtime.outputs.overlay import OverlayLegend, draw_map, render_overlay
from tseg.runtime.outputs.summary import SUMMARY, read_summary
from tseg.runtime.wsi.mpp import OVERVIEW_MPP
from tseg.runtime.outputs.pyramid_tiff import pyramid_from_array, write_pyramid

PROBABILITY = "probability.png"
MASK = "mask.png"
FOREGROUND = "foreground.png"
OVERVIEW = "overview.png"
OVERLAY = "overlay.png"
GEOJSON = "tumour.geojson"
PROBABILITY_TIFF = "probability.tif"
OUTPUT_FILES = (PROBABILITY, MASK, FOREGROUND, OVERVIEW, OVERLAY, GEOJSON, PROBABILITY_TIFF, SUMMARY)


@lru_cache(maxsize=1)
def _bundled_model_sha256() -> str | None:
    from tseg.runtime.execution.backends.base import file_sha256
    from tseg.runtime.models import default_model_path

    try:
        return file_sha256(default_model_path())
    except OSError:  # pragma: no cover - the model ships with the package
        return None


def overlay_legend(summary: dict[str, Any]) -> OverlayLegend:
    """The overlay's legend from a result's summary: slide name, thresholds, pruning, model."""
    slide = summary.get("slide") if isinstance(summary.get("slide"), dict) else {}
    settings = summary.get("settings") if isinstance(summary.get("settings"), dict) else {}
    model = summary.get("model") if isinstance(summary.get("model"), dict) else {}
    backend = model.get("backend") if isinstance(model.get("backend"), dict) else {}
    title = slide.get("name") or (Path(slide["path"]).name if slide.get("path") else "")
    if not title and slide.get("image_size"):
        title = "image of {} x {} px".format(*slide["image_size"])
    notes = []
    if backend.get("path") or backend.get("sha256"):
        kind = f" on {backend['kind']}" if backend.get("kind") else ""  # no date: reruns stay byte-identical
        notes.append(f"Model {Path(str(backend.get('path', ''))).name or '?'} (sha256 "
                     f"{str(backend.get('sha256') or '?')[:12]}){kind}.")
        if backend.get("sha256") and backend.get("sha256") == _bundled_model_sha256():
            notes.append("The bundled demonstration model: NOT a diagnostic model.")
    low, high = settings.get("low"), settings.get("high")
    return OverlayLegend(title=printable(str(title)), pixel_um=OVERVIEW_MPP,
                         low=int(low) if isinstance(low, int) else None,
                         high=int(high) if isinstance(high, int) else None,
                         prune=settings.get("prune") if isinstance(settings.get("prune"), bool) else None,
                         notes=tuple(printable(n) for n in notes))


def overlay_settings(summary: dict[str, Any]) -> tuple[str, float]:
    """The overlay style and opacity a summary records (the defaults for what it does not record,
    or records wrongly: results of older versions)."""
    settings = summary.get("settings") if isinstance(summary.get("settings"), dict) else {}
    style = settings.get("overlay_style")
    opacity = settings.get("overlay_opacity")
    style = style if style in OVERLAY_STYLES else DEFAULT_OVERLAY_STYLE
    try:
        check_overlay(style, opacity)
    except InvalidArgumentError:
        opacity = DEFAULT_OVERLAY_OPACITY
    return style, float(opacity)


def overlay_for(summary: dict[str, Any], overview: np.ndarray, probability: np.ndarray, mask: np.ndarray,
                foreground: np.ndarray | None) -> np.ndarray:
    """``overlay.png``'s picture for a result, in the style its summary's settings name."""
    style, opacity = overlay_settings(summary)
    return render_overlay(overview, probability, mask, foreground, style=style, opacity=opacity,
                          legend=overlay_legend(summary))


def result_overlay(result: Result) -> np.ndarray:
    """The picture ``write_outputs`` saves as ``overlay.png`` (in the style of the result's settings)."""
    return overlay_for(result.summary, result.overview, result.probability, result.mask, result.foreground)


#: Deprecated (``OUTLINE`` of tseg-rt 0.1's ``outputs`` module): the tumour contour's colour.
OUTLINE = TUMOUR_COLOUR


def overlay_image(overview: np.ndarray, probability: np.ndarray, mask: np.ndarray | None = None,
                  outline_px: int = 2) -> np.ndarray:
    """Deprecated (tseg-rt 0.1, for code that called it): the map of ``overlay.png`` without its
    legend, the contour ``outline_px`` wide. Use :func:`tseg.runtime.outputs.overlay.render_overlay`."""
    mask = np.zeros(np.asarray(probability).shape, bool) if mask is None else mask
    return draw_map(overview, probability, mask, None, contour_px=max(1, int(outline_px)))


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
    """Write every output of ``result`` into ``folder`` (created if needed); summary last.

    The summary's ``timings_s.outputs_s`` records how long the other files took to write (the
    pipeline's last stage, which ``tseg-rt bench`` reports beside the others)."""
    t_start = time.perf_counter()
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
                        (OVERLAY, result_overlay(result))):
        write_png(folder / name, image)
        written.append(folder / name)
    write_json(folder / GEOJSON, result.geojson)
    written.append(folder / GEOJSON)
    if result.probability_full is not None:
        mpp = model_mpp if model_mpp is not None else result.summary["model"]["contract"]["mpp"]
        write_probability_tiff(folder / PROBABILITY_TIFF, result.probability_full, mpp)
        written.append(folder / PROBABILITY_TIFF)
    summary = dict(result.summary)
    summary["timings_s"] = dict(summary.get("timings_s", {}), outputs_s=round(time.perf_counter() - t_start, 4))
    summary["outputs"] = sorted(p.name for p in written) + [SUMMARY]
    write_json(folder / SUMMARY, summary)
    written.append(folder / SUMMARY)
    return written


def _read_image(path: Path, flags: int) -> np.ndarray:
    """Read a PNG without OpenCV printing warnings for missing files: OutputError instead."""
    if not os.path.lexists(path):
        raise OutputError(path, "missing; this result folder is incomplete: rerun `tseg-rt run --overwrite` "
                                "for its slide")
    try:  # never through a link in or to the result folder, never a FIFO (safeio)
        data = np.frombuffer(read_bytes(path, below=path.parent.parent, limit=None), dtype=np.uint8)
    except UnsafeFileError as exc:
        raise OutputError(path, f"unreadable: it {exc.what}") from exc
    except OSError as exc:
        raise OutputError(path, f"unreadable: {exc.strerror or exc}") from exc
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise OutputError(path, "corrupt (not a readable PNG); rerun `tseg-rt run --overwrite` for its slide")
    return image


def _read_grey(path: Path) -> np.ndarray:
    return _read_image(path, cv2.IMREAD_UNCHANGED)


def repostprocess(folder: str | os.PathLike[str], low: int | None = None, high: int | None = None,
                  prune: bool | None = None, *, overlay_style: str | None = None,
                  overlay_opacity: float | None = None) -> dict[str, Any]:
    """Redo thresholds and pruning from a result folder's saved maps, without the network, and
    redraw the overlay. Every argument left None keeps the result's own setting (thresholds
    missing from an old summary: its model contract's, else the paper's 85 / 229).

    Rewrites ``mask.png``, ``overlay.png``, ``tumour.geojson`` and ``summary.json`` (areas and
    settings); the result equals a fresh run with the new thresholds and overlay settings. The
    four change together or not at all: they are written into a copy of the folder (hard links
    of the other files) beside it, which is then switched in (:func:`~tseg.runtime.util.atomic.replace_folder`);
    a full disk or an interruption leaves the previous result as it was.
    """
    folder = Path(folder)
    summary_path = folder / SUMMARY
    summary = read_summary(folder)
    if summary is None:
        raise OutputError(folder, f"no {SUMMARY}: not a finished tseg-rt result folder")
    if not isinstance(summary.get("model"), dict) or not isinstance(summary.get("slide", {}), dict):
        raise OutputError(summary_path, "not a tseg-rt summary (no model / slide sections)")
    settings = summary.get("settings") if isinstance(summary.get("settings"), dict) else {}
    contract = summary["model"].get("contract") if isinstance(summary["model"].get("contract"), dict) else {}
    low = low if low is not None else settings.get("low", contract.get("low_threshold", DEFAULT_LOW))
    high = high if high is not None else settings.get("high", contract.get("high_threshold", DEFAULT_HIGH))
    prune = bool(prune if prune is not None else settings.get("prune", True))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
        raise OutputError(summary_path, f"records no usable thresholds (low {low!r}, high {high!r}); give --low and "
                                        "--high")
    check_thresholds(low, high)
    made_style, made_opacity = overlay_settings(summary)
    style = overlay_style if overlay_style is not None else made_style
    opacity = float(overlay_opacity) if overlay_opacity is not None else made_opacity
    check_overlay(style, opacity)
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
    changes = {"low": low, "high": high, "prune": prune, "overlay_style": style, "overlay_opacity": opacity}
    summary["settings"] = dict(summary.get("settings") or {}, **changes)
    summary["areas"] = areas_mm2(mask, foreground, (OVERVIEW_MPP, OVERVIEW_MPP))
    summary.setdefault("history", []).append({"postprocess": changes})
    summary.pop("dicom", None)  # the DICOM objects no longer match: a run with --dicom-out rebuilds them
    overlay = overlay_for(summary, overview, probability, mask, foreground)
    geojson = mask_to_geojson(mask, scale)

    def write_new_set(staging: Path) -> None:
        write_png(staging / MASK, mask.astype(np.uint8) * 255)
        write_png(staging / OVERLAY, overlay)
        write_json(staging / GEOJSON, geojson)
        write_json(staging / SUMMARY, summary)  # last, as in a new result

    _rewrite_folder(folder, write_new_set)
    return summary


def _rewrite_folder(folder: Path, write: Any) -> None:
    """Call ``write(staging)`` on a linked copy of ``folder`` beside it, then switch the copy in.
    The names follow the runner's temporary folders (``.NAME.tmp-*``, ``.NAME.old-*``), which a
    later run of the slide removes if a crash left one."""
    stem = f".{folder.name}"
    staging = folder.parent / f"{stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        linked_copy(folder, staging)
        write(staging)
        replace_folder(staging, folder, folder.parent / f"{stem}.old-{os.getpid()}")
    except OSError as exc:
        reason, fix = why_not_written(exc)
        raise OutputError(folder, f"cannot rewrite the result: {reason}. {fix}; the result was left as it "
                                  "was") from exc
    finally:
        remove_path(staging)
