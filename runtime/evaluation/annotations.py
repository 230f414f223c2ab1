"""Reference annotations: QuPath GeoJSON, Aperio ImageScope XML or mask images (no PyTorch).

Used by training (tile masks) and evaluation (references at 5 µm/px). An annotation is either
polygons in the slide's level-0 pixel coordinates (GeoJSON, XML) or a mask image covering the
whole slide at any resolution (any nonzero pixel is tumour).

* GeoJSON: a FeatureCollection, a Feature, a bare geometry or a list of features (QuPath writes
  all of these); Polygon and MultiPolygon geometries, holes kept. With ``classes`` given, only
  features whose ``properties.classification.name`` is in it count; without, every polygon does.
* Aperio XML: every ``Region`` of every ``Annotation`` (``Vertices/Vertex X= Y=``); regions with
  ``NegativeROA="1"`` are subtracted (ImageScope's negative regions).
* Mask image: PNG/TIFF/JPEG read with OpenCV, resized to the target with nearest neighbour; it must
  have the slide's aspect ratio (it covers the whole slide) and at least 8 px a side.

Empty means empty in every format: ``[]``, a FeatureCollection with no features and an
``<Annotations/>`` without regions are the reference of a slide without tumour.

Invalid polygons (self-intersections, ...) raise an error naming the file and the reason unless
``repair=True`` (then ``make_valid`` fixes them with a warning). Polygons lying outside the
slide raise an error; small overshoots (<= 1% of the slide size) are clipped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from tseg.runtime.errors import AnnotationError
from tseg.runtime.util.safeio import UnsafeFileError, check_regular

log = logging.getLogger(__name__)

OUTSIDE_TOLERANCE = 0.01


@dataclass
class Annotation:
    """Tumour annotation of one slide: polygons in level-0 pixels, or a whole-slide mask image."""

    path: Path
    geometry: Any = None  # shapely (Multi)Polygon in level-0 px
    mask: np.ndarray | None = None  # bool, covers the whole slide

    @property
    def is_empty(self) -> bool:
        if self.mask is not None:
            return not self.mask.any()
        return self.geometry is None or self.geometry.is_empty

    def check_inside(self, level0_size: tuple[int, int]) -> None:
        """Raise if the annotation does not fit a slide of ``level0_size`` (w, h): polygons outside
        it (small overshoots are clipped), or a mask that is not the whole slide (see
        :func:`mask_shape_problem`)."""
        if self.mask is not None:
            problem = mask_shape_problem(self.mask.shape[1], self.mask.shape[0], level0_size)
            if problem:
                raise AnnotationError(self.path, problem)
            return
        if self.geometry is None or self.geometry.is_empty:
            return
        from shapely.geometry import box

        w, h = level0_size
        x0, y0, x1, y1 = self.geometry.bounds
        tx, ty = w * OUTSIDE_TOLERANCE, h * OUTSIDE_TOLERANCE
        if x0 < -tx or y0 < -ty or x1 > w + tx or y1 > h + ty:
            raise AnnotationError(
                self.path,
                f"annotation extends to ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}) px, outside the "
                f"{w} x {h} px slide: is it the annotation of another slide, or not in level-0 pixels?")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            self.geometry = self.geometry.intersection(box(0, 0, w, h))

    def rasterise(self, level0_size: tuple[int, int], out_size: tuple[int, int],
                  box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Boolean mask of ``box = (x, y, w, h)`` (pixels of an image of the whole slide at
        ``out_size = (W, H)``; default: the whole image). Pixel (i, j) is tumour when its centre
        lies inside a polygon."""
        w0, h0 = level0_size
        W, H = out_size
        x, y, bw, bh = box if box is not None else (0, 0, W, H)
        if self.mask is not None:
            mh, mw = self.mask.shape
            # Map the box's pixel centres onto the mask (nearest neighbour).
            xs = ((x + np.arange(bw) + 0.5) * mw / W).astype(np.int64).clip(0, mw - 1)
            ys = ((y + np.arange(bh) + 0.5) * mh / H).astype(np.int64).clip(0, mh - 1)
            return self.mask[np.ix_(ys, xs)]
        if self.geometry is None or self.geometry.is_empty:
            return np.zeros((bh, bw), bool)
        from shapely.geometry import box as make_box

        sx, sy = W / w0, H / h0
        # Only the part of the polygons near the box matters (a margin of one pixel).
        window = make_box((x - 1) / sx, (y - 1) / sy, (x + bw + 1) / sx, (y + bh + 1) / sy)
        geometry = self.geometry.intersection(window) if not window.contains(self.geometry) else self.geometry
        rings = []
        for poly in getattr(geometry, "geoms", [geometry]):
            if poly.geom_type != "Polygon" or poly.is_empty:
                continue
            for ring in [poly.exterior, *poly.interiors]:
                pts = np.asarray(ring.coords, dtype=np.float64)[:, :2]
                rings.append(np.stack([pts[:, 0] * sx - x, pts[:, 1] * sy - y], axis=1))
        return fill_rings(rings, bw, bh)


