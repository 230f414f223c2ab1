"""Agreement between a predicted and a reference mask (paper, *Performance evaluation*, *Analyses*).

Pixel level: white background is excluded from every count (``foreground``); TP/FP/FN/TN and
the statistics of equations (5)-(14) plus the fractions of reference and predicted positives.
A statistic whose denominator is zero is ``None`` (undefined), never silently 0.

Cohort level: mean with a Student-t 95% confidence interval of the DSC (planned primary
analysis) and of the eleven secondary statistics (planned secondary analysis 1), over the slides
where the statistic is defined: a slide whose reference and prediction are both empty has no DSC
and is left out (and counted), as the authors' code skips undefined values.

Correlation (*Statistical analysis*): Spearman's rho is Pearson's r on the ranks (ties get their
average rank), its p value comes from t = r sqrt((n - 2) / (1 - r^2)) with n - 2 degrees of
freedom, two-sided (eq. 15), and its confidence interval from Fisher's z = arctanh(r) with
standard error 1 / sqrt(n - 3): tanh(arctanh(r) +- z_{1-alpha/2} / sqrt(n - 3)) (eqs. 16-17).

Region level (exploratory analysis 3): 4-connected regions; a reference and a predicted region
correspond when their IoU is above 0.5 (which makes the correspondence one-to-one); reference
regions smaller than 1,600 px are discarded; the DSC over corresponding regions adds up the
contingency tables of all corresponding pairs of the image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.method.postprocess import label_regions

MIN_REFERENCE_REGION = 1_600
REGION_IOU = 0.5


@dataclass(frozen=True)
class ConfusionCounts:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def __add__(self, other: "ConfusionCounts") -> "ConfusionCounts":
        return ConfusionCounts(self.tp + other.tp, self.fp + other.fp,
                               self.fn + other.fn, self.tn + other.tn)


def _as_masks(pred: np.ndarray, ref: np.ndarray, foreground: np.ndarray | None):
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise InvalidArgumentError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    if foreground is not None:
        foreground = np.asarray(foreground, dtype=bool)
        if foreground.shape != pred.shape:
            raise InvalidArgumentError(f"foreground {foreground.shape} differs from masks {pred.shape}")
    return pred, ref, foreground


def confusion_counts(pred: np.ndarray, ref: np.ndarray,
                     foreground: np.ndarray | None = None) -> ConfusionCounts:
    """Contingency counts over the pixels where ``foreground`` is True (all pixels if None)."""
    pred, ref, fg = _as_masks(pred, ref, foreground)
    if fg is not None:
        pred, ref = pred[fg], ref[fg]
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred & ~ref))
    fn = int(np.count_nonzero(~pred & ref))
    tn = int(pred.size - tp - fp - fn)
    return ConfusionCounts(tp, fp, fn, tn)


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def statistics(c: ConfusionCounts) -> dict[str, float | None]:
    """DSC and the other statistics of *Performance evaluation*, equations (5)-(14)."""
    tp, fp, fn, tn = c.tp, c.fp, c.fn, c.tn
    tpr = _ratio(tp, tp + fn)
    tnr = _ratio(tn, tn + fp)
    ppv = _ratio(tp, tp + fp)
    npv = _ratio(tn, tn + fn)
    den = (tp + fn) * (tp + fp) * (tn + fn) * (tn + fp)
    return {
        "dsc": _ratio(2 * tp, 2 * tp + fn + fp),
        "tpr": tpr,
        "fnr": _ratio(fn, tp + fn),
        "tnr": tnr,
        "fpr": _ratio(fp, tn + fp),
        "ppv": ppv,
        "npv": npv,
        "informedness": None if tpr is None or tnr is None else tpr + tnr - 1,
        "markedness": None if ppv is None or npv is None else ppv + npv - 1,
        "mcc": None if den == 0 else (tp * tn - fn * fp) / math.sqrt(float(den)),
        "reference_positive_fraction": _ratio(tp + fn, c.n),
        "predicted_positive_fraction": _ratio(tp + fp, c.n),
    }


#: Planned secondary analysis 1: "fraction of reference positives, fraction of predicted
#: positives, and eqs. (5) to (13)" -- Supplementary Table S1.
SECONDARY_STATISTICS = ("tpr", "fnr", "tnr", "fpr", "ppv", "npv", "informedness", "markedness", "mcc",
                        "reference_positive_fraction", "predicted_positive_fraction")


def dsc(pred: np.ndarray, ref: np.ndarray, foreground: np.ndarray | None = None) -> float | None:
    return statistics(confusion_counts(pred, ref, foreground))["dsc"]


@dataclass(frozen=True)
class MeanCI:
    mean: float
    low: float
    high: float
    n: int
    confidence: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean with a two-sided Student-t confidence interval: ``mean ± t(1-α/2, n-1) s / sqrt(n)``."""
    from scipy.stats import t as student_t

    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if x.size == 0:
        raise InvalidArgumentError("mean_ci needs at least one value")
    if not 0 < confidence < 1:
        raise InvalidArgumentError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(x.mean())
    if x.size == 1:
        return MeanCI(mean, float("nan"), float("nan"), 1, confidence)
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    half = float(student_t.ppf(0.5 + confidence / 2, x.size - 1)) * sem
    return MeanCI(mean, mean - half, mean + half, int(x.size), confidence)


