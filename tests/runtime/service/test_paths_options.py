"""Which paths a request may name (roots, symbolic links, DICOM companions), and the per-slide options
object shared by `run`, the service's request schema and the `serve`/`watch` flags."""

from __future__ import annotations

import dataclasses
import os

import pytest

from tseg.runtime.cohort.options import SlideOptions
from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.service.paths import PathRefused, Roots


@pytest.fixture
def tree(tmp_path):
    root, other, out = tmp_path / "root", tmp_path / "other", tmp_path / "root" / "results"
    for d in (root / "sub", other, out / "a", root / "series", root / "badseries"):
        d.mkdir(parents=True)
    for f in (root / "a.svs", root / "sub" / "b.tiff", other / "c.svs", out / "a" / "probability.tif",
              root / "series" / "1.dcm", root / "badseries" / "1.dcm", other / "2.dcm"):
        f.write_bytes(b"x")
    os.symlink(root / "a.svs", root / "inside-link.svs")
    os.symlink(other / "c.svs", root / "outside-link.svs")
    os.symlink(other, root / "outside-dir")
    os.symlink(other / "2.dcm", root / "badseries" / "2.dcm")
    return Roots([root], results=out), root, other


def test_roots(tree):
    roots, root, other = tree
    assert roots.resolve(str(root / "a.svs")) == root / "a.svs"
    assert roots.resolve("sub/b.tiff") == root / "sub" / "b.tiff"  # relative to the first root
    assert roots.resolve(str(root / "inside-link.svs")) == root / "a.svs"  # a link that stays inside: fine
    assert roots.resolve("series") == root / "series"
    refused = {
        str(other / "c.svs"): "outside_roots", str(root / "outside-link.svs"): "outside_roots",
        str(root / "outside-dir" / "c.svs"): "outside_roots", "badseries": "outside_roots",
        str(root / "badseries" / "1.dcm"): "outside_roots", "sub/../a.svs": "path_traversal",
        "..": "path_traversal", str(root / "results" / "a" / "probability.tif"): "in_results",
        "missing.svs": "not_found", "sub": "not_a_slide", "": "bad_path", "a\x00.svs": "bad_path",
        "x" * 5000: "bad_path",
    }
    for text, code in refused.items():
        with pytest.raises(PathRefused) as err:
            roots.resolve(text)
        assert err.value.code == code, (text, err.value)
    with pytest.raises(PathRefused, match="symbolic link"):
        roots.resolve(str(root / "outside-link.svs"))
    with pytest.raises(PathRefused, match=r"names another file \(2.dcm\)"):
        roots.resolve("badseries")


def test_options_parse_check_and_merge():
    opts = SlideOptions.from_mapping({"mpp": "0.25,0.3", "low": 60, "high": 200})
    assert opts.mpp == (0.25, 0.3) and opts.thresholds() == (60, 200)
    assert SlideOptions.from_mapping({"mpp": [0.25, 0.25]}).to_dict()["mpp"] == [0.25, 0.25]
    assert SlideOptions().to_dict() == {"mpp": None, "low": None, "high": None, "prune": True,
                                        "level_tolerance": 0.0, "dct_scaling": False,
                                        "allow_non_brightfield": False, "overlay_style": "fill",
                                        "overlay_opacity": 0.35, "dicom_out": False}
    assert SlideOptions(low=50).merged({"high": 90}).thresholds() == (50, 90)
    assert set(opts.segmenter_settings()) == {"mpp", "low", "high", "prune", "level_tolerance", "dct_scaling",
                                              "allow_non_brightfield",
                                              "overlay_style", "overlay_opacity"}  # dicom_out: outputs, not Segmenter
    contour = SlideOptions.from_mapping({"overlay_style": "contour", "overlay_opacity": 1})
    assert contour.to_dict()["overlay_opacity"] == 1.0 and contour.segmenter_settings()["overlay_style"] == "contour"
    for bad, message in (({"low": 300}, "low must be an integer 0-255"), ({"low": True}, "low must be an integer"),
                         ({"low": 90, "high": 80}, "low < high"), ({"mpp": 50}, "plausible range"),
                         ({"mpp": [1, 2, 3]}, "X or"), ({"prune": "yes"}, "prune must be true or false"),
                         ({"level_tolerance": 80}, "level_tolerance"), ({"lo": 1}, "unknown option.*allowed"),
                         ({"overlay_style": "outline"}, "row 3: overlay style must be one of fill, contour, heatmap"),
                         ({"overlay_opacity": 1.5}, "overlay opacity must be a number from 0"),
                         ({"overlay_opacity": True}, "overlay opacity"), ({"dicom_out": "yes"}, "dicom_out must be")):
        with pytest.raises(InvalidArgumentError, match=message):
            SlideOptions.from_mapping(bad, "row 3")


