"""``tseg-rt export`` (checkpoint to ONNX) and ``tseg-rt build-engine`` (ONNX to a TensorRT plan)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tseg.runtime.cli.common import need_torch, reported, setup_logging


def export(
    checkpoint: Path = typer.Argument(..., help="A tseg checkpoint (from `train fit` or `train import`)."),
    out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write."),
    precision: str = typer.Option("fp32", help="fp32, or fp16 (mixed precision for TensorRT; the FP32 graph is kept beside it)."),
    traced_size: int = typer.Option(512, help="Tile side used for tracing (a multiple of the divisor)."),
    tile_size: int = typer.Option(7680, help="Inference tile side recorded in the contract (paper: 7680)."),
    min_overlap: int = typer.Option(1024, help="Minimum tile overlap recorded in the contract (paper: 1024)."),
    low: int = typer.Option(85, help="Default hysteresis low threshold recorded in the contract."),
    high: int = typer.Option(229, help="Default hysteresis high threshold recorded in the contract."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    parity: bool = typer.Option(True, "--parity/--no-parity", help="Check the graph against PyTorch (recommended)."),
    measure_memory: bool = typer.Option(
        True, "--measure-memory/--no-measure-memory",
        help="Measure the model's memory on the CPU (a tile of at most 2048 px and one of half that side, each in a "
             "fresh process) and record it "
             "in its contract, for the memory check that refuses slides too large for the machine; without it, "
             "the model is counted as heavy as the paper's network."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Export a checkpoint to an ONNX graph of the whole tile computation, with a parity report."""
    setup_logging(verbose)
    need_torch("export")

    from tseg.export.onnx_export import export_checkpoint

    with reported():
        report = export_checkpoint(checkpoint, out, precision=precision, traced_size=(traced_size, traced_size),
                                   tile_size=tile_size, min_overlap=min_overlap, low=low, high=high,
                                   overwrite=overwrite, check_parity=parity, measure_memory=measure_memory)
    typer.echo(json.dumps({"onnx": str(report.onnx), "parity": report.parity, "graph_fixes": report.fixes,
                           "working_memory": report.contract.get("working_memory", {}),
                           "seconds": round(report.seconds, 1)}, indent=2))


def build_engine(
    onnx_model: Path = typer.Argument(..., help="ONNX from `tseg-rt export` (use --precision fp16 there for FP16)."),
    out: Path = typer.Option(..., "--out", "-o", help="Engine file to write (e.g. model.plan); the manifest goes beside it."),
    min_tile: int = typer.Option(512, help="Smallest tile side the engine accepts."),
    opt_tile: int = typer.Option(7680, help="Tile side TensorRT optimises for (paper: 7680)."),
    max_tile: int = typer.Option(7680, help="Largest tile side (7680: batch 1 only, TensorRT's 2^31 limit)."),
    workspace_gb: float = typer.Option(8.0, help="Builder workspace limit in GiB (lower it if the build runs out of memory)."),
    optimization_level: int = typer.Option(3, min=0, max=5, help="TensorRT builder optimisation level."),
    timing_cache: Optional[Path] = typer.Option(None, help="Persistent timing cache (default ~/.cache/tseg-rt)."),
    device: int = typer.Option(0, help="GPU index to build on."),
    fp16_flag: bool = typer.Option(True, "--fp16-flag/--no-fp16-flag", help="TensorRT 10.x: FP16 builder flag for FP32 graphs."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Build a TensorRT engine for this GPU from an exported ONNX model."""
    setup_logging(verbose)

    from tseg.engines.build import BuildSettings, build_engine as build

    settings = BuildSettings(min_tile, opt_tile, max_tile, workspace_gb, optimization_level,
                             str(timing_cache) if timing_cache else None, device, fp16_flag)
    with reported():
        manifest = build(onnx_model, out, settings, overwrite=overwrite)
    typer.echo(json.dumps(manifest.to_dict(), indent=2))
