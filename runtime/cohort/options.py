"""Per-slide options: what a user may choose for each slide, wherever the slide comes from.

One object, :class:`SlideOptions`, carries them for ``tseg-rt run`` (its flags and the slides
CSV's columns), the HTTP service (a job's ``options``) and the hot folder (its flags). Each field
carries its help text and range as metadata, so the service's request schema is derived from this
class (:mod:`tseg.runtime.service.schemas`) and a new per-slide option (an output format, an
overlay setting) is added here once.

Fields are grouped by who consumes them (``metadata["scope"]``): ``"segmenter"`` fields are
settings of :class:`~tseg.runtime.execution.segmenter.Segmenter` (and so of the resume rules in
:mod:`tseg.runtime.cohort.resume`, which compare them with a finished result; the overlay's style
and opacity change only ``overlay.png``, redrawn from the saved maps); ``"outputs"`` fields say
which extra outputs a slide gets (``dicom_out``: its DICOM objects, made with the settings the
run or the service was started with: ``--dicom-out``, ``--stow``, ``--dicom-metadata``).

``None`` means "the model's default" (thresholds) or "the slide's metadata" (resolution).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, Mapping

from tseg.runtime.errors import InvalidArgumentError


def _check_mpp(values: list[float], what: str, raw: str) -> float | tuple[float, float]:
    """Each value positive, finite and plausible (the rules of :func:`tseg.runtime.wsi.mpp.parse_mpp`)."""
    from tseg.runtime.wsi.mpp import parse_mpp

    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise InvalidArgumentError(f"{what} must be a positive number of µm per pixel, got {raw!r}")
    return parse_mpp(",".join(repr(float(v)) for v in values), what)


#: The overlay's styles and defaults, as :mod:`tseg.runtime.execution.segmenter` has them
#: (``OVERLAY_STYLES``, ``DEFAULT_OVERLAY_*``; a test keeps them equal). Not imported from there so
#: that the command line's ``--help`` does not load the execution layer.
OverlayStyle = Literal["fill", "contour", "heatmap"]
OVERLAY_STYLE_DEFAULT = "fill"
OVERLAY_OPACITY_DEFAULT = 0.35


#: The model's default thresholds (the bundled model's; a model's contract may differ), against
#: which ``tseg-rt run`` checks a --low or --high given alone (the model's own are checked again
#: when it is loaded).
DEFAULT_THRESHOLDS = (85, 229)


def _meta(help: str, flag: str | None, scope: str = "segmenter", low: float | None = None, high: float | None = None,
          metavar: str | None = None) -> dict[str, Any]:
    """A field's help, range and consumer, and its command-line ``flag`` (None: not a flag); the
    commands' parameters are generated from them (:mod:`tseg.runtime.cli.options`)."""
    return {"help": help, "scope": scope, "min": low, "max": high, "flag": flag, "metavar": metavar}


