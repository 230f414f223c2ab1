"""Evaluation and the threshold sweep, on constructed results and generated slides."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
from scipy import stats as scipy_stats

from helpers import make_colour_model, make_square_slide
from tseg.runtime.cohort.batch import run_batch
from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.evaluation.evaluate import evaluate, percent_level, sweep_pairs, sweep_slide
from tseg.runtime.method.postprocess import segment_smoothed, smooth_probability
from tseg.runtime.execution.segmenter import Segmenter


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


@pytest.mark.slow
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


@pytest.mark.slow
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
    from tseg.runtime.evaluation.metrics import dsc

    for low, high in levels:
        slow = dsc(segment_smoothed(smoothed, foreground, low, high, prune=False), reference & foreground, foreground)
        assert fast[(low, high)] == slow, (low, high)


@pytest.mark.slow
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


# --- Cohort statistics (Tables 2-3, Supplementary Tables S1 and S9, Spearman), checked against an
# --- independent computation from the masks themselves ---------------------------------------------


def _box(rows, cols):
    m = np.zeros((100, 100), bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


EMPTY = np.zeros((100, 100), bool)
FOREGROUND = np.ones((100, 100), bool)
FOREGROUND[:, 90:] = False
SMALL_FOREGROUND = FOREGROUND.copy()
SMALL_FOREGROUND[70:] = False  # less tissue: same tumour area, higher prevalence
# slide: (cohort, reference, prediction, DSC over corresponding regions or None)
SLIDES = {
    "x1": ("X", _box((10, 50), (10, 50)), _box((20, 60), (10, 50)), 0.75),  # IoU 0.6: they correspond
    "x2": ("X", _box((10, 60), (10, 60)), _box((10, 60), (10, 50)), 4000 / 4500),
    "x3": ("X", _box((10, 50), (10, 50)), EMPTY, None),  # nothing predicted: DSC 0
    "x4": ("X", EMPTY, EMPTY, None),  # both empty: DSC undefined
    "x5": ("X", _box((5, 85), (5, 85)), _box((5, 85), (5, 45)), None),  # IoU exactly 0.5: no match
    "y1": ("Y", _box((0, 30), (0, 60)), _box((0, 30), (0, 55)), 2 * 1650 / (1800 + 1650)),
    "y2": ("Y", _box((40, 95), (0, 80)), _box((40, 95), (0, 80)) | _box((0, 3), (0, 3)), 1.0),
    "y3": ("Y", _box((10, 50), (0, 45)), _box((20, 60), (0, 45)), 2 * 1350 / (1800 + 1800)),  # IoU 0.6
    "y4": ("Y", _box((0, 42), (0, 42)), _box((0, 42), (0, 20)), None),  # IoU 0.48
    "y5": ("Y", EMPTY, _box((0, 50), (0, 50)), None),  # nothing to find: DSC 0, TPR undefined
}


def _foreground(name):
    return SMALL_FOREGROUND if name in ("x3", "y3") else FOREGROUND


def _expected(name):
    """Equations (5)-(14) and the fractions, written out again from the paper's text."""
    _, ref, pred, _ = SLIDES[name]
    fg = _foreground(name)
    ref, pred = ref & fg, pred & fg
    tp = int((ref & pred & fg).sum())
    fp = int((~ref & pred & fg).sum())
    fn = int((ref & ~pred & fg).sum())
    tn = int((~ref & ~pred & fg).sum())
    n = tp + fp + fn + tn

    def div(a, b):
        return a / b if b else None

    tpr, tnr, ppv, npv = div(tp, tp + fn), div(tn, tn + fp), div(tp, tp + fp), div(tn, tn + fn)
    mcc_den = (tp + fn) * (tp + fp) * (tn + fn) * (tn + fp)
    return {"dsc": div(2 * tp, 2 * tp + fn + fp), "tpr": tpr, "fnr": div(fn, tp + fn), "tnr": tnr,
            "fpr": div(fp, tn + fp), "ppv": ppv, "npv": npv,
            "informedness": None if tpr is None or tnr is None else tpr + tnr - 1,
            "markedness": None if ppv is None or npv is None else ppv + npv - 1,
            "mcc": (tp * tn - fn * fp) / math.sqrt(mcc_den) if mcc_den else None,
            "reference_positive_fraction": (tp + fn) / n, "predicted_positive_fraction": (tp + fp) / n,
            "area_mm2": (tp + fn) * 25e-6}