#: A mask image's sides may differ from the slide's aspect by this share (or by one pixel of
#: rounding, whichever is larger); it must be at least MIN_MASK_PX on each side.
MASK_ASPECT_TOLERANCE = 0.02
MIN_MASK_PX = 8


def mask_shape_problem(width: int, height: int, level0_size: tuple[int, int]) -> str | None:
    """Why a ``width`` x ``height`` mask image cannot be the reference of a slide of
    ``level0_size``, or None. A mask covers the whole slide at one resolution, so both of its
    sides scale the slide's by one factor (up to rounding): a transposed mask, one of another
    slide, or a 1 x 1 image would otherwise be stretched over the slide and scored silently."""
    w0, h0 = level0_size
    where = f"the mask is {width} x {height} px but the slide is {w0} x {h0} px at level 0"
    if min(width, height) < MIN_MASK_PX:
        return f"{where}: too small to be a whole-slide mask (at least {MIN_MASK_PX} px a side)"
    sx, sy = width / w0, height / h0
    slack = max(MASK_ASPECT_TOLERANCE, 1.0 / min(width, height))
    if abs(sx - sy) > slack * max(sx, sy):
        return (f"{where}: not the slide's aspect ratio (transposed, cropped, or the mask of another "
                "slide?); export the mask of the whole slide")
    return None


def fill_rings(rings: Sequence[np.ndarray], width: int, height: int) -> np.ndarray:
    """Even-odd scanline fill: pixel (i, j) is set when its centre (j + 0.5, i + 0.5) lies inside.

    ``rings`` are closed vertex arrays in pixel-edge coordinates. Exact for any polygon
    (OpenCV's fillPoly also sets pixels the outline merely touches).
    """
    out = np.zeros((height, width + 1), np.int32)
    segs = [np.concatenate([r[:-1], r[1:]], axis=1) for r in rings if len(r) >= 3]
    if not segs:
        return np.zeros((height, width), bool)
    e = np.concatenate(segs)
    x0, y0, x1, y1 = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
    keep = y0 != y1
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    # Rows whose centre c = r + 0.5 satisfies ylo <= c < yhi (half-open: vertices counted once).
    r0 = np.clip(np.ceil(ylo - 0.5).astype(np.int64), 0, height)
    r1 = np.clip(np.ceil(yhi - 0.5).astype(np.int64), 0, height)
    counts = np.maximum(r1 - r0, 0)
    if counts.sum() == 0:
        return np.zeros((height, width), bool)
    edge = np.repeat(np.arange(len(r0)), counts)
    rows = r0[edge] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    c = rows + 0.5
    xs = x0[edge] + (c - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    # Pair consecutive crossings within each row (even-odd rule).
    starts, ends, rr = xs[0::2], xs[1::2], rows[0::2]
    if len(ends) != len(starts) or np.any(rows[1::2] != rr):
        raise AnnotationError(Path("<polygon>"), "polygon rings are not closed")
    a = np.clip(np.ceil(starts - 0.5).astype(np.int64), 0, width)
    b = np.clip(np.ceil(ends - 0.5).astype(np.int64), 0, width)
    np.add.at(out, (rr, a), 1)
    np.add.at(out, (rr, b), -1)
    return np.cumsum(out, axis=1)[:, :width] > 0


def _validate(path: Path, geometry: Any, repair: bool) -> Any:
    from shapely.validation import explain_validity, make_valid

    if geometry.is_valid:
        return geometry
    reason = explain_validity(geometry)
    if not repair:
        raise AnnotationError(path, f"invalid polygon ({reason}); fix it in QuPath/ImageScope or pass "
                                    "--repair-annotations to repair it automatically")
    log.warning("%s: repairing invalid polygon (%s)", path, reason)
    fixed = make_valid(geometry)
    polys = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in ("Polygon", "MultiPolygon")]
    from shapely.ops import unary_union

    return unary_union(polys)


