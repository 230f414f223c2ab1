"""``tseg-rt info`` without ``--json``: a summary for people, not a Python dict."""

from __future__ import annotations

import subprocess
import sys

from helpers import make_square_slide


def test_info_prints_a_readable_slide_summary(tmp_path):
    slide = make_square_slide(tmp_path / "s.tiff")["path"]
    done = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "info", str(slide)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "{" not in out and "None" not in out and "': " not in out  # no Python repr
    assert "vendor" in out and "generic-tiff" in out
    assert "1.6 x 1.2 mm" in out
    assert "0.5 µm/px" in out  # level 0, with its resolution
    assert "3200 x 2400 px" in out
    assert "problems" in out and "none" in out


def test_summary_of_a_slide_without_resolution_says_what_is_missing():
    from tseg.runtime.cli.info_text import describe

    data = {"path": "/x/a.svs", "vendor": "aperio", "dimensions": [1000, 800],
            "levels": [{"level": 0, "dimensions": [1000, 800], "downsample": [1.0, 1.0]},
                       {"level": 1, "dimensions": [250, 200], "downsample": [4.0, 4.0]}],
            "mpp": None, "stored_mpp": None, "resolution": "missing: no MPP in the metadata.",
            "associated_images": [], "colour_correction": None}
    text = "\n".join(describe(data))
    assert "250 x 200 px" in text and "µm/px unknown" in text
    assert "missing: no MPP in the metadata." in text and "None" not in text


def test_summary_of_a_model_is_not_a_python_dict():
    from tseg.runtime.cli.info_text import describe

    text = "\n".join(describe({"model": "m.onnx", "sha256": "ab" * 32,
                               "contract": {"tile_size": 256, "classes": ["background", "tumour"], "x": None},
                               "tensorrt_parser": {"conforms": True, "violations": []}}))
    assert "tile_size: 256" in text and "classes: background, tumour" in text
    assert "None" not in text and "{" not in text and "[]" not in text