@pytest.fixture(scope="module")
def cohort_evaluation(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohorts")
    (d / "refs").mkdir()
    for name, (_, ref, pred, _) in SLIDES.items():
        fake_result(d / "results" / name, pred, _foreground(name))
        cv2.imwrite(str(d / "refs" / f"{name}.mask.png"), ref.astype(np.uint8) * 255)
    (d / "cohorts.csv").write_text("slide,cohort\n" + "".join(f"{n},{c[0]}\n" for n, c in SLIDES.items()))
    return d, evaluate(d / "results", d / "refs", d / "eval", d / "cohorts.csv")


def _read(path):
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _num(text):
    return None if text == "" else float(text)


def test_secondary_statistics_per_cohort_with_student_t_intervals(cohort_evaluation):
    d, result = cohort_evaluation
    rows = {(r["cohort"], r["statistic"]): r for r in _read(d / "eval" / "statistics.csv")}
    stats = ["dsc", "tpr", "fnr", "tnr", "fpr", "ppv", "npv", "informedness", "markedness", "mcc",
             "reference_positive_fraction", "predicted_positive_fraction"]
    for cohort in ("X", "Y"):
        expected = [_expected(name) for name, (c, *_) in SLIDES.items() if c == cohort]
        for stat in stats:
            values = [e[stat] for e in expected if e[stat] is not None]
            row = rows[(cohort, stat)]
            assert int(row["n"]) == len(values) and int(row["undefined"]) == len(expected) - len(values), stat
            assert _num(row["mean"]) == pytest.approx(np.mean(values), abs=1e-12), (cohort, stat)
            assert _num(row["median"]) == pytest.approx(np.median(values), abs=1e-12)
            lo, hi = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values))
            assert (_num(row["ci95_low"]), _num(row["ci95_high"])) == pytest.approx((lo, hi), abs=1e-9), (cohort, stat)
    # Undefined where the paper's denominators vanish: x4 (both empty) has no DSC, TPR, PPV, MCC.
    assert int(rows[("X", "dsc")]["undefined"]) == 1 and int(rows[("X", "tpr")]["undefined"]) == 1
    assert int(rows[("Y", "tpr")]["undefined"]) == 1 and int(rows[("Y", "dsc")]["undefined"]) == 0  # y5


def test_a_slide_with_both_masks_empty_is_left_out_of_the_mean_dsc(cohort_evaluation):
    _, result = cohort_evaluation
    x = next(c for c in result.cohorts if c["cohort"] == "X")
    defined = [0.75, 4000 / 4500, 0.0, 2 * 3200 / (6400 + 3200)]  # x4 is not a 0
    assert x["slides"] == 5 and x["dsc_n"] == 4 and x["dsc_undefined"] == 1
    assert x["mean_dsc"] == pytest.approx(np.mean(defined))
    assert x["median_dsc"] == pytest.approx(np.median(defined))
    assert next(r for r in result.per_slide if r["slide"] == "x4")["dsc"] is None


def test_region_level_dsc_per_cohort(cohort_evaluation):
    """Supplementary Table S9: the DSC over corresponding regions, averaged over the images with at
    least one pair; and how many images had none."""
    d, result = cohort_evaluation
    by = {c["cohort"]: c for c in result.cohorts}
    for cohort in ("X", "Y"):
        region = [r for c, _, _, r in SLIDES.values() if c == cohort]
        matched = [r for r in region if r is not None]
        c = by[cohort]
        assert c["region_dsc_images"] == len(matched)
        assert c["images_without_corresponding_regions"] == len(region) - len(matched)
        assert c["region_dsc_mean"] == pytest.approx(np.mean(matched))
    per_slide = {r["slide"]: r for r in result.per_slide}
    for name, (_, _, _, region) in SLIDES.items():
        assert per_slide[name]["region_dsc"] == (pytest.approx(region) if region is not None else None), name


