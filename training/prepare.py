"""Dataset preparation (``tseg-rt train prepare``): slides + annotations -> tiles; no PyTorch.

From a CSV of slides (columns ``path``, ``annotation``, ``cancer_type``, ``cohort``, an
optional ``mpp`` override and an optional ``section``, the tissue section a scan shows, so that
scans of one section from several scanners are balanced together; relative paths are relative to
the CSV) to, per slide
(paper, *Method development*):

* 2048 x 2048 tiles at 1 µm/px without overlap (Listing 1; the last tile of a row or column is
  flush with the edge), read through :mod:`tseg.runtime.wsi.slide`, as JPEG quality 95;
* a mask per tile as PNG: 0 white background, 127 tissue, 255 tumour. Background comes from the
  5 µm/px background segmentation; the tumour annotation is AND-ed with the foreground, as the
  paper alters references with the background mask;
* the 5 µm/px overview (PNG), its foreground mask and the label mask at 5 µm/px;
* background tile exclusion: a tile is kept if it holds any tumour, or else if its background
  fraction is below 50%.

The tile index CSV (``tiles.csv``) lists ImagePath, MaskPath, slide, section (the scan's own
name when the slides CSV gives none), cancer_type, cohort, background_fraction, has_tumour and
the tile box. A slide that fails (no MPP, unreadable,
annotation outside it) is reported and skipped; the others are prepared.
"""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from tseg.runtime.evaluation.annotations import read_annotation
from tseg.runtime.util.atomic import atomic_write, write_csv
from tseg.runtime.method.background import foreground_mask, mask_on_box
from tseg.runtime.cohort.identity import slide_stem
from tseg.runtime.errors import InvalidArgumentError, TsegError
from tseg.runtime.wsi.slide import open_slide
from tseg.runtime.method.tiling import TRAINING_MIN_OVERLAP, TRAINING_TILE, plan_tiles

log = logging.getLogger(__name__)

BACKGROUND, TISSUE, TUMOUR = 0, 127, 255
MAX_BACKGROUND_FRACTION = 0.5
JPEG_QUALITY = 95
INDEX_COLUMNS = ["ImagePath", "MaskPath", "slide", "section", "cancer_type", "cohort", "background_fraction",
                 "has_tumour", "x", "y", "width", "height"]


@dataclass(frozen=True)
class SlideEntry:
    path: Path
    annotation: Path | None
    cancer_type: str
    cohort: str
    mpp: float | None = None
    section: str | None = None  # the tissue section (None: the scan is its own section)


