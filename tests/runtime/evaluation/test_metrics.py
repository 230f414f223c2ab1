"""Evaluation statistics, from the paper's *Performance evaluation* and exploratory analysis 3."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tseg.runtime.evaluation.metrics import (ConfusionCounts, confusion_counts, mean_ci, region_correspondence, spearman, statistics,
                                  summarise)


def test_confusion_counts_by_hand_with_background_excluded():
    ref = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
    pred = np.array([[1, 0, 1, 0], [1, 1, 0, 1]], bool)
    fg = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)  # the last pixel is white background
    c = confusion_counts(pred, ref, fg)
    assert c == ConfusionCounts(tp=2, fp=2, fn=1, tn=2)
    assert c.n == 7


def test_statistics_by_hand():
    s = statistics(ConfusionCounts(tp=40, fp=10, fn=20, tn=30))
    assert s["dsc"] == pytest.approx(80 / 110)
    assert s["tpr"] == pytest.approx(40 / 60)
    assert s["fnr"] == pytest.approx(20 / 60)
    assert s["tnr"] == pytest.approx(30 / 40)
    assert s["fpr"] == pytest.approx(10 / 40)
    assert s["ppv"] == pytest.approx(40 / 50)
    assert s["npv"] == pytest.approx(30 / 50)
    assert s["informedness"] == pytest.approx(40 / 60 + 30 / 40 - 1)
    assert s["markedness"] == pytest.approx(0.8 + 0.6 - 1)
    assert s["mcc"] == pytest.approx((40 * 30 - 20 * 10) / math.sqrt(60 * 50 * 50 * 40))
    # MCC is the geometric mean of informedness and markedness.
    assert s["mcc"] == pytest.approx(math.sqrt(s["informedness"] * s["markedness"]))
    assert s["reference_positive_fraction"] == pytest.approx(0.6)
    assert s["predicted_positive_fraction"] == pytest.approx(0.5)


def test_undefined_statistics_are_none():
    s = statistics(ConfusionCounts(tp=0, fp=0, fn=0, tn=10))
    assert s["dsc"] is None and s["tpr"] is None and s["mcc"] is None
    assert s["tnr"] == 1.0


def test_perfect_prediction():
    m = np.zeros((10, 10), bool); m[2:5, 2:7] = True
    assert statistics(confusion_counts(m, m))["dsc"] == 1.0


def test_mean_ci_equals_scipy_t_interval():
    values = [0.81, 0.92, 0.66, 0.88, 0.79, 0.95, 0.71]
    ci = mean_ci(values)
    x = np.array(values)
    low, high = scipy_stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    assert (ci.low, ci.high) == pytest.approx((low, high))
    # By hand for n = 3: t(0.975, 2) = 4.302653.
    ci3 = mean_ci([0.5, 0.7, 0.9])
    assert ci3.mean == pytest.approx(0.7)
    assert ci3.high - ci3.mean == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-6)


def test_region_correspondence():
    ref = np.zeros((200, 200), bool)
    pred = np.zeros((200, 200), bool)
    ref[10:60, 10:60] = True  # 2,500 px
    pred[10:60, 15:60] = True  # IoU 2250/2500 = 0.9: corresponds
    ref[100:150, 100:150] = True
    pred[100:150, 100:115] = True  # IoU 750/2500 = 0.3: no correspondence
    ref[180:190, 180:190] = True  # 100 px < 1,600: discarded
    pred[170:200, 0:60] = True  # a false positive region
    r = region_correspondence(pred, ref)
    assert r.reference_regions == 2 and r.predicted_regions == 3
    assert r.true_positive_regions == 1 and r.false_negative_regions == 1 and r.false_positive_regions == 2
    assert r.pairs[0][2] == pytest.approx(0.9)
    # DSC over the corresponding pair only: 2*2250 / (2*2250 + 250 + 0).
    assert r.dsc == pytest.approx(4500 / 4750)


def test_region_dsc_none_without_pairs():
    ref = np.zeros((100, 100), bool); ref[:50, :50] = True
    assert region_correspondence(np.zeros_like(ref), ref).dsc is None


# --- Spearman's rho (*Statistical analysis*, eqs. 15-17) --------------------------------------------


def _t3_two_sided_p(t):
    """Two-sided p of Student's t with 3 degrees of freedom, in closed form (no scipy)."""
    u = abs(t) / math.sqrt(3)
    return 1 - (2 / math.pi) * (u / (1 + u * u) + math.atan(u))


def test_spearman_by_hand():
    # Ranks differ by d = (-1, 1, -1, 1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8.
    r = spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert r.n == 5 and r.rho == pytest.approx(0.8)
    t = 0.8 * math.sqrt(3 / (1 - 0.64))  # eq. (15), n - 2 = 3 degrees of freedom
    assert r.p == pytest.approx(_t3_two_sided_p(t), rel=1e-9)
    z, se = math.atanh(0.8), 1 / math.sqrt(2)  # eq. (16), standard error 1 / sqrt(n - 3)
    assert (r.low, r.high) == pytest.approx((math.tanh(z - 1.959963984540054 * se),
                                             math.tanh(z + 1.959963984540054 * se)), rel=1e-9)  # eq. (17)
    # Ties take the average rank: x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4).
    r = spearman([10, 20, 20, 30], [1, 2, 3, 4])
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
    expected = np.sum((rx - 2.5) * (ry - 2.5)) / math.sqrt(np.sum((rx - 2.5) ** 2) * np.sum((ry - 2.5) ** 2))
    assert r.rho == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_against_scipy(seed):
    rng = np.random.default_rng(seed)
    n = 37
    x = rng.integers(0, 12, n).astype(float)  # many ties
    y = x * 0.3 + rng.normal(0, 2, n)
    mine = spearman(x, y, confidence=0.9)
    ref = scipy_stats.spearmanr(x, y)
    assert mine.rho == pytest.approx(ref.statistic, rel=1e-12)
    assert mine.p == pytest.approx(ref.pvalue, rel=1e-9)
    z = np.arctanh(ref.statistic)
    half = scipy_stats.norm.ppf(0.95) / np.sqrt(n - 3)
    assert (mine.low, mine.high) == pytest.approx((np.tanh(z - half), np.tanh(z + half)), rel=1e-12)


def test_spearman_edge_cases():
    assert spearman([1, 2, None, 4], [1, 2, 3, None]).n == 2  # undefined pairs dropped
    assert spearman([1, 1, 1, 1], [1, 2, 3, 4]).rho is None  # constant: undefined
    three = spearman([1, 2, 3], [1, 3, 2])
    assert three.rho == pytest.approx(0.5) and three.p is not None and three.low is None  # CI needs n >= 4
    perfect = spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 100])
    assert perfect.rho == 1.0 and perfect.p == 0.0 and perfect.low == perfect.high == 1.0
    assert spearman([], []).rho is None


def test_summarise_leaves_undefined_values_out_and_counts_them():
    s = summarise([1.0, None, 0.5, None])
    assert (s["n"], s["undefined"], s["mean"], s["median"]) == (2, 2, 0.75, 0.75)
    lo, hi = scipy_stats.t.interval(0.95, 1, loc=0.75, scale=scipy_stats.sem([1.0, 0.5]))
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((lo, hi))
    assert summarise([None])["mean"] is None and summarise([0.3])["ci95_low"] is None
