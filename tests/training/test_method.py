"""Balancing, statistics, schedule and loss, from the paper's text (no training run)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from tseg.runtime.errors import InvalidArgumentError
from tseg.training.balance import balance_summary, balanced_rows, balanced_draws
from tseg.training.schedule import step_length
from tseg.training.stats import dataset_stats_from_moments, image_moments


def test_balancing_counts_and_order():
    groups = {"colon": [f"c{i}" for i in range(3)], "lung": [f"l{i}" for i in range(7)], "prostate": ["p0", "p1"]}
    draws = balanced_draws(groups, seed=4)
    # Every type is drawn as many times as the largest type has slides.
    assert {k: len(v) for k, v in draws.items()} == {"colon": 7, "lung": 7, "prostate": 7}
    for kind, picked in draws.items():
        # No slide is drawn n + 1 times before every slide of its type has been drawn n times.
        seen = Counter()
        for s in picked:
            assert seen[s] == min(seen[t] for t in groups[kind]), (kind, picked)
            seen[s] += 1
        assert max(seen.values()) - min(seen[t] for t in groups[kind]) <= 1
    assert sorted(draws["lung"]) == sorted(groups["lung"])  # the largest type: each once


def test_balanced_rows_repeat_tiles_of_drawn_slides():
    rows = [{"slide": "a", "cancer_type": "x", "tile": 1}, {"slide": "a", "cancer_type": "x", "tile": 2},
            {"slide": "b", "cancer_type": "y", "tile": 3}, {"slide": "c", "cancer_type": "y", "tile": 4}]
    out = balanced_rows(rows, seed=0)
    # Type x has 1 slide, y has 2: slide a is drawn twice, so its two tiles appear twice each.
    assert Counter(r["tile"] for r in out) == {1: 2, 2: 2, 3: 1, 4: 1}


def test_statistics_equations_1_and_2():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(4, 5), (7, 3), (10, 10)]]
    got = dataset_stats_from_moments(image_moments(i) for i in images)
    mu = np.mean([i.reshape(-1, 3).mean(0) for i in images], axis=0) / 255
    var = np.mean([i.reshape(-1, 3).astype(float).var(0, ddof=1) for i in images], axis=0)
    np.testing.assert_allclose(got["mean"], mu)
    np.testing.assert_allclose(got["std"], np.sqrt(var) / 255)
    # Not the pooled statistics: images of different sizes weigh the same.
    pooled = np.concatenate([i.reshape(-1, 3) for i in images]).mean(0) / 255
    assert not np.allclose(got["mean"], pooled)


def test_schedule_values():
    assert step_length(0) == pytest.approx(1e-4)
    assert step_length(9) == pytest.approx(1e-4)  # steps: constant within each block of 10
    assert step_length(10) == pytest.approx(1e-4 + 0.99e-2 / 100)
    assert step_length(999) == pytest.approx(1e-4 + 0.99e-2 * 99 / 100)
    assert step_length(1000) == pytest.approx(1e-2)
    half = 1000 + (500_000 - 1000) // 2
    assert step_length(half) == pytest.approx(0.5e-2, rel=1e-4)
    last = step_length(499_999)
    assert 0 < last < 1e-9
    assert all(step_length(s) >= step_length(s + 1) for s in range(1000, 1100))


def test_top_90_cross_entropy_by_hand():
    torch = pytest.importorskip("torch")
    from tseg.training.losses import top_fraction_cross_entropy

    logits = torch.tensor([[[[2.0, 0.0, 1.0, 0.5, 0.0]], [[0.0, 1.0, 1.0, 0.5, 3.0]]]])  # (1, 2, 1, 5)
    target = torch.tensor([[[0, 0, 1, 1, 0]]])
    p = torch.softmax(logits, dim=1)[0, :, 0]
    ce = [-math.log(float(p[t, i])) for i, t in enumerate([0, 0, 1, 1, 0])]
    # 90% of 5 pixels: ceil(4.5) = 5 -> all; 70%: ceil(3.5) = 4 -> drop the smallest.
    assert float(top_fraction_cross_entropy(logits, target, 0.9)) == pytest.approx(sum(ce) / 5, rel=1e-6)
    expected = sum(sorted(ce)[1:]) / 4
    assert float(top_fraction_cross_entropy(logits, target, 0.7)) == pytest.approx(expected, rel=1e-6)
    big = torch.randn(2, 3, 10, 10)
    tgt = torch.randint(0, 3, (2, 10, 10))
    full = torch.nn.functional.cross_entropy(big, tgt, reduction="none").flatten().sort(descending=True).values
    assert float(top_fraction_cross_entropy(big, tgt)) == pytest.approx(float(full[:180].mean()), rel=1e-6)


def test_balancing_draws_tissue_sections_and_brings_both_scans():
    """*Dataset balancing*: sections are drawn, "Counting scans from both scanners, the result was
    7030 scans from colorectal carcinoma and 7038 scans from each of the other cancer types"."""
    rows = []
    # Lung (the largest type): 4 sections, each scanned twice (A = Aperio AT2, N = NanoZoomer XR).
    for i in range(4):
        for scanner in "AN":
            rows += [{"slide": f"lung{i}{scanner}", "section": f"lung{i}", "cancer_type": "lung", "tile": t}
                     for t in range(2)]
    # Colon: 2 sections; section c1 lacks its NanoZoomer scan (as DCo2/DCo3 had fewer).
    for slide, section in [("c0A", "c0"), ("c0N", "c0"), ("c1A", "c1")]:
        rows += [{"slide": slide, "section": section, "cancer_type": "colon", "tile": 0}]
    out = balanced_rows(rows, seed=3)
    drawn = Counter(r["slide"] for r in out)
    # Each colon section is drawn twice (4 sections' worth); a section's scans always come together.
    assert drawn["c0A"] == drawn["c0N"] == 2 and drawn["c1A"] == 2
    assert all(drawn[f"lung{i}A"] == drawn[f"lung{i}N"] == 2 for i in range(4))  # 2 tiles, drawn once
    summary = balance_summary(rows, seed=3)
    assert summary["lung"] == {"sections": 4, "scans": 8, "sampled_sections": 4, "sampled_scans": 8, "sampled_tiles": 16}
    # Both types: 4 sections; colon has fewer scans (6, not 8), like the paper's 7030 vs 7038.
    assert summary["colon"] == {"sections": 2, "scans": 3, "sampled_sections": 4, "sampled_scans": 6, "sampled_tiles": 6}


def test_balancing_sections_drawn_n_times_before_n_plus_1():
    rows = [{"slide": f"s{i}{k}", "section": f"sec{i}", "cancer_type": "x"} for i in range(3) for k in "AB"]
    rows += [{"slide": f"y{i}", "cancer_type": "y"} for i in range(8)]  # no section: each scan its own
    draws = balanced_draws({"x": ["sec0", "sec1", "sec2"], "y": [f"y{i}" for i in range(8)]}, seed=1)
    assert sorted(Counter(draws["x"]).values()) == [2, 3, 3]
    out = Counter(r["slide"] for r in balanced_rows(rows, seed=1))
    assert sorted(out[f"s{i}A"] for i in range(3)) == [2, 3, 3]
    assert all(out[f"s{i}A"] == out[f"s{i}B"] for i in range(3))
    assert all(out[f"y{i}"] == 1 for i in range(8))


def test_a_section_of_two_cancer_types_is_refused():
    rows = [{"slide": "a", "section": "s", "cancer_type": "x"}, {"slide": "b", "section": "s", "cancer_type": "y"}]
    with pytest.raises(InvalidArgumentError, match="section 's' has scans of two cancer types"):
        balanced_rows(rows)