def test_spearman_per_cohort_against_scipy(cohort_evaluation):
    d, result = cohort_evaluation
    rows = {(r["cohort"], r["dsc_versus"]): r for r in _read(d / "eval" / "spearman.csv")}
    for cohort in ("X", "Y"):
        expected = [_expected(name) for name, (c, *_) in SLIDES.items() if c == cohort]
        pairs = [e for e in expected if e["dsc"] is not None]
        for name, key in (("reference_area", "area_mm2"), ("prevalence", "reference_positive_fraction")):
            ref = scipy_stats.spearmanr([e["dsc"] for e in pairs], [e[key] for e in pairs])
            row = rows[(cohort, name)]
            assert int(row["n"]) == len(pairs)
            assert _num(row["rho"]) == pytest.approx(ref.statistic, abs=1e-12), (cohort, name)
            assert _num(row["p"]) == pytest.approx(ref.pvalue, rel=1e-9)
            z, half = np.arctanh(ref.statistic), 1.959963984540054 / np.sqrt(len(pairs) - 3)
            assert (_num(row["ci95_low"]), _num(row["ci95_high"])) == pytest.approx((np.tanh(z - half), np.tanh(z + half)))
    # Area and prevalence rank the slides differently here (x3, y3 have less tissue).
    assert rows[("X", "reference_area")]["rho"] != rows[("X", "prevalence")]["rho"]
    area = {r["slide"]: r["reference_area_mm2"] for r in result.per_slide}
    assert area["x1"] == pytest.approx(1600 * 25e-6) and area["x4"] == 0


def test_dsc_plot_points_sit_on_their_cohorts_column(cohort_evaluation, tmp_path):
    from tseg.runtime.evaluation.evaluate import JITTER, plot_dsc

    _, result = cohort_evaluation
    ax = plot_dsc(result.per_slide, result.cohorts, tmp_path / "dsc.png")
    assert ax.get_xlim() == (-0.5, 1.5)
    slides = [c for c in ax.collections if c.get_zorder() == 3]  # the per-slide points
    assert len(slides) == 2
    for i, (collection, cohort) in enumerate(zip(slides, result.cohorts)):
        xy = collection.get_offsets()
        want = sorted(r["dsc"] for r in result.per_slide if r["cohort"] == cohort["cohort"] and r["dsc"] is not None)
        assert sorted(xy[:, 1]) == pytest.approx(want)  # the undefined DSC is not drawn as 0
        assert np.all(np.abs(xy[:, 0] - i) <= JITTER)
    # One cohort with one slide: the point is in the middle of the plot, on the column, not at an edge.
    one = [r for r in result.per_slide if r["slide"] == "x1"]
    cohort = [{**result.cohorts[0], "dsc_n": 1, "dsc_undefined": 0}]
    ax = plot_dsc(one, cohort, tmp_path / "one.png")
    (collection,) = [c for c in ax.collections if c.get_zorder() == 3]
    x_axes = ax.transAxes.inverted().transform(ax.transData.transform(collection.get_offsets()))[:, 0]
    tick_axes = ax.transAxes.inverted().transform(ax.transData.transform([[0, 0]]))[0, 0]
    assert tick_axes == pytest.approx(0.5) and abs(x_axes[0] - 0.5) <= JITTER


