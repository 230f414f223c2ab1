"""ONNX external data is checked by tseg-rt before ONNX Runtime (or TensorRT's parser) reads it."""

from __future__ import annotations

import os

import numpy as np
import pytest

from helpers import make_external_data_model
from tseg.runtime.errors import ModelError
from tseg.runtime.execution.backends import load_backend
from tseg.runtime.execution.external_data import check_external_data


def test_data_inside_the_folder_loads_and_runs(tmp_path):
    model = make_external_data_model(tmp_path / "m.onnx", "weights.bin")
    with load_backend(model, providers="cpu") as backend:
        tile = np.zeros((1, 16, 16, 3), np.uint8)
        assert backend.infer(tile).min() == 255  # red 0 < 128: tumour
    (tmp_path / "sub").mkdir()
    np.array([128.0], np.float32).tofile(tmp_path / "sub" / "w.bin")
    check_external_data(make_external_data_model(tmp_path / "n.onnx", "sub/w.bin"))  # a sub-folder is inside


@pytest.mark.parametrize("case, expected", [
    ("dotdot", "outside the model's folder"), ("absolute", "absolute path"), ("link out", "outside the model's folder"),
    ("fifo", "FIFO"), ("past the end", "the file holds 4 bytes"), ("bad offset", "not an integer"),
    ("missing", "cannot be read"), ("no location", "names no file"), ("nul byte", "NUL byte"),
    ("name too long", "cannot be"),
])
def test_hostile_locations_are_refused_naming_model_and_tensor(tmp_path, case, expected):
    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    np.array([128.0], np.float32).tofile(secret)
    np.array([128.0], np.float32).tofile(folder / "w.bin")
    (folder / "link.bin").symlink_to(secret)
    os.mkfifo(folder / "pipe.bin")
    location, offset, length = {
        "dotdot": ("../secret.bin", 0, 4), "absolute": (str(secret), 0, 4), "link out": ("link.bin", 0, 4),
        "fifo": ("pipe.bin", 0, 4), "past the end": ("w.bin", 2, 4), "bad offset": ("w.bin", "x", 4),
        "missing": ("gone.bin", 0, 4), "no location": ("", 0, 4), "nul byte": ("w.bin\0.txt", 0, 4),
        "name too long": ("x" * 5000 + ".bin", 0, 4)}[case]
    model = make_external_data_model(folder / "m.onnx", location, offset, length, write_data=False)
    with pytest.raises(ModelError, match=expected) as info:
        load_backend(model, providers="cpu")
    assert "m.onnx" in str(info.value) and "tensor 'limit'" in str(info.value)
