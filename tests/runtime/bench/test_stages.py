"""Stage shares, the limiting stage and the advice, from recorded timings (no timing measured here)."""

from __future__ import annotations

import pytest

from tseg.runtime.bench.stages import STAGES, analyse, cores_for_busy_backend, shares, stage_seconds

CPU = {"kind": "onnxruntime", "providers": ["CPUExecutionProvider"]}
GPU = {"kind": "tensorrt"}


def timings(read=1.0, infer=4.0, merge=0.5, post=0.2, outputs=0.3, background=0.1, wall=None):
    return {"open_s": 0.05, "overview_s": 0.15, "background_s": background, "read_s": read, "infer_s": infer,
            "merge_s": merge, "wall_s": wall if wall is not None else max(read, infer, merge) + 0.1,
            "postprocess_s": post, "polygons_s": 0.05, "outputs_s": outputs, "total_s": 99.0}


def slide(wall_s, **kw):
    return {"timings_s": timings(**kw), "wall_s": wall_s, "tiles": {"tiles_run": 4}}


def test_stages_group_the_pipelines_own_timings_and_shares_add_up():
    s = stage_seconds(timings())
    assert s == pytest.approx({"read": 1.2, "tissue": 0.1, "infer": 4.0, "merge": 0.5, "postprocess": 0.25,
                               "outputs": 0.3})
    assert sum(shares(s).values()) == pytest.approx(100.0)
    assert shares({k: 0.0 for k in STAGES}) == {k: 0.0 for k in STAGES}
    assert stage_seconds({"infer_s": 2})["outputs"] == 0.0  # an older summary without outputs_s


def test_analysis_of_two_slides():
    r = analyse([slide(5.0), slide(7.0, infer=6.0)], GPU, usable_cores=16, reader_threads=4)
    assert r["slides"] == 2 and r["tiles_run"] == 8 and r["wall_s"] == 12.0
    assert r["slides_per_hour"] == pytest.approx(3600 * 2 / 12.0)
    assert r["stage_seconds"]["infer"] == pytest.approx(10.0)
    assert r["shares_sum_percent"] == pytest.approx(100.0)
    assert r["backend_busy"] == pytest.approx(10.0 / 12.0)
    assert r["limiting_stage"] == "infer"
    assert "GPU" in r["advice"][0] and "not more CPU cores" in r["advice"][0]
    assert analyse([], GPU, 4, 4) == {"slides": 0}


def test_inference_on_the_cpu_is_told_to_move_to_a_gpu():
    r = analyse([slide(6.0)], CPU, usable_cores=2, reader_threads=2)
    assert r["limiting_stage"] == "infer" and "build-engine" in r["advice"][0]


def test_reading_limits_threads_levels_tolerance_and_cores():
    reading = {"name": "s.svs", "level": 0, "level_mpp": 0.2527, "source_pixels_per_network_pixel": 15.66,
               "tolerance_percent": 1.1, "tolerance_level": 1, "tolerance_level_mpp": 1.0108,
               "tolerance_fewer_pixels": 16.0}
    s = slide(10.0, read=8.0, infer=1.0)
    s["reading"] = reading
    r = analyse([s], GPU, usable_cores=16, reader_threads=4)
    assert r["limiting_stage"] == "read"
    text = "\n".join(r["advice"])
    assert "--reader-threads` (now 4; this process may use 16 cores)" in text
    assert "level 0 (0.253 µm/px): 15.7 source pixels" in text
    assert "--level-tolerance 1.1` would read level 1" in text and "16x fewer pixels" in text
    cores = cores_for_busy_backend(8.0, 0.5, 1.0, 4)
    assert cores == 37 and f"About {cores} CPU cores per GPU" in text  # (4 x 8 + 0.5) / (0.9 x 1)


def test_a_per_slide_stage_is_told_to_overlap_slides():
    r = analyse([slide(10.0, infer=1.0, read=0.5, outputs=6.0)], GPU, usable_cores=8, reader_threads=4)
    assert r["limiting_stage"] == "outputs" and "--workers 2" in r["advice"][1]
    r = analyse([slide(10.0, infer=1.0, read=0.5, merge=5.0)], GPU, usable_cores=8, reader_threads=4)
    assert r["limiting_stage"] == "merge" and "parallel bands" in r["advice"][1]
    assert cores_for_busy_backend(1.0, 0.0, 0.0, 4) is None
