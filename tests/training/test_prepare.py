"""Dataset preparation from generated slides and annotations (no PyTorch in this step)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from helpers import make_square_slide
from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.method.tiling import tile_starts
from tseg.training.prepare import BACKGROUND, TISSUE, TUMOUR, prepare_dataset, read_index, read_slide_list


@pytest.fixture()
def dataset(tmp_path):
    # Tissue 1300 x 1000 µm; a tumour polygon over the dark square at (600, 400) size 500 x 400 µm.
    info = make_square_slide(tmp_path / "s.tiff", width_um=1600, height_um=1200)
    sx, sy, sw, sh = info["square_level0"]
    (tmp_path / "s.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"classification": {"name": "Tumor"}},
        "geometry": {"type": "Polygon", "coordinates": [[[sx, sy], [sx + sw, sy], [sx + sw, sy + sh], [sx, sy + sh], [sx, sy]]]}}]}))
    (tmp_path / "slides.csv").write_text("path,annotation,cancer_type,cohort\ns.tiff,s.geojson,colon,DCo1\n")
    report = prepare_dataset(tmp_path / "slides.csv", tmp_path / "ds", tile_size=256)
    return tmp_path, report


def test_tile_grid_labels_and_formats(dataset):
    tmp_path, report = dataset
    rows = read_index(report.index)
    xs = tile_starts(1600, 256, 0)
    ys = tile_starts(1200, 256, 0)
    assert {(int(r["x"]), int(r["y"])) for r in rows} <= {(x, y) for x in xs for y in ys}
    for r in rows:
        assert open(r["ImagePath"], "rb").read(3) == b"\xff\xd8\xff"  # JPEG
        assert open(r["MaskPath"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        image = cv2.imread(r["ImagePath"])
        mask = cv2.imread(r["MaskPath"], cv2.IMREAD_GRAYSCALE)
        assert image.shape == (256, 256, 3) and mask.shape == (256, 256)
        assert set(np.unique(mask)) <= {BACKGROUND, TISSUE, TUMOUR}
        assert r["cancer_type"] == "colon" and r["cohort"] == "DCo1" and r["slide"] == "s"
        assert r["section"] == "s"  # no section column: the scan is its own section
    # The tile at (768, 512) lies inside the tumour square (600-1100 x 400-800 µm at 1 µm/px).
    inner = next(r for r in rows if (int(r["x"]), int(r["y"])) == (768, 512))
    mask = cv2.imread(inner["MaskPath"], cv2.IMREAD_GRAYSCALE)
    assert (mask[:288 - 0, :] == TUMOUR)[: 800 - 512, : 1100 - 768].all()
    assert int(inner["has_tumour"]) == 1
    # The tile at (256, 256) is tissue without tumour.
    tissue = next(r for r in rows if (int(r["x"]), int(r["y"])) == (256, 256))
    assert (cv2.imread(tissue["MaskPath"], cv2.IMREAD_GRAYSCALE) == TISSUE).mean() > 0.95


def test_background_tile_exclusion(dataset):
    tmp_path, report = dataset
    rows = read_index(report.index)
    kept = {(int(r["x"]), int(r["y"])) for r in rows}
    # Glass-only corner tile (tissue starts at 150 µm): excluded.
    assert (0, 0) not in kept and (1344, 944) not in kept
    for r in rows:
        mask = cv2.imread(r["MaskPath"], cv2.IMREAD_GRAYSCALE)
        background = (mask == BACKGROUND).mean()
        assert float(r["background_fraction"]) == pytest.approx(background, abs=1e-5)
        assert (mask == TUMOUR).any() or background < 0.5
    # The 5 µm/px overview, foreground and label mask are written as PNG.
    for name in ("overview.png", "foreground.png", "labels.png"):
        assert cv2.imread(str(tmp_path / "ds" / "s" / name)) is not None


def test_failing_slide_is_reported_and_skipped(tmp_path, dataset):
    src, _ = dataset
    (src / "nompp.tiff").write_bytes((src / "s.tiff").read_bytes())
    import tifffile

    tifffile.imwrite(src / "nompp.tiff", np.zeros((300, 300, 3), np.uint8), photometric="rgb", tile=(256, 256))
    (src / "two.csv").write_text("path,annotation,cancer_type,cohort\ns.tiff,s.geojson,colon,A\nnompp.tiff,,lung,B\n")
    report = prepare_dataset(src / "two.csv", tmp_path / "ds2", tile_size=256)
    assert len(report.failures) == 1 and "nompp.tiff" in next(iter(report.failures.values()))
    assert report.tiles > 0
    (src / "only.csv").write_text("path,annotation,cancer_type,cohort\nnompp.tiff,,lung,B\n")
    with pytest.raises(InvalidArgumentError, match="no tiles"):
        prepare_dataset(src / "only.csv", tmp_path / "ds3", tile_size=256)


def test_section_column(tmp_path):
    """Two scans of one tissue section (two scanners) share a section; the column is optional."""
    (tmp_path / "s.csv").write_text("path,annotation,cancer_type,cohort,section,mpp\n"
                                   "a/x_at2.svs,,colon,DCo1,patient7-block2,\n"
                                   "b/x_xr.ndpi,,colon,DCo1,patient7-block2,0.45\n"
                                   "c/y.svs,,colon,DCo1,,\n")
    entries = read_slide_list(tmp_path / "s.csv")
    assert [e.section for e in entries] == ["patient7-block2", "patient7-block2", None]
    assert [e.mpp for e in entries] == [None, 0.45, None]
    (tmp_path / "bad.csv").write_text("path,annotation,cancer_type,cohort,mpp\nx.svs,,colon,A,fast\n")
    with pytest.raises(InvalidArgumentError, match="bad.csv, line 2: mpp 'fast' is not a number"):
        read_slide_list(tmp_path / "bad.csv")


def test_bad_lists(tmp_path):
    (tmp_path / "a.csv").write_text("path,cancer_type\nx.svs,colon\n")
    with pytest.raises(InvalidArgumentError, match="missing columns"):
        prepare_dataset(tmp_path / "a.csv", tmp_path / "o")
    (tmp_path / "empty.csv").write_text("ImagePath,MaskPath,slide,cancer_type\n")
    with pytest.raises(InvalidArgumentError, match="empty"):
        read_index(tmp_path / "empty.csv")
