"""Evaluation statistics, from the paper's *Performance evaluation* and exploratory analysis 3."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tseg.runtime.metrics import ConfusionCounts, confusion_counts, mean_ci, region_correspondence, statistics


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
