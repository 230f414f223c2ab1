"""Dataset balancing by cancer type (paper, *Dataset balancing*); no PyTorch.

Minority cancer types are oversampled at the slide level: slides are drawn at random without
replacement, round after round, so that no slide is drawn n + 1 times before every slide of its
type has been drawn n times, until each type has as many draws as the largest type has slides.
A drawn slide contributes all its tiles, once per draw.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Mapping, Sequence

import numpy as np


def balanced_slide_draws(slides_by_type: Mapping[str, Sequence[str]], seed: int = 0) -> dict[str, list[str]]:
    """For each type, the drawn slides (as many as the largest type has slides)."""
    groups = {k: sorted(set(v)) for k, v in slides_by_type.items() if len(v)}
    if not groups:
        return {}
    target = max(len(v) for v in groups.values())
    rng = np.random.default_rng(seed)
    draws: dict[str, list[str]] = {}
    for kind in sorted(groups):
        slides = groups[kind]
        picked: list[str] = []
        while len(picked) < target:
            order = rng.permutation(len(slides))
            picked.extend(slides[i] for i in order[: target - len(picked)])
        draws[kind] = picked
    return draws


def balanced_rows(rows: Sequence[Mapping[str, Any]], seed: int = 0, type_key: str = "cancer_type",
                  slide_key: str = "slide") -> list[Mapping[str, Any]]:
    """The balanced (non-unique) tile list: each tile repeated as often as its slide was drawn."""
    slides_by_type: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        slides_by_type[str(r[type_key])].add(str(r[slide_key]))
    draws = balanced_slide_draws({k: sorted(v) for k, v in slides_by_type.items()}, seed)
    times = Counter((kind, s) for kind, picked in draws.items() for s in picked)
    out: list[Mapping[str, Any]] = []
    for r in rows:
        out.extend([r] * times[(str(r[type_key]), str(r[slide_key]))])
    return out
