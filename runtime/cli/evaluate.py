"""``tseg-rt eval``: predictions against reference annotations (the paper's statistics)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tseg.runtime.cli.common import num, reported
from tseg.runtime.util.display import printable


def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Results folder of `tseg-rt run`."),
    ref: Path = typer.Option(..., "--ref", help="Folder of references (NAME.geojson/.xml/.mask.png) or a CSV slide,reference."),
    out: Path = typer.Option(Path("evaluation"), "--out", "-o", help="Folder for the tables, JSON and plots."),
    cohorts: Optional[Path] = typer.Option(None, "--cohorts", help="CSV with columns slide,cohort."),
    classes: Optional[str] = typer.Option(None, help="GeoJSON classifications that count as tumour (default: all)."),
    sweep: bool = typer.Option(False, "--sweep", help="Sweep the hysteresis thresholds (pruning off) instead."),
    repair_annotations: bool = typer.Option(False, "--repair-annotations"),
) -> None:
    """Evaluate predictions against reference annotations (DSC and the paper's statistics)."""
    from tseg.runtime.evaluation.evaluate import evaluate, sweep as run_sweep

    names = classes.split(",") if classes else None
    with reported():
        if sweep:
            summary = run_sweep(pred, ref, out, names, repair_annotations)
            best = summary["best"]
            typer.echo(f"{summary['pairs']} threshold pairs on {summary['slides']} slide(s); best: low "
                       f"{best['low_percent']}% ({best['low']}), high {best['high_percent']}% ({best['high']}): "
                       f"mean DSC {num(best['mean_dsc'], 4)}\n-> {out / 'sweep.csv'}, {out / 'sweep.png'}")
            return
        result = evaluate(pred, ref, out, cohorts, names, repair_annotations)
    for c in result.cohorts:
        ci = f"[{c['ci95_low']:.3f}, {c['ci95_high']:.3f}]" if c["ci95_low"] is not None else f"(n={c['dsc_n']})"
        undefined = f" ({c['dsc_undefined']} with both masks empty left out)" if c["dsc_undefined"] else ""
        typer.echo(f"{c['cohort']}: {c['slides']} slide(s), mean DSC {num(c['mean_dsc'])} {ci}{undefined}, median "
                   f"{num(c['median_dsc'])}, no predicted region in {100 * c['no_predicted_region_fraction']:.0f}%; "
                   f"DSC over corresponding regions {num(c['region_dsc_mean'])} in {c['region_dsc_images']} slide(s), "
                   f"none in {c['images_without_corresponding_regions']}; Spearman rho vs tumour area "
                   f"{num(c['spearman_reference_area_rho'], 2)} (p {num(c['spearman_reference_area_p'], 4)}), "
                   f"vs prevalence {num(c['spearman_prevalence_rho'], 2)} (p {num(c['spearman_prevalence_p'], 4)})")
    if result.missing:
        typer.echo(f"no reference for: {', '.join(printable(m) for m in result.missing)}", err=True)
    typer.echo("-> " + ", ".join(str(f) for f in result.files))
