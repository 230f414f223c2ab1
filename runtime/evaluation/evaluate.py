"""``tseg-rt eval``: agreement with reference annotations, per slide and per cohort, and the
hysteresis-threshold sweep (paper, *Performance evaluation*, *Analyses*).

Predictions are the result folders of ``tseg-rt run`` (``mask.png``, ``foreground.png``,
``probability.png`` and ``summary.json`` at 5 µm/px). References are found by slide name in a
folder (``NAME.geojson``/``.json`` QuPath polygons, ``NAME.xml`` Aperio, or a mask image
``NAME.mask.png``/``NAME.png``/``NAME.tif``) or listed in a CSV (``slide,reference``), and
rendered at 5 µm/px through the same annotation readers training uses. White background is
excluded using the slide's foreground mask, for reference and prediction alike.

Per slide: the contingency counts and the statistics of equations (5)-(14), the reference tumour
area and prevalence, and region-level results (exploratory analysis 3). Per cohort (written to
``cohorts.csv``, ``statistics.csv``, ``spearman.csv`` and ``evaluation.json``, with a plot like the
paper's Fig. 5):

* the DSC's mean with a Student-t 95% confidence interval and median (planned primary analysis,
  Tables 2-3, Fig. 5), over the slides where it is defined: a slide whose reference and
  prediction are both empty has no DSC; it is left out of the mean and counted (``dsc_undefined``)
  -- the authors' code skips undefined values;
* the same for the eleven secondary statistics of Supplementary Table S1 (``statistics.csv``, one
  row per cohort and statistic; each over the slides where it is defined);
* region level (Supplementary Table S9): the DSC over corresponding regions averaged over the
  images with at least one corresponding pair, and how many images had none;
* Spearman's rho (eq. 15 p value, eqs. 16-17 Fisher-z interval) between the DSC and the reference
  tumour area (mm² at 5 µm/px) and between the DSC and the tumour prevalence (reference tumour
  pixels / non-background pixels) (exploratory analysis 1);
* the share of slides with no predicted region.

The sweep (exploratory analysis 10): low thresholds 5%, 10%, ..., 90% and, for each, high
thresholds low + 5%, ..., 95% (percent of 255, floored to 8-bit levels as 229 is "90%"), pruning
off, from the saved probability maps without the network. The smoothing is computed once per
slide, the hysteresis components once per low threshold, and the cleaning once per distinct
set of kept components, so pairs that keep the same regions share the work.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from tseg.runtime.evaluation.annotations import Annotation, read_annotation
from tseg.runtime.util.atomic import atomic_write, write_csv, write_text
from tseg.runtime.util.safeio import read_bytes
from tseg.runtime.util.spreadsheet import restore_cell
from tseg.runtime.method.background import clean_mask
from tseg.runtime.errors import AnnotationError, InvalidArgumentError, OutputError
from tseg.runtime.evaluation.metrics import (SECONDARY_STATISTICS, confusion_counts, region_correspondence, spearman, statistics,
                      summarise)
from tseg.runtime.outputs.files import FOREGROUND, MASK, PROBABILITY
from tseg.runtime.outputs.summary import SUMMARY, png_size
from tseg.runtime.method.postprocess import label_regions, smooth_probability
from tseg.runtime.wsi.mpp import OVERVIEW_MPP

log = logging.getLogger(__name__)

REFERENCE_SUFFIXES = (".geojson", ".json", ".xml", ".mask.png", ".png", ".tif", ".tiff")
SWEEP_LOWS = [p / 100 for p in range(5, 95, 5)]  # 5% .. 90%
PIXEL_AREA_MM2 = (OVERVIEW_MPP / 1000.0) ** 2  # one 5 µm/px pixel


def percent_level(fraction: float) -> int:
    """A threshold in percent of 255 as an 8-bit level (floored: 90% -> 229, as the paper)."""
    return int(math.floor(fraction * 255 + 1e-9))


@dataclass
class SlidePrediction:
    name: str
    folder: Path
    summary: dict[str, Any]

    def load(self, what: str) -> np.ndarray:
        """One of the result's 5 µm/px maps, decoded only when its PNG header states the size the
        summary gives them (a 600 KB PNG can claim 25000 x 25000 px: 625 MB decoded)."""
        try:  # never through a link in or to the result folder, never a FIFO (safeio)
            data = read_bytes(self.folder / what, below=self.folder.parent, limit=None)
        except OSError as exc:
            raise OutputError(self.folder / what, f"missing or unreadable prediction file "
                                                  f"({getattr(exc, 'what', None) or exc.strerror or exc})") from None
        size = png_size(data)
        if size is not None and size != self.overview_size:
            raise OutputError(self.folder / what, f"its header claims {size[0]} x {size[1]} px, not the "
                                                  f"{self.overview_size[0]} x {self.overview_size[1]} px its summary.json "
                                                  "states for the maps; not decoded: run the slide again")
        if size is None and data:
            raise OutputError(self.folder / what, "not a PNG image; run the slide again")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
        if image is None:
            raise OutputError(self.folder / what, "missing or unreadable prediction file")
        return image

    @property
    def overview_size(self) -> tuple[int, int]:
        w, h = self.summary["slide"]["size_at_overview_mpp"]
        return int(w), int(h)

    @property
    def level0_extent(self) -> tuple[float, float]:
        """Level-0 size of the area the 5 µm/px maps cover (which may stop short of the edge)."""
        w, h = self.overview_size
        slide = self.summary["slide"]
        if "mpp_level0" in slide:
            mx, my = slide["mpp_level0"]
            return (w * OVERVIEW_MPP / mx, h * OVERVIEW_MPP / my)
        f = OVERVIEW_MPP / float(slide.get("mpp", 1.0))
        return (w * f, h * f)


def find_predictions(results: str | os.PathLike[str]) -> list[SlidePrediction]:
    from tseg.runtime.outputs.summary import read_summary

    root = Path(results)
    folders = [root] if (root / SUMMARY).exists() else sorted(p.parent for p in root.glob(f"*/{SUMMARY}"))
    linked = [f for f in folders if f != root and f.is_symlink()]
    for f in linked:
        log.warning("%s is a symbolic link, not a result folder tseg-rt made; not evaluated", f)
    folders = [f for f in folders if f not in linked]
    if not folders:
        raise InvalidArgumentError(f"{root}: no result folders with {SUMMARY} (run `tseg-rt run` first)")
    return [SlidePrediction(f.name, f, read_summary(f) or {}) for f in folders]


def find_reference(name: str, references: Path, table: dict[str, str] | None) -> Path | None:
    if table is not None:
        value = table.get(name)
        return Path(value) if value else None
    for suffix in REFERENCE_SUFFIXES:
        candidate = references / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return None


def reference_mask(annotation: Annotation, prediction: SlidePrediction) -> np.ndarray:
    """The reference rendered on the prediction's 5 µm/px grid."""
    extent = prediction.level0_extent
    annotation.check_inside(tuple(prediction.summary["slide"].get("dimensions_level0", extent)))
    return annotation.rasterise(extent, prediction.overview_size)


