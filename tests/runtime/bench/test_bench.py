"""``tseg-rt bench`` for real, on the CPU: the bundled model on ONNX Runtime, small tiles, small slides.

The numbers must be present and consistent with each other (rates from the times, TFLOP/s from
the graph's count, shares adding up to 100 % of the recorded stage times); no timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import make_square_slide
from tseg.runtime.bench.end_to_end import generated_slide, reading_facts
from tseg.runtime.bench.flops import count_flops
from tseg.runtime.bench.stages import STAGES, stage_seconds
from tseg.runtime.models import default_model_path


def tseg_rt(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory):
    return dict(os.environ, TSEG_BENCH_CACHE=str(tmp_path_factory.mktemp("bench-cache")))


@pytest.fixture(scope="module")
def run(tmp_path_factory, bench_env):
    """One run: the engine alone at 256², a generated slide and a corrupt one end to end."""
    d = tmp_path_factory.mktemp("bench")
    slides = d / "slides"
    slides.mkdir()
    make_square_slide(slides / "square.tiff")
    (slides / "corrupt.tiff").write_bytes(b"not a slide")
    out = d / "a.json"
    r = tseg_rt("--tile", "256", "--tiles", "3", "--warmup", "1", str(slides), "--json", str(out), env=bench_env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text()), r.stdout, out


@pytest.mark.slow
def test_the_engine_alone(run):
    data, stdout, _ = run
    assert data["schema"] == "tseg-rt-bench/1" and data["kind"] == "bench" and "demonstration model" in data["note"]
    e = data["engine"]
    assert e["model"]["kind"] == "onnxruntime" and e["tile"] == [256, 256] and e["tiles_timed"] == 3
    s = e["s_per_tile"]
    assert 0 < s["min"] <= s["median"] <= s["p99"] and len(e["s_per_tile_all"]) == 3
    assert e["megapixels_per_s"] == pytest.approx(256 * 256 / 1e6 / s["median"])
    flop = count_flops(default_model_path(), 256, 256)
    assert e["flop"]["flop"] == flop.flop and e["flop"]["convention"] == "1 multiply-add = 2 FLOP"
    assert e["tflop_per_s"] == pytest.approx(flop.tflop / s["median"])
    assert e["streamed_s_per_tile"] is None  # ONNX Runtime does not overlap copies: nothing to stream
    assert e["host_memory"]["peak_rss_bytes"] > 0
    assert "no CUDA device" in e["copy_rates"]["skipped"] and "device_memory" not in e
    assert "MP/s" in stdout and "TFLOP/s" in stdout


@pytest.mark.slow
def test_whole_slides_with_stage_shares_and_advice(run):
    data, stdout, _ = run
    r = data["end_to_end"]
    assert r["slides"] == 1 and [p["name"] for p in r["per_slide"]] == ["square"]
    assert len(r["failed"]) == 1 and "corrupt.tiff" in r["failed"][0]["slide"]
    slide = r["per_slide"][0]
    assert slide["timings_s"]["outputs_s"] > 0  # recorded by write_outputs in the slide's summary.json
    assert r["stage_seconds"] == pytest.approx(stage_seconds(slide["timings_s"]))
    assert sum(r["stage_shares_percent"].values()) == pytest.approx(100.0)
    assert set(r["stage_shares_percent"]) == set(STAGES)
    assert r["slides_per_hour"] == pytest.approx(3600 / slide["wall_s"])
    assert r["backend_busy"] == pytest.approx(r["stage_seconds"]["infer"] / r["wall_s"])
    assert r["limiting_stage"] == max(STAGES, key=lambda k: r["stage_seconds"][k]) and r["advice"]
    assert slide["reading"]["level"] == 0 and slide["reading"]["source_pixels_per_network_pixel"] == pytest.approx(4)
    assert "slides/hour" in stdout and "FAILED" in stdout and "limiting stage" in stdout


@pytest.mark.slow
def test_the_machine_is_described(run):
    m = run[0]["machine"]
    assert m["cpu"]["usable_cores"] >= 1 and m["memory"]["total_bytes"] > 0
    assert m["onnxruntime"]["version"] and "CPUExecutionProvider" in m["onnxruntime"]["providers"]
    assert m["libraries"]["tseg-rt"] and "devices" in m["gpu"]


@pytest.mark.slow
def test_compare_two_results(run, tmp_path, bench_env):
    data, _, path = run
    faster = dict(data, engine=dict(data["engine"], s_per_tile=dict(data["engine"]["s_per_tile"])))
    faster["engine"]["s_per_tile"]["median"] = data["engine"]["s_per_tile"]["median"] / 2
    other = tmp_path / "b.json"
    other.write_text(json.dumps(faster))
    r = tseg_rt("--compare", str(path), str(other), env=bench_env)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("engine: s/tile median"))
    assert "0.500" in line and "B 2.00x faster" in line
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = tseg_rt("--compare", str(path), str(bad), env=bench_env)
    assert r.returncode == 2 and "bad.json: not a tseg-rt bench result" in r.stderr


@pytest.mark.slow
def test_check_without_a_gpu_skips_every_step_with_the_reason(tmp_path, bench_env):
    from tseg.runtime.execution.cuda import device_count

    if device_count():
        pytest.skip("a GPU is visible: the check would run for real")
    out = tmp_path / "check.json"
    r = tseg_rt("--check", "--json", str(out), env=bench_env)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["kind"] == "check" and set(data["steps"]) == {"executor", "pytorch", "engine"}
    assert all("no CUDA device 0" in s["skipped"] for s in data["steps"].values())
    assert data["ok"] and data["rows"] == [] and "skipped" in r.stdout


@pytest.mark.slow
def test_generated_slide_is_cached_and_reading_facts_suggest_a_tolerance(tmp_path):
    """An Aperio-like 0.2527 µm/px scan: its 4x level (989 x 791 px over 3957 x 3165: downsample
    4.0013) is 1.11 % coarser than the network's 1 µm/px, so level 0 is read (15.7 source pixels
    per network pixel) unless ``--level-tolerance 1.2`` (rounded up to a tenth) allows the 4x level."""
    from tseg.runtime.execution.segmenter import Segmenter

    path = generated_slide(1.0, 0.8, 0.2527, cache=tmp_path)
    assert path.is_file() and generated_slide(1.0, 0.8, 0.2527, cache=tmp_path) == path
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary folder left behind
    with Segmenter() as segmenter:
        facts = reading_facts(path, segmenter)
        assert facts["level"] == 0 and facts["source_pixels_per_network_pixel"] == pytest.approx(1 / 0.2527 ** 2, rel=1e-3)
        assert facts["tolerance_percent"] == 1.2 and facts["tolerance_level"] == 1
        assert facts["tolerance_fewer_pixels"] == pytest.approx(16, rel=0.01)
        tolerant = reading_facts(path, segmenter.with_settings(level_tolerance=1.2))
        assert tolerant["level"] == 1 and tolerant["tolerance_percent"] is None


@pytest.mark.slow
def test_bad_options_are_refused(bench_env):
    r = tseg_rt("--engine-only", "--end-to-end-only", env=bench_env)
    assert r.returncode == 2 and "exclude each other" in r.stderr
    r = tseg_rt("--generate", "ten", env=bench_env)
    assert r.returncode == 2 and "WIDTHxHEIGHT" in r.stderr


def test_without_warm_up_the_first_timed_call_is_the_first_call(tmp_path):
    """``--warmup 0`` printed "first call n/a s": the first call was timed, but reported nowhere."""
    from helpers import make_colour_model
    from tseg.runtime.bench.engine import EngineSettings, bench_engine
    from tseg.runtime.bench.report import format_engine

    model = make_colour_model(tmp_path / "m.onnx", tile=256, overlap=32)
    result, backend = bench_engine(model, EngineSettings(tile=256, tiles=2, warmup=0, copy_rates=False), providers="cpu")
    backend.close()
    assert result["first_call_s"] == result["s_per_tile_all"][0] > 0
    assert "n/a" not in "\n".join(format_engine(result))