def _geojson_features(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return [f for item in data for f in _geojson_features(item)]
    if not isinstance(data, dict):
        return []
    kind = data.get("type")
    if kind == "FeatureCollection":
        return [f for item in data.get("features", []) for f in _geojson_features(item)]
    if kind == "Feature":
        return [data]
    if kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        return [{"type": "Feature", "geometry": data, "properties": {}}]
    return []


def _empty_geojson(data: Any) -> bool:
    """An explicitly empty reference (a slide without tumour): ``[]`` or a FeatureCollection whose
    ``features`` are ``[]``, as an empty ``<Annotations/>`` is for Aperio XML."""
    if isinstance(data, list):
        return all(_empty_geojson(item) for item in data)
    return isinstance(data, dict) and data.get("type") == "FeatureCollection" and data.get("features") == []


def _classification(feature: dict[str, Any]) -> str | None:
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise ValueError(f"its properties are {type(props).__name__}, not a JSON object")
    cls = props.get("classification")
    if isinstance(cls, dict):
        return cls.get("name")
    if isinstance(cls, str):
        return cls
    for key in ("class", "name"):
        value = props.get(key)
        if isinstance(value, str):
            return value
    return None


def read_geojson(path: Path, classes: Sequence[str] | None = None, repair: bool = False) -> Annotation:
    from shapely.geometry import shape
    from shapely.ops import unary_union

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        features = _geojson_features(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(path, f"not readable GeoJSON: {exc}") from exc
    except RecursionError:
        raise AnnotationError(path, "not readable GeoJSON: nested too deeply to be an annotation") from None
    if not features and not _empty_geojson(data):
        raise AnnotationError(path, "no GeoJSON features or polygons found")
    wanted = {c.lower() for c in classes} if classes else None
    polygons = []
    for i, feature in enumerate(features):
        try:
            if wanted is not None and (_classification(feature) or "").lower() not in wanted:
                continue
        except ValueError as exc:
            raise AnnotationError(path, f"feature {i}: {exc}") from None
        geometry = feature.get("geometry")
        if geometry is not None and not isinstance(geometry, dict):
            raise AnnotationError(path, f"feature {i}: its geometry is {type(geometry).__name__}, not a GeoJSON "
                                        "geometry object")
        if not geometry or geometry.get("type") not in ("Polygon", "MultiPolygon", "GeometryCollection"):
            continue
        try:
            geom = shape(geometry)
        except RecursionError:
            raise AnnotationError(path, f"feature {i}: geometry nested too deeply") from None
        except Exception as exc:
            raise AnnotationError(path, f"feature {i}: malformed geometry ({exc})") from exc
        if geom.geom_type == "GeometryCollection":
            geom = unary_union([g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")])
        polygons.append(_validate(path, geom, repair))
    return Annotation(path, geometry=unary_union(polygons) if polygons else None)


def read_aperio_xml(path: Path, repair: bool = False) -> Annotation:
    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise AnnotationError(path, f"not readable Aperio XML: {exc}") from exc
    positive, negative = [], []
    for region in root.iter("Region"):
        try:
            pts = [(float(v.get("X", "nan")), float(v.get("Y", "nan"))) for v in region.iter("Vertex")]
        except ValueError:
            bad = next(v for v in region.iter("Vertex") if not _is_number(v.get("X", "nan"), v.get("Y", "nan")))
            raise AnnotationError(path, f"region {region.get('Id')}: vertex X={bad.get('X')!r} Y={bad.get('Y')!r} "
                                        "is not a pair of numbers") from None
        if len(pts) < 3 or any(not math.isfinite(c) for p in pts for c in p):
            raise AnnotationError(path, f"region {region.get('Id')} has fewer than 3 valid vertices")
        poly = _validate(path, Polygon(pts), repair)
        (negative if region.get("NegativeROA") == "1" else positive).append(poly)
    if not positive and root.tag != "Annotations":
        raise AnnotationError(path, "no Aperio <Annotations>/<Region> elements found")
    geometry = unary_union(positive) if positive else None
    if geometry is not None and negative:
        geometry = geometry.difference(unary_union(negative))
    return Annotation(path, geometry=geometry)


def _is_number(*texts: str | None) -> bool:
    try:
        for text in texts:
            float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def read_mask_image(path: Path) -> Annotation:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise AnnotationError(path, "not a readable mask image")
    if image.ndim == 3:
        image = image.max(axis=2)
    return Annotation(path, mask=image > 0)


def read_annotation(path: str | os.PathLike[str], classes: Sequence[str] | None = None,
                    repair: bool = False) -> Annotation:
    """Read an annotation by its extension (.geojson/.json, .xml, or an image)."""
    p = Path(path)
    if not p.exists():
        raise AnnotationError(p, "no such annotation file")
    try:
        check_regular(p)  # a FIFO or device under a reference's name would block or never end
    except UnsafeFileError as exc:
        raise AnnotationError(p, f"it {exc.what}") from None
    suffix = p.suffix.lower()
    if suffix in (".geojson", ".json"):
        return read_geojson(p, classes, repair)
    if suffix == ".xml":
        return read_aperio_xml(p, repair)
    if suffix in (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg"):
        return read_mask_image(p)
    raise AnnotationError(p, f"unknown annotation type '{suffix}': use QuPath GeoJSON, Aperio XML or a mask image")
