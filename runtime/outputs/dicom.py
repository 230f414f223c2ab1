"""DICOM objects of one finished result, built with highdicom from the source slide's images.

A thin mapping of the result's files onto highdicom's constructors (which validate every
attribute), and readers that mirror them (for tests and for checking what an archive holds):

* **Segmentation** (BINARY, two segments): the tumour mask and the tissue mask (the background
  segmentation), on the grid of one of the source's pyramid levels, TILED_FULL, with a pyramid
  over the coarser source levels (``create_segmentation_pyramid``). Slim, the reference viewer,
  draws a segmentation only on a grid of the slide's own pyramid (Slim #280), so the base level is
  the coarsest source level whose pixel spacing is at most the result's 5 µm/px, and the 5 µm/px
  mask is carried onto it by nearest neighbour at pixel centres. As that grid is at least as
  fine, sampling it back at the 5 µm/px pixel centres gives the mask exactly (DSC 1.0).
  Uncompressed (1 bit a pixel): every archive and viewer reads it.
* **Probability**: a one-segment FRACTIONAL Segmentation (8-bit, maximum fractional value 255, so
  the stored value is exactly the probability x 255 of ``probability.png``), same grid and
  pyramid, JPEG 2000 lossless by default. One segment, never several: multi-segment FRACTIONAL
  TILED_FULL renders blank in Slim (Slim #223). A Parametric Map would carry the same numbers;
  the fractional SEG is what Slim shows as a heat map.
* **Microscopy Bulk Simple Annotations**: one POLYGON per tumour region in slide coordinates
  (3D, mm, through the level-0 image's position and orientation), simplified by at most
  :data:`SIMPLIFY_UM`, grouped per class so that tens of thousands of regions stay one object.
  The annotation model has no holes, so each hole of a region (GeoJSON interior ring) is its own
  POLYGON in a second group, "Tumor hole", to be subtracted from the "Tumor" group; every tumour
  polygon carries its exact area (holes subtracted, before simplification) as a measurement, and
  the SEG keeps the exact pixels.

Every object records the algorithm (name, version, model SHA-256 and the settings, highdicom's
``AlgorithmIdentificationSequence``), lives in a new series of the source's study, and
references the source's series, instances and Frame of Reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

#: The resolution of the result's maps (outputs.files: mask.png, probability.png).
RESULT_MPP = 5.0
#: Polygon simplification tolerance (µm): a tenth of a result pixel.
SIMPLIFY_UM = 0.5
MANUFACTURER = "tseg-rt"
SEG_LABEL = "TUMOUR_SEG"
PROBABILITY_LABEL = "TUMOUR_PROB"
ANNOTATION_LABEL = "TUMOUR_ANN"
HOLE_CODE = ("hole", "99TSEGRT", "Hole in tumour region")  # a local code: the standard has none


@dataclass(frozen=True)
class Algorithm:
    """What made the result (from its summary): recorded in every object."""

    name: str
    version: str
    model_sha256: str
    software_version: str
    parameters: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> "Algorithm":
        model = summary.get("model") or {}
        contract = model.get("contract") or {}
        sha = str((model.get("backend") or {}).get("sha256") or "")
        provenance = contract.get("provenance") or {}
        version = str(provenance.get("version") or (f"sha256:{sha[:12]}" if sha else "unknown"))
        settings = summary.get("settings") or {}
        parameters = {"model_sha256": sha or "unknown", "model_mpp": str(contract.get("mpp", "")),
                      "low": str(settings.get("low", "")), "high": str(settings.get("high", "")),
                      "prune": str(settings.get("prune", ""))}
        software = str((summary.get("versions") or {}).get("tseg-rt") or "unknown")
        return cls(str(contract.get("name") or "tseg tumour segmentation"), version, sha, software, parameters)

    def content_description(self) -> str:
        """Content Description (LO, 64 characters): the name, cut if need be, and the model's
        hash prefix whole (the full hash is in the algorithm's parameters)."""
        tail = f", model sha256:{self.model_sha256[:12]}" if self.model_sha256 else ""
        return self.name[: 64 - len(tail)] + tail

    def identification(self) -> Any:
        import highdicom as hd
        from pydicom.sr.codedict import codes

        return hd.AlgorithmIdentificationSequence(
            name=self.name[:64], family=codes.cid7162.ArtificialIntelligence, version=self.version[:64],
            source=f"tseg-rt {self.software_version}"[:64], parameters=dict(self.parameters))


@dataclass(frozen=True)
class Series:
    """UIDs and numbers of a new series. ``seed``: the instances' UIDs are derived from it (the
    result's content), so the same result gives the same instances (a re-send replaces them);
    empty: new UIDs."""

    uid: str
    number: int
    description: str
    seed: str = ""

    def instance_uid(self, *what: Any) -> Any:
        """The UID of one of the series' instances (or groups, pyramids), from ``seed``."""
        import highdicom as hd

        return content_uid(self.seed, *what) if self.seed else hd.UID()


def content_uid(*parts: Any) -> Any:
    """A UID derived from ``parts``: ``2.25.`` and a name-based UUID (RFC 4122 version 5) of
    them (PS3.5 B.2): the same parts, the same UID."""
    import uuid

    import highdicom as hd

    return hd.UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, chr(0).join(str(p) for p in parts)).int}")


