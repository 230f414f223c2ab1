"""`tseg-rt train ...` commands end to end on a generated slide."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import make_square_slide

pytestmark = pytest.mark.slow  # every test here starts a process or a server, or takes seconds


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "train", *map(str, args)],
                          capture_output=True, text=True)


def test_prepare_stats_fit(tmp_path):
    info = make_square_slide(tmp_path / "s.tiff", width_um=800, height_um=600, tissue_um=(20, 20, 760, 560),
                             square_um=(200, 150, 300, 250))
    sx, sy, sw, sh = info["square_level0"]
    (tmp_path / "s.geojson").write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[sx, sy], [sx + sw, sy], [sx + sw, sy + sh], [sx, sy + sh], [sx, sy]]]}}))
    (tmp_path / "slides.csv").write_text("path,annotation,cancer_type,cohort\ns.tiff,s.geojson,colon,A\n")
    r = cli("prepare", tmp_path / "slides.csv", "--out", tmp_path / "ds", "--tile-size", "256")
    assert r.returncode == 0, r.stderr
    index = tmp_path / "ds" / "tiles.csv"
    r = cli("stats", "--index", index, "--out", tmp_path / "stats.json")
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert len(stats["mean"]) == 3 and all(0 < v < 1 for v in stats["mean"] + stats["std"])
    # Pink tissue: red above blue above green on average.
    assert stats["mean"][0] > stats["mean"][2] > stats["mean"][1]
    pytest.importorskip("torch")
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "t"\n[model]\nencoder = "tu-mobilenetv3_small_050"\ndecoder_channels = 16\n'
                   '[data]\ntile_size = 256\ncrop_size = 128\nnum_workers = 0\n'
                   '[optim]\nglobal_batch = 2\nmicro_batch = 2\nsteps = 3\nwarmup_steps = 2\nwarmup_every = 1\namp = false\n')
    r = cli("fit", "--config", cfg, "--index", index, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "final.pt").exists()
    r = cli("fit", "--config", tmp_path / "missing.toml", "--index", index, "--out", tmp_path / "run2")
    assert r.returncode == 2 and "missing.toml" in r.stderr


def test_import_refuses_garbage(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "model.tar").write_bytes(b"junk")
    r = cli("import", tmp_path / "model.tar", "--out", tmp_path / "c.pt")
    assert r.returncode == 2 and "model.tar" in r.stderr
