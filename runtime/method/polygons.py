"""Masks to polygons (GeoJSON that QuPath imports), in the slide's level-0 pixel coordinates.

Each 4-connected foreground region of the mask becomes a Polygon (holes kept as interior
rings), classified "Tumor" with the colour ``overlay.png`` draws the tumour in (QuPath shows it). Polygons follow pixel *edges*, not pixel centres: OpenCV traces contours through the
centres of the boundary pixels, and growing those outlines by half a pixel with mitred corners
(shapely) puts every axis-aligned edge exactly on the pixel boundary, so a square of mask
pixels ``[x0, x1) x [y0, y1)`` becomes the square with those corners and the polygon area
equals the pixel count for rectilinear shapes (diagonal staircases come out slightly larger). Coordinates are then scaled from mask pixels to
level-0 pixels (``scale = (sx, sy)``, level-0 pixels per mask pixel). Holes are traced as outlines of their own, so they are exact too.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

TUMOUR_CLASS = "Tumor"  # QuPath's built-in class name
#: The tumour's colour in QuPath (the classification's ``color``) and in ``overlay.png``: Okabe &
#: Ito's colour-blind-safe orange (see :mod:`tseg.runtime.outputs.overlay` for the choice).
TUMOUR_COLOUR = (230, 159, 0)


def _outline(binary: np.ndarray, offset: np.ndarray) -> Any:
    """Pixel-edge outline (shapely) of the outer boundary of each blob in ``binary``."""
    from shapely.geometry import LineString, Point, Polygon
    from shapely.ops import unary_union

    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    shapes = []
    for contour in contours:
        pts = contour[:, 0, :].astype(np.float64) + offset
        if len(pts) >= 3:
            shape = Polygon(pts)
            shape = shape if shape.is_valid else shape.buffer(0)
        elif len(pts) == 2:
            shape = LineString(pts)
        else:
            shape = Point(pts[0])
        shapes.append(shape.buffer(0.5, join_style="mitre", cap_style="square", mitre_limit=2.0))
    return unary_union(shapes)


def mask_polygons(mask: np.ndarray) -> list[Any]:
    """Shapely polygons (pixel-edge outlines, mask pixel coordinates) of the mask's regions.

    Outer boundaries and holes are both traced as outer contours (of the region and of each
    hole), so both follow pixel edges exactly.
    """
    m = np.ascontiguousarray(np.asarray(mask, dtype=bool).view(np.uint8))
    if not m.any():
        return []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=4)
    polygons = []
    for label in range(1, count):
        x0, y0, w, h = (int(v) for v in stats[label, :4])
        crop = np.pad((labels[y0 : y0 + h, x0 : x0 + w] == label).astype(np.uint8), 1)
        offset = np.array([x0 - 1 + 0.5, y0 - 1 + 0.5])  # undo the pad; contours run through pixel centres
        shape = _outline(crop, offset)
        # Holes: background not reachable from the border (8-connected, dual to the 4-connected region).
        outside = (1 - crop).astype(np.uint8)
        flood = outside.copy()
        cv2.floodFill(flood, None, (0, 0), 2, flags=8)
        holes = (flood == 1).astype(np.uint8)
        if holes.any():
            shape = shape.difference(_outline(holes, offset))
        polygons.extend(getattr(shape, "geoms", [shape]))
    return [p for p in polygons if not p.is_empty and p.geom_type == "Polygon"]


def _round_coords(coords: Any, ndigits: int) -> list[list[float]]:
    return [[round(float(x), ndigits), round(float(y), ndigits)] for x, y in coords]


def polygons_to_geojson(polygons: list[Any], scale: tuple[float, float] = (1.0, 1.0),
                        classification: str = TUMOUR_CLASS, ndigits: int = 2,
                        properties: dict[str, Any] | None = None,
                        colour: tuple[int, int, int] = TUMOUR_COLOUR) -> dict[str, Any]:
    """A FeatureCollection of Polygon features, coordinates multiplied by ``scale``.

    ``colour`` is written twice: as the classification's colour and as each object's own
    ``color``. QuPath keeps one colour per class name and its built-in "Tumor" is red, so it may
    ignore the classification's; an object's own colour is what QuPath draws it in."""
    from shapely import affinity

    features = []
    for poly in polygons:
        shape = affinity.scale(poly, xfact=scale[0], yfact=scale[1], origin=(0, 0))
        parts = list(getattr(shape, "geoms", [shape]))
        rings = [[_round_coords(p.exterior.coords, ndigits)] + [_round_coords(h.coords, ndigits) for h in p.interiors]
                 for p in parts if p.geom_type == "Polygon"]
        if not rings:
            continue
        geometry = ({"type": "Polygon", "coordinates": rings[0]} if len(rings) == 1
                    else {"type": "MultiPolygon", "coordinates": rings})
        props: dict[str, Any] = {"objectType": "annotation", "color": [int(c) for c in colour],
                                 "classification": {"name": classification, "color": [int(c) for c in colour]}}
        if properties:
            props.update(properties)
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    return {"type": "FeatureCollection", "features": features}


def mask_to_geojson(mask: np.ndarray, scale: tuple[float, float] = (1.0, 1.0), **kwargs: Any) -> dict[str, Any]:
    """GeoJSON of a boolean mask; ``scale`` converts mask pixels to level-0 pixels."""
    return polygons_to_geojson(mask_polygons(mask), scale, **kwargs)
