"""``tseg-rt bench``: parse the options, call :mod:`tseg.runtime.bench`, print the digest."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from tseg.runtime.cli.common import fail, reported, setup_logging


def _size_mm(text: str) -> tuple[float, float]:
    try:
        w, h = (float(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        fail(f"--generate takes WIDTHxHEIGHT in mm (e.g. 10x8), got {text!r}")
    return w, h


def bench(
    slides: Optional[List[Path]] = typer.Argument(None, help="Slides (files or folders) to run end to end; default: "
                                                             "a generated slide (see --generate)."),
    engine: Optional[Path] = typer.Option(None, "--engine", "-e", help="An .onnx model, a .plan engine or a folder "
                                          "of plans (default: the bundled demonstration model)."),
    providers: str = typer.Option("auto", help="ONNX Runtime providers: auto, cpu, cuda or tensorrt."),
    device: int = typer.Option(0, help="GPU index."),
    tile: Optional[int] = typer.Option(None, help="Tile side in px for the engine alone (default: the engine's "
                                       "profile, else the model's tile size, 7680 for the paper)."),
    tiles: int = typer.Option(10, min=1, help="Tiles timed after the warm-up."),
    warmup: int = typer.Option(2, min=0, help="Unmeasured tiles first."),
    time_limit: float = typer.Option(300.0, min=1, help="Stop timing tiles after this many seconds (at least one)."),
    onnx: Optional[Path] = typer.Option(None, help="The ONNX graph a .plan was built from, to count its FLOP "
                                        "(default: the one its manifest names)."),
    engine_only: bool = typer.Option(False, "--engine-only", help="Only the engine alone, no slides."),
    end_to_end_only: bool = typer.Option(False, "--end-to-end-only", help="Only slides, no engine benchmark."),
    generate: str = typer.Option("10x8", help="Size of the generated slide, WIDTHxHEIGHT in mm."),
    generated_mpp: float = typer.Option(0.25, help="Level-0 µm/px of the generated slide (0.25: a 40x scan)."),
    reader_threads: Optional[int] = typer.Option(None, min=1, help="Reader threads, as for `tseg-rt run`."),
    level_tolerance: float = typer.Option(0.0, min=0.0, max=50.0, help="As for `tseg-rt run` (percent)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the whole result here (JSON)."),
    check: bool = typer.Option(False, "--check", help="The GPU check: CUDA executor, PyTorch rows, engine rows."),
    check_time_limit: float = typer.Option(600.0, min=20, help="--check: the whole check's time limit (s)."),
    compare: Optional[Tuple[Path, Path]] = typer.Option(None, "--compare", help="Two --json results side by side."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Measure throughput on this machine: the engine alone (s/tile, MP/s, TFLOP/s, memory, copy
    rates), whole slides (slides/hour, stage shares, limiting stage and advice), --check, --compare."""
    setup_logging(verbose)
    from rich.console import Console

    console = Console(stderr=True)
    with reported():
        if compare:
            from tseg.runtime.bench.compare import caveats
            from tseg.runtime.bench.compare import compare as compare_results
            from tseg.runtime.bench.machine import describe_machine
            from tseg.runtime.bench.report import format_compare
            from tseg.runtime.bench.result import load_result

            a, b = (load_result(p) for p in compare)
            typer.echo(format_compare(compare_results(a, b), f"{compare[0].name}", f"{compare[1].name}"))
            typer.echo(f"\nA: {describe_machine(a['machine'])}\nB: {describe_machine(b['machine'])}")
            for note in caveats(a, b):
                typer.echo(f"Note: {note}")
            return
        if check:
            from tseg.runtime.bench.check import CheckSettings, run_check
            from tseg.runtime.bench.report import format_check
            from tseg.runtime.bench.result import write_result

            settings = CheckSettings(tile=tile or 7680, time_limit_s=check_time_limit, engine=engine, device=device)
            result = run_check(settings, on_step=lambda step, _: console.print(f"[dim]check: {step} done[/]"))
            if json_out:
                write_result(result, json_out)
            typer.echo(format_check(result))
            if not result["ok"]:
                raise typer.Exit(1)
            return
        if engine_only and end_to_end_only:
            fail("--engine-only and --end-to-end-only exclude each other")
        from tseg.runtime.bench.engine import EngineSettings
        from tseg.runtime.bench.report import format_result
        from tseg.runtime.bench.result import write_result
        from tseg.runtime.bench.run import run_bench
        from tseg.runtime.cohort.slide_lists import find_slides

        found = find_slides(slides) if slides else []
        settings = None if end_to_end_only else EngineSettings(tile=tile, tiles=tiles, warmup=warmup,
                                                               time_limit_s=time_limit, onnx=onnx)
        result = run_bench(engine, found, engine=settings, end_to_end=not engine_only, providers=providers,
                           device=device, generated_mm=_size_mm(generate), generated_mpp=generated_mpp,
                           reader_threads=reader_threads, level_tolerance=level_tolerance,
                           on_stage=lambda stage: console.print(f"[dim]bench: {stage.replace('_', ' ')} ...[/]"),
                           on_slide=lambda slide, outcome: console.print(f"[dim]  {slide.name}: {outcome.status} "
                                                                         f"in {outcome.seconds:.1f} s[/]"))
        if json_out:
            write_result(result, json_out)
        typer.echo(format_result(result))
