"""--compare: the right ratios and directions, and files that are not results refused by name."""

from __future__ import annotations

import json

import pytest

from tseg.runtime.bench.compare import change, compare
from tseg.runtime.bench.result import SCHEMA, load_result
from tseg.runtime.errors import InvalidArgumentError


def result(gpu, s_per_tile, slides_per_hour, memory, shares):
    return {"schema": SCHEMA, "machine": {"gpu": {"devices": [{"name": gpu, "compute_capability": "9.0"}]},
                                          "cpu": {"model": "EPYC", "usable_cores": 16}},
            "engine": {"model": {"path": "/m/paper.plan", "kind": "tensorrt"}, "tile": [7680, 7680],
                       "s_per_tile": {"median": s_per_tile, "min": s_per_tile, "p99": s_per_tile},
                       "megapixels_per_s": 7680 ** 2 / 1e6 / s_per_tile,
                       "device_memory": {"used_by_this_run_bytes": memory}},
            "end_to_end": {"slides_per_hour": slides_per_hour, "limiting_stage": "read",
                           "stage_shares_percent": shares}}


def test_ratios_and_directions():
    a = result("A100", 0.45, 1000.0, 8e9, {"read": 60.0, "infer": 40.0})
    b = result("H100", 0.15, 1500.0, 6e9, {"read": 75.0, "infer": 25.0})
    rows = {r["metric"]: r for r in compare(a, b)}
    assert rows["GPU"]["a"] == "A100 (9.0)" and rows["GPU"]["ratio_b_over_a"] is None
    median = rows["engine: s/tile median"]
    assert median["ratio_b_over_a"] == pytest.approx(1 / 3) and median["change"] == "B 3.00x faster"
    assert rows["engine: megapixels/s"]["change"] == "B 3.00x faster"
    assert rows["end to end: slides/hour"]["ratio_b_over_a"] == pytest.approx(1.5)
    assert rows["end to end: slides/hour"]["change"] == "B 1.50x faster"
    assert rows["engine: device memory used (GB)"]["change"] == "B 1.33x better"  # less memory
    assert rows["end to end: read share %"]["ratio_b_over_a"] == pytest.approx(1.25)
    assert rows["end to end: read share %"]["change"] == ""  # a share is neither better nor worse
    assert "engine: TFLOP/s" not in rows  # absent from both: left out
    assert change("engine: s/tile median", 1.0, 2.0, "lower") == "B 2.00x slower"
    assert change("x", 1.0, 1.001, "higher") == "same"


def test_load_result_refuses_other_files(tmp_path):
    good = tmp_path / "a.json"
    good.write_text(json.dumps({"schema": SCHEMA}))
    assert load_result(good)["schema"] == SCHEMA
    other = tmp_path / "summary.json"
    other.write_text(json.dumps({"slide": {}}))
    with pytest.raises(InvalidArgumentError, match="summary.json: not a tseg-rt bench result of schema"):
        load_result(other)
    with pytest.raises(InvalidArgumentError, match="missing.json: not a readable benchmark result"):
        load_result(tmp_path / "missing.json")


def test_different_tile_sizes_are_compared_per_megapixel():
    from tseg.runtime.bench.compare import caveats

    a = result("H200", 3.0, 1000.0, 8e9, {})  # 7680² tiles
    b = result("H200", 0.2126, 1000.0, 8e9, {})
    b["engine"]["tile"] = [2048, 2048]
    rows = {r["metric"]: r for r in compare(a, b)}
    assert rows["engine: s/tile median"]["change"] == ""  # a 2048² tile is not a 7680² tile
    per_mp = rows["engine: s/megapixel median"]
    assert per_mp["a"] == pytest.approx(3.0 / (7680 ** 2 / 1e6))
    assert per_mp["b"] == pytest.approx(0.2126 / (2048 ** 2 / 1e6))
    assert per_mp["change"] == "B 1.00x slower" or per_mp["change"] == "same"
    notes = " ".join(caveats(a, b))
    assert "7680x7680" in notes and "2048x2048" in notes and "per megapixel" in notes
    assert caveats(a, a) == []


def test_different_slide_sets_are_named():
    from tseg.runtime.bench.compare import caveats

    a = result("A100", 0.45, 1000.0, 8e9, {})
    b = result("H100", 0.15, 1500.0, 6e9, {})
    a["end_to_end"]["per_slide"] = [{"name": "generated-10x8mm", "size_at_model_mpp": [10000, 8000]}]
    b["end_to_end"]["per_slide"] = [{"name": "s1", "size_at_model_mpp": [20000, 15000]},
                                    {"name": "s2", "size_at_model_mpp": [5000, 5000]}]
    notes = " ".join(caveats(a, b))
    assert "slide sets differ" in notes and "1 slide" in notes and "2 slides" in notes
    rows = {r["metric"]: r for r in compare(a, b)}
    assert "different slides" in rows["end to end: slides/hour"]["change"]
    b["end_to_end"]["per_slide"] = list(a["end_to_end"]["per_slide"])
    assert caveats(a, b) == []
