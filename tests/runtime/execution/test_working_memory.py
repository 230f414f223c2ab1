"""A model's CPU memory, measured per model and recorded in its contract, counts in the estimate
that refuses a slide before any pixel is read (issue 30, item 13: the estimate used one model's
figure for every model, and a paper-sized network peaked at 1.7x the estimate)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import REPO, add_to_probability, make_colour_model, make_square_slide
from tseg.runtime.errors import ContractError, ModelError, SlideTooLargeError
from tseg.runtime.execution.contract import METADATA_KEY, ModelContract
from tseg.runtime.execution.working_memory import MAX_MEASURE_PX, measure_cpu, measure_side, recorded_memory
from tseg.runtime.wsi.limits import (GPU, MEASURED_MARGIN, UNMEASURED_CPU, BackendMemory, backend_memory,
                                     slide_budget)

#: The paper-sized network as measured here (eca_nfnet_l3 + DeepLabV3+, FP32, one 2048 px tile).
PAPER_ENTRY = {"session_bytes": 864_000_000, "tile_bytes": 1_410_000_000, "side": 2048, "bytes_per_px": 336.2,
               "threads": 2, "onnxruntime": "1.32.0"}
BUNDLED_ENTRY = {"session_bytes": 32_600_000, "tile_bytes": 520_000_000, "side": 2048, "bytes_per_px": 124.0,
                 "threads": 2, "onnxruntime": "1.32.0"}


def cpu_backend(entry=None):
    """A loaded CPU backend as the estimate sees it: its kind, providers and contract."""
    contract = ModelContract(working_memory={"cpu": entry} if entry else {})
    return SimpleNamespace(kind="onnxruntime", providers=["CPUExecutionProvider"], contract=contract)


def make_wide_model(path: Path, tile: int = 512, channels: int = 96) -> Path:
    """The colour model plus one float tensor of ``channels`` channels per pixel (4 x ``channels``
    bytes a pixel, live while it is reduced), whose contribution to the output is zero."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(make_colour_model(path, tile=tile, overlap=32)))
    g = model.graph
    g.initializer.extend([helper.make_tensor("wide_repeats", TensorProto.INT64, [4], [1, 1, 1, channels // 3]),
                          helper.make_tensor("wide_zero", TensorProto.FLOAT, [], [0.0])])
    add_to_probability(model, [helper.make_node("Tile", ["xf", "wide_repeats"], ["wide"]),
                               helper.make_node("ReduceMin", ["wide"], ["wide_min"], axes=[3], keepdims=1),  # opset 17
                               helper.make_node("Mul", ["wide_min", "wide_zero"], ["wide_nothing"])], "wide_nothing")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# --- the estimate, from the figures ---------------------------------------------------------------


def test_the_line_through_two_tiles_never_falls_below_them():
    from tseg.runtime.execution.working_memory import fit_line

    # The bundled model: 220 MiB at 1024 px, 497 MiB at 2048 px: 128 MiB + 92 B a pixel.
    fixed, per_px = fit_line((1024**2, 230_555_648), (2048**2, 520_724_480))
    assert per_px == pytest.approx(92.24, abs=0.01) and fixed == pytest.approx(133_832_704, abs=64)
    # The smaller tile reusing memory freed by the loading (a negative fixed part): through 0 and
    # the larger point, above the smaller one.
    fixed, per_px = fit_line((512**2, 1_000_000), (1024**2, 269_500_000))
    assert fixed == 0 and per_px == pytest.approx(269_500_000 / 1024**2, abs=0.01)
    assert fit_line((512**2, 100), (512**2, 1_048_576)) == (0, 4.0)  # one point: through 0


def test_measure_side_is_the_tile_at_most_2048_px_on_the_divisor():
    assert MAX_MEASURE_PX == 2048
    assert measure_side(7680, 32) == 2048 and measure_side(7680, 16) == 2048
    assert measure_side(1000, 16) == 1008 and measure_side(512, 16) == 512 and measure_side(2040, 48) == 2064


def test_each_model_is_counted_with_its_own_working_memory():
    """Same slide, same tile, same machine: the paper-sized network needs 2.7x the bundled model's
    working memory per tile, and the estimate now says so (it used to count one figure for both)."""
    bundled, paper = (slide_budget((3, 2), (3000, 2000), tile_px=7680, machine_bytes=1,
                                   backend=backend_memory(cpu_backend(e))) for e in (BUNDLED_ENTRY, PAPER_ENTRY))
    b, p = dict(bundled.parts), dict(paper.parts)
    # One tile covers the slide (3000 x 2000 px); per pixel the measurement, plus the margin.
    assert b["backend"] == int(124.0 * MEASURED_MARGIN * 3000 * 2000)
    assert p["backend"] == int(336.2 * MEASURED_MARGIN * 3000 * 2000)
    assert p["backend"] > 2.7 * b["backend"] and p["model"] == 864_000_000 and b["model"] == 32_600_000
    assert paper.needed_bytes - bundled.needed_bytes == (p["backend"] + p["model"]) - (b["backend"] + b["model"])
    # The working memory grows with the tile's area.
    small = dict(slide_budget((10, 10), (10000, 10000), tile_px=1024, machine_bytes=1,
                              backend=backend_memory(cpu_backend(PAPER_ENTRY))).parts)
    assert small["backend"] == int(336.2 * MEASURED_MARGIN * 1024 * 1024)


def test_a_model_without_a_measurement_is_taken_as_heavy_as_the_papers_network():
    unmeasured = backend_memory(cpu_backend(None))
    assert unmeasured == UNMEASURED_CPU
    assert unmeasured.bytes_per_px >= PAPER_ENTRY["bytes_per_px"] and unmeasured.model_bytes >= PAPER_ENTRY["session_bytes"]
    budget = slide_budget((20, 15), (20000, 15000), tile_px=7680, machine_bytes=8 * 10**9)
    assert budget.backend_basis == UNMEASURED_CPU.basis
    assert "not measured" in budget.memory_problem and "python -m tseg.export.working_memory" in budget.memory_problem
    measured = slide_budget((20, 15), (20000, 15000), tile_px=7680, machine_bytes=8 * 10**9,
                            backend=backend_memory(cpu_backend(BUNDLED_ENTRY)))
    assert "not measured" not in measured.memory_problem and "measured for this model" in measured.backend_basis


def test_a_gpu_backend_counts_its_host_side_only():
    gpu = SimpleNamespace(kind="tensorrt", contract=ModelContract(working_memory={"cpu": PAPER_ENTRY}))
    assert backend_memory(gpu) == GPU
    assert dict(slide_budget((10, 10), (10000, 10000), tile_px=7680, backend="gpu", machine_bytes=1).parts)[
        "backend"] < 1e9
    with pytest.raises(Exception, match="backend must be"):
        slide_budget((1, 1), (1000, 1000), backend="tpu")


def test_the_contract_carries_the_measurement_and_refuses_a_malformed_one():
    c = ModelContract(working_memory={"cpu": PAPER_ENTRY, "future-kind": "left alone"})
    again = ModelContract.from_json(c.to_json())
    assert again.working_memory["cpu"] == PAPER_ENTRY and again == c
    for bad in ({"cpu": {**PAPER_ENTRY, "bytes_per_px": -1}}, {"cpu": {**PAPER_ENTRY, "side": 0}},
                {"cpu": {k: v for k, v in PAPER_ENTRY.items() if k != "session_bytes"}}, {"cpu": 5}, [1],
                {"cpu": {**PAPER_ENTRY, "fixed_bytes": -5}}, {"cpu": {**PAPER_ENTRY, "bytes_per_px": True}}):
        with pytest.raises(ContractError, match="working_memory"):
            ModelContract.from_dict({**ModelContract().to_dict(), "working_memory": bad}, "m.onnx")


def test_the_bundled_model_records_its_measurement_and_info_uses_it():
    from tseg.runtime.models import default_model_path

    memory = recorded_memory(default_model_path(), "bundled")
    assert memory.basis.startswith("bundled: measured for this model on the CPU")
    assert 50 < memory.bytes_per_px < 300 and 0 < memory.model_bytes < 200 * 2**20


def test_a_segmenter_is_refused_by_its_own_models_measurement(tmp_path):
    """End to end: the same slide and machine limit; the model recorded as needing 20 kB per tile
    pixel (a 512 px tile: 5.8 GB) is refused before any pixel is read, the light one runs."""
    from tseg.runtime.execution.segmenter import Segmenter

    slide = make_square_slide(tmp_path / "s.tiff")["path"]
    heavy = make_colour_model(tmp_path / "heavy.onnx", tile=512, overlap=32,
                              working_memory={"cpu": {**BUNDLED_ENTRY, "bytes_per_px": 20000.0, "side": 512}})
    light = make_colour_model(tmp_path / "light.onnx", tile=512, overlap=32,
                              working_memory={"cpu": {**BUNDLED_ENTRY, "bytes_per_px": 100.0, "side": 512}})
    with pytest.raises(SlideTooLargeError, match="the model's working memory for one tile 5.8 GB"):
        Segmenter(heavy, memory_bytes=4 * 10**9).segment_slide(slide)
    assert Segmenter(light, memory_bytes=4 * 10**9).segment_slide(slide).summary["tiles"]["tiles_total"] > 0


# --- the measurement, for real ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_wider_network_measures_wider(tmp_path):
    """Measured in a fresh process at the model's tile: a graph that holds a 96-channel float
    tensor per pixel (384 B/px) needs at least 300 B/px more than the same graph without it."""
    narrow = measure_cpu(make_colour_model(tmp_path / "narrow.onnx", tile=512, overlap=32))
    wide = measure_cpu(make_wide_model(tmp_path / "wide.onnx", tile=512))
    for entry in (narrow, wide):
        assert (entry["side"], entry["half_side"]) == (512, 256) and entry["threads"] >= 1 and entry["session_bytes"] >= 0
        # The line through the two tiles: at or above both points, never a negative fixed part.
        line = [entry["fixed_bytes"] + entry["bytes_per_px"] * side**2 for side in (256, 512)]
        assert line[0] >= entry["half_tile_bytes"] - 512**2 and line[1] >= entry["tile_bytes"] - 512**2
        assert entry["fixed_bytes"] >= 0
        ModelContract(working_memory={"cpu": entry})  # a valid contract entry
    assert wide["bytes_per_px"] - narrow["bytes_per_px"] >= 300, (narrow, wide)
    import onnxruntime

    assert wide["onnxruntime"] == onnxruntime.__version__


@pytest.mark.slow
def test_recording_changes_only_the_contract(tmp_path):
    import onnx

    from tseg.export.working_memory import record_working_memory

    path = make_wide_model(tmp_path / "wide.onnx", tile=256)
    before = onnx.load(str(path))
    entry = record_working_memory(path, side=256)
    after = onnx.load(str(path))
    assert after.graph.SerializeToString() == before.graph.SerializeToString()
    contract = ModelContract.from_json({p.key: p.value for p in after.metadata_props}[METADATA_KEY])
    assert contract.working_memory["cpu"] == entry and contract.tile_size == 256
    assert recorded_memory(path).bytes_per_px == pytest.approx(entry["bytes_per_px"] * MEASURED_MARGIN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.onnx"]  # no temporary file left
    # The command line, on a model without a contract: refused, naming the file; nothing written.
    bare = make_colour_model(tmp_path / "bare.onnx", contract=False)
    data = bare.read_bytes()
    done = subprocess.run([sys.executable, "-m", "tseg.export.working_memory", str(bare)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and str(bare) in done.stderr and "no 'tseg' contract" in done.stderr
    assert bare.read_bytes() == data


@pytest.mark.slow
def test_a_model_that_cannot_run_is_named(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="broken.onnx.*could not measure its working memory"):
        measure_cpu(broken)


def test_info_on_a_slide_says_which_models_memory_it_counts(tmp_path):
    from typer.testing import CliRunner

    from tseg.runtime.cli.main import app

    slide = make_square_slide(tmp_path / "s.tiff")["path"]
    result = CliRunner().invoke(app, ["info", str(slide), "--json"])
    assert result.exit_code == 0, result.output
    limits = json.loads(result.stdout)["limits"]
    assert limits["memory_model"].startswith("the bundled model") and "measured for this model" in limits["memory_model"]
    assert limits["memory_parts_gb"]["model"] > 0
    text = CliRunner().invoke(app, ["info", str(slide)])
    assert "model's memory: the bundled model" in text.stdout
    assert np.isfinite(limits["memory_needed_gb"])
