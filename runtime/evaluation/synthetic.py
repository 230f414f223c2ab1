"""Synthetic H&E-like whole-slide images with a known tumour mask (tests, benchmarks, the demo).

A :class:`SyntheticSlide` is defined in physical units (µm) by a seed: white glass, one or more
tissue sections (smooth star-shaped outlines), and tumour regions inside the tissue. It can
render any region at any resolution, consistently across resolutions:

* glass: near-white with faint noise, no structure (the background segmentation's Canny edges
  find nothing there);
* normal tissue: pink eosin stroma with fibrous texture and sparse, small, round, dark-violet
  nuclei (~3 µm radius, ~1 per 15 µm cell);
* tumour (carcinoma-like): more violet cytoplasm, crowded nuclei that are larger (4-7 µm),
  darker, elongated and irregular in size and orientation.

Regions are rendered at no more than 1 µm/px and shrunk with INTER_AREA for coarser requests,
the way a scanner's pyramid levels are reductions of level 0. :func:`generate_slide` writes a
pyramidal tiled TIFF with MPP tags (read by OpenSlide as ``generic-tiff``) tile by tile, so
slides much larger than memory can be made, plus the true tumour mask at 5 µm/px (PNG) and as
QuPath GeoJSON in level-0 pixels. Everything is deterministic for a given seed. No PyTorch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tseg.runtime.outputs.pyramid_tiff import write_pyramid

MASK_UM_PER_PX = 4.0  # resolution of the internal region rasters
GLASS = np.array([243.0, 242.0, 245.0])
STROMA = np.array([236.0, 170.0, 205.0])
STROMA_DARK = np.array([205.0, 120.0, 170.0])
TUMOUR_CYTO = np.array([205.0, 145.0, 200.0])
NUCLEUS = np.array([95.0, 65.0, 150.0])
TUMOUR_NUCLEUS = np.array([62.0, 38.0, 118.0])


def _hash_uniform(*keys: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic uniform [0, 1) values from integer lattice keys (splitmix64-style)."""
    with np.errstate(over="ignore"):
        h = np.full(np.broadcast(*keys).shape, np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64), dtype=np.uint64)
        for k in keys:
            h ^= (np.asarray(k).astype(np.int64).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
                  + (h << np.uint64(6)) + (h >> np.uint64(2)))
            h ^= h >> np.uint64(30)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def _value_noise(xs_um: np.ndarray, ys_um: np.ndarray, spacing_um: tuple[float, float], seed: int) -> np.ndarray:
    """Smooth noise in [0, 1) on a lattice in µm (separable grids ``xs_um`` x ``ys_um``).

    Bilinear interpolation of hashed lattice values; it depends only on absolute µm
    coordinates, so separately rendered blocks agree where they meet.
    """
    gx = xs_um / spacing_um[0]
    gy = ys_um / spacing_um[1]
    x0, y0 = int(np.floor(gx.min())), int(np.floor(gy.min()))
    lat_x = np.arange(x0, int(np.floor(gx.max())) + 2)
    lat_y = np.arange(y0, int(np.floor(gy.max())) + 2)
    lattice = _hash_uniform(lat_y[:, None], lat_x[None, :], seed=seed).astype(np.float32)
    map_x = np.broadcast_to((gx - x0).astype(np.float32)[None, :], (len(ys_um), len(xs_um)))
    map_y = np.broadcast_to((gy - y0).astype(np.float32)[:, None], (len(ys_um), len(xs_um)))
    return cv2.remap(lattice, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _star_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float,
                  roughness: float, points: int = 180) -> np.ndarray:
    theta = np.linspace(0, 2 * np.pi, points, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 8):
        r += roughness / k * rng.normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.35, 1.8)
    return np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], axis=1)


