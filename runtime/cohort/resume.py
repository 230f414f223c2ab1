"""Which finished result belongs to which slide, and whether it can be reused.

Library functions shared by ``tseg-rt run`` (:mod:`tseg.runtime.cohort.batch`) and anything that
distributes slides over processes or machines; nothing here depends on the rest of a batch.
Identity and names are in :mod:`tseg.runtime.cohort.identity`, locks in
:mod:`tseg.runtime.cohort.locks`; this module decides, and re-exports both for runners.

Who a slide is (its path and content fingerprint), which result folder it gets and when a
recorded result is the same slide's (:func:`match_slide`) are described in
:mod:`tseg.runtime.cohort.identity`.

**Reuse** (:func:`decide`), for a finished result (``summary.json`` present) of this slide:

* ``--overwrite``, an unreadable summary, a changed slide file, another model file (SHA-256; the
  plans of one ONNX model built for several GPU types count as one model), another level-0
  resolution, background tiles skipped differently, or other opt-in reading speed-ups
  (``--level-tolerance``, ``--dct-scaling``) -> **run** again;
* only ``low`` / ``high`` / ``prune`` or the overlay's style and opacity differ (a result made
  before overlays recorded them counts as different, so its picture is redrawn with a legend)
  -> **post-process** again from the saved maps (no network; equal to a fresh run with those
  settings);
* everything equal -> **skip**.

A result made with ``--mpp X`` is reused by a run without ``--mpp`` when the slide's own metadata
is missing or implausible (that run could not do better) or equals X.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from tseg.runtime.cohort.identity import SlideIdentity, match_slide
from tseg.runtime.errors import OutputError
from tseg.runtime.outputs.summary import SUMMARY, read_summary

#: Everything a runner needs to resume (identity and locks are defined in their own modules).
#: Relative difference under which two level-0 resolutions are the same.
MPP_TOLERANCE = 0.005


@dataclass(frozen=True)
class Wanted:
    """What a run would make: the settings that decide a result."""

    model_sha256: str
    model_path: str
    low: int
    high: int
    prune: bool
    skip_background: bool
    mpp: tuple[float, float] | None  # the override, or None for the slide's metadata
    #: Other model files that make the same results: the plans of one ONNX model built for other
    #: GPUs (a folder of plans, ``--engine PLANS/``), so that a heterogeneous cluster does not redo
    #: a slide because another GPU type finished it.
    equivalent_sha256: frozenset[str] = frozenset()
    level_tolerance: float = 0.0  # opt-in reading speed-ups: they change the pixels read
    dct_scaling: bool = False
    #: How overlay.png is drawn (outputs only: a change redraws it from the saved maps); None: any.
    overlay_style: str | None = None
    overlay_opacity: float | None = None


@dataclass(frozen=True)
class Decision:
    action: str  # run | skip | postprocess
    reason: str
    match: str = "same"  # same | changed | moved | new


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= MPP_TOLERANCE * max(abs(a), abs(b))


def _fmt_mpp(v: Any) -> str:
    return "x".join(f"{float(x):.4g}" for x in v) if isinstance(v, (list, tuple)) else str(v)


def _overlay_change(settings: Mapping[str, Any], wanted: Wanted) -> str:
    """How the recorded overlay differs from the wanted one ("" when it does not)."""
    if wanted.overlay_style is None:
        return ""
    style, opacity = settings.get("overlay_style"), settings.get("overlay_opacity")
    want = f"{wanted.overlay_style} at {float(wanted.overlay_opacity or 0):.0%} opacity"
    if style is None:
        return f"made by an earlier tseg-rt without a legend, now {want}"
    if not isinstance(opacity, (int, float)) or isinstance(opacity, bool):
        return f"overlay {style}, now {want}"
    if style != wanted.overlay_style or abs(float(opacity) - float(wanted.overlay_opacity or 0)) > 1e-9:
        return f"overlay {style} at {float(opacity):.0%} opacity, now {want}"
    return ""


def decide(folder: Path, identity: SlideIdentity, wanted: Wanted, overwrite: bool = False,
           metadata_mpp: Callable[[], tuple[float, float] | None] | None = None) -> Decision:
    """Run, skip or post-process again (see the module docstring). ``metadata_mpp`` returns the
    slide's own plausible level-0 resolution (or None); it is called only when needed."""
    if overwrite:
        return Decision("run", "--overwrite", "same")
    try:
        summary = read_summary(folder)
    except OutputError as exc:
        return Decision("run", f"redone: the previous {SUMMARY} is unreadable ({exc})", "same")
    if summary is None:
        return Decision("run", "new", "new")
    slide = summary.get("slide") if isinstance(summary.get("slide"), dict) else {}
    how = match_slide(slide, identity) if slide.get("path") else "same"
    if how == "changed":
        return Decision("run", "redone: the slide file changed since its result was made", how)
    model = summary.get("model", {}) if isinstance(summary.get("model"), dict) else {}
    made_sha = (model.get("backend") or {}).get("sha256")
    if made_sha != wanted.model_sha256 and made_sha not in wanted.equivalent_sha256:
        made = (model.get("backend") or {}).get("path", "another model")
        short = (made_sha or "?")[:12]
        return Decision("run", f"redone: the result was made with another model ({made}, sha256 {short}...), "
                               f"now {wanted.model_path} (sha256 {wanted.model_sha256[:12]}...)", how)
    settings = summary.get("settings", {}) if isinstance(summary.get("settings"), dict) else {}
    made_mpp = slide.get("mpp_level0")
    if made_mpp is None:
        return Decision("run", "redone: the result does not record its resolution", how)
    if wanted.mpp is not None:
        if not all(_close(a, b) for a, b in zip(made_mpp, wanted.mpp)):
            return Decision("run", f"redone: made at {_fmt_mpp(made_mpp)} µm/px level 0, now {_fmt_mpp(wanted.mpp)}", how)
    elif slide.get("mpp_source") == "override":
        own = metadata_mpp() if metadata_mpp else None
        if own is not None and not all(_close(a, b) for a, b in zip(made_mpp, own)):
            return Decision("run", f"redone: made with --mpp {_fmt_mpp(made_mpp)}, now the slide's metadata "
                                   f"{_fmt_mpp(own)} µm/px", how)
    if bool(settings.get("skip_background", True)) != wanted.skip_background:
        return Decision("run", "redone: background tiles were handled differently", how)
    made_read = (float(settings.get("level_tolerance_percent") or 0.0), bool(settings.get("dct_scaling", False)))
    want_read = (float(wanted.level_tolerance), bool(wanted.dct_scaling))
    if made_read != want_read:
        return Decision("run", f"redone: read with --level-tolerance {made_read[0]:g}"
                               f"{' --dct-scaling' if made_read[1] else ''}, now --level-tolerance {want_read[0]:g}"
                               f"{' --dct-scaling' if want_read[1] else ''}", how)
    made_t = (settings.get("low"), settings.get("high"), bool(settings.get("prune", True)))
    want_t = (wanted.low, wanted.high, wanted.prune)
    overlay = _overlay_change(settings, wanted)
    if made_t != want_t:
        def fmt(t: tuple[Any, Any, bool]) -> str:
            return f"low/high {t[0]}/{t[1]}" + ("" if t[2] else ", no pruning")
        also = f"; {overlay}" if overlay else ""
        return Decision("postprocess", f"post-processed again: made with {fmt(made_t)}, now {fmt(want_t)}{also} "
                                       "(from the saved maps, no network)", how)
    if overlay:
        return Decision("postprocess", f"overlay redrawn: {overlay} (from the saved maps, no network)", how)
    if how == "moved":
        return Decision("skip", f"finished (the slide moved from {slide.get('path')})", how)
    return Decision("skip", "finished with these settings", how)


def wanted_from(segmenter: Any) -> Wanted:
    """What ``segmenter`` would make (model file hash, thresholds, resolution override)."""
    s = segmenter.settings
    mpp = s.mpp
    if mpp is not None:
        mpp = (float(mpp), float(mpp)) if isinstance(mpp, (int, float)) else (float(mpp[0]), float(mpp[1]))
        if not all(math.isfinite(v) for v in mpp):
            mpp = None
    backend = segmenter.backend
    return Wanted(backend.sha256, str(backend.path), int(segmenter.low), int(segmenter.high), bool(s.prune),
                  bool(s.skip_background), mpp, frozenset(getattr(backend, "equivalent_sha256", ()) or ()),
                  float(s.level_tolerance), bool(s.dct_scaling), s.overlay_style, float(s.overlay_opacity))
