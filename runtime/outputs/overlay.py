"""The overlay picture a pathologist reads (``overlay.png``; the report's thumbnails are small copies).

:func:`render_overlay` is a pure function: the 5 µm/px maps in, an RGB array out. The map keeps
the overview's pixels (its top-left ``h x w`` pixels are the overview's, so it lines up with
``mask.png``); a legend is added *below* it, so nothing on the tissue is hidden by text.

The map (decisions where the issue left room; QuPath, ASAP and Slim draw predictions alike):

* **tissue stays visible**: the tumour mask is a translucent fill (``style="fill"``, default
  opacity :data:`DEFAULT_OVERLAY_OPACITY`: a pixel becomes ``(1 - a) * slide + a * colour``, so
  the tissue's texture keeps a share ``(1 - a)`` of its contrast), only a contour
  (``"contour"``: the tissue is untouched), or the probability as a translucent heat map over the
  tissue (``"heatmap"``, same opacity, plus the contour);
* **a crisp contour** of every tumour region, holes included, drawn on the mask's border (a
  line of :func:`line_px` pixels straddling it, with a one-pixel black halo on each side so it
  reads on pink, purple, white and the heat map alike);
* **background outside the tissue mask dimmed** (grey and darker), so that the tissue
  segmentation can be checked too: tissue it missed shows up grey;
* **colours**: the tumour colour is Okabe & Ito's colour-blind-safe orange (230, 159, 0), the
  same colour the GeoJSON gives QuPath (:data:`tseg.runtime.method.polygons.TUMOUR_COLOUR`). It
  lies on the blue-yellow axis that dichromats keep, contrasts with eosin pink and haematoxylin
  purple, and differs from QuPath's yellow selection highlight. The heat map uses **cividis**
  (matplotlib's; Nuñez, Anderton & Renslow 2018), designed to look the same to viewers with and
  without red-green colour-vision deficiency and perceptually uniform, so equal steps of
  probability look like equal steps of colour; it runs dark blue to yellow, away from both the
  stain colours and the orange contour. Viridis' purple low end would blend into haematoxylin.

The legend (:class:`OverlayLegend`): the slide's name, a scale bar in mm (the longest of 1, 2,
5 x 10^k mm within a quarter of the picture's width), the tumour and tissue areas, what each
colour means, the hysteresis thresholds and pruning that made the mask, the heat map's colour
bar with the thresholds marked, and notes (model, a demonstration model's warning). Text is
DejaVu Sans (shipped with matplotlib, so non-ASCII slide names and "µm²" render), sized by
:func:`legend_font_px` so that it reads at about 18 px when the picture is fitted to a
1600 x 1000 screen: legible on a 1000-2000 px picture.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import cv2
import numpy as np

from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.execution.segmenter import DEFAULT_OVERLAY_OPACITY, DEFAULT_OVERLAY_STYLE, check_overlay
from tseg.runtime.method.polygons import TUMOUR_COLOUR

COLOUR_MAP = "cividis"
HALO = (0, 0, 0)
TEXT = (25, 25, 25)
PAPER = (255, 255, 255)  # the legend's background
GLASS = (243, 242, 245)  # a slide's glass, for the background swatch when the slide shows none
#: Background outside the tissue mask: grey = DIM_KEEP * luminance + (1 - DIM_KEEP) * DIM_TO.
DIM_KEEP = 0.6
DIM_TO = 110.0
#: Text size: about this many pixels when the picture is fitted into FIT_SCREEN.
TARGET_TEXT_PX = 18
FIT_SCREEN = (1600, 1000)
MIN_TEXT_PX = 12
#: Maps taller than this many times their width get the text of one this tall (legend_font_px).
TALLEST = 2
BAND_PIXELS = 1 << 20  # the map is shaded in bands of rows of about this many pixels
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class OverlayLegend:
    """What the legend says. ``pixel_um``: µm per map pixel (the overview: 5)."""

    title: str = ""
    pixel_um: float = 5.0
    low: int | None = None
    high: int | None = None
    prune: bool | None = None
    notes: tuple[str, ...] = ()


def legend_font_px(width: int, height: int, rows: int = 7) -> int:
    """Legend text size (px) for a ``width x height`` map with about ``rows`` lines of legend below
    it: about 18 px once the whole picture is fitted to a 1600 x 1000 screen (never shown larger).

    For tall pictures the size follows the width: a map more than :data:`TALLEST` times as tall as
    wide counts as one that is :data:`TALLEST` times (a 0.5 x 100 mm slide's text would otherwise
    grow with its length, and the canvas, widened to 30 x the text, to billions of pixels)."""
    height = min(height, TALLEST * max(1, width))
    px = float(TARGET_TEXT_PX)
    for _ in range(30):  # the legend's height grows with the text: a contraction, converges fast
        fit = min(1.0, FIT_SCREEN[0] / max(1, width), FIT_SCREEN[1] / max(1.0, height + (1.5 * rows + 1.5) * px))
        px = TARGET_TEXT_PX / fit
    return max(MIN_TEXT_PX, round(px))


def overlay_size_bound(width: int, height: int) -> tuple[int, int]:
    """The largest overlay picture :func:`render_overlay` makes of a ``width x height`` map (any
    style, a legend with up to four notes of 200 characters): what a reader of a result folder may accept
    before decoding a planted ``overlay.png`` (``tseg-rt report``)."""
    legend = OverlayLegend(notes=("x" * 200,) * 4)
    px = legend_font_px(width, height, _legend_rows("heatmap", legend))
    wide = max(width, 30 * px)
    return wide, height + _legend_height(px, wide, "heatmap", legend)


def line_px(font_px: int) -> int:
    """Width of the tumour contour's coloured line (px), in proportion to the text."""
    return max(2, round(font_px / 7))


