"""Annotation readers (runtime, no PyTorch): QuPath GeoJSON, Aperio XML, mask images."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tseg.runtime.evaluation.annotations import read_annotation
from tseg.runtime.errors import AnnotationError


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def write_geojson(path, features):
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def feature(geometry, name="Tumor"):
    return {"type": "Feature", "geometry": geometry, "properties": {"classification": {"name": name}}}


def test_geojson_polygon_with_hole_and_multipolygon(tmp_path):
    path = write_geojson(tmp_path / "a.geojson", [
        feature({"type": "Polygon", "coordinates": [square(0, 0, 100, 100), square(40, 40, 60, 60)]}),
        feature({"type": "MultiPolygon", "coordinates": [[square(200, 0, 220, 20)], [square(300, 0, 310, 10)]]}),
        feature({"type": "Polygon", "coordinates": [square(0, 150, 50, 200)]}, name="Stroma"),
    ])
    ann = read_annotation(path)
    # Rasterised at 1/10 of level 0 (a 40 x 20 image of a 400 x 200 slide): pixel centres decide.
    m = ann.rasterise((400, 200), (40, 20))
    assert m[0:10, 0:10].sum() == 100 - 4  # the 20 x 20 hole is 2 x 2 pixels
    assert not m[5, 5] and m[2, 2]
    assert m[0:2, 20:22].all() and m[0, 30]
    assert m[15:20, 0:5].all()  # "Stroma" counts when no classes are given
    only_tumour = read_annotation(path, classes=["Tumor"])
    assert not only_tumour.rasterise((400, 200), (40, 20))[15:20, 0:5].any()
    # A box of a larger raster: the box's pixels.
    box = ann.rasterise((400, 200), (400, 200), (30, 30, 40, 40))
    assert box.shape == (40, 40) and box[0, 0] and not box[15, 15]


def test_aperio_xml_with_negative_region(tmp_path):
    def region(pts, negative=False):
        vs = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in pts)
        return f'<Region Id="1" NegativeROA="{1 if negative else 0}"><Vertices>{vs}</Vertices></Region>'

    xml = ("<Annotations><Annotation Id='1'><Regions>" + region(square(0, 0, 100, 100)[:-1])
           + region(square(25, 25, 75, 75)[:-1], negative=True) + "</Regions></Annotation></Annotations>")
    path = tmp_path / "a.xml"
    path.write_text(xml)
    m = read_annotation(path).rasterise((100, 100), (100, 100))
    assert m.sum() == 100 * 100 - 50 * 50 and not m[50, 50] and m[10, 10]


def test_mask_image_annotation(tmp_path):
    mask = np.zeros((50, 40), np.uint8)
    mask[10:20, 5:15] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    ann = read_annotation(tmp_path / "m.png")
    m = ann.rasterise((400, 500), (80, 100))
    assert m.shape == (100, 80) and m.sum() == 20 * 20 and m[30, 20]


def test_invalid_polygon_is_an_error_unless_repaired(tmp_path):
    bowtie = [[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]
    path = write_geojson(tmp_path / "bad.geojson", [feature({"type": "Polygon", "coordinates": [bowtie]})])
    with pytest.raises(AnnotationError) as err:
        read_annotation(path)
    assert "bad.geojson" in str(err.value) and "Self-intersection" in str(err.value)
    assert read_annotation(path, repair=True).geometry.area == pytest.approx(5000)


def test_annotation_outside_the_slide(tmp_path):
    path = write_geojson(tmp_path / "far.geojson", [feature({"type": "Polygon", "coordinates": [square(5000, 0, 6000, 100)]})])
    ann = read_annotation(path)
    with pytest.raises(AnnotationError, match="outside"):
        ann.check_inside((1000, 1000))
    slight = read_annotation(write_geojson(tmp_path / "edge.geojson",
                                           [feature({"type": "Polygon", "coordinates": [square(900, 0, 1005, 100)]})]))
    slight.check_inside((1000, 1000))  # 0.5% overshoot: clipped
    assert slight.geometry.bounds[2] == 1000


def test_unreadable_files(tmp_path):
    (tmp_path / "x.geojson").write_text("{not json")
    with pytest.raises(AnnotationError, match="x.geojson"):
        read_annotation(tmp_path / "x.geojson")
    with pytest.raises(AnnotationError, match="unknown annotation type"):
        read_annotation((tmp_path / "x.txt").write_text("") or tmp_path / "x.txt")
    with pytest.raises(AnnotationError, match="no such"):
        read_annotation(tmp_path / "none.xml")