@dataclass
class SyntheticSlide:
    """A procedural slide of ``width_um`` x ``height_um`` defined by ``seed``."""

    seed: int = 0
    width_um: float = 6000.0
    height_um: float = 4500.0
    n_sections: int = 1
    n_tumours: int = 2
    tissue_polygons: list[np.ndarray] = field(init=False, repr=False)
    tumour_polygons: list[np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        w, h = self.width_um, self.height_um
        self.tissue_polygons = []
        for i in range(self.n_sections):
            cx = w * (i + 0.5) / self.n_sections + rng.uniform(-0.05, 0.05) * w / self.n_sections
            cy = h * rng.uniform(0.42, 0.58)
            radius = 0.36 * min(w / self.n_sections, h)
            poly = _star_polygon(rng, cx, cy, radius, roughness=0.5)
            poly[:, 0] = np.clip(poly[:, 0], 0.02 * w, 0.98 * w)
            poly[:, 1] = np.clip(poly[:, 1], 0.02 * h, 0.98 * h)
            self.tissue_polygons.append(poly)
        self.tumour_polygons = []
        for i in range(self.n_tumours):
            section = self.tissue_polygons[i % self.n_sections]
            centre = section.mean(axis=0)
            diameter = float(min(section.max(axis=0) - section.min(axis=0)))
            cx, cy = centre + rng.uniform(-1, 1, 2) * 0.2 * diameter
            radius = 0.16 * diameter * rng.uniform(0.8, 1.25)
            self.tumour_polygons.append(_star_polygon(rng, cx, cy, radius, roughness=0.8))
        self._raster_w = max(8, int(math.ceil(w / MASK_UM_PER_PX)))
        self._raster_h = max(8, int(math.ceil(h / MASK_UM_PER_PX)))
        self._tissue_raster = self._rasterise(self.tissue_polygons, MASK_UM_PER_PX,
                                              (self._raster_w, self._raster_h)).astype(np.float32)
        tumour = self._rasterise(self.tumour_polygons, MASK_UM_PER_PX, (self._raster_w, self._raster_h))
        self._tumour_raster = (tumour & (self._tissue_raster > 0)).astype(np.float32)

    # -- masks --
    @staticmethod
    def _rasterise(polygons: list[np.ndarray], um_per_px: float, size: tuple[int, int]) -> np.ndarray:
        img = np.zeros((size[1], size[0]), np.uint8)
        shift = 4
        for p in polygons:  # one call each: a single call would make overlaps holes (even-odd)
            pts = np.round(p / um_per_px * (1 << shift) - (1 << shift) / 2).astype(np.int32)
            cv2.fillPoly(img, [pts], 1, lineType=cv2.LINE_8, shift=shift)
        return img.astype(bool)

    def _sample(self, raster: np.ndarray, xs_um: np.ndarray, ys_um: np.ndarray) -> np.ndarray:
        map_x = (xs_um / MASK_UM_PER_PX - 0.5).astype(np.float32)
        map_y = (ys_um / MASK_UM_PER_PX - 0.5).astype(np.float32)
        mx = np.broadcast_to(map_x[None, :], (len(ys_um), len(xs_um)))
        my = np.broadcast_to(map_y[:, None], (len(ys_um), len(xs_um)))
        return cv2.remap(raster, np.ascontiguousarray(mx), np.ascontiguousarray(my),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.5

    def tumour_mask(self, size: tuple[int, int]) -> np.ndarray:
        """The true tumour mask for the whole slide at ``size = (width, height)`` pixels."""
        w, h = size
        xs = (np.arange(w) + 0.5) * self.width_um / w
        ys = (np.arange(h) + 0.5) * self.height_um / h
        return self._sample(self._tumour_raster, xs, ys)

    def tissue_mask(self, size: tuple[int, int]) -> np.ndarray:
        w, h = size
        xs = (np.arange(w) + 0.5) * self.width_um / w
        ys = (np.arange(h) + 0.5) * self.height_um / h
        return self._sample(self._tissue_raster, xs, ys)

    def tumour_geojson(self, level0_mpp: float) -> dict:
        """QuPath-style FeatureCollection of the tumour (clipped to tissue) in level-0 pixels."""
        from shapely.geometry import Polygon, mapping
        from shapely.ops import unary_union

        tissue = unary_union([Polygon(p).buffer(0) for p in self.tissue_polygons])
        tumour = unary_union([Polygon(p).buffer(0) for p in self.tumour_polygons]).intersection(tissue)
        from shapely import affinity

        tumour = affinity.scale(tumour, xfact=1 / level0_mpp, yfact=1 / level0_mpp, origin=(0, 0))
        geoms = list(getattr(tumour, "geoms", [tumour]))
        features = [{
            "type": "Feature",
            "geometry": mapping(g),
            "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}},
        } for g in geoms if not g.is_empty and g.geom_type == "Polygon"]
        return {"type": "FeatureCollection", "features": features}

    # -- pixels --
    def render(self, x_um: float, y_um: float, width: int, height: int, mpp: float) -> np.ndarray:
        """RGB uint8 pixels of the region starting at ``(x_um, y_um)`` at ``mpp`` µm/px."""
        render_mpp = min(mpp, 1.0)
        factor = mpp / render_mpp
        if factor > 1.0:
            rw, rh = int(math.ceil(width * factor)), int(math.ceil(height * factor))
            fine = self._render(x_um, y_um, rw, rh, render_mpp)
            return cv2.resize(fine, (width, height), interpolation=cv2.INTER_AREA)
        return self._render(x_um, y_um, width, height, mpp)

    def _render(self, x_um: float, y_um: float, width: int, height: int, mpp: float) -> np.ndarray:
        xs = x_um + (np.arange(width) + 0.5) * mpp
        ys = y_um + (np.arange(height) + 0.5) * mpp
        tissue = self._sample(self._tissue_raster, xs, ys)
        levels = np.linspace(0.0, 1.0, 256)[:, None]

        def lut(colours: np.ndarray) -> np.ndarray:
            return np.clip(np.rint(colours), 0, 255).astype(np.uint8)

        def index(noise: np.ndarray) -> np.ndarray:
            return np.clip(noise * 255.0, 0, 255).astype(np.uint8)

        glass = lut(GLASS + (levels - 0.5) * 3.0)
        img = glass[index(_value_noise(xs, ys, (30.0, 30.0), self.seed + 1))]
        if tissue.any():
            tumour = self._sample(self._tumour_raster, xs, ys) & tissue
            coarse = _value_noise(xs, ys, (60.0, 60.0), self.seed + 2)
            fibre = _value_noise(xs, ys, (7.0, 45.0), self.seed + 3)
            stroma = lut(STROMA * (1 - levels) + STROMA_DARK * levels)
            img[tissue] = stroma[index(0.35 * coarse + 0.65 * fibre)[tissue]]
            if tumour.any():
                cyto = lut(TUMOUR_CYTO * (0.8 + 0.25 * levels))
                img[tumour] = cyto[index(_value_noise(xs, ys, (18.0, 18.0), self.seed + 4))[tumour]]
            self._draw_nuclei(img, x_um, y_um, width, height, mpp)
        return img

    def _draw_nuclei(self, img: np.ndarray, x_um: float, y_um: float, width: int, height: int,
                     mpp: float) -> None:
        x1_um, y1_um = x_um + width * mpp, y_um + height * mpp
        for kind, cell_um, radius_um, present, colour, stretch, seed_off in (
            ("normal", 15.0, (2.5, 3.5), 0.55, NUCLEUS, (1.0, 1.3), 10),
            ("tumour", 11.0, (3.5, 6.0), 0.9, TUMOUR_NUCLEUS, (1.1, 1.8), 20),
        ):
            margin = 20.0  # > the largest nucleus radius x elongation (6 x 1.8 µm)
            cx0, cx1 = int(math.floor((x_um - margin) / cell_um)), int(math.ceil((x1_um + margin) / cell_um))
            cy0, cy1 = int(math.floor((y_um - margin) / cell_um)), int(math.ceil((y1_um + margin) / cell_um))
            gy, gx = np.mgrid[cy0:cy1, cx0:cx1]
            gx, gy = gx.ravel(), gy.ravel()
            s = self.seed * 1000 + seed_off
            u = [_hash_uniform(gx, gy, seed=s + k) for k in range(6)]
            keep = u[0] < present
            px = (gx + u[1]) * cell_um
            py = (gy + u[2]) * cell_um
            # Nuclei belong to the region their centre lies in.
            inside = (px >= 0) & (py >= 0) & (px < self.width_um) & (py < self.height_um)
            ix = np.clip((px / MASK_UM_PER_PX).astype(int), 0, self._raster_w - 1)
            iy = np.clip((py / MASK_UM_PER_PX).astype(int), 0, self._raster_h - 1)
            in_tissue = self._tissue_raster[iy, ix] > 0
            in_tumour = (self._tumour_raster[iy, ix] > 0) & in_tissue
            region = in_tumour if kind == "tumour" else (in_tissue & ~in_tumour)
            sel = np.flatnonzero(keep & inside & region)
            radius = radius_um[0] + (radius_um[1] - radius_um[0]) * u[3][sel]
            elong = stretch[0] + (stretch[1] - stretch[0]) * u[4][sel]
            angle = 180.0 * u[5][sel]
            shade = 0.75 + 0.5 * u[3][sel] if kind == "tumour" else np.ones(len(sel))
            shift = 4
            scale = (1 << shift) / mpp
            for j, k in enumerate(sel):
                centre = (int(round((px[k] - x_um) * scale)), int(round((py[k] - y_um) * scale)))
                axes = (max(1, int(round(radius[j] * elong[j] * scale))), max(1, int(round(radius[j] / elong[j] * scale))))
                c = tuple(int(v) for v in np.clip(np.rint(colour * (2 - shade[j])), 0, 255))
                cv2.ellipse(img, centre, axes, float(angle[j]), 0, 360, c, -1, cv2.LINE_AA, shift)


@dataclass(frozen=True)
class GeneratedSlide:
    path: Path
    mask_path: Path
    geojson_path: Path
    mpp: float
    dimensions: tuple[int, int]
    slide: SyntheticSlide


def generate_slide(path: str | os.PathLike[str], seed: int = 0, width_mm: float = 6.0,
                   height_mm: float = 4.5, mpp: float = 0.5, n_sections: int = 1, n_tumours: int = 2,
                   tile: int = 256, compression: str = "jpeg", min_level_size: int = 512,
                   level_factor: int = 4) -> GeneratedSlide:
    """Write a synthetic slide (pyramidal tiled TIFF) and its true tumour mask beside it.

    Levels are reductions by ``level_factor`` (4, as most scanners) while the smallest side
    stays above ``min_level_size``. ``<stem>.mask.png`` is the tumour mask at 5 µm/px (0/255; the size OpenSlide and
    :meth:`Slide.size_at(5.0)` give), ``<stem>.geojson`` the tumour polygons in level-0 pixels.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    syn = SyntheticSlide(seed, width_mm * 1000.0, height_mm * 1000.0, n_sections, n_tumours)
    w0 = int(math.floor(syn.width_um / mpp))
    h0 = int(math.floor(syn.height_um / mpp))
    levels = []
    scale = 1
    while True:
        lw, lh = w0 // scale, h0 // scale
        lmpp = mpp * scale

        def renderer(x: int, y: int, w: int, h: int, lmpp: float = lmpp) -> np.ndarray:
            return syn.render(x * lmpp, y * lmpp, w, h, lmpp)

        levels.append((renderer, (lw, lh)))
        if min(lw, lh) // level_factor < min_level_size:
            break
        scale *= level_factor
    compression_arg = compression if compression != "none" else None
    write_pyramid(path, levels, mpp, tile=tile, compression=compression_arg,
                  description=f"tseg-rt synthetic H&E slide, seed {seed}")
    stem = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    mask_path = path.with_name(f"{stem}.mask.png")
    geojson_path = path.with_name(f"{stem}.geojson")
    size5 = (int(math.floor(w0 * mpp / 5.0 + 1e-9)), int(math.floor(h0 * mpp / 5.0 + 1e-9)))
    # The mask covers the same area as the 5 µm/px image of the slide.
    xs = (np.arange(size5[0]) + 0.5) * 5.0
    ys = (np.arange(size5[1]) + 0.5) * 5.0
    mask = syn._sample(syn._tumour_raster, xs, ys)
    cv2.imwrite(str(mask_path), (mask * 255).astype(np.uint8))
    geojson_path.write_text(json.dumps(syn.tumour_geojson(mpp)))
    return GeneratedSlide(path, mask_path, geojson_path, mpp, (w0, h0), syn)
