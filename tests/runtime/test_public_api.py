"""The public API: what ``from tseg.runtime import ...`` gives, and the ``tseg-rt`` commands, their
options and exit statuses. Changing any of them is changing the API: update this list, the
guide pages of docs/ (and regenerate docs/reference/: tools/gen_reference.py), and say so in the
commit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

import tseg.runtime
from tseg.runtime.cli.common import EXIT_CODES
from tseg.runtime.cli.main import app

DOCS = Path(__file__).resolve().parents[2] / "docs"


def guides() -> str:
    """The documentation site's guide pages (the reference pages are generated from the code)."""
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")))

#: Name -> the module that defines it.
LIBRARY = {
    "Segmenter": "tseg.runtime.execution.segmenter",
    "Result": "tseg.runtime.execution.segmenter",
    "Slide": "tseg.runtime.wsi.slide",
    "open_slide": "tseg.runtime.wsi.slide",
    "TsegError": "tseg.runtime.errors",
    "load_backend": "tseg.runtime.execution.backends",
    "run_batch": "tseg.runtime.cohort.batch",
    "write_report": "tseg.runtime.cohort.report",
    "write_outputs": "tseg.runtime.outputs.files",
    "render_overlay": "tseg.runtime.outputs.overlay",
    "OverlayLegend": "tseg.runtime.outputs.overlay",
}

#: Every command, its arguments (upper case, in order) and options (``--on|--off`` for flags).
COMMANDS = {
    "run": ["SLIDES", "--out/-o", "--engine/-e", "--mpp", "--csv", "--low", "--high", "--reader-threads",
            "--level-tolerance", "--dct-scaling", "--allow-non-brightfield", "--max-slide-mm", "--overlay-style", "--overlay-opacity", "--overwrite", "--workers", "--devices", "--providers", "--ray",
            "--shard", "--report|--no-report", "--wait-for-locks|--no-wait-for-locks", "--progress|--no-progress",
            "--dicom-out", "--dicom-wsi", "--dicom-metadata", "--stow", "--stow-stand-in", "--dicomweb-credentials", "--verbose/-v"],
    "info": ["PATH", "--mpp", "--json", "--max-slide-mm", "--allow-non-brightfield"],
    "postprocess": ["RESULTS", "--low", "--high", "--prune|--no-prune", "--overlay-style", "--overlay-opacity"],
    "report": ["RESULTS", "--slides", "--csv", "--shards", "--review-margin", "--thumbnails|--no-thumbnails", "--title"],
    "eval": ["--pred", "--ref", "--out/-o", "--cohorts", "--classes", "--sweep", "--repair-annotations"],
    "demo": ["--out/-o", "--engine/-e", "--progress|--no-progress", "--verbose/-v", "--slide-only"],
    "export": ["CHECKPOINT", "--out/-o", "--precision", "--traced-size", "--tile-size", "--min-overlap", "--low",
               "--high", "--overwrite", "--parity|--no-parity", "--measure-memory|--no-measure-memory", "--verbose/-v"],
    "build-engine": ["ONNX_MODEL", "--out/-o", "--min-tile", "--opt-tile", "--max-tile", "--workspace-gb",
                     "--optimization-level", "--timing-cache", "--device", "--fp16-flag|--no-fp16-flag", "--overwrite",
                     "--verbose/-v"],
    "train prepare": ["SLIDES_CSV", "--out/-o", "--tile-size", "--mpp", "--classes", "--repair-annotations",
                      "--reader-threads", "--verbose/-v"],
    "train stats": ["--index", "--out/-o"],
    "train fit": ["--config/-c", "--index", "--out/-o", "--device", "--resume|--no-resume", "--verbose/-v"],
    "train import": ["PUBLISHED", "--out/-o", "--trust"],
    "serve": ["--out/-o", "--root", "--engine/-e", "--host", "--port", "--token-file", "--devices", "--providers",
              "--reader-threads", "--max-slide-mm", "--watch", "--settle", "--poll", "--report|--no-report",
              "--report-interval", "--keep-days", "--max-queued", "--mpp", "--low", "--high", "--prune|--no-prune",
              "--level-tolerance", "--dct-scaling", "--allow-non-brightfield", "--overlay-style", "--overlay-opacity",
              "--dicom-out", "--dicom-wsi", "--dicom-metadata", "--stow", "--stow-stand-in",
              "--dicomweb-credentials", "--verbose/-v"],
    "watch": ["FOLDER", "--out/-o", "--engine/-e", "--settle", "--poll", "--retry-failed", "--devices", "--providers",
              "--reader-threads", "--max-slide-mm", "--report|--no-report", "--report-interval", "--keep-days", "--mpp",
              "--low", "--high", "--prune|--no-prune", "--level-tolerance", "--dct-scaling", "--allow-non-brightfield",
              "--overlay-style", "--overlay-opacity", "--dicom-out", "--dicom-wsi", "--dicom-metadata", "--stow", "--stow-stand-in",
              "--dicomweb-credentials", "--verbose/-v"],
    "view": ["RESULTS", "--host", "--port", "--token-file", "--cache-mb", "--open", "--verbose/-v"],
    "bench": ["SLIDES", "--engine/-e", "--providers", "--device", "--tile", "--tiles", "--warmup", "--time-limit",
              "--onnx", "--engine-only", "--end-to-end-only", "--generate", "--generated-mpp", "--reader-threads",
              "--level-tolerance", "--json", "--check", "--check-time-limit", "--compare", "--verbose/-v"],
}

