"""``tseg-rt demo``: a generated slide through the whole pipeline, with its DSC."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tseg.runtime.cli.common import reported, setup_logging


def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", "-o", help="Folder for the demo slide and its results."),
    engine: Optional[Path] = typer.Option(None, "--engine", "-e", help="Another model (default: the bundled one)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
    slide_only: Optional[Path] = typer.Option(
        None, "--slide-only", metavar="PATH",
        help="Only write the demo's generated slide (9 x 5 mm at 0.5 µm/px, a .tiff) to PATH, with its known "
             "tumour mask beside it, and stop: a slide to try `serve` and `watch` with."),
) -> None:
    """Generate a synthetic slide, segment it with the bundled model, and report the DSC."""
    setup_logging(verbose)
    if slide_only is not None:
        from tseg.runtime.evaluation.demo import write_demo_slide

        with reported():
            slide = write_demo_slide(slide_only)
        typer.echo(f"Demo slide: {slide} (generated; its known tumour mask beside it)\n"
                   f"Try it: tseg-rt run {slide} --out results/   or put it under a `tseg-rt serve --root` "
                   "or into a `tseg-rt watch` folder (docs/service.md).")
        return
    from rich.console import Console

    from tseg.runtime.evaluation.demo import run_demo
    from tseg.runtime.cohort.progress import BatchProgress

    console = Console(stderr=True)
    with reported():
        with BatchProgress(1, enabled=progress, console=console) as bar:
            result = run_demo(out, str(engine) if engine else None, events=bar)
    areas = result.summary["areas"]
    tiles = result.summary["tiles"]
    score = f"{result.dsc:.3f}" if result.dsc is not None else "undefined (no tumour in reference or prediction)"
    typer.echo(f"""
Demo slide : {result.slide}  (generated; known tumour mask {result.reference.name})
Results    : {result.folder}
Tiles      : {tiles['tiles_run']} run, {tiles['tiles_skipped_background']} background tiles skipped
Tumour     : {areas['tumour_area_mm2']:.2f} mm² in {areas['regions']} region(s), of {areas['tissue_area_mm2']:.2f} mm² tissue
DSC        : {score} against the known mask (background excluded)

Look at  {result.folder / 'overlay.png'}  (the tumour mask over the slide, with a legend)
and open {result.folder / 'tumour.geojson'} in QuPath over {result.slide.name} (File > Import objects).
Next: tseg-rt run --engine MODEL.onnx|MODEL.plan SLIDES/ --out results/""")
