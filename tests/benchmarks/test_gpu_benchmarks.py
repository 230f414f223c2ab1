"""The GPU benchmarks' code paths, as a CPU smoke run (the figures come from a GPU machine)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO


@pytest.mark.slow
def test_network_benchmark_runs_and_reports_agreement_on_the_cpu(tmp_path):
    out = tmp_path / "network.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.network_gpu", "--device", "cpu", "--size", "128",
                        "--config", "tiny", "--modes", "fp32,bf16,fp16-cl", "--repeats", "1", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["modes"]) == {"fp32", "bf16", "fp16-cl"} and data["tile"] == [128, 128]
    for mode in ("bf16", "fp16-cl"):
        agreement = data["modes"][mode]["agreement_with_fp32"]
        assert agreement["max_level_difference"] <= 255 and 0 <= agreement["mask_dsc"] <= 1
        assert data["modes"][mode]["seconds_per_tile"] > 0
    from tseg.runtime.bench.torch_network import torch_flops

    # TFLOP/s against the network's own count (FlopCounterMode), for any configuration
    assert data["flop_per_tile"] == torch_flops("tiny", 128) and data["tflop_per_tile"] == data["flop_per_tile"] / 1e12
    fp32 = data["modes"]["fp32"]
    assert fp32["tflop_per_s"] == data["tflop_per_tile"] / fp32["seconds_per_tile"]


def test_carried_tiles_make_the_mosaic_without_opencv(tmp_path, monkeypatch):
    from benchmarks.network_gpu import CARRIED_TILES, agreement, he_tile

    rng = np.random.default_rng(0)
    np.savez_compressed(tmp_path / CARRIED_TILES, t00=rng.integers(0, 256, (74, 74, 3), dtype=np.uint8),
                        t01=rng.integers(0, 256, (74, 74, 3), dtype=np.uint8))
    monkeypatch.setenv("TSEG_SHARED_DATA", str(tmp_path))
    tile, source = he_tile(200)
    assert tile.shape == (200, 200, 3) and CARRIED_TILES in source
    ref = np.array([[0, 10], [200, 250]], np.uint8)
    same = agreement(ref, ref)
    assert same["max_level_difference"] == 0 and same["mask_dsc"] == 1.0
    assert agreement(ref, np.array([[0, 10], [0, 250]], np.uint8))["mask_dsc"] == 2 / 3


def test_gpu_check_script_is_bounded_and_uses_the_carried_folder():
    """One command of at most about 7 minutes on a lent machine: its steps' limits add up to <= 430 s,
    and the check's own limit is inside its step's."""
    script = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    steps = [line for line in script.splitlines() if line.startswith("step ")]
    limits = [int(re.sub(r'"\$\{\w+:-(\d+)\}"', r"\1", line.split()[2])) for line in steps]
    assert [line.split()[1] for line in steps] == ["install", "device", "check", "bench"]
    assert sum(limits) <= 430, limits
    check_limit = int(re.search(r"--check-time-limit (\d+)", script).group(1))
    assert check_limit + 15 <= limits[2]
    assert "TSEG_CARRY" in script and "bench --check" in script and os.access(REPO / "benchmarks" / "gpu_check.sh", os.X_OK)