def summarise(values: Sequence[float | None], confidence: float = 0.95) -> dict[str, float | int | None]:
    """n, undefined (None values, left out), mean, Student-t CI and median of the defined values."""
    defined = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    out: dict[str, float | int | None] = {"n": len(defined), "undefined": len(values) - len(defined),
                                          "mean": None, "ci95_low": None, "ci95_high": None, "median": None}
    if defined:
        ci = mean_ci(defined, confidence)
        out.update(mean=ci.mean, ci95_low=None if math.isnan(ci.low) else ci.low,
                   ci95_high=None if math.isnan(ci.high) else ci.high, median=float(np.median(defined)))
    return out


@dataclass(frozen=True)
class Spearman:
    """Spearman's rank correlation with its eq. (15) p value and eqs. (16)-(17) interval."""

    rho: float | None
    p: float | None
    low: float | None
    high: float | None
    n: int
    confidence: float = 0.95

    def as_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "rho": self.rho, "p": self.p, "ci95_low": self.low, "ci95_high": self.high}


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size, np.float64)
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + 1 + b) / 2.0
    return ranks


def spearman(x: Sequence[float | None], y: Sequence[float | None], confidence: float = 0.95) -> Spearman:
    """Spearman's rho of the pairs where both values are defined (*Statistical analysis*).

    Undefined (``None``/NaN) pairs are dropped. ``rho`` is None when fewer than 2 pairs remain or
    a variable is constant; ``p`` needs n >= 3 and the interval n >= 4 (its standard error is
    1 / sqrt(n - 3)). For |rho| = 1 the p value is 0 and the interval is [rho, rho].
    """
    from scipy.stats import norm
    from scipy.stats import t as student_t

    if len(x) != len(y):
        raise InvalidArgumentError(f"spearman needs pairs, got {len(x)} and {len(y)} values")
    if not 0 < confidence < 1:
        raise InvalidArgumentError(f"confidence must be in (0, 1), got {confidence}")
    pairs = [(float(a), float(b)) for a, b in zip(x, y)
             if a is not None and b is not None and not math.isnan(float(a)) and not math.isnan(float(b))]
    n = len(pairs)
    if n < 2:
        return Spearman(None, None, None, None, n, confidence)
    rx = average_ranks(np.array([a for a, _ in pairs]))
    ry = average_ranks(np.array([b for _, b in pairs]))
    dx, dy = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if den == 0:
        return Spearman(None, None, None, None, n, confidence)
    r = max(-1.0, min(1.0, float(dx @ dy) / den))
    p = low = high = None
    if n >= 3:
        if abs(r) == 1.0:
            p = 0.0
        else:
            t = r * math.sqrt((n - 2) / (1 - r * r))  # eq. (15)
            p = float(2 * student_t.sf(abs(t), n - 2))
    if n >= 4:
        if abs(r) == 1.0:
            low = high = r
        else:
            half = float(norm.ppf(0.5 + confidence / 2)) / math.sqrt(n - 3)  # eq. (17)
            z = math.atanh(r)  # eq. (16)
            low, high = math.tanh(z - half), math.tanh(z + half)
    return Spearman(r, p, low, high, n, confidence)


@dataclass(frozen=True)
class RegionResult:
    """Region-level correspondence of one image."""

    pairs: list[tuple[int, int, float]]  # (reference label, predicted label, IoU)
    reference_regions: int
    predicted_regions: int
    counts: ConfusionCounts  # summed over corresponding pairs

    @property
    def true_positive_regions(self) -> int:
        return len(self.pairs)

    @property
    def false_negative_regions(self) -> int:
        return self.reference_regions - len(self.pairs)

    @property
    def false_positive_regions(self) -> int:
        return self.predicted_regions - len(self.pairs)

    @property
    def dsc(self) -> float | None:
        """DSC over corresponding regions; None when the image has no corresponding pair."""
        return statistics(self.counts)["dsc"] if self.pairs else None

    def as_dict(self) -> dict[str, object]:
        return {
            "reference_regions": self.reference_regions,
            "predicted_regions": self.predicted_regions,
            "true_positive_regions": self.true_positive_regions,
            "false_negative_regions": self.false_negative_regions,
            "false_positive_regions": self.false_positive_regions,
            "region_dsc": self.dsc,
        }


def region_correspondence(pred: np.ndarray, ref: np.ndarray,
                          min_reference_area: int = MIN_REFERENCE_REGION,
                          iou_threshold: float = REGION_IOU) -> RegionResult:
    """Match 4-connected reference and predicted regions with IoU > ``iou_threshold``."""
    pred, ref, _ = _as_masks(pred, ref, None)
    n_ref, ref_labels = label_regions(ref)
    n_pred, pred_labels = label_regions(pred)
    ref_area = np.bincount(ref_labels.ravel(), minlength=n_ref)
    pred_area = np.bincount(pred_labels.ravel(), minlength=n_pred)
    kept_ref = np.flatnonzero(ref_area >= min_reference_area)
    kept_ref = kept_ref[kept_ref != 0]
    both = (ref_labels > 0) & (pred_labels > 0)
    joint = np.bincount(ref_labels[both].astype(np.int64) * n_pred + pred_labels[both],
                        minlength=n_ref * n_pred).reshape(n_ref, n_pred)
    pairs: list[tuple[int, int, float]] = []
    counts = ConfusionCounts(0, 0, 0, 0)
    keep = set(kept_ref.tolist())
    for r, p in zip(*np.nonzero(joint)):
        if int(r) not in keep:
            continue
        inter = int(joint[r, p])
        union = int(ref_area[r] + pred_area[p] - inter)
        iou = inter / union
        if iou > iou_threshold:
            pairs.append((int(r), int(p), float(iou)))
            counts = counts + ConfusionCounts(inter, int(pred_area[p]) - inter,
                                              int(ref_area[r]) - inter, 0)
    return RegionResult(pairs, int(len(kept_ref)), int(n_pred - 1), counts)
