"""``tseg-rt train ...``: the training commands (PyTorch, imported only inside them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tseg.runtime.cli.common import EXIT_FAILED_SLIDES, need_torch, reported, setup_logging


def prepare(
    slides_csv: Path = typer.Argument(..., help="CSV with columns path, annotation, cancer_type, cohort[, mpp]."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder (tiles, masks, overviews, tiles.csv)."),
    tile_size: int = typer.Option(2048, help="Tile side at --mpp (paper: 2048)."),
    mpp: float = typer.Option(1.0, help="Resolution of the tiles in µm/px (paper: 1.0)."),
    classes: Optional[str] = typer.Option(None, help="GeoJSON classifications that count as tumour, comma-separated (default: all)."),
    repair_annotations: bool = typer.Option(False, "--repair-annotations", help="Repair invalid polygons instead of failing."),
    reader_threads: Optional[int] = typer.Option(None),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Cut slides and annotations into training tiles and masks (no PyTorch needed)."""
    setup_logging(verbose)

    from tseg.training.prepare import prepare_dataset

    with reported():
        report = prepare_dataset(slides_csv, out, tile_size, mpp, classes.split(",") if classes else None,
                                 repair_annotations, reader_threads,
                                 on_slide=lambda s, n: typer.echo(f"{s}: {n} tiles"))
    typer.echo(f"{report.tiles} tiles from {len(report.slides_done)} slide(s) -> {report.index}")
    for slide, error in report.failures.items():
        typer.echo(f"failed: {error}", err=True)
    if report.failures:
        raise typer.Exit(EXIT_FAILED_SLIDES)


def stats(
    index: Path = typer.Option(..., "--index", help="Tile index CSV from `train prepare`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the JSON here."),
) -> None:
    """Dataset mean and std per channel, as the paper's equations (1) and (2)."""

    from tseg.training.prepare import read_index
    from tseg.training.stats import dataset_stats

    with reported():
        values = dataset_stats(r["ImagePath"] for r in read_index(index))
    text = json.dumps(values, indent=2)
    typer.echo(text)
    if out:
        out.write_text(text + "\n")


def fit(
    config: str = typer.Option(..., "--config", "-c", help="TOML config or a bundled one (paper, tiny, demo)."),
    index: Path = typer.Option(..., "--index", help="Tile index CSV."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder; rerun to resume from its checkpoint."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: cuda if present)."),
    resume: bool = typer.Option(True, "--resume/--no-resume"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Train in one process (the config's global batch by gradient accumulation); several GPUs: torchrun -m tseg.training.train."""
    setup_logging(max(verbose, 1))
    need_torch()

    from tseg.training.config import load_config
    from tseg.training.train import fit as train

    with reported():
        result = train(load_config(config), index, out, device, resume=resume)
    typer.echo(f"trained to step {result.steps_done}; checkpoint {result.checkpoint}")


def import_checkpoint(
    published: Path = typer.Argument(..., help="The paper's published model.tar."),
    out: Path = typer.Option(..., "--out", "-o", help="tseg checkpoint to write."),
    trust: bool = typer.Option(False, "--trust", help="Allow full unpickling (only for files you trust)."),
) -> None:
    """Convert the published checkpoint into a self-describing tseg checkpoint."""
    need_torch()

    from tseg.training.importer import import_published

    with reported():
        report = import_published(published, out, trust=trust)
    typer.echo(f"{out}: {report.by_name} tensors mapped by name, {len(report.by_order)} by order")


app = typer.Typer(no_args_is_help=True, help="Training (needs tseg-rt\\[train]).")
app.command("prepare")(prepare)
app.command("stats")(stats)
app.command("fit")(fit)
app.command("import")(import_checkpoint)
