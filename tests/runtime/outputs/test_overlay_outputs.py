"""overlay.png in real results: drawn from the saved maps in the style the settings name, kept in the
summary, redrawn without the network when only the overlay changes (run, postprocess, the API),
and in the same colour as the GeoJSON QuPath imports."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import make_colour_model, make_square_slide
from tseg.runtime.cohort.batch import run_batch
from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.execution.segmenter import DEFAULT_OVERLAY_OPACITY, DEFAULT_OVERLAY_STYLE, Segmenter
from tseg.runtime.method.polygons import TUMOUR_COLOUR
from tseg.runtime.outputs.files import FOREGROUND, GEOJSON, MASK, OVERLAY, OVERVIEW, PROBABILITY, repostprocess, result_overlay
from tseg.runtime.outputs.summary import SUMMARY
from tseg.runtime.outputs.overlay import draw_map


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_maps(folder):
    overview = read_rgb(folder / OVERVIEW)
    probability = cv2.imread(str(folder / PROBABILITY), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(folder / MASK), cv2.IMREAD_UNCHANGED) > 0
    foreground = cv2.imread(str(folder / FOREGROUND), cv2.IMREAD_UNCHANGED) > 0
    return overview, probability, mask, foreground


def settings(folder):
    return json.loads((folder / SUMMARY).read_text())["settings"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("overlay")
    (d / "in").mkdir()
    make_square_slide(d / "in" / "s.tiff")
    return d, make_colour_model(d / "m.onnx")


@pytest.fixture(scope="module")
def result(setup):
    d, model = setup
    out = d / "out"
    assert run_batch([d / "in" / "s.tiff"], out, Segmenter(model))[0].status == "done"
    return out / "s"


def test_the_overlay_is_drawn_from_the_saved_maps_with_a_legend(result):
    maps = read_maps(result)
    picture = read_rgb(result / OVERLAY)
    h, w = maps[0].shape[:2]
    assert picture.shape[0] > h and picture.shape[1] >= w  # the legend is below the map
    assert np.array_equal(picture[:h, :w], draw_map(*maps))  # default style: a translucent fill
    made = settings(result)
    assert (made["overlay_style"], made["overlay_opacity"]) == (DEFAULT_OVERLAY_STYLE, DEFAULT_OVERLAY_OPACITY)


def test_the_geojson_carries_the_overlay_colour_for_qupath(result):
    features = json.loads((result / GEOJSON).read_text())["features"]
    assert len(features) == 1
    props = features[0]["properties"]
    assert props["classification"] == {"name": "Tumor", "color": list(TUMOUR_COLOUR)}
    assert props["color"] == list(TUMOUR_COLOUR)  # the object's own colour: QuPath draws it so
    h = read_maps(result)[0].shape[0]
    contour = np.all(read_rgb(result / OVERLAY)[:h] == np.array(TUMOUR_COLOUR, np.uint8), axis=-1)
    assert contour.sum() > 100  # the contour in overlay.png is that colour


def test_an_overlay_change_is_redrawn_from_the_maps_without_the_network(setup, tmp_path):
    d, model = setup
    out = tmp_path / "out"
    slide = d / "in" / "s.tiff"
    seg = Segmenter(model)
    assert run_batch([slide], out, seg)[0].status == "done"
    folder = out / "s"
    before = {n: (folder / n).read_bytes() for n in (MASK, GEOJSON, OVERLAY, PROBABILITY)}
    contour = seg.with_settings(overlay_style="contour", overlay_opacity=0.5)
    again = run_batch([slide], out, contour)[0]
    assert again.status == "postprocessed" and again.detail.startswith("overlay redrawn"), again
    assert "no network" in again.detail and "contour" in again.detail
    for name in (MASK, GEOJSON, PROBABILITY):
        assert (folder / name).read_bytes() == before[name], name
    assert (folder / OVERLAY).read_bytes() != before[OVERLAY]
    h, w = cv2.imread(str(folder / MASK)).shape[:2]
    assert np.array_equal(read_rgb(folder / OVERLAY)[:h, :w], draw_map(*read_maps(folder), style="contour"))
    assert (settings(folder)["overlay_style"], settings(folder)["overlay_opacity"]) == ("contour", 0.5)
    assert run_batch([slide], out, contour)[0].status == "skipped"
    # A fresh run with those settings makes the same picture.
    fresh = tmp_path / "fresh"
    assert run_batch([slide], fresh, contour)[0].status == "done"
    assert (fresh / "s" / OVERLAY).read_bytes() == (folder / OVERLAY).read_bytes()
    # A result made before overlays were recorded gets the new picture (and its legend).
    summary = json.loads((folder / SUMMARY).read_text())
    del summary["settings"]["overlay_style"], summary["settings"]["overlay_opacity"]
    (folder / SUMMARY).write_text(json.dumps(summary))
    old = run_batch([slide], out, contour)[0]
    assert old.status == "postprocessed" and "earlier tseg-rt" in old.detail, old
    assert settings(folder)["overlay_style"] == "contour"
    # Thresholds and overlay together: one post-processing, both recorded.
    both = run_batch([slide], out, contour.with_settings(low=40, high=200, overlay_style="heatmap"))[0]
    assert both.status == "postprocessed" and "low/high 40/200" in both.detail and "heatmap" in both.detail
    assert settings(folder)["low"] == 40 and settings(folder)["overlay_style"] == "heatmap"


def test_repostprocess_keeps_or_changes_the_overlay(setup, tmp_path):
    d, model = setup
    out = tmp_path / "out"
    run_batch([d / "in" / "s.tiff"], out, Segmenter(model, overlay_style="heatmap", overlay_opacity=0.6))
    folder = out / "s"
    summary = repostprocess(folder, 85, 229, True)  # the overlay settings are kept
    assert (summary["settings"]["overlay_style"], summary["settings"]["overlay_opacity"]) == ("heatmap", 0.6)
    summary = repostprocess(folder, 85, 229, True, overlay_opacity=0.2)
    assert (summary["settings"]["overlay_style"], summary["settings"]["overlay_opacity"]) == ("heatmap", 0.2)
    assert summary["history"][-1]["postprocess"]["overlay_opacity"] == 0.2
    before = (folder / OVERLAY).read_bytes()
    with pytest.raises(InvalidArgumentError, match="overlay style"):
        repostprocess(folder, 85, 229, True, overlay_style="opaque")
    assert (folder / OVERLAY).read_bytes() == before  # checked before anything is written


def test_the_api_takes_and_records_the_overlay_settings(setup, tmp_path):
    from tseg.runtime import write_outputs

    d, model = setup
    with pytest.raises(InvalidArgumentError, match="overlay style must be one of"):
        Segmenter(model, overlay_style="opaque")
    with pytest.raises(InvalidArgumentError, match="overlay opacity"):
        Segmenter(model, overlay_opacity=-0.1)
    seg = Segmenter(model, overlay_style="contour", overlay_opacity=0.25)
    rgb = cv2.resize(read_rgb(d / "out" / "s" / OVERVIEW), None, fx=5, fy=5, interpolation=cv2.INTER_NEAREST)
    result = seg.segment_image(rgb)
    made = result.summary["settings"]
    assert (made["overlay_style"], made["overlay_opacity"]) == ("contour", 0.25)
    picture = result_overlay(result)
    h, w = result.mask.shape
    assert np.array_equal(picture[:h, :w], draw_map(result.overview, result.probability, result.mask, result.foreground,
                                                    style="contour"))
    assert picture.shape[0] > h
    write_outputs(result, tmp_path / "image")  # the embedding example of docs/slides.md
    assert np.array_equal(read_rgb(tmp_path / "image" / OVERLAY), picture)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tseg.runtime.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.slow
def test_overlay_options_on_the_command_line(setup, tmp_path):
    d, model = setup
    out = tmp_path / "o"
    r = cli("run", d / "in", "--engine", model, "--out", out, "--no-progress", "--no-report",
            "--overlay-style", "heatmap", "--overlay-opacity", "0.5", "--low", "60", "--high", "200")
    assert r.returncode == 0, r.stderr
    assert (settings(out / "s")["overlay_style"], settings(out / "s")["overlay_opacity"]) == ("heatmap", 0.5)
    mask = (out / "s" / MASK).read_bytes()
    r = cli("postprocess", out, "--overlay-style", "contour")  # what is not given stays the result's own
    assert r.returncode == 0, r.stderr
    made = settings(out / "s")
    assert (made["overlay_style"], made["overlay_opacity"], made["low"], made["high"]) == ("contour", 0.5, 60, 200)
    assert (out / "s" / MASK).read_bytes() == mask
    for command in (["run", d / "in", "--engine", model, "--out", tmp_path / "x"], ["postprocess", out]):
        bad = cli(*command, "--overlay-style", "opaque")
        assert bad.returncode == 2 and "fill, contour, heatmap" in bad.stderr and "Traceback" not in bad.stderr
        bad = cli(*command, "--overlay-opacity", "1.5")
        assert bad.returncode == 2 and "overlay-opacity" in bad.stderr
    assert not (tmp_path / "x").exists()
    # A run without the overlay options: the library's defaults, redrawn from the saved maps.
    r = cli("run", d / "in", "--engine", model, "--out", out, "--no-progress", "--no-report", "--low", "60",
            "--high", "200")
    assert r.returncode == 0 and "overlay redrawn" in r.stdout + r.stderr, r.stdout + r.stderr
    made = settings(out / "s")
    assert (made["overlay_style"], made["overlay_opacity"]) == (DEFAULT_OVERLAY_STYLE, DEFAULT_OVERLAY_OPACITY)
    from tseg.runtime.cohort.options import OVERLAY_OPACITY_DEFAULT, OVERLAY_STYLE_DEFAULT

    assert (OVERLAY_STYLE_DEFAULT, OVERLAY_OPACITY_DEFAULT) == (DEFAULT_OVERLAY_STYLE, DEFAULT_OVERLAY_OPACITY)
