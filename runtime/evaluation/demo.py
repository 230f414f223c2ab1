"""``tseg-rt demo``: the whole chain on a generated slide with the bundled demonstration model.

Generates a held-out synthetic H&E slide (seed 2026, 9 x 5 mm at 0.5 µm/px, never used in
training; two overlapping 7680 px tiles at 1 µm/px), runs it through the same batch path as
``tseg-rt run`` (reading, background, tiles, ONNX Runtime, merge, post-processing, outputs),
and measures the DSC of the mask against the
slide's known tumour mask at 5 µm/px, with white background excluded as in the paper's
*Performance evaluation*. The bundled model is a demonstration, not a diagnostic model.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from tseg.runtime.cohort.outcomes import BatchEvents

log = logging.getLogger(__name__)

DEMO_SEED = 2026
DEMO_SIZE_MM = (9.0, 5.0)
DEMO_MPP = 0.5


@dataclass
class DemoResult:
    slide: Path
    reference: Path
    out: Path
    dsc: float | None
    summary: dict[str, Any]
    folder: Path


def write_demo_slide(path: str | os.PathLike[str]) -> Path:
    """Write the demo's generated slide at ``path`` (a pyramidal ``.tif``/``.tiff``), with its known
    tumour mask (``<stem>.mask.png``) and polygons (``<stem>.geojson``) beside it: a slide to try
    ``tseg-rt serve`` and ``watch`` with. Written under a hidden temporary name (which the hot
    folder ignores) and renamed, the slide last."""
    from tseg.runtime.errors import InvalidArgumentError
    from tseg.runtime.evaluation.synthetic import generate_slide

    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise InvalidArgumentError(f"{path}: the demo slide is a pyramidal TIFF; give a name ending in .tiff "
                                   f"(e.g. {path.with_suffix('.tiff')})")
    if path.is_dir():
        raise InvalidArgumentError(f"{path} is a folder: give the slide's file name, e.g. {path / 'demo-slide.tiff'}")
    temp = path.with_name(f".{path.stem}.part{path.suffix}")
    generate_slide(temp, seed=DEMO_SEED, width_mm=DEMO_SIZE_MM[0], height_mm=DEMO_SIZE_MM[1],
                   mpp=DEMO_MPP, n_sections=2, n_tumours=3)
    for extra in (".mask.png", ".geojson"):
        os.replace(temp.with_name(temp.stem + extra), path.with_name(path.stem + extra))
    os.replace(temp, path)
    return path


def run_demo(out: str | os.PathLike[str], engine: str | None = None, overwrite: bool = True,
             events: BatchEvents | None = None) -> DemoResult:
    """Generate the demo slide into ``out``, segment it into ``out/results``, measure the DSC;
    ``events`` hears of the slide and its tiles (a progress bar)."""
    from tseg.runtime.cohort.batch import run_batch
    from tseg.runtime.errors import TsegError
    from tseg.runtime.evaluation.metrics import dsc
    from tseg.runtime.execution.segmenter import Segmenter
    from tseg.runtime.evaluation.synthetic import generate_slide

    out = Path(out)
    slide_dir = out / "slide"
    slide_path = slide_dir / "demo-slide.tiff"
    if not slide_path.exists() or not (slide_dir / "demo-slide.mask.png").exists():
        log.info("generating the demo slide %s", slide_path)
        generate_slide(slide_path, seed=DEMO_SEED, width_mm=DEMO_SIZE_MM[0], height_mm=DEMO_SIZE_MM[1],
                       mpp=DEMO_MPP, n_sections=2, n_tumours=3)
    segmenter = Segmenter(engine)
    results = out / "results"
    outcome = run_batch([slide_path], results, segmenter, overwrite=overwrite, events=events)[0]
    if not outcome.ok:
        raise TsegError(f"the demo failed: {outcome.error}")
    folder = results / outcome.name
    mask = cv2.imread(str(folder / "mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    foreground = cv2.imread(str(folder / "foreground.png"), cv2.IMREAD_GRAYSCALE) > 0
    reference = cv2.imread(str(slide_dir / "demo-slide.mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    score = dsc(mask, reference & foreground, foreground)
    summary = outcome.summary or __import__("json").loads((folder / "summary.json").read_text())
    return DemoResult(slide_path, slide_dir / "demo-slide.mask.png", results, score, summary, folder)
