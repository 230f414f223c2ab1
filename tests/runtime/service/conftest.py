"""Shared fixtures of the service tests: generated slides, a deliberately slow model, and a factory
of real `tseg-rt serve` / `tseg-rt watch` processes (:mod:`service_process`), killed at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import make_colour_model, make_slow_model, make_square_slide
from service_process import ServiceProcess

#: 24 matrix products per 256 px tile: ~0.15 s a tile on 2 cores, so a square slide's 42 tiles
#: take several seconds: time to cancel or kill a job mid-slide.
SLOW_PRODUCTS = 24


@pytest.fixture(scope="module")
def slide_root(tmp_path_factory) -> Path:
    """A root folder with small generated slides (the bundled model segments one in < 1 s)."""
    root = tmp_path_factory.mktemp("root")
    make_square_slide(root / "a.tiff")
    make_square_slide(root / "b.tiff", square_um=(200, 200, 300, 300), seed=2)
    (root / "sub").mkdir()
    for i in range(10):
        make_square_slide(root / "sub" / f"s{i:02d}.tiff", width_um=800, height_um=600, tissue_um=(100, 100, 600, 400),
                          square_um=(300, 200, 200, 200), seed=10 + i)
    (root / "broken.svs").write_bytes(b"\x00" * 1001)
    (root / "notes.txt").write_text("not a slide")
    (root / ".hidden.tiff").write_bytes(b"x")
    return root


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory) -> Path:
    return make_slow_model(tmp_path_factory.mktemp("models") / "slow.onnx", SLOW_PRODUCTS)


@pytest.fixture
def service_factory(tmp_path):
    """Start services; every one still running at the end is killed."""
    started: list[ServiceProcess] = []

    def start(command: str, out: Path, *args: Any, ready: bool = True, cwd: Path | None = None) -> ServiceProcess:
        s = ServiceProcess(command, out, args, tmp_path / f"{command}-{len(started)}.log", cwd=cwd)
        started.append(s)
        return s.start(ready=ready)

    yield start
    for s in started:
        s.kill()


@pytest.fixture(scope="session")
def viewer_result(tmp_path_factory) -> dict[str, Any]:
    """A results folder with one real result: a generated slide (a dark square of known place in
    pink tissue) segmented by a real ONNX model that sees only the square (the viewer's tests)."""
    from tseg.runtime.cohort.batch import run_batch
    from tseg.runtime.execution.segmenter import Segmenter

    root = tmp_path_factory.mktemp("viewer")
    (root / "slides").mkdir()
    geometry = make_square_slide(root / "slides" / "a.tiff")
    out = root / "out"
    outcome = run_batch([(root / "slides" / "a.tiff").resolve()], out, Segmenter(make_colour_model(root / "m.onnx")))
    assert outcome[0].status == "done"
    return {"root": root, "out": out, **geometry}