def _read_table(path: Path, key: str, value: str) -> dict[str, str]:
    """``key -> value`` of a two-column CSV; cells neutralised for spreadsheets (a table cut from
    ``per_slide.csv`` or ``cohort.csv``) are read back as written (:func:`restore_cell`)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or key not in rows[0] or value not in rows[0]:
        raise InvalidArgumentError(f"{path}: needs columns '{key}' and '{value}'")
    return {restore_cell(r[key].strip()): restore_cell(r[value].strip()) for r in rows}


@dataclass
class EvaluationResult:
    per_slide: list[dict[str, Any]]
    cohorts: list[dict[str, Any]]
    missing: list[str]
    files: list[Path]


#: Spearman analyses: (name, per-slide key correlated with the DSC).
CORRELATES = (("reference_area", "reference_area_mm2"), ("prevalence", "reference_positive_fraction"))


def cohort_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Everything reported for one cohort (see the module docstring); pure, from per-slide rows."""
    dsc = summarise([r["dsc"] for r in rows])
    regions = summarise([r["region_dsc"] for r in rows])
    out: dict[str, Any] = {
        "slides": len(rows), "dsc_n": dsc["n"], "dsc_undefined": dsc["undefined"], "mean_dsc": dsc["mean"],
        "ci95_low": dsc["ci95_low"], "ci95_high": dsc["ci95_high"], "median_dsc": dsc["median"],
        "no_predicted_region_fraction": sum(r["predicted_regions"] == 0 for r in rows) / len(rows),
        "region_dsc_mean": regions["mean"], "region_dsc_ci95_low": regions["ci95_low"],
        "region_dsc_ci95_high": regions["ci95_high"], "region_dsc_images": regions["n"],
        "images_without_corresponding_regions": regions["undefined"],
    }
    for name, key in CORRELATES:
        rho = spearman([r["dsc"] for r in rows], [r[key] for r in rows]).as_dict()
        out.update({f"spearman_{name}_{k}": v for k, v in rho.items()})
    return out


