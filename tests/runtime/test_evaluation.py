"""Evaluation and the threshold sweep, on constructed results and generated slides."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import make_colour_model, make_square_slide
from tseg.runtime.batch import run_batch
from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.evaluation import evaluate, percent_level, sweep_pairs, sweep_slide
from tseg.runtime.postprocess import segment_smoothed, smooth_probability
from tseg.runtime.segmenter import Segmenter


def fake_result(folder, mask, foreground, probability=None, mpp=0.5):
    folder.mkdir(parents=True)
    h, w = mask.shape
    cv2.imwrite(str(folder / "mask.png"), mask.astype(np.uint8) * 255)
    cv2.imwrite(str(folder / "foreground.png"), foreground.astype(np.uint8) * 255)
    prob = probability if probability is not None else mask.astype(np.uint8) * 255
    cv2.imwrite(str(folder / "probability.png"), prob)
    f = 5.0 / mpp
    (folder / "summary.json").write_text(json.dumps({"slide": {
        "size_at_overview_mpp": [w, h], "mpp_level0": [mpp, mpp], "dimensions_level0": [int(w * f), int(h * f)]}}))


def square_geojson(path, x0, y0, x1, y1):
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"classification": {"name": "Tumor"}},
        "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}}]}))


def test_hand_computed_cases_and_cohorts(tmp_path):
    fg = np.ones((100, 100), bool)
    fg[:, 90:] = False  # background excluded from all counts
    ref = np.zeros((100, 100), bool)
    ref[10:50, 10:50] = True  # 1600 px
    # Slide a: prediction shifted by 10 px: TP 30*40 = 1200, FN 400, FP 400 -> DSC 2400/3200 = 0.75
    pred_a = np.zeros_like(ref); pred_a[20:60, 10:50] = True
    # Slide b: perfect, plus tumour painted on background (excluded): DSC 1
    pred_b = ref.copy(); pred_b[0:10, 95:100] = True
    # Slide c: nothing predicted: DSC 0, no predicted region
    pred_c = np.zeros_like(ref)
    results, refs = tmp_path / "results", tmp_path / "refs"
    refs.mkdir()
    for name, pred in (("a", pred_a), ("b", pred_b), ("c", pred_c)):
        fake_result(results / name, pred, fg)
        # References in level-0 pixels (0.5 µm/px: 10 level-0 px per 5 µm/px pixel).
        square_geojson(refs / f"{name}.geojson", 100, 100, 500, 500)
    (tmp_path / "cohorts.csv").write_text("slide,cohort\na,X\nb,X\nc,Y\n")
    r = evaluate(results, refs, tmp_path / "eval", tmp_path / "cohorts.csv")
    by = {row["slide"]: row for row in r.per_slide}
    assert by["a"]["dsc"] == pytest.approx(0.75) and (by["a"]["tp"], by["a"]["fn"], by["a"]["fp"]) == (1200, 400, 400)
    assert by["a"]["tn"] == 9000 - 1600 - 400
    assert by["b"]["dsc"] == 1.0 and by["b"]["fp"] == 0
    assert by["c"]["dsc"] == 0.0 and by["c"]["predicted_regions"] == 0
    assert by["a"]["tpr"] == pytest.approx(0.75) and by["a"]["ppv"] == pytest.approx(0.75)
    # Region level: slide a's regions overlap with IoU 1200/2000 = 0.6 > 0.5: they correspond.
    assert by["a"]["true_positive_regions"] == 1 and by["a"]["region_dsc"] == pytest.approx(0.75)
    cohorts = {c["cohort"]: c for c in r.cohorts}
    x = cohorts["X"]
    assert x["slides"] == 2 and x["mean_dsc"] == pytest.approx(0.875) and x["median_dsc"] == pytest.approx(0.875)
    half = 12.7062047 * np.std([0.75, 1.0], ddof=1) / math.sqrt(2)  # t(0.975, 1)
    assert (x["ci95_low"], x["ci95_high"]) == pytest.approx((0.875 - half, 0.875 + half), rel=1e-6)
    assert cohorts["Y"]["no_predicted_region_fraction"] == 1.0 and cohorts["Y"]["ci95_low"] is None
    assert (tmp_path / "eval" / "per_slide.csv").exists() and (tmp_path / "eval" / "dsc.png").stat().st_size > 1000


def test_perfect_prediction_and_geojson_equals_mask_reference(tmp_path):
    model = make_colour_model(tmp_path / "m.onnx")
    info = make_square_slide(tmp_path / "in" / "s.tiff" if (tmp_path / "in").mkdir() is None else None)
    run_batch([info["path"]], tmp_path / "results", Segmenter(model))
    sx, sy, sw, sh = info["square_level0"]
    refs = tmp_path / "refs"
    refs.mkdir()
    square_geojson(refs / "s.geojson", sx, sy, sx + sw, sy + sh)
    by_geojson = evaluate(tmp_path / "results", refs, tmp_path / "e1", plot=False).per_slide[0]
    assert by_geojson["dsc"] == 1.0
    (refs / "s.geojson").unlink()
    mask = np.zeros((240, 320), np.uint8)
    mask[80:160, 120:220] = 255
    cv2.imwrite(str(refs / "s.mask.png"), mask)
    by_mask = evaluate(tmp_path / "results", refs, tmp_path / "e2", plot=False).per_slide[0]
    for key in ("tp", "fp", "fn", "tn", "dsc"):
        assert by_mask[key] == by_geojson[key]


def test_missing_references(tmp_path):
    fake_result(tmp_path / "r" / "a", np.zeros((10, 10), bool), np.ones((10, 10), bool))
    (tmp_path / "refs").mkdir()
    with pytest.raises(InvalidArgumentError, match="no reference"):
        evaluate(tmp_path / "r", tmp_path / "refs", tmp_path / "e")


def test_sweep_grid_and_levels():
    pairs = sweep_pairs()
    assert pairs[0] == (0.05, 0.1) and pairs[-1] == (0.9, 0.95)
    assert len(pairs) == sum(range(1, 19))  # 18 lows, 18 + 17 + ... + 1 highs
    assert percent_level(0.9) == 229 and percent_level(1 / 3) == 85 and percent_level(0.05) == 12


def test_sweep_equals_post_processing_per_pair():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:300, :300]
    prob = np.zeros((300, 300))
    for cy, cx, r, v in [(80, 80, 50, 240), (200, 100, 40, 150), (150, 230, 60, 90), (260, 260, 25, 60)]:
        prob = np.maximum(prob, v * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)))
    prob = np.clip(prob + rng.normal(0, 5, prob.shape), 0, 255).astype(np.uint8)
    smoothed = smooth_probability(prob)
    foreground = np.ones_like(prob, bool)
    foreground[:, :20] = False
    reference = np.hypot(yy - 80, xx - 80) < 55
    levels = [(percent_level(lo), percent_level(hi)) for lo, hi in sweep_pairs()]
    fast = sweep_slide(smoothed, foreground, reference & foreground, levels)
    from tseg.runtime.metrics import dsc

    for low, high in levels:
        slow = dsc(segment_smoothed(smoothed, foreground, low, high, prune=False), reference & foreground, foreground)
        assert fast[(low, high)] == slow, (low, high)


def test_eval_and_sweep_cli(tmp_path):
    model = make_colour_model(tmp_path / "m.onnx", graded=True)
    (tmp_path / "in").mkdir()
    info = make_square_slide(tmp_path / "in" / "s.tiff")
    run_batch([info["path"]], tmp_path / "results", Segmenter(model))
    sx, sy, sw, sh = info["square_level0"]
    (tmp_path / "refs").mkdir()
    square_geojson(tmp_path / "refs" / "s.geojson", sx, sy, sx + sw, sy + sh)
    r = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "eval", "--pred", str(tmp_path / "results"),
                        "--ref", str(tmp_path / "refs"), "--out", str(tmp_path / "e")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "mean DSC 0.000" in r.stdout  # 255 - red never passes 229: nothing predicted at 85/229
    r = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "eval", "--sweep", "--pred", str(tmp_path / "results"),
                        "--ref", str(tmp_path / "refs"), "--out", str(tmp_path / "s")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    best = json.loads((tmp_path / "s" / "sweep.json").read_text())["best"]
    assert best["mean_dsc"] > 0.95 and best["high"] < 175  # lower thresholds recover the square
    assert (tmp_path / "s" / "sweep.png").exists()
