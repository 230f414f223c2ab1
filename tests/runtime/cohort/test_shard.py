"""``--shard K/N``: deterministic shards of a batch for array jobs (Slurm) with no coordinator."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_colour_model, make_square_slide
from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.cohort.shard import parse_shard, select_shard, shard_index


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1) and parse_shard(" 3 / 10 ") == (3, 10)
    for bad in ("1/1", "5/4", "-1/4", "a/b", "3", "0/0", ""):
        with pytest.raises(InvalidArgumentError, match="shard"):
            parse_shard(bad)


def test_a_slide_s_shard_is_a_hash_of_its_resolved_path(tmp_path, monkeypatch):
    """As documented: int(first 16 hex digits of sha256(resolved path)) mod N."""
    slide = tmp_path / "cohort" / "x.svs"
    for n in (1, 2, 7, 100):
        expected = int(hashlib.sha256(str(slide.resolve()).encode()).hexdigest()[:16], 16) % n
        assert shard_index(slide, n) == expected
    monkeypatch.chdir(tmp_path)
    assert shard_index(Path("cohort/x.svs"), 7) == shard_index(slide, 7)  # relative or absolute: same slide
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "cohort", target_is_directory=True)
    assert shard_index(link / "x.svs", 7) == shard_index(slide, 7)


@pytest.mark.slow
def test_shards_are_the_same_in_every_process(tmp_path):
    """Not Python's randomised hash(): a resubmitted array task gets the same slides."""
    paths = [str(tmp_path / f"s{i}.svs") for i in range(50)]
    code = ("import sys; from tseg.runtime.cohort.shard import shard_index; "
            "print([shard_index(p, 5) for p in sys.argv[1:]])")
    outs = {subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONHASHSEED=seed)).stdout for seed in ("1", "2")}
    assert len(outs) == 1 and outs.pop().strip() == str([shard_index(p, 5) for p in paths])


def test_shards_partition_the_cohort_whatever_its_order(tmp_path):
    slides = [tmp_path / f"cohort/slide-{i:04d}.svs" for i in range(400)]
    shards = [select_shard(slides, k, 4) for k in range(4)]
    assert sorted(s for shard in shards for s in shard) == sorted(slides)  # every slide once
    assert all(60 <= len(shard) <= 140 for shard in shards), [len(s) for s in shards]
    assert set(select_shard(list(reversed(slides)), 1, 4)) == set(shards[1])
    assert set(select_shard(slides[:100], 1, 4)) == set(shards[1]) & set(slides[:100])  # other slides don't matter
    assert select_shard(slides, 0, 1) == slides


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tseg.runtime.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.slow
def test_array_tasks_cover_the_cohort_and_resubmitting_is_safe(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    # Shards hash the resolved path, which includes the random temporary folder: four fixed names
    # all fall into one shard about 1 time in 8. Pick four names that cover both shards here.
    candidates = [f"s{i:02d}" for i in range(64)]  # one length: no name is part of another
    by_shard = {k: [n for n in candidates if shard_index(d / f"{n}.tiff", 2) == k] for k in (0, 1)}
    firsts = (by_shard[0][0], by_shard[1][0])
    names = sorted([*firsts, *[n for n in candidates if n not in firsts][:2]])
    for i, n in enumerate(names):
        make_square_slide(d / f"{n}.tiff", seed=i)
    model = make_colour_model(tmp_path / "m.onnx", tile=1024, overlap=64)
    out = tmp_path / "out"
    expected = {k: {n for n in names if shard_index(d / f"{n}.tiff", 2) == k} for k in (0, 1)}
    assert expected[0] and expected[1], "the four slides fall into both shards"
    for k in (0, 1):
        r = _cli("run", d, "--engine", model, "--out", out, "--no-progress", "--shard", f"{k}/2")
        assert r.returncode == 0, r.stderr
        assert f"(shard {k}/2: {len(expected[k])} of 4)" in r.stderr
        assert {n for n in expected[k] if n in r.stdout} == expected[k]
        assert not {n for n in expected[1 - k] if f" {n} " in r.stdout}
    assert {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")} == set(names)
    again = _cli("run", d, "--engine", model, "--out", out, "--no-progress", "--shard", "0/2")  # resubmitted
    assert again.returncode == 0 and "│ done " not in again.stdout and again.stdout.count("│ skipped ") == len(expected[0])
    # The report at the end of each task covers the whole folder.
    assert "4 slide(s): 4 finished" in again.stderr
    bad = _cli("run", d, "--engine", model, "--out", out, "--shard", "2/2")
    assert bad.returncode == 2 and "shards are numbered 0 to 1" in bad.stderr and "Traceback" not in bad.stderr