def read_slide_list(csv_path: str | os.PathLike[str]) -> list[SlideEntry]:
    """Read the slide CSV (``path, annotation, cancer_type, cohort[, mpp][, section]``)."""
    csv_path = Path(csv_path)
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InvalidArgumentError(f"{csv_path}: cannot read the slide list: {exc}") from exc
    required = {"path", "annotation", "cancer_type", "cohort"}
    if not rows:
        raise InvalidArgumentError(f"{csv_path}: the slide list is empty")
    missing = required - set(rows[0])
    if missing:
        raise InvalidArgumentError(f"{csv_path}: missing columns {sorted(missing)} (need {sorted(required)})")

    def resolve(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else base / p

    def mpp(r: dict[str, str], line: int) -> float | None:
        text = (r.get("mpp") or "").strip()
        if not text:
            return None
        try:
            return float(text)
        except ValueError:
            raise InvalidArgumentError(f"{csv_path}, line {line}: mpp {text!r} is not a number") from None

    return [SlideEntry(resolve(r["path"]), resolve(r["annotation"]) if r["annotation"].strip() else None,
                       r["cancer_type"].strip(), r["cohort"].strip(), mpp(r, i + 2),
                       (r.get("section") or "").strip() or None) for i, r in enumerate(rows)]


def tile_labels(foreground: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    """0 background / 127 tissue / 255 tumour (tumour only where there is foreground)."""
    labels = np.full(foreground.shape, BACKGROUND, np.uint8)
    labels[foreground] = TISSUE
    labels[foreground & tumour] = TUMOUR
    return labels


def keep_tile(labels: np.ndarray) -> tuple[bool, float, bool]:
    """(keep, background fraction, has tumour): *Background tile exclusion*."""
    background = float(np.count_nonzero(labels == BACKGROUND)) / labels.size
    has_tumour = bool(np.any(labels == TUMOUR))
    return has_tumour or background < MAX_BACKGROUND_FRACTION, background, has_tumour


def _imwrite(path: Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image

    def writer(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), data, list(params)):
            raise TsegError(f"{path}: cannot write image")

    atomic_write(path, writer, keep_suffix=True)


def prepare_slide(entry: SlideEntry, out_dir: Path, tile_size: int = TRAINING_TILE, mpp: float = 1.0,
                  classes: Sequence[str] | None = None, repair: bool = False,
                  reader_threads: int | None = None) -> list[dict[str, Any]]:
    """Tiles, masks and overviews of one slide; returns its index rows (kept tiles only)."""
    name = slide_stem(entry.path)
    folder = out_dir / name
    (folder / "tiles").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    with open_slide(entry.path, entry.mpp, reader_threads=reader_threads) as slide:
        annotation = read_annotation(entry.annotation, classes, repair) if entry.annotation else None
        if annotation is not None:
            annotation.check_inside(slide.dimensions)
        overview = slide.overview()
        foreground = foreground_mask(overview)
        size5 = (overview.shape[1], overview.shape[0])
        tumour5 = (annotation.rasterise(slide.dimensions, size5) if annotation is not None
                   else np.zeros(foreground.shape, bool))
        _imwrite(folder / "overview.png", overview)
        _imwrite(folder / "foreground.png", foreground.astype(np.uint8) * 255)
        _imwrite(folder / "labels.png", tile_labels(foreground, tumour5))
        width, height = slide.size_at(mpp)
        plan = plan_tiles(width, height, tile_size, TRAINING_MIN_OVERLAP)

        def one(tile: Any) -> dict[str, Any] | None:
            fg = mask_on_box(foreground, tile.box, (width, height))
            tumour = (annotation.rasterise(slide.dimensions, (width, height), tile.box)
                      if annotation is not None else np.zeros(fg.shape, bool))
            labels = tile_labels(fg, tumour)
            keep, background, has_tumour = keep_tile(labels)
            if not keep:
                return None
            stem = f"{tile.x:06d}_{tile.y:06d}"
            image_path = folder / "tiles" / f"{stem}.jpg"
            mask_path = folder / "masks" / f"{stem}.png"
            _imwrite(image_path, slide.read(mpp, tile.box, threads=1), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            _imwrite(mask_path, labels)
            return {"ImagePath": str(image_path), "MaskPath": str(mask_path), "slide": name,
                    "section": entry.section or name, "cancer_type": entry.cancer_type, "cohort": entry.cohort,
                    "background_fraction": round(background, 6), "has_tumour": int(has_tumour),
                    "x": tile.x, "y": tile.y, "width": tile.width, "height": tile.height}

        with ThreadPoolExecutor(max(1, reader_threads or min(4, os.cpu_count() or 1))) as pool:
            rows = [r for r in pool.map(one, plan.tiles) if r is not None]
    log.info("%s: %d of %d tiles kept", entry.path.name, len(rows), len(plan))
    return rows


@dataclass
class PrepareReport:
    index: Path
    tiles: int
    slides_done: list[str]
    failures: dict[str, str]


def prepare_dataset(slide_csv: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                    tile_size: int = TRAINING_TILE, mpp: float = 1.0, classes: Sequence[str] | None = None,
                    repair: bool = False, reader_threads: int | None = None,
                    on_slide: Callable[[str, int], None] | None = None) -> PrepareReport:
    """Prepare every slide of ``slide_csv`` into ``out_dir`` and write ``out_dir/tiles.csv``."""
    entries = read_slide_list(slide_csv)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    done, failures = [], {}
    for entry in entries:
        try:
            slide_rows = prepare_slide(entry, out, tile_size, mpp, classes, repair, reader_threads)
        except TsegError as exc:
            log.error("%s", exc)
            failures[str(entry.path)] = str(exc)
            continue
        rows.extend(slide_rows)
        done.append(str(entry.path))
        if on_slide:
            on_slide(str(entry.path), len(slide_rows))
    if not rows:
        raise InvalidArgumentError(
            f"{slide_csv}: no tiles were kept ({len(failures)} slide(s) failed: "
            + "; ".join(failures.values())[:2000] + ")")
    index = write_csv(out / "tiles.csv", rows, INDEX_COLUMNS)
    return PrepareReport(index, len(rows), done, failures)


def read_index(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a tile index CSV; refuses an empty index or one with missing columns."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InvalidArgumentError(f"{p}: cannot read the tile index: {exc}") from exc
    if not rows:
        raise InvalidArgumentError(f"{p}: the tile index is empty; run `tseg-rt train prepare` first")
    missing = {"ImagePath", "MaskPath", "slide", "cancer_type"} - set(rows[0])
    if missing:
        raise InvalidArgumentError(f"{p}: the tile index lacks columns {sorted(missing)}")
    base = p.parent
    for r in rows:
        for key in ("ImagePath", "MaskPath"):
            q = Path(r[key])
            r[key] = str(q if q.is_absolute() else base / q)
    return rows