def _by_cohort(per_slide: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in per_slide:
        groups.setdefault(row["cohort"], []).append(row)
    return dict(sorted(groups.items()))


def _cohort_rows(per_slide: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"cohort": cohort, **cohort_summary(rows)} for cohort, rows in _by_cohort(per_slide).items()]


def statistics_rows(per_slide: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long table (Supplementary Table S1 and the DSC): one row per cohort and statistic."""
    out = []
    for cohort, rows in _by_cohort(per_slide).items():
        for stat in ("dsc", *SECONDARY_STATISTICS, "region_dsc"):
            out.append({"cohort": cohort, "statistic": stat, **summarise([r[stat] for r in rows])})
    return out


def spearman_rows(per_slide: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cohort and correlate: DSC vs reference tumour area, DSC vs prevalence."""
    out = []
    for cohort, rows in _by_cohort(per_slide).items():
        for name, key in CORRELATES:
            out.append({"cohort": cohort, "dsc_versus": name,
                        **spearman([r["dsc"] for r in rows], [r[key] for r in rows]).as_dict()})
    return out


JITTER = 0.12  # half-width of the per-slide points' spread around their cohort's column


def dsc_points(per_slide: Sequence[dict[str, Any]], cohorts: Sequence[dict[str, Any]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per cohort (in ``cohorts`` order), the x and y of its slides' points: x within
    ``index ± JITTER``, deterministic; slides without a DSC are not drawn."""
    out = []
    for i, cohort in enumerate(cohorts):
        y = np.array([r["dsc"] for r in per_slide if r["cohort"] == cohort["cohort"] and r["dsc"] is not None], float)
        x = i + np.random.default_rng(i).uniform(-JITTER, JITTER, y.size)
        out.append((x, y))
    return out


def plot_dsc(per_slide: list[dict[str, Any]], cohorts: list[dict[str, Any]], path: Path) -> Any:
    """Per-slide DSC points over a violin per cohort, with mean (and 95% CI) and median (Fig. 5).

    The x axis spans every cohort's column (``-0.5 .. n - 0.5``) whatever the points, so that a
    cohort's points stay on its column; tick labels give n and the undefined DSCs left out.
    Returns the figure's axes (closed figure) for inspection.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c["cohort"] for c in cohorts]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(names) + 1.5), 4.0), dpi=120)
    for i, (cohort, (x, y)) in enumerate(zip(cohorts, dsc_points(per_slide, cohorts))):
        if y.size > 1 and np.ptp(y) > 0:
            parts = ax.violinplot([y], positions=[i], showextrema=False, widths=0.8)
            for body in parts["bodies"]:
                body.set_alpha(0.3)
        ax.scatter(x, y, s=10, color="0.3", zorder=3, label="slides" if i == 0 else None)
        if cohort["mean_dsc"] is not None:
            ax.scatter([i], [cohort["mean_dsc"]], marker="D", color="tab:red", zorder=4,
                       label="mean (95% CI)" if i == 0 else None)
            ax.scatter([i], [cohort["median_dsc"]], marker="_", s=300, color="tab:blue", zorder=4,
                       label="median" if i == 0 else None)
        if cohort["ci95_low"] is not None:
            ax.vlines(i, cohort["ci95_low"], cohort["ci95_high"], color="tab:red", zorder=4)
    labels = [f"{c['cohort']}\nn={c['dsc_n']}" + (f" (+{c['dsc_undefined']} undef.)" if c["dsc_undefined"] else "")
              for c in cohorts]
    ax.set_xticks(range(len(names)), labels)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("DSC")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path)
    return ax


def _fmt(value: float | None, digits: int = 3) -> str:
    return "undefined" if value is None else f"{value:.{digits}f}"


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, fig.savefig, keep_suffix=True)
    plt.close(fig)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        write_csv(path, rows)


def _load_pairs(results: str | os.PathLike[str], references: str | os.PathLike[str],
                classes: Sequence[str] | None, repair: bool):
    refs = Path(references)
    table = _read_table(refs, "slide", "reference") if refs.is_file() else None
    if table is None and not refs.is_dir():
        raise InvalidArgumentError(f"{refs}: no such reference folder or CSV")
    pairs, missing = [], []
    for pred in find_predictions(results):
        ref = find_reference(pred.name, refs, table)
        if ref is None:
            missing.append(pred.name)
            continue
        annotation = read_annotation(ref, classes, repair)
        pairs.append((pred, ref, reference_mask(annotation, pred)))
    if not pairs:
        raise InvalidArgumentError(f"no reference found for any of the predictions in {results} "
                                   f"(looked for NAME{{{','.join(REFERENCE_SUFFIXES)}}} in {refs})")
    return pairs, missing


def evaluate(results: str | os.PathLike[str], references: str | os.PathLike[str], out: str | os.PathLike[str],
             cohorts_csv: str | os.PathLike[str] | None = None, classes: Sequence[str] | None = None,
             repair: bool = False, plot: bool = True) -> EvaluationResult:
    """Compare every prediction with its reference; write per-slide and per-cohort tables."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cohort_of = _read_table(Path(cohorts_csv), "slide", "cohort") if cohorts_csv else {}
    pairs, missing = _load_pairs(results, references, classes, repair)
    per_slide = []
    for pred, ref_path, ref in pairs:
        mask, foreground = pred.load(MASK) > 0, pred.load(FOREGROUND) > 0
        if mask.shape != ref.shape:
            raise AnnotationError(ref_path, f"rendered at {ref.shape}, prediction is {mask.shape}")
        reference = ref & foreground
        counts = confusion_counts(mask, reference, foreground)
        stats = statistics(counts)
        regions = region_correspondence(mask, reference)
        n_pred_regions = label_regions(mask)[0] - 1
        per_slide.append({"slide": pred.name, "cohort": cohort_of.get(pred.name, "all"), "reference": str(ref_path),
                          "tp": counts.tp, "fp": counts.fp, "fn": counts.fn, "tn": counts.tn,
                          "reference_area_mm2": (counts.tp + counts.fn) * PIXEL_AREA_MM2,
                          **stats, **regions.as_dict(), "predicted_regions": n_pred_regions})
    cohorts = _cohort_rows(per_slide)
    table_s1, correlations = statistics_rows(per_slide), spearman_rows(per_slide)
    files = [out / "per_slide.csv", out / "cohorts.csv", out / "statistics.csv", out / "spearman.csv",
             out / "evaluation.json"]
    _write_csv(files[0], per_slide)
    _write_csv(files[1], cohorts)
    _write_csv(files[2], table_s1)
    _write_csv(files[3], correlations)
    data = {"per_slide": per_slide, "cohorts": cohorts, "statistics": table_s1, "spearman": correlations,
            "missing_references": missing, "background_excluded": True, "resolution_mpp": OVERVIEW_MPP,
            "notes": {"undefined": "a statistic whose denominator is 0 (e.g. the DSC of a slide whose reference "
                                   "and prediction are both empty) is left out of its cohort's mean and counted",
                      "prevalence": "reference tumour pixels / non-background pixels",
                      "reference_area_mm2": f"reference tumour pixels x ({OVERVIEW_MPP} µm)², background excluded"}}
    write_text(files[4], json.dumps(data, indent=2, default=str) + "\n")
    if plot:
        plot_dsc(per_slide, cohorts, out / "dsc.png")
        files.append(out / "dsc.png")
    return EvaluationResult(per_slide, cohorts, missing, files)


# --- the threshold sweep -------------------------------------------------------------------------


def sweep_pairs() -> list[tuple[float, float]]:
    """(low, high) fractions: low 5%..90%, high low+5%..95% (exploratory analysis 10)."""
    pairs = []
    for low in SWEEP_LOWS:
        high = low + 0.05
        while high <= 0.95 + 1e-9:
            pairs.append((round(low, 2), round(high, 2)))
            high += 0.05
    return pairs


def sweep_slide(smoothed: np.ndarray, foreground: np.ndarray, reference: np.ndarray,
                pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], float | None]:
    """DSC for each (low, high) level pair with pruning off, sharing work across pairs."""
    results: dict[tuple[int, int], float | None] = {}
    by_low: dict[int, list[int]] = {}
    for low, high in pairs:
        by_low.setdefault(low, []).append(high)
    cache: dict[bytes, float | None] = {}
    for low, highs in by_low.items():
        count, labels = label_regions(smoothed > low)
        peak = np.zeros(count, np.int64)
        np.maximum.at(peak, labels.ravel(), smoothed.ravel())
        for high in highs:
            keep = peak > high
            keep[0] = False
            key = np.packbits(keep).tobytes() + count.to_bytes(8, "little") + low.to_bytes(2, "little")
            if key not in cache:
                mask = clean_mask(keep[labels] & foreground)
                cache[key] = statistics(confusion_counts(mask, reference, foreground))["dsc"]
            results[(low, high)] = cache[key]
    return results


def sweep(results: str | os.PathLike[str], references: str | os.PathLike[str], out: str | os.PathLike[str],
          classes: Sequence[str] | None = None, repair: bool = False, plot: bool = True) -> dict[str, Any]:
    """Mean DSC for every threshold pair, from saved probability maps; best pair reported."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fraction_pairs = sweep_pairs()
    level_pairs = [(percent_level(lo), percent_level(hi)) for lo, hi in fraction_pairs]
    loaded, missing = _load_pairs(results, references, classes, repair)
    per_pair: dict[tuple[int, int], list[float | None]] = {p: [] for p in level_pairs}
    for pred, _, ref in loaded:
        smoothed = smooth_probability(pred.load(PROBABILITY))
        foreground = pred.load(FOREGROUND) > 0
        scores = sweep_slide(smoothed, foreground, ref & foreground, level_pairs)
        for pair, value in scores.items():
            per_pair[pair].append(value)
    rows = []
    for (lo_f, hi_f), (lo, hi) in zip(fraction_pairs, level_pairs):
        values = summarise(per_pair[(lo, hi)])  # undefined DSCs (both masks empty) left out, counted
        rows.append({"low_percent": round(lo_f * 100), "high_percent": round(hi_f * 100), "low": lo, "high": hi,
                     "mean_dsc": values["mean"], "slides": values["n"], "dsc_undefined": values["undefined"]})
    best = max((r for r in rows if r["mean_dsc"] is not None), key=lambda r: r["mean_dsc"], default=rows[0])
    _write_csv(out / "sweep.csv", rows)
    summary = {"pairs": len(rows), "slides": len(loaded), "missing_references": missing, "best": best,
               "pruning": False, "note": "thresholds in percent of 255, floored to 8-bit levels"}
    write_text(out / "sweep.json", json.dumps({**summary, "rows": rows}, indent=2) + "\n")
    if plot:
        plot_sweep(rows, out / "sweep.png")
    return summary


def plot_sweep(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lows = sorted({r["low_percent"] for r in rows})
    highs = sorted({r["high_percent"] for r in rows})
    grid = np.full((len(lows), len(highs)), np.nan)
    for r in rows:
        if r["mean_dsc"] is not None:
            grid[lows.index(r["low_percent"]), highs.index(r["high_percent"])] = r["mean_dsc"]
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(highs)), [str(h) for h in highs], fontsize=7)
    ax.set_yticks(range(len(lows)), [str(lo) for lo in lows], fontsize=7)
    ax.set_xlabel("high threshold (% of 255)")
    ax.set_ylabel("low threshold (% of 255)")
    best = max(rows, key=lambda r: -1.0 if r["mean_dsc"] is None else r["mean_dsc"])
    ax.scatter([highs.index(best["high_percent"])], [lows.index(best["low_percent"])], marker="*", s=150,
               color="red", label=f"best {best['low_percent']}/{best['high_percent']}%: {_fmt(best['mean_dsc'])}")
    ax.legend(loc="upper left", fontsize=8)
    fig.colorbar(image, label="mean DSC")
    fig.tight_layout()
    _save_figure(fig, path)