def _map_line_px(shape: tuple[int, ...]) -> int:
    """The contour's width on a map of ``shape``, with the legend's text size of a typical legend."""
    return line_px(legend_font_px(shape[1], shape[0]))


def scale_bar_mm(width_px: int, pixel_um: float) -> float:
    """The longest 1, 2 or 5 x 10^k mm whose bar fits in a quarter of ``width_px`` (at least one pixel)."""
    limit_mm = 0.25 * width_px * pixel_um / 1000.0
    best = None
    for k in range(-4, 5):
        for m in (1, 2, 5):
            mm = m * 10.0 ** k
            if mm <= limit_mm and round(mm * 1000.0 / pixel_um) >= 1:
                best = mm
    return float(f"{best:.4g}") if best is not None else 0.0


@lru_cache(maxsize=4)
def colour_lut(name: str = COLOUR_MAP) -> np.ndarray:
    """256 x 3 uint8 RGB of a matplotlib colour map (probability x 255 -> colour)."""
    from matplotlib import colormaps

    return np.rint(colormaps[name](np.arange(256))[:, :3] * 255.0).astype(np.uint8)


def _check_maps(overview: np.ndarray, probability: np.ndarray, mask: np.ndarray,
                foreground: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    overview = np.asarray(overview)
    if overview.ndim != 3 or overview.shape[2] != 3 or overview.dtype != np.uint8:
        raise InvalidArgumentError(f"overview must be an RGB uint8 (H, W, 3) array, got {overview.dtype} "
                                   f"{overview.shape}")
    shape = overview.shape[:2]
    probability = np.asarray(probability)
    if probability.shape != shape or probability.dtype != np.uint8:
        raise InvalidArgumentError(f"probability must be uint8 {shape} like the overview, got "
                                   f"{probability.dtype} {probability.shape}")
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.shape != shape:
        raise InvalidArgumentError(f"mask must be {shape} like the overview, got {mask.shape}")
    if foreground is not None:
        foreground = np.asarray(foreground).astype(bool, copy=False)
        if foreground.shape != shape:
            raise InvalidArgumentError(f"foreground must be {shape} like the overview, got {foreground.shape}")
    return overview, probability, mask, foreground


def _square(radius: int) -> np.ndarray:
    return np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)