#: The documented exit statuses (docs/slides.md, *Exit status*).
EXIT_STATUSES = {0, 1, 2, 3, 130, 143}


def command_table() -> dict[str, list[str]]:
    """What the command line has, from the click commands typer builds."""

    def walk(command, prefix: str) -> dict[str, list[str]]:
        if hasattr(command, "commands"):  # a group
            found = {}
            for name, sub in command.commands.items():
                found.update(walk(sub, f"{prefix} {name}".strip()))
            return found
        params = []
        for p in command.params:
            if p.param_type_name == "argument":
                params.append(p.name.upper())
            else:
                params.append("/".join(sorted(p.opts)) + ("|" + "/".join(sorted(p.secondary_opts))
                                                          if p.secondary_opts else ""))
        return {prefix: params}

    return walk(typer.main.get_command(app), "")


def test_the_library_api():
    assert sorted(tseg.runtime.__all__) == sorted(LIBRARY)
    from tseg.runtime import (OverlayLegend, Result, Segmenter, Slide, TsegError, load_backend, open_slide,
                              render_overlay, run_batch, write_outputs, write_report)

    import importlib

    for name, value in [("Segmenter", Segmenter), ("Result", Result), ("Slide", Slide), ("open_slide", open_slide),
                        ("TsegError", TsegError), ("load_backend", load_backend), ("run_batch", run_batch),
                        ("write_report", write_report), ("write_outputs", write_outputs),
                        ("render_overlay", render_overlay), ("OverlayLegend", OverlayLegend)]:
        assert value is getattr(importlib.import_module(LIBRARY[name]), name), name
    assert issubclass(TsegError, Exception)


def test_the_commands_and_their_options():
    have = command_table()
    assert sorted(have) == sorted(COMMANDS), "commands added or removed: update COMMANDS and the pages of docs/"
    for name, params in COMMANDS.items():
        args = [p for p in params if not p.startswith("-")]
        assert [p for p in have[name] if not p.startswith("-")] == args, f"tseg-rt {name}: arguments changed"
        assert sorted(p for p in have[name] if p.startswith("-")) == sorted(p for p in params if p.startswith("-")), \
            f"tseg-rt {name}: options changed (update COMMANDS and the pages of docs/)"


def test_every_command_is_in_a_guide_page():
    text = guides()
    for name in COMMANDS:
        assert f"tseg-rt {name}" in text, f"`tseg-rt {name}` is not documented in a page of docs/"


def test_the_exit_statuses_are_documented():
    assert set(EXIT_CODES) == EXIT_STATUSES
    text = " ".join((DOCS / "slides.md").read_text(encoding="utf-8").split())
    said = re.search(r"\*\*Exit status\.\*\*(.*?)(?:\n- |\Z)", text)
    assert said, "docs/slides.md: the **Exit status.** paragraph is gone"
    for code in EXIT_STATUSES - {0}:
        assert re.search(rf"\b{code}\b", said.group(1)), f"docs/slides.md's exit status paragraph does not mention {code}"


@pytest.mark.parametrize("args, code, says", [
    (["--help"], 0, "Pan-cancer tumour segmentation"),
    (["run"], 2, "give slides, folders or --csv"),
    (["run", "x.svs", "--mpp", "abc"], 2, "--mpp takes a number"),
    (["run", "x.svs", "--low", "300"], 2, "less than or equal to 255"),
    (["run", "x.svs", "--no-such-option"], 2, "No such option"),
    (["run", "x.svs", "--low", "200", "--high", "100"], 2, "low < high"),
    (["info", "/no/such/slide.svs"], 2, "no such file or folder"),
    (["postprocess", "/no/such/results"], 2, "no such file or folder"),
    (["run", "x.svs", "--overlay-style", "opaque"], 2, "overlay style must be one of fill, contour, heatmap"),
    (["run", "x.svs", "--overlay-opacity", "1.5"], 2, "--overlay-opacity"),
    (["postprocess", "x", "--overlay-style", "opaque"], 2, "overlay style must be one of fill, contour, heatmap"),
    (["serve", "--overlay-style", "opaque"], 2, "overlay style must be one of fill, contour, heatmap"),
    (["watch", "in", "--overlay-opacity", "2"], 2, "--overlay-opacity"),
    (["serve", "--stow", "http://user:pw@127.0.0.1:1/dicom-web"], 2, "the URL for 127.0.0.1 contains"),
])
def test_errors_before_any_slide_exit_2(args, code, says):
    """Bad options and missing inputs stop the command before any slide or model is read (the
    statuses 1 and 130 are tested with real batches in tests/runtime/cohort/)."""
    r = CliRunner().invoke(app, args)
    assert r.exit_code == code, r.output
    assert says in " ".join(r.output.split())