def pixel_spacing_mm(ds: Any) -> tuple[float, float]:
    """``(column spacing, row spacing)`` in mm of a WSI level (PixelSpacing is row, column)."""
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    row, col = (float(v) for v in measures.PixelSpacing)
    return (col, row)


def base_level(volumes: Sequence[Any], result_um: tuple[float, float]) -> int:
    """Index of the coarsest level (finest first) whose pixels are at most a result pixel wide
    on both axes."""
    best = 0
    for i, ds in enumerate(volumes):
        if max(grid_step(ds, result_um)) <= 1.0 + 1e-6:
            best = i
    return best


def _indices(n_out: int, step: float, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``n_out`` pixels of ``step`` input pixels, the input pixel at its centre."""
    index = np.floor((np.arange(n_out) + 0.5) * step + 1e-9).astype(np.int64)
    return index, index < n_in


def to_grid(array: np.ndarray, size: tuple[int, int], step: tuple[float, float]) -> np.ndarray:
    """``array`` (rows, cols, ...) sampled at the centres of a ``size = (cols, rows)`` grid whose
    pixels are ``step = (x, y)`` array pixels wide; outside ``array`` is 0."""
    (xi, vx), (yi, vy) = _indices(size[0], step[0], array.shape[1]), _indices(size[1], step[1], array.shape[0])
    out = np.zeros((size[1], size[0]) + array.shape[2:], array.dtype)
    out[np.ix_(vy, vx)] = array[np.ix_(yi[vy], xi[vx])]
    return out


def result_pixel_um(level0: Any, level0_mpp: tuple[float, float], mpp: float = RESULT_MPP) -> tuple[float, float]:
    """The size of a result pixel in the source's own µm: the reader made a result pixel of
    ``mpp / level0_mpp`` level-0 pixels (``level0_mpp`` as read, maybe a ``--mpp`` override)."""
    sx, sy = pixel_spacing_mm(level0)
    return (mpp * sx * 1000.0 / level0_mpp[0], mpp * sy * 1000.0 / level0_mpp[1])


def grid_step(level: Any, result_um: tuple[float, float]) -> tuple[float, float]:
    """Result pixels per pixel of ``level``."""
    sx, sy = pixel_spacing_mm(level)
    return (sx * 1000.0 / result_um[0], sy * 1000.0 / result_um[1])


def _segment(number: int, label: str, category: Any, kind: Any, algorithm: Algorithm, colour: tuple) -> Any:
    import highdicom as hd

    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=label, segmented_property_category=category,
        segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm.identification(), display_color=hd.color.CIELabColor(*colour))


#: The smallest frame (rows and columns) JPEG 2000 lossless encodes (openjpeg, through highdicom).
J2K_MIN_FRAME = 32


def pyramid_levels(volumes: Sequence[Any], base: int, compressed: bool) -> tuple[list[Any], bool]:
    """The source levels a result pyramid is built on (from ``base``, each smaller than the last
    on both axes, as highdicom requires), and whether it can be compressed: levels whose frames
    JPEG 2000 cannot encode (under :data:`J2K_MIN_FRAME` px, e.g. a pyramid down to 1 x 1 px)
    are left out; when that is the base level itself, the whole pyramid is written uncompressed."""
    levels: list[Any] = []
    for ds in volumes[base:]:
        size = (int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows))
        if not levels or all(a < b for a, b in zip(size, (int(levels[-1].TotalPixelMatrixColumns),
                                                          int(levels[-1].TotalPixelMatrixRows)))):
            levels.append(ds)
    if not compressed:
        return levels, False

    def fits(ds: Any) -> bool:
        return min(int(ds.Rows), int(ds.Columns)) >= J2K_MIN_FRAME

    return ([ds for ds in levels if fits(ds)], True) if fits(levels[0]) else (levels, False)


def _pyramid(volumes: Sequence[Any], base: int, array: np.ndarray, kind: str, segments: list, series: Series,
             algorithm: Algorithm, transfer_syntax: str, label: str, **kwargs: Any) -> list[Any]:
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian

    levels, compressed = pyramid_levels(volumes, base, transfer_syntax != ExplicitVRLittleEndian)
    if not compressed:
        transfer_syntax = ExplicitVRLittleEndian
    common = dict(
        segmentation_type=kind, segment_descriptions=segments, series_instance_uid=series.uid,
        series_number=series.number, manufacturer=MANUFACTURER, manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.software_version, device_serial_number="none",
        transfer_syntax_uid=transfer_syntax, dimension_organization_type="TILED_FULL", omit_empty_frames=False,
        series_description=series.description[:64], content_label=label, pyramid_label=series.description[:64],
        content_description=algorithm.content_description(), pyramid_uid=series.instance_uid("pyramid"), **kwargs)
    if len(levels) == 1:  # a one-level source (a small slide): one object; the pyramid function needs two
        objects = [hd.seg.Segmentation(source_images=levels, pixel_array=array, sop_instance_uid=series.instance_uid(
            "level", 0), instance_number=1, tile_pixel_array=True, **common)]
    else:
        objects = hd.seg.create_segmentation_pyramid(
            source_images=levels, pixel_arrays=[array],
            sop_instance_uids=[series.instance_uid("level", i) for i in range(len(levels))], **common)
    for seg in objects:  # type 2C in General Image; dciodvfy wants it for slide-based objects
        seg.PatientOrientation = ""
    return objects


def tumour_segmentation(volumes: Sequence[Any], mask: np.ndarray, tissue: np.ndarray,
                        result_um: tuple[float, float], algorithm: Algorithm, series: Series) -> list[Any]:
    """BINARY SEG pyramid: segment 1 the tumour mask, segment 2 the tissue (both result maps;
    ``volumes``: the source's VOLUME levels, finest first; ``result_um``: :func:`result_pixel_um`)."""
    from pydicom.sr.codedict import codes
    from pydicom.uid import ExplicitVRLittleEndian

    base = base_level(volumes, result_um)
    level = volumes[base]
    size = (int(level.TotalPixelMatrixColumns), int(level.TotalPixelMatrixRows))
    both = to_grid(np.stack([mask.astype(bool), tissue.astype(bool)], axis=-1), size, grid_step(level, result_um))
    segments = [_segment(1, "Tumour", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm, algorithm,
                         (50.0, 70.0, 50.0)),
                _segment(2, "Tissue", codes.SCT.Tissue, codes.SCT.Tissue, algorithm, (80.0, -40.0, 30.0))]
    return _pyramid(volumes, base, both[None], "BINARY", segments, series, algorithm, ExplicitVRLittleEndian, SEG_LABEL)


def probability_segmentation(volumes: Sequence[Any], probability: np.ndarray, result_um: tuple[float, float],
                             algorithm: Algorithm, series: Series, compress: bool = True) -> list[Any]:
    """One-segment FRACTIONAL SEG pyramid of the probability map (uint8 x 255, a result map)."""
    from pydicom.sr.codedict import codes
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

    base = base_level(volumes, result_um)
    level = volumes[base]
    size = (int(level.TotalPixelMatrixColumns), int(level.TotalPixelMatrixRows))
    grid = to_grid(probability.astype(np.uint8), size, grid_step(level, result_um))
    fractions = np.clip(grid.astype(np.float32) / np.float32(255.0), 0.0, 1.0)
    segments = [_segment(1, "Tumour probability", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm,
                         algorithm, (60.0, 60.0, 70.0))]
    return _pyramid(volumes, base, fractions, "FRACTIONAL", segments, series, algorithm,
                    JPEG2000Lossless if compress else ExplicitVRLittleEndian, PROBABILITY_LABEL,
                    max_fractional_value=255)


def _rings(geojson: Mapping[str, Any]) -> list[list[np.ndarray]]:
    """Each GeoJSON polygon as ``[exterior, hole, ...]`` arrays of level-0 (x, y)."""
    polygons = []
    for feature in geojson.get("features", []):
        geometry = feature.get("geometry") or {}
        parts = ([geometry.get("coordinates", [])] if geometry.get("type") == "Polygon"
                 else geometry.get("coordinates", []) if geometry.get("type") == "MultiPolygon" else [])
        for rings in parts:
            polygons.append([np.asarray(r, dtype=np.float64) for r in rings if len(r) >= 4])
    return [p for p in polygons if p]


def _simplified(ring: np.ndarray, tolerance_px: float) -> np.ndarray:
    """A ring simplified (topology kept), without GeoJSON's repeated first point."""
    from shapely.geometry import Polygon

    shape = Polygon(ring).simplify(tolerance_px, preserve_topology=True)
    coords = np.asarray(shape.exterior.coords if not shape.is_empty else ring)
    return coords[:-1] if len(coords) > 1 and np.array_equal(coords[0], coords[-1]) else coords


def tumour_annotations(level0: Any, geojson: Mapping[str, Any], level0_mpp: tuple[float, float],
                       algorithm: Algorithm, series: Series) -> Any:
    """Microscopy Bulk Simple Annotations of the tumour polygons (see the module docstring);
    None when there is no tumour region (an annotation object needs at least one group)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from shapely.geometry import Polygon

    to_slide = hd.spatial.ImageToReferenceTransformer.for_image(level0, for_total_pixel_matrix=True)
    tolerance = SIMPLIFY_UM / min(level0_mpp)
    outer, holes, areas = [], [], []
    for rings in _rings(geojson):
        exact = Polygon(rings[0], rings[1:])
        areas.append(exact.area * level0_mpp[0] * level0_mpp[1] / 1e6)
        outer.append(to_slide(_simplified(rings[0], tolerance)))
        holes.extend(to_slide(_simplified(r, tolerance)) for r in rings[1:])
    if not outer:
        return None
    identification = algorithm.identification()
    groups = [hd.ann.AnnotationGroup(
        number=1, uid=series.instance_uid("group", 1), label="Tumor", annotated_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        annotated_property_type=codes.SCT.Neoplasm, graphic_type=hd.ann.GraphicTypeValues.POLYGON,
        graphic_data=outer, algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.AUTOMATIC,
        algorithm_identification=identification,
        measurements=[hd.ann.Measurements(codes.SCT.Area, np.asarray(areas, np.float32), codes.UCUM.SquareMillimeter)],
        description="Tumour regions (outer boundaries); subtract the 'Tumor hole' group; Area: exact, holes "
                    "excluded")]
    if holes:
        groups.append(hd.ann.AnnotationGroup(
            number=2, uid=series.instance_uid("group", 2), label="Tumor hole",
            annotated_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            annotated_property_type=hd.sr.CodedConcept(*HOLE_CODE), graphic_type=hd.ann.GraphicTypeValues.POLYGON,
            graphic_data=holes, algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.AUTOMATIC,
            algorithm_identification=identification,
            description="Holes of the tumour regions: not tumour, inside a 'Tumor' polygon"))
    ann = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[level0], annotation_coordinate_type=hd.ann.AnnotationCoordinateTypeValues.SCOORD3D,
        annotation_groups=groups, series_instance_uid=series.uid, series_number=series.number,
        sop_instance_uid=series.instance_uid("annotations"), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name[:64], software_versions=algorithm.software_version,
        device_serial_number="none", content_label=ANNOTATION_LABEL, series_description=series.description[:64],
        content_description=algorithm.content_description())
    if holes:  # a local code: the object says whose scheme it is (PS3.3 C.12.1.1.7 / C.12.1.1.8)
        from pydicom import Dataset

        scheme = Dataset()
        scheme.CodingSchemeDesignator, scheme.CodingSchemeName = HOLE_CODE[1], "tseg-rt local codes"
        scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
        ann.CodingSchemeIdentificationSequence = [scheme]
    return ann


# --- readers (mirror the writers) ----------------------------------------------------------------


def read_segmentation(seg: Any, result_shape: tuple[int, int], result_um: tuple[float, float]) -> np.ndarray:
    """A SEG's total pixel matrix (rows, cols, segments) sampled back onto the result's grid
    (``result_shape = (rows, cols)``): uint8 for BINARY, fraction x 255 rounded for FRACTIONAL.
    ``seg``: a highdicom Segmentation, or a pydicom dataset of one."""
    if not hasattr(seg, "get_total_pixel_matrix"):
        import highdicom as hd

        seg = hd.seg.Segmentation.from_dataset(seg, copy=False)
    matrix = np.asarray(seg.get_total_pixel_matrix(combine_segments=False))
    if matrix.dtype.kind == "f":
        matrix = np.rint(matrix * 255.0).astype(np.uint8)
    sx, sy = grid_step(seg, result_um)
    step = (1.0 / sx, 1.0 / sy)
    return to_grid(matrix, (result_shape[1], result_shape[0]), step)


def read_annotations(ann: Any, level0: Any) -> list[Any]:
    """Shapely polygons in level-0 pixels: each 'Tumor' polygon minus the holes inside it."""
    import highdicom as hd
    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    if not hasattr(ann, "get_annotation_groups"):
        ann = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(ann, copy=False)
    to_image = hd.spatial.ReferenceToImageTransformer.for_image(level0, for_total_pixel_matrix=True)
    outer, holes = [], []
    for group in ann.get_annotation_groups():
        shapes = [Polygon(to_image(points)[:, :2]) for points in group.get_graphic_data("3D")]
        (holes if group.label == "Tumor hole" else outer).extend(shapes)
    cut = unary_union(holes) if holes else None
    return [p.difference(cut) if cut is not None and p.intersects(cut) else p for p in outer]


def dsc(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity of two boolean masks (1.0 for two empty masks)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def polygon_iou(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Intersection over union of two sets of shapely polygons (1.0 when both are empty)."""
    from shapely.ops import unary_union

    ua, ub = unary_union(list(a)), unary_union(list(b))
    union = ua.union(ub).area
    return 1.0 if math.isclose(union, 0.0) else ua.intersection(ub).area / union
