"""``tseg-rt info``: describe a slide, an ONNX model, a TensorRT engine or a folder of plans."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from tseg.runtime.cli.common import fail, mpp_option, reported
from tseg.runtime.cli.options import MaxSlideMm, slide_option
from tseg.runtime.wsi.limits import MAX_SLIDE_MM

AllowNonBrightfield = slide_option("allow_non_brightfield")  # declared once, in SlideOptions


def info(
    path: str = typer.Argument(..., help="A slide, a DICOM series folder, a DICOMweb series URL, an .onnx model, a "
                                         ".plan engine or a folder of plans."),
    mpp: Optional[str] = typer.Option(None, help="Override the slide's level-0 resolution (µm/px)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    max_slide_mm: MaxSlideMm = MAX_SLIDE_MM,
    allow_non_brightfield: AllowNonBrightfield = False,
) -> None:
    """Describe a slide (vendor, levels, MPP, size in mm), a model (its contract, and whether
    TensorRT's ONNX parser will take it) or an engine (its manifest)."""
    mpp_value = mpp_option(mpp)
    from tseg.runtime.wsi.locator import is_remote

    if is_remote(path):
        from tseg.runtime.wsi.slide import describe_slide

        with reported():
            data = describe_slide(path, mpp_value, max_slide_mm, allow_non_brightfield, _default_model_memory())
        _show(data, as_json)
        return
    path = Path(path)
    if not path.exists():
        fail(f"{path}: no such file or folder")
    with reported():
        suffix = path.suffix.lower()
        from tseg.runtime.execution.backends.tensorrt_loader import plans_in

        if suffix in (".plan", ".engine", ".trt"):
            from tseg.runtime.execution.engine_manifest import read_manifest

            data = read_manifest(path).to_dict()
        elif path.is_dir() and plans_in(path):  # a folder of plans (one per GPU type)
            from tseg.runtime.execution.engine_manifest import read_manifest

            data = {"plans": {p.name: {k: v for k, v in read_manifest(p, verify=False).to_dict().items()
                                       if k in ("tensorrt_version", "gpu", "precision", "plan_sha256", "onnx")}
                              for p in plans_in(path)}}
        elif suffix == ".onnx":
            from tseg.runtime.execution.backends import load_backend

            with load_backend(path, providers="cpu") as backend:
                data = {"model": str(path), "contract": backend.contract.to_dict(),
                        "sha256": backend.sha256}
            try:
                from tseg.engines.conformance import TENSORRT_FLOOR, check_onnx_file

                found = check_onnx_file(path, backend.contract.input_name, backend.contract.output_name)
                data["tensorrt_parser"] = {"floor": TENSORRT_FLOOR, "conforms": not found,
                                           "violations": [str(v) for v in found]}
            except ImportError:  # onnx missing: the check is informative only
                pass
        else:
            from tseg.runtime.wsi.slide import describe_slide

            data = describe_slide(path, mpp_value, max_slide_mm, allow_non_brightfield, _default_model_memory())
    _show(data, as_json)


def _show(data: dict, as_json: bool) -> None:
    """Print what ``info`` found: JSON, or a readable tree (and what ``run`` would refuse)."""
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console

    from tseg.runtime.cli.info_text import describe

    for line in describe(data):
        typer.echo(line)
    for problem in (data.get("limits") or {}).get("problems", []) if isinstance(data, dict) else []:
        Console(stderr=True).print(f"[yellow]`tseg-rt run` would refuse it: {escape_text(problem)}[/]",
                                   highlight=False, soft_wrap=True)
    if isinstance(data, dict) and data.get("resolution"):
        Console(stderr=True).print(f"[yellow]resolution {escape_text(data['resolution'])}[/] To segment it: "
                                   "tseg-rt run --mpp MICRONS_PER_PIXEL ...", highlight=False, soft_wrap=True)


def escape_text(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _default_model_memory() -> Any:
    """The memory of the model ``run`` uses without ``--engine`` (the bundled one), as its contract
    records it; "cpu" (a model not measured) when it is missing."""
    from tseg.runtime.errors import ModelNotFoundError
    from tseg.runtime.execution.working_memory import recorded_memory
    from tseg.runtime.models import default_model_path

    try:
        return recorded_memory(default_model_path(), "the bundled model (what `tseg-rt run` uses without --engine)")
    except ModelNotFoundError:
        return "cpu"