def test_one_options_object_feeds_the_api_and_the_command_line():
    """A per-slide option added to SlideOptions appears in the request schema (same default and
    help) and as a flag of `serve` and `watch`."""
    import typer.main

    from tseg.runtime.cli.main import app
    from tseg.runtime.service.schemas import OptionsModel

    fields = {f.name: f for f in dataclasses.fields(SlideOptions)}
    assert set(OptionsModel.model_fields) == set(fields)
    for name, f in fields.items():
        assert OptionsModel.model_fields[name].description == f.metadata["help"]
        default = OptionsModel.model_fields[name].default
        assert (list(default) if isinstance(default, tuple) else default) == f.default
    commands = typer.main.get_command(app).commands
    for name in ("serve", "watch"):
        params = {p.name for p in commands[name].params}
        assert set(fields) <= params, (name, set(fields) - params)


def test_overlay_choices_are_the_segmenters():
    """SlideOptions' overlay styles and defaults (kept apart so that --help does not load the
    execution layer) are Segmenter's."""
    import typing

    from tseg.runtime.cohort.options import OverlayStyle
    from tseg.runtime.execution.segmenter import DEFAULT_OVERLAY_OPACITY, DEFAULT_OVERLAY_STYLE, OVERLAY_STYLES

    assert typing.get_args(OverlayStyle) == OVERLAY_STYLES
    assert (SlideOptions().overlay_style, SlideOptions().overlay_opacity) == (DEFAULT_OVERLAY_STYLE,
                                                                              DEFAULT_OVERLAY_OPACITY)


@pytest.fixture
def named_tree(tmp_path):
    """Slides in a root that name other files (issue 30, items 1 and 2)."""
    import tifffile

    root, outside, out = tmp_path / "root", tmp_path / "outside", tmp_path / "out"
    for d in (root, outside, out):
        d.mkdir()
    (outside / "private.jpg").write_bytes(b"\xff\xd8secret")
    (outside / "data").mkdir()
    (root / "image.jpg").write_bytes(b"\xff\xd8")
    os.mkfifo(root / "pipe.jpg")
    vms = "[Virtual Microscope Specimen]\nNoLayers=1\n{}\nMapFile=image.jpg\n"
    (root / "good.vms").write_text(vms.format("ImageFile=image.jpg"))
    (root / "outside.vms").write_text(vms.format("ImageFile=../outside/private.jpg"))
    (root / "missing.vms").write_text(vms.format("ImageFile=../outside/does-not-exist.jpg"))
    (root / "absolute.vmu").write_text(vms.format(f"ImageFile(0,1)={outside / 'private.jpg'}"))
    (root / "fifo.vms").write_text(vms.format("ImageFile=pipe.jpg"))
    ome = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
           '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="8" SizeY="8" '
           'SizeC="1" SizeZ="1" SizeT="2"><TiffData FirstT="1" IFD="0" PlaneCount="1"><UUID FileName="{}">'
           'urn:uuid:1</UUID></TiffData></Pixels></Image></OME>')
    import numpy as np

    for name, target in (("ome-outside.ome.tiff", str(outside / "secret.tiff")), ("ome-fifo.ome.tiff", "pipe.jpg")):
        tifffile.imwrite(root / name, np.zeros((8, 8), np.uint8), description=ome.format(target), metadata=None)
    (root / "linked.mrxs").write_bytes(b"x")
    os.symlink(outside / "data", root / "linked")
    (root / "named.mrxs").write_bytes(b"x")
    (root / "named").mkdir()
    (root / "named" / "Slidedat.ini").write_text("[DATAFILE]\nFILE_COUNT=1\nFILE_0=../../outside/data/x.dat\n")
    return Roots([root], results=out), root


def test_files_a_slide_names_stay_inside_the_roots(named_tree):
    """VMS/VMU image files, a MIRAX data folder and its files, OME-TIFF UUID FileName: refused
    before anything opens them, with a message that does not say whether the outside file exists."""
    from tseg.runtime.wsi.companions import companion_files

    roots, root = named_tree
    assert roots.resolve("good.vms") == root / "good.vms"
    assert root / "image.jpg" in companion_files(root / "good.vms")
    messages = {}
    for name in ("outside.vms", "missing.vms", "absolute.vmu", "ome-outside.ome.tiff", "linked.mrxs", "named.mrxs"):
        with pytest.raises(PathRefused) as refused:
            roots.resolve(name)
        assert refused.value.code == "outside_roots", (name, str(refused.value))
        messages[name] = str(refused.value)
    assert messages["outside.vms"].replace("outside.vms", "X").replace("private.jpg", "Y") == \
        messages["missing.vms"].replace("missing.vms", "X").replace("does-not-exist.jpg", "Y")
    assert "couldn't" not in " ".join(messages.values()).lower()


@pytest.mark.timeout(30)
def test_a_fifo_a_slide_names_is_refused_without_opening_it(named_tree):
    roots, root = named_tree
    for name in ("fifo.vms", "ome-fifo.ome.tiff"):
        with pytest.raises(PathRefused, match="FIFO") as refused:
            roots.resolve(name)
        assert refused.value.code == "not_a_slide"