def test_a_mask_reference_must_have_the_slides_shape(tmp_path):
    """A mask image covers the whole slide at any resolution, so its aspect is the slide's: a
    transposed mask (400 x 300 for a 300 x 400 map) or a 1 x 1 one is an error naming both sizes,
    not a DSC of 0.45 with exit 0; a mask at half or a tenth of the map's size is fine."""
    from tseg.runtime.errors import AnnotationError

    mask = np.zeros((400, 300), bool)
    mask[100:300, 50:250] = True
    fake_result(tmp_path / "r" / "a", mask, np.ones_like(mask))  # level 0: 3000 x 4000 px
    refs = tmp_path / "refs"
    refs.mkdir()
    for size in ((400, 300), (1, 1), (300, 300)):
        cv2.imwrite(str(refs / "a.mask.png"), np.zeros(size[::-1], np.uint8))
        with pytest.raises(AnnotationError) as err:
            evaluate(tmp_path / "r", refs, tmp_path / "e", plot=False)
        text = str(err.value)
        assert "a.mask.png" in text and f"{size[0]} x {size[1]}" in text and "3000 x 4000" in text, text
    for scale in (2, 10):
        cv2.imwrite(str(refs / "a.mask.png"), mask[::scale, ::scale].astype(np.uint8) * 255)
        assert evaluate(tmp_path / "r", refs, tmp_path / f"ok{scale}", plot=False).per_slide[0]["dsc"] == 1.0


@pytest.mark.parametrize("name, text", [
    ("a.geojson", '{"type": "FeatureCollection", "features": []}'),
    ("a.geojson", "[]"),
    ("a.xml", "<Annotations></Annotations>"),
    ("a.xml", '<Annotations><Annotation Id="1"><Regions></Regions></Annotation></Annotations>'),
])
def test_an_empty_reference_means_no_tumour_in_every_format(tmp_path, name, text):
    """Empty means empty: an empty FeatureCollection is a slide without tumour, as `[]` and an
    empty Aperio XML are (it was refused as "no features")."""
    mask = np.zeros((40, 30), bool)
    mask[10:20, 5:15] = True
    fake_result(tmp_path / "r" / "a", mask, np.ones_like(mask))
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / name).write_text(text)
    row = evaluate(tmp_path / "r", refs, tmp_path / "e", plot=False).per_slide[0]
    assert row["tp"] == 0 and row["fn"] == 0 and row["fp"] == int(mask.sum())


@pytest.mark.parametrize("text", ['{"slide": "a", "tumour": 1}', '{"type": "Point", "coordinates": [1, 2]}', '"a"'])
def test_json_that_is_not_geojson_is_still_refused(tmp_path, text):
    from tseg.runtime.errors import AnnotationError

    fake_result(tmp_path / "r" / "a", np.zeros((40, 30), bool), np.ones((40, 30), bool))
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "a.geojson").write_text(text)
    with pytest.raises(AnnotationError, match="a.geojson"):
        evaluate(tmp_path / "r", refs, tmp_path / "e", plot=False)


def png_claiming(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of ``width`` x ``height`` zeros: a few hundred KB that decode to
    ``width * height`` bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, rows, parts = zlib.compressobj(6), b"\0" * ((width + 1) * 500), []
    for _ in range(height // 500):
        parts.append(packer.compress(rows))
    parts += [packer.compress(b"\0" * ((width + 1) * (height % 500))), packer.flush()]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def test_a_planted_map_is_not_decoded_beyond_the_size_its_summary_states(tmp_path):
    """A foreground.png of 20000 x 20000 px (400 MB decoded, under 1 MB on disk) in a result whose
    maps are 10 x 10 px was decoded in full before the slide failed; it is refused from its header."""
    from tseg.runtime.errors import OutputError

    fake_result(tmp_path / "r" / "a", np.zeros((10, 10), bool), np.ones((10, 10), bool))
    (tmp_path / "r" / "a" / "foreground.png").write_bytes(png_claiming(20000, 20000))
    refs = tmp_path / "refs"
    refs.mkdir()
    cv2.imwrite(str(refs / "a.mask.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(OutputError, match=r"foreground.png.*header claims 20000 x 20000 px, not the 10 x 10 px"):
        evaluate(tmp_path / "r", refs, tmp_path / "e", plot=False)
    (tmp_path / "r" / "a" / "foreground.png").write_bytes(b"GIF89a not a png")
    with pytest.raises(OutputError, match="foreground.png.*not a PNG image"):
        evaluate(tmp_path / "r", refs, tmp_path / "e", plot=False)
