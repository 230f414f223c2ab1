"""--check's machinery on a machine without a GPU: steps in child processes, limits, table rows."""

from __future__ import annotations

import pytest

from tseg.runtime.bench.check import CheckSettings, run_step, table_rows
from tseg.runtime.errors import InvalidArgumentError


def test_a_step_runs_in_its_own_process_and_reports_a_missing_device():
    from tseg.runtime.execution.cuda import device_count

    if device_count():
        pytest.skip("a GPU is visible")
    out = run_step("executor", {"side": 64, "tiles": 3}, 120)
    assert "cannot be used" in out["skipped"] and out["seconds"] > 0


def test_a_step_past_its_limit_is_stopped_with_its_log():
    out = run_step("pytorch", {"size": 64, "config": "tiny", "device": "cpu"}, 0.2)
    assert out["error"] == "did not finish within 0 s (stopped)" and "log_tail" in out


def test_settings_are_checked():
    with pytest.raises(InvalidArgumentError, match="unknown check steps"):
        CheckSettings(steps=("executor", "coffee"))
    with pytest.raises(InvalidArgumentError, match="at least 20 s"):
        CheckSettings(time_limit_s=5)


def test_table_rows_in_the_readme_format():
    check = {
        "created": "2026-12-04T17:00:00+00:00", "tile": [7680, 7680],
        "machine": {"gpu": {"devices": [{"name": "NVIDIA H200", "compute_capability": "9.0"}]}},
        "steps": {
            "pytorch": {"torch": "2.11.0", "config": "paper", "modes": {
                "fp32": {"seconds_per_tile": 2.0, "tflop_per_s": 21.0},
                "fp16": {"seconds_per_tile": 0.25, "tflop_per_s": 168.0, "agreement_with_fp32": {
                    "max_level_difference": 3, "fraction_differing": 0.012, "mask_dsc": 0.9991}},
                "fp16-compile": {"error": "torch.compile did not finish within 90 s (killed)"}}},
            "engine": {"tensorrt": {"skipped": "TensorRT is not installed"},
                       "onnxruntime_cuda": {"model": "/m/paper.onnx", "timing": {
                           "tile": [7680, 7680], "s_per_tile": {"median": 0.5}, "streamed_s_per_tile": None,
                           "tflop_per_s": 84.0}}}}}
    rows = table_rows(check)
    assert rows == [
        "| NVIDIA H200 (9.0) | PyTorch 2.11.0 fp32, paper network, 7680² | 2.000 | 21.0 | reference | 2026-12-04, "
        "`tseg-rt bench --check` |",
        "| NVIDIA H200 (9.0) | PyTorch 2.11.0 fp16, paper network, 7680² | 0.250 | 168.0 | max 3 levels, 1.20 % of "
        "pixels differ, median-split DSC 0.9991 | 2026-12-04, `tseg-rt bench --check` |",
        "| NVIDIA H200 (9.0) | ONNX Runtime CUDA (paper.onnx), 7680² | 0.500 | 84.0 |  | 2026-12-04, "
        "`tseg-rt bench --check` |"]