@dataclass(frozen=True)
class SlideOptions:
    """The options of one slide. Build with keywords, then :meth:`checked`; or parse untrusted
    input with :meth:`from_mapping` (JSON, CSV rows), which names the field at fault."""

    mpp: float | tuple[float, float] | None = field(default=None, metadata=_meta(
        "Level-0 resolution in µm per pixel, X or X,Y (in JSON: a number or [X, Y]); overrides the slide's "
        "metadata (with a warning when that was plausible). Default: the slide's metadata.", "--mpp"))
    low: int | None = field(default=None, metadata=_meta(
        "Hysteresis low threshold, 0-255. Default: the model's (85).", "--low", low=0, high=255))
    high: int | None = field(default=None, metadata=_meta(
        "Hysteresis high threshold, 0-255. Default: the model's (229).", "--high", low=0, high=255))
    prune: bool = field(default=True, metadata=_meta(
        "Keep a region only if the 95th percentile of its smoothed probability exceeds the high threshold "
        "(the paper's pruning).", "--prune/--no-prune"))
    level_tolerance: float = field(default=0.0, metadata=_meta(
        "Opt-in: read a pyramid level within this many percent of the target resolution and resize it slightly "
        "up (e.g. 2 for Aperio 40x slides), 0-50. Default 0: the paper's rule.", "--level-tolerance", low=0, high=50))
    dct_scaling: bool = field(default=False, metadata=_meta(
        "Opt-in: decode JPEG tiles at 1/2, 1/4 or 1/8 in the DCT domain when that is still at least the target "
        "resolution.", "--dct-scaling"))
    allow_non_brightfield: bool = field(default=False, metadata=_meta(
        "Segment slides whose metadata says they are not H&E brightfield (fluorescence, multiplex, grey), which are "
        "refused by default: the model was trained on H&E brightfield only, so results on them are not validated.",
        "--allow-non-brightfield"))
    overlay_style: OverlayStyle = field(default=OVERLAY_STYLE_DEFAULT, metadata=_meta(
        "overlay.png: fill (translucent tumour fill with its contour), contour (the contour alone) or heatmap "
        "(the probability as a colour-blind-safe heat map with the contour). Changes only the overlay.",
        "--overlay-style", metavar="fill|contour|heatmap"))
    overlay_opacity: float = field(default=OVERLAY_OPACITY_DEFAULT, metadata=_meta(
        "Opacity of the overlay's fill or heat map, 0-1 (the tissue stays visible below it).", "--overlay-opacity",
        low=0, high=1))
    dicom_out: bool = field(default=False, metadata=_meta(
        "Also make the result's DICOM objects (SEG, probability SEG, bulk annotations; stored with STOW-RS when the "
        "service has --stow). Only where the service was started with --dicom-out or --stow; default: on there.",
        None, scope="outputs"))

    # --- checking and parsing ----------------------------------------------------------------

    def checked(self, where: str = "", defaults: tuple[int, int] | None = None) -> "SlideOptions":
        """This object, after checking every field (InvalidArgumentError naming it). Thresholds
        are checked here only (:func:`~tseg.runtime.method.postprocess.check_thresholds`): a pair
        given together, or, with ``defaults`` (the model's low and high), one given alone."""
        at = f"{where}: " if where else ""
        if self.mpp is not None:
            values = [self.mpp] if isinstance(self.mpp, (int, float)) else list(self.mpp)
            if len(values) not in (1, 2):
                raise InvalidArgumentError(f"{at}mpp takes X or [X, Y] in µm per pixel, got {self.mpp!r}")
            _check_mpp(values, f"{at}mpp", str(self.mpp))
        for name in ("low", "high"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255):
                raise InvalidArgumentError(f"{at}{name} must be an integer 0-255, got {value!r}")
        if defaults is not None or (self.low is not None and self.high is not None):
            from tseg.runtime.method.postprocess import check_thresholds

            try:
                check_thresholds(*self.thresholds(*(defaults or DEFAULT_THRESHOLDS)))
            except InvalidArgumentError as exc:
                raise InvalidArgumentError(f"{at}{exc}") from None
        for name in ("prune", "dct_scaling", "allow_non_brightfield", "dicom_out"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(f"{at}{name} must be true or false, got {getattr(self, name)!r}")
        tol = self.level_tolerance
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or not 0 <= tol <= 50:
            raise InvalidArgumentError(f"{at}level_tolerance must be a number of percent 0-50, got {tol!r}")
        from tseg.runtime.execution.segmenter import check_overlay  # the check Segmenter makes

        try:
            check_overlay(self.overlay_style, self.overlay_opacity)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{at}{exc}") from None
        return self

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "") -> "SlideOptions":
        """Options from a mapping of field names to values (JSON-like: ``mpp`` may be a number,
        an ``"X,Y"`` string or a two-item list). Unknown names are refused, naming the allowed ones."""
        at = f"{where}: " if where else ""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgumentError(f"{at}unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        values = dict(data)
        mpp = values.get("mpp")
        if isinstance(mpp, str):
            from tseg.runtime.wsi.mpp import parse_mpp

            values["mpp"] = parse_mpp(mpp, f"{at}mpp")
        elif isinstance(mpp, (list, tuple)):
            values["mpp"] = tuple(mpp) if len(mpp) == 2 else mpp
        for name in ("level_tolerance", "overlay_opacity"):
            if isinstance(values.get(name), int) and not isinstance(values.get(name), bool):
                values[name] = float(values[name])
        return cls(**values).checked(where)

    def merged(self, overrides: Mapping[str, Any], where: str = "",
               defaults: tuple[int, int] | None = None) -> "SlideOptions":
        """These options with some fields replaced (a slides-CSV row over the run's flags)."""
        return replace(self, **dict(overrides)).checked(where, defaults)

    # --- what the parts of the system take ---------------------------------------------------

    def thresholds(self, default_low: int = 85, default_high: int = 229) -> tuple[int, int]:
        return (self.low if self.low is not None else default_low, self.high if self.high is not None else default_high)

    def segmenter_settings(self) -> dict[str, Any]:
        """Keyword settings for :class:`~tseg.runtime.execution.segmenter.Segmenter` and its
        ``with_settings`` (the fields whose scope is ``segmenter``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("scope") == "segmenter"}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and canonical (``mpp`` as a number or a two-item list): equal options give
        equal dictionaries."""
        data = asdict(self)
        if isinstance(self.mpp, tuple):
            data["mpp"] = [float(v) for v in self.mpp]
        elif self.mpp is not None:
            data["mpp"] = float(self.mpp)
        data["level_tolerance"] = float(self.level_tolerance)
        data["overlay_opacity"] = float(self.overlay_opacity)
        return data

    @classmethod
    def describe_fields(cls) -> list[dict[str, Any]]:
        """Name, default and metadata of each field (for schemas and help texts)."""
        return [{"name": f.name, "default": f.default, **dict(f.metadata)} for f in fields(cls)]
