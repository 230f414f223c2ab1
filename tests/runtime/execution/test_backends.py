"""The backend interface, the model contract and the ONNX Runtime backend (CPU)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from helpers import make_colour_model
from tseg.runtime.execution.backends import load_backend
from tseg.runtime.execution.backends.onnxruntime import OnnxRuntimeBackend
from tseg.runtime.execution.contract import METADATA_KEY, PAPER, ModelContract
from tseg.runtime.errors import (
    BackendUnavailableError,
    ContractError,
    InvalidArgumentError,
    ModelError,
    ModelNotFoundError,
)


def test_contract_round_trip_and_paper_defaults():
    c = ModelContract(tile_size=512, min_overlap=64, model={"encoder": "x"}, provenance={"step": 3})
    assert ModelContract.from_json(c.to_json()) == c
    assert (PAPER.tile_size, PAPER.min_overlap, PAPER.mpp) == (7680, 1024, 1.0)
    assert (PAPER.low_threshold, PAPER.high_threshold) == (85, 229)
    assert PAPER.mean == pytest.approx((0.8297992, 0.7106879, 0.8241846))
    assert PAPER.std == pytest.approx((0.1051075, 0.1543867, 0.09917571))
    assert PAPER.class_labels == (0, 127, 255) and PAPER.classes[PAPER.tumour_index] == "tumour"


@pytest.mark.parametrize("bad", [
    {"tile_size": 0}, {"min_overlap": 7680}, {"mpp": -1}, {"tumour_index": 3},
    {"low_threshold": 230}, {"std": [1, 0, 1]}, {"precision": "int4"}, {"class_labels": [0, 1]},
])
def test_contract_validation(bad):
    data = PAPER.to_dict()
    data.update(bad)
    with pytest.raises(ContractError):
        ModelContract.from_dict(data, "m.onnx")


def test_contract_rejects_other_schema_versions_and_bad_json():
    data = PAPER.to_dict()
    data["schema_version"] = 99
    with pytest.raises(ContractError, match="schema_version"):
        ModelContract.from_dict(data)
    with pytest.raises(ContractError, match="not valid JSON"):
        ModelContract.from_json("{nope")


def test_onnxruntime_backend_runs_and_reads_its_contract(tmp_path):
    path = make_colour_model(tmp_path / "m.onnx", tile=512, overlap=64, divisor=16)
    with load_backend(path, providers="cpu") as backend:
        assert isinstance(backend, OnnxRuntimeBackend)
        assert backend.contract.tile_size == 512 and backend.contract.divisor == 16
        assert backend.providers == ["CPUExecutionProvider"]
        batch = np.full((2, 32, 48, 3), 200, np.uint8)
        batch[1, :, :, 0] = 10
        out = backend.infer(batch)
        assert out.dtype == np.uint8 and out.shape == (2, 1, 32, 48)
        assert (out[0] == 0).all() and (out[1] == 255).all()
        info = backend.describe()
        assert info["kind"] == "onnxruntime" and len(info["sha256"]) == 64


def test_input_checks(tmp_path):
    backend = load_backend(make_colour_model(tmp_path / "m.onnx", divisor=16), providers="cpu")
    with pytest.raises(InvalidArgumentError, match="multiples"):
        backend.infer(np.zeros((1, 30, 32, 3), np.uint8))
    with pytest.raises(InvalidArgumentError, match="uint8"):
        backend.infer(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(InvalidArgumentError):
        backend.infer(np.zeros((32, 32, 3), np.uint8))


def test_model_without_contract_uses_paper_values_with_a_warning(tmp_path, caplog):
    path = make_colour_model(tmp_path / "bare.onnx", contract=False)
    with caplog.at_level("WARNING"):
        backend = load_backend(path, providers="cpu")
    assert "no 'tseg' model contract" in caplog.text
    assert backend.contract.tile_size == 7680 and backend.contract.low_threshold == 85


def test_wrong_io_is_refused(tmp_path):
    path = make_colour_model(tmp_path / "float.onnx", input_dtype=TensorProto.FLOAT)
    with pytest.raises(ContractError, match="uint8 NHWC"):
        load_backend(path, providers="cpu")


def test_contract_naming_another_input_is_refused(tmp_path):
    path = make_colour_model(tmp_path / "m.onnx")
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    data = json.loads(props[METADATA_KEY])
    data["input_name"] = "pixels"
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(data)})
    onnx.save(model, path)
    with pytest.raises(ContractError, match="pixels"):
        load_backend(path, providers="cpu")


def test_bad_files(tmp_path):
    with pytest.raises(ModelNotFoundError):
        load_backend(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf" * 10)
    with pytest.raises(ModelError) as err:
        load_backend(junk, providers="cpu")
    assert "junk.onnx" in str(err.value)
    with pytest.raises(ModelError, match="unknown model file type"):
        load_backend(junk.rename(tmp_path / "model.pt"))


def test_cuda_provider_is_refused_clearly_without_a_gpu(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here; the refusal path needs plain onnxruntime")
    path = make_colour_model(tmp_path / "m.onnx")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        load_backend(path, providers="cuda")
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        load_backend(path, providers="tensorrt")
    # auto falls back to the CPU, and says so in describe().
    assert load_backend(path, providers="auto").describe()["providers"] == ["CPUExecutionProvider"]


def _graph(tmp_path, name, nodes, inputs, outputs, opsets):
    path = tmp_path / name
    graph = onnx.helper.make_graph(nodes, "g", inputs, outputs)
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets]), path)
    return path


def test_onnx_runtime_load_errors_keep_their_own_reason(tmp_path):
    """A valid graph that ONNX Runtime refuses (an unregistered custom op, a type mismatch) is not
    "corrupt or not ONNX": the user sees ONNX Runtime's reason. Only an unparsable file is."""
    vi = onnx.helper.make_tensor_value_info
    image = vi("image", TensorProto.UINT8, ["N", "H", "W", 3])
    mask = vi("mask", TensorProto.UINT8, ["N", 1, "H", "W"])
    custom = _graph(tmp_path, "custom.onnx", [onnx.helper.make_node("Foo", ["image"], ["mask"], domain="com.example")],
                    [image], [mask], [("", 17), ("com.example", 1)])
    with pytest.raises(ModelError) as err:
        load_backend(custom, providers="cpu")
    text = str(err.value)
    assert "custom.onnx" in text and "com.example:Foo" in text and "not a registered" in text
    assert "corrupt or not ONNX" not in text

    a, b = vi("a", TensorProto.FLOAT, [1]), vi("b", TensorProto.INT64, [1])
    typed = _graph(tmp_path, "typed.onnx", [onnx.helper.make_node("Add", ["a", "b"], ["c"])],
                   [a, b], [vi("c", TensorProto.FLOAT, [1])], [("", 17)])
    with pytest.raises(ModelError) as err:
        load_backend(typed, providers="cpu")
    assert "Type Error" in str(err.value) and "corrupt or not ONNX" not in str(err.value)
    assert "[ONNXRuntimeError]" not in str(err.value)  # the library's prefix is not the user's business

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf" * 10)
    with pytest.raises(ModelError, match="corrupt or not ONNX"):
        load_backend(junk, providers="cpu")