def contour_pixels(mask: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The contour line (``width`` px straddling the mask's border: ceil(width/2) inside, the rest
    outside) and its one-pixel halo on each side, as boolean maps. Holes have borders too."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    inner, outer = (width + 1) // 2, width // 2
    eroded = cv2.erode(m, _square(inner), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    grown = cv2.dilate(m, _square(outer)) if outer else m
    line = (grown > 0) & (eroded == 0)
    halo = (cv2.dilate(line.view(np.uint8), _square(1)) > 0) & ~line
    return line, halo


def _dim(rgb: np.ndarray) -> np.ndarray:
    """Grey, darker version of float RGB pixels (N, 3): the background outside the tissue mask."""
    grey = DIM_KEEP * (rgb @ _LUMA) + (1.0 - DIM_KEEP) * DIM_TO
    return np.repeat(grey[..., None], 3, axis=-1)


def _blend(under: np.ndarray, colour: np.ndarray, opacity: float) -> np.ndarray:
    return under * (1.0 - opacity) + colour * opacity


def _shade(overview: np.ndarray, probability: np.ndarray, mask: np.ndarray, foreground: np.ndarray | None,
           style: str, opacity: float) -> np.ndarray:
    """Dimmed background and the fill or heat map of one band of rows (uint8 out)."""
    out = overview.astype(np.float32)
    if foreground is not None:
        background = ~foreground
        out[background] = _dim(out[background])
    if style == "fill":
        out[mask] = _blend(out[mask], np.array(TUMOUR_COLOUR, np.float32), opacity)
    elif style == "heatmap":
        lut = colour_lut().astype(np.float32)
        where = foreground if foreground is not None else np.ones(mask.shape, bool)
        out[where] = _blend(out[where], lut[probability[where]], opacity)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_map(overview: np.ndarray, probability: np.ndarray, mask: np.ndarray, foreground: np.ndarray | None = None,
             style: str = DEFAULT_OVERLAY_STYLE, opacity: float = DEFAULT_OVERLAY_OPACITY,
             contour_px: int | None = None) -> np.ndarray:
    """The map alone, the overview's size: dimmed background, fill or heat map, contour. Without
    ``foreground`` nothing is dimmed and the heat map covers the whole map.

    Shaded in bands of rows (about a megapixel each), so memory stays near the picture's own size."""
    check_overlay(style, opacity)
    overview, probability, mask, foreground = _check_maps(overview, probability, mask, foreground)
    out = np.empty_like(overview)
    band = max(1, BAND_PIXELS // max(1, mask.shape[1]))
    for y in range(0, mask.shape[0], band):
        rows = slice(y, y + band)
        out[rows] = _shade(overview[rows], probability[rows], mask[rows],
                           foreground[rows] if foreground is not None else None, style, float(opacity))
    if mask.any():
        width = contour_px if contour_px is not None else _map_line_px(mask.shape)
        line, halo = contour_pixels(mask, width)
        out[halo] = HALO
        out[line] = TUMOUR_COLOUR
    return out


@lru_cache(maxsize=16)
def _font(px: int, bold: bool = False) -> Any:
    """DejaVu Sans from matplotlib's data (any Unicode slide name); Pillow's own font otherwise."""
    from PIL import ImageFont

    try:
        import matplotlib

        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), px)
    except (ImportError, OSError):  # pragma: no cover - matplotlib is a dependency
        return ImageFont.load_default(size=px)


def _wrap(draw: Any, text: str, font: Any, width: float) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def _fit(draw: Any, text: str, font: Any, width: float) -> str:
    """``text`` shortened in the middle (a slide name keeps its start and its end) to fit ``width``."""
    if draw.textlength(text, font=font) <= width:
        return text
    head, tail = text[: len(text) // 2], text[len(text) // 2 :]
    while head or tail:
        if len(head) >= len(tail):
            head = head[:-1]
        else:
            tail = tail[1:]
        if draw.textlength(head + "…" + tail, font=font) <= width:
            break
    return head + "…" + tail


def _pct(level: int) -> str:
    return f"{level / 255.0:.0%}"


def _median_colour(overview: np.ndarray, where: np.ndarray | None, fallback: Sequence[int]) -> np.ndarray:
    step = max(1, int(math.sqrt(overview.shape[0] * overview.shape[1] / 250_000)))  # ~250k samples at most
    sample = overview[::step, ::step]
    if where is not None:
        sample = sample[where[::step, ::step]]
    sample = sample.reshape(-1, 3)
    return np.median(sample, axis=0).astype(np.float32) if len(sample) else np.array(fallback, np.float32)


class _Legend:
    """Lays out and draws the legend below the map (one Pillow canvas)."""

    def __init__(self, canvas: Any, top: int, font_px: int) -> None:
        from PIL import ImageDraw

        self.canvas, self.draw = canvas, ImageDraw.Draw(canvas)
        self.font, self.bold = _font(font_px), _font(round(font_px * 1.2), bold=True)
        self.px, self.pad, self.row = font_px, max(4, font_px // 2), round(font_px * 1.5)
        self.width = canvas.size[0]
        self.y = top + self.pad

    def swatch(self, x: float, fill: Sequence[float], edge: bool, lw: int) -> float:
        """A legend square at ``x``; with ``edge``, a contour like the map's. Returns its right end."""
        side = round(self.px * 1.1)
        y0 = self.y + round(0.1 * self.px)
        box = [round(x), y0, round(x) + round(1.6 * side) - 1, y0 + side - 1]
        self.draw.rectangle(box, fill=tuple(int(round(v)) for v in fill))
        if edge:
            self.draw.rectangle([box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1], outline=HALO, width=1)
            self.draw.rectangle(box, outline=TUMOUR_COLOUR, width=lw)
            self.draw.rectangle([box[0] + lw, box[1] + lw, box[2] - lw, box[3] - lw], outline=HALO, width=1)
        return box[2] + 1

    def items(self, entries: list[tuple[Sequence[float], bool, str]], lw: int) -> None:
        """Swatch + label entries, flowed left to right and wrapped onto new rows."""
        x = self.pad
        for fill, edge, label in entries:
            need = 1.8 * self.px + self.draw.textlength(label, font=self.font) + self.px
            if x > self.pad and x + need > self.width - self.pad:
                x, self.y = self.pad, self.y + self.row
            end = self.swatch(x, fill, edge, lw)
            self.draw.text((end + self.px * 0.4, self.y), label, fill=TEXT, font=self.font)
            x = end + self.px * 0.4 + self.draw.textlength(label, font=self.font) + 1.5 * self.px
        self.y += self.row

    def text(self, text: str) -> None:
        for line in _wrap(self.draw, text, self.font, self.width - 2 * self.pad):
            self.draw.text((self.pad, self.y), line, fill=TEXT, font=self.font)
            self.y += self.row

    def title_and_scale_bar(self, title: str, pixel_um: float) -> int:
        """The title on the left, the scale bar (black, labelled in mm) on the right; the bar's length."""
        mm = scale_bar_mm(self.width, pixel_um)
        length = round(mm * 1000.0 / pixel_um) if mm else 0
        label = f"{mm:g} mm"
        room = self.width - 2 * self.pad - (length + 2 * self.px if length else 0)
        if title and self.draw.textlength(title, font=self.bold) > room:  # a long name gets a row of its own
            self.draw.text((self.pad, self.y), _fit(self.draw, title, self.bold, self.width - 2 * self.pad),
                           fill=TEXT, font=self.bold)
            self.y += round(1.6 * self.px)
        elif title:
            self.draw.text((self.pad, self.y), title, fill=TEXT, font=self.bold)
        if length:
            x1 = self.width - self.pad
            bar_h = max(3, round(self.px / 3))
            bottom = self.y + round(1.35 * self.px)
            self.draw.rectangle([x1 - length, bottom - bar_h, x1 - 1, bottom - 1], fill=(0, 0, 0))
            tw = self.draw.textlength(label, font=self.font)
            self.draw.text((x1 - length / 2 - tw / 2, bottom - bar_h - round(1.25 * self.px)), label, fill=TEXT,
                           font=self.font)
        self.y += round(1.6 * self.px)
        return length

    def colour_bar(self, low: int | None, high: int | None) -> None:
        """The heat map's colours from 0 to 100 %, with the thresholds marked."""
        label = "probability 0%"
        x0 = self.pad + self.draw.textlength(label + " ", font=self.font)
        length = int(max(4 * self.px, min(18 * self.px, self.width - x0 - self.pad - 4 * self.px)))
        lut = colour_lut()
        bar = np.repeat(lut[np.linspace(0, 255, length).round().astype(int)][None], self.px, axis=0)
        from PIL import Image

        self.draw.text((self.pad, self.y), label, fill=TEXT, font=self.font)
        self.canvas.paste(Image.fromarray(bar), (int(x0), self.y + round(0.15 * self.px)))
        self.draw.text((x0 + length + self.px * 0.4, self.y), "100%", fill=TEXT, font=self.font)
        self.y += round(1.2 * self.px)
        for name, level in (("low", low), ("high", high)):
            if level is None:
                continue
            x = x0 + level / 255.0 * (length - 1)
            self.draw.line([x, self.y - round(1.2 * self.px), x, self.y + round(0.2 * self.px)], fill=(0, 0, 0),
                           width=2)
            small = _font(max(MIN_TEXT_PX - 2, round(self.px * 0.8)))
            tw = self.draw.textlength(name, font=small)
            self.draw.text((x - tw / 2, self.y + round(0.2 * self.px)), name, fill=TEXT, font=small)
        self.y += self.row


def _legend_rows(style: str, legend: OverlayLegend) -> int:
    """About how many rows of text the legend takes (to size the text)."""
    return 4 + len(legend.notes) + (3 if style == "heatmap" else 0)


def _legend_height(font_px: int, width: int, style: str, legend: OverlayLegend) -> int:
    """Generous room for the legend's rows (the canvas is cropped to what was drawn): the fixed rows
    plus the notes wrapped at no more than 0.7 em a character."""
    per_line = max(1, int((width - 2 * font_px) / (0.7 * font_px)))
    rows = 20 + (4 if style == "heatmap" else 0) + sum(-(-len(note) // per_line) + 1 for note in legend.notes)
    return rows * round(font_px * 1.5) + font_px * 2


def render_overlay(overview: np.ndarray, probability: np.ndarray, mask: np.ndarray,
                   foreground: np.ndarray | None = None, *, style: str = DEFAULT_OVERLAY_STYLE,
                   opacity: float = DEFAULT_OVERLAY_OPACITY, legend: OverlayLegend | None = None) -> np.ndarray:
    """The overlay picture: the map (:func:`draw_map`) with, when ``legend`` is given, the legend
    below it (the canvas is widened to ``30 x`` the text size for very narrow maps; the text size
    follows the map's width, :func:`legend_font_px`).

    ``overview`` RGB uint8, ``probability`` uint8 (x 255), ``mask`` and ``foreground`` boolean,
    all the same size (5 µm/px in tseg-rt's outputs)."""
    from PIL import Image

    overview, probability, mask, foreground = _check_maps(overview, probability, mask, foreground)
    image = draw_map(overview, probability, mask, foreground, style, opacity)
    if legend is None:
        return image
    if not (isinstance(legend.pixel_um, (int, float)) and math.isfinite(legend.pixel_um) and legend.pixel_um > 0):
        raise InvalidArgumentError(f"legend.pixel_um must be a positive number of µm per pixel, got "
                                   f"{legend.pixel_um!r}")
    h, w = mask.shape
    px = legend_font_px(w, h, _legend_rows(style, legend))
    lw = _map_line_px(mask.shape)
    width = max(w, 30 * px)
    canvas = Image.new("RGB", (width, h + _legend_height(px, width, style, legend)), PAPER)
    canvas.paste(Image.fromarray(image), (0, 0))
    box = _Legend(canvas, h, px)
    box.title_and_scale_bar(legend.title, legend.pixel_um)
    tissue_colour = _median_colour(overview, foreground, (230, 170, 205))
    glass = _median_colour(overview, ~foreground, GLASS) if foreground is not None else None
    colour = np.array(TUMOUR_COLOUR, np.float32)
    lut = colour_lut().astype(np.float32)
    if style == "fill":
        tumour_fill, tissue_fill = _blend(tissue_colour, colour, opacity), tissue_colour
    elif style == "heatmap":
        tumour_fill, tissue_fill = _blend(tissue_colour, lut[255], opacity), _blend(tissue_colour, lut[0], opacity)
    else:
        tumour_fill, tissue_fill = tissue_colour, tissue_colour
    px_mm2 = legend.pixel_um * legend.pixel_um / 1e6
    tumour_mm2 = np.count_nonzero(mask) * px_mm2
    regions = cv2.connectedComponents(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=4)[0] - 1
    how = {"fill": f"filled at {opacity:.0%} opacity", "contour": "outlined",
           "heatmap": "outlined"}[style]
    entries: list[tuple[Sequence[float], bool, str]] = [
        (tumour_fill, True, f"tumour ({how}): {tumour_mm2:.2f} mm², {regions} region{'s' if regions != 1 else ''}")]
    if foreground is not None:
        tissue_mm2 = np.count_nonzero(foreground) * px_mm2
        share = f" ({tumour_mm2 / tissue_mm2:.1%} tumour)" if tissue_mm2 > 0 else ""
        entries.append((tissue_fill, False, f"tissue: {tissue_mm2:.2f} mm²{share}"))
        entries.append((_dim(glass[None])[0], False, "outside the tissue mask (dimmed)"))
    box.items(entries, lw)
    if legend.low is not None and legend.high is not None:
        pruning = (f"regions kept only if their 95th percentile > {legend.high}" if legend.prune
                   else "no pruning" if legend.prune is False else "")
        box.text(f"Tumour mask: hysteresis thresholds low {legend.low} ({_pct(legend.low)}) and high {legend.high} "
                 f"({_pct(legend.high)}) on the smoothed probability" + (f"; {pruning}." if pruning else "."))
    if style == "heatmap":
        box.text(f"Heat map: tumour probability over the tissue, {opacity:.0%} opacity ({COLOUR_MAP}).")
        box.colour_bar(legend.low, legend.high)
    for note in legend.notes:
        box.text(note)
    bottom = min(canvas.size[1], box.y + box.pad)
    return np.asarray(canvas)[:bottom].copy()  # numpy, not Pillow's crop: no decompression-bomb limit on our own picture
