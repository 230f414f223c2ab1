"""Dataset balancing by cancer type (paper, *Dataset balancing*); no PyTorch.

Minority cancer types are oversampled by tissue section: sections are drawn at random without
replacement, round after round, so that no section is drawn n + 1 times before every section of
its type has been drawn n times, until each type has as many draws as the largest type has
sections ("3519 sections sampled from each cancer type"). A drawn section brings every scan of
it (the paper's sections were scanned on two scanners: 7030-7038 scans per type), and a drawn
scan contributes all its tiles, once per draw.

The section of a tile is its ``section`` (from the slides CSV's optional ``section`` column); a
tile without one is its scan's own section, which is balancing by scan.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from tseg.runtime.errors import InvalidArgumentError


def balanced_draws(units_by_type: Mapping[str, Sequence[str]], seed: int = 0) -> dict[str, list[str]]:
    """For each type, the drawn units (as many as the largest type has units)."""
    groups = {k: sorted(set(v)) for k, v in units_by_type.items() if len(v)}
    if not groups:
        return {}
    target = max(len(v) for v in groups.values())
    rng = np.random.default_rng(seed)
    draws: dict[str, list[str]] = {}
    for kind in sorted(groups):
        units = groups[kind]
        picked: list[str] = []
        while len(picked) < target:
            order = rng.permutation(len(units))
            picked.extend(units[i] for i in order[: target - len(picked)])
        draws[kind] = picked
    return draws


def section_of(row: Mapping[str, Any], slide_key: str = "slide", section_key: str = "section") -> str:
    """A tile's section: its ``section`` value, or its scan when that is absent or empty."""
    value = row.get(section_key)
    return str(value).strip() if value is not None and str(value).strip() else str(row[slide_key])


def _sections(rows: Sequence[Mapping[str, Any]], type_key: str, slide_key: str,
              section_key: str) -> tuple[dict[str, set[str]], dict[str, set[str]], Counter]:
    """(sections by type, scans by section, tiles by section); a section must have one type."""
    sections_by_type: dict[str, set[str]] = defaultdict(set)
    scans: dict[str, set[str]] = defaultdict(set)
    tiles: Counter = Counter()
    type_of: dict[str, str] = {}
    for r in rows:
        kind, section = str(r[type_key]), section_of(r, slide_key, section_key)
        if type_of.setdefault(section, kind) != kind:
            raise InvalidArgumentError(f"section {section!r} has scans of two cancer types ({type_of[section]!r} "
                                       f"and {kind!r}); fix the section column of the slides CSV")
        sections_by_type[kind].add(section)
        scans[section].add(str(r[slide_key]))
        tiles[section] += 1
    return sections_by_type, scans, tiles


def balanced_rows(rows: Sequence[Mapping[str, Any]], seed: int = 0, type_key: str = "cancer_type",
                  slide_key: str = "slide", section_key: str = "section") -> list[Mapping[str, Any]]:
    """The balanced (non-unique) tile list: each tile repeated as often as its section was drawn."""
    sections_by_type, _, _ = _sections(rows, type_key, slide_key, section_key)
    draws = balanced_draws({k: sorted(v) for k, v in sections_by_type.items()}, seed)
    times = Counter(s for picked in draws.values() for s in picked)
    out: list[Mapping[str, Any]] = []
    for r in rows:
        out.extend([r] * times[section_of(r, slide_key, section_key)])
    return out


def balance_summary(rows: Sequence[Mapping[str, Any]], seed: int = 0, type_key: str = "cancer_type",
                    slide_key: str = "slide", section_key: str = "section") -> dict[str, dict[str, int]]:
    """Per type: unique sections and scans, and sampled sections, scans and tiles (the paper's counts)."""
    sections_by_type, scans, tiles = _sections(rows, type_key, slide_key, section_key)
    draws = balanced_draws({k: sorted(v) for k, v in sections_by_type.items()}, seed)
    return {kind: {"sections": len(sections_by_type[kind]),
                   "scans": len(set().union(*(scans[s] for s in sections_by_type[kind]))),
                   "sampled_sections": len(picked),
                   "sampled_scans": sum(len(scans[s]) for s in picked),
                   "sampled_tiles": sum(tiles[s] for s in picked)}
            for kind, picked in sorted(draws.items())}
