"""TensorRT ONNX-parser conformance: the rules, on hand-made graphs that break exactly one of them,
and on every graph the project ships (the exported ones are checked in tests/export)."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fake_tensorrt import fake_builder_trt
from helpers import make_colour_model
from tseg.engines.build import BuildSettings, build_engine
from tseg.engines.conformance import MAX_OPSET, ConformanceError, check_graph, check_onnx_file
from tseg.runtime.execution.contract import METADATA_KEY, ModelContract
from tseg.runtime.models import default_model_path


def graph(nodes, inputs=None, outputs=None, initializers=(), opset=18, value_info=()):
    x = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])
    y = helper.make_tensor_value_info("tumour_probability", TensorProto.UINT8, ["N", 1, "H", "W"])
    g = helper.make_graph(nodes, "g", inputs or [x], outputs or [y], list(initializers), value_info=list(value_info))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    helper.set_model_props(model, {METADATA_KEY: ModelContract(name="t", tile_size=256, min_overlap=32).to_json()})
    return model


def good_nodes(first="Cast"):
    """uint8 NHWC -> Cast -> Transpose -> ... -> Cast -> uint8 N1HW (the conforming shape)."""
    return [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
        helper.make_node("ReduceMean", ["xt", "axes"], ["m"], keepdims=1),
        helper.make_node("Cast", ["m"], ["tumour_probability"], to=TensorProto.UINT8),
    ]


AXES = helper.make_tensor("axes", TensorProto.INT64, [1], [1])


def rules(model):
    return sorted({v.rule for v in check_graph(model)})


def test_a_conforming_graph_passes():
    assert check_graph(graph(good_nodes(), initializers=[AXES])) == []


def test_uint8_rules():
    # A Transpose straight off the uint8 input (what export used to write): rejected.
    nodes = [helper.make_node("Transpose", ["image"], ["t8"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["t8"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
             helper.make_node("Cast", ["m"], ["tumour_probability"], to=TensorProto.UINT8)]
    found = check_graph(graph(nodes, initializers=[AXES]))
    assert {v.rule for v in found} == {"uint8"}
    assert any("Transpose" in v.where and "reads the uint8 graph input" in v.detail for v in found)
    assert any("produces the uint8 tensor 't8'" in v.detail for v in found)
    # Shape reading the uint8 input (the dynamo exporter's sym_size): rejected too.
    nodes = good_nodes() + [helper.make_node("Shape", ["image"], ["s"])]
    assert "uint8" in rules(graph(nodes, initializers=[AXES]))
    # The uint8 output must come from a Cast, not from a data-movement op on uint8.
    nodes = [helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x", "axes3"], ["m"], keepdims=1),
             helper.make_node("Cast", ["m"], ["m8"], to=TensorProto.UINT8),
             helper.make_node("Transpose", ["m8"], ["tumour_probability"], perm=[0, 3, 1, 2])]
    found = check_graph(graph(nodes, initializers=[helper.make_tensor("axes3", TensorProto.INT64, [1], [3])]))
    assert any(v.rule == "uint8" and "'m8'" in v.detail for v in found)
    # A uint8 constant.
    k = helper.make_tensor("k", TensorProto.UINT8, [1], [3])
    assert "uint8" in rules(graph(good_nodes(), initializers=[AXES, k]))


def test_float64_unsupported_ops_opset_domains_and_attributes():
    nodes = good_nodes()
    nodes.insert(2, helper.make_node("Cast", ["xt"], ["xd"], to=TensorProto.DOUBLE))
    assert "float64" in rules(graph(nodes, initializers=[AXES]))
    nodes = good_nodes()
    nodes[2] = helper.make_node("Unique", ["xt"], ["m"])
    found = check_graph(graph(nodes))
    assert any(v.rule == "operator" and "Unique" in v.detail for v in found)
    nodes = good_nodes()
    nodes[2] = helper.make_node("Attention", ["xt", "xt", "xt"], ["m"])  # onnx-tensorrt: 10.14+, above the floor
    assert "operator" in rules(graph(nodes, opset=23))
    assert "opset" in rules(graph(good_nodes(), initializers=[AXES], opset=MAX_OPSET + 1))
    nodes = good_nodes()
    nodes[2] = helper.make_node("Custom", ["xt"], ["m"], domain="com.example")
    assert "operator" in rules(graph(nodes))
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    nodes = good_nodes()
    nodes[2] = helper.make_node("Resize", ["xt", "", "scales"], ["m"], mode="cubic")
    assert "attribute" in rules(graph(nodes, initializers=[scales]))
    nodes[2] = helper.make_node("Resize", ["xt", "", "scales"], ["m"], mode="linear", antialias=1)
    assert "attribute" in rules(graph(nodes, initializers=[scales], opset=18))


def test_dynamic_dimensions_only_where_the_profile_varies():
    x = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 3, "H", "W"])  # channels first
    assert "dynamic" in rules(graph(good_nodes(), inputs=[x], initializers=[AXES]))
    x = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", "C"])  # symbolic channels
    assert "dynamic" in rules(graph(good_nodes(), inputs=[x], initializers=[AXES]))
    extra = helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1])
    x = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])
    assert "inputs" in rules(graph(good_nodes(), inputs=[x, extra], initializers=[AXES]))


def test_the_test_helper_graphs_conform(tmp_path):
    for graded in (False, True):
        assert check_onnx_file(make_colour_model(tmp_path / f"m{graded}.onnx", graded=graded)) == []


def test_the_shipped_model_conforms():
    """runtime/models/default.onnx, re-exported after the uint8 fix (issue 11)."""
    path = default_model_path()
    found = check_onnx_file(path)
    assert found == [], [str(v) for v in found]
    model = onnx.load(str(path), load_external_data=False)
    consumers = [n.op_type for n in model.graph.node if "image" in n.input]
    assert set(consumers) == {"Cast"}


def test_build_engine_refuses_a_non_conforming_graph_before_touching_tensorrt(tmp_path, monkeypatch):
    trt, calls = fake_builder_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    model = graph([helper.make_node("Transpose", ["image"], ["t8"], perm=[0, 3, 1, 2]),
                   helper.make_node("Cast", ["t8"], ["x"], to=TensorProto.FLOAT),
                   helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
                   helper.make_node("Cast", ["m"], ["tumour_probability"], to=TensorProto.UINT8)],
                  initializers=[AXES])
    onnx.save(model, tmp_path / "old.onnx")
    with pytest.raises(ConformanceError, match=r"Transpose .*uint8") as info:
        build_engine(tmp_path / "old.onnx", tmp_path / "old.plan", BuildSettings(min_tile=64, opt_tile=256,
                                                                                 max_tile=256))
    assert "old.onnx" in str(info.value) and "tseg-rt export" in str(info.value)
    assert calls == [] and not (tmp_path / "old.plan").exists()


@pytest.mark.slow
def test_shape_rewiring_keeps_the_computation(tmp_path):
    """export's fix for the dynamo exporter's Shape(image): same outputs in ONNX Runtime."""
    import onnxruntime as ort

    from tseg.export.onnx_export import read_shapes_after_cast

    nodes = [helper.make_node("Shape", ["image"], ["s"], start=1, end=3),
             helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
             helper.make_node("ReduceMean", ["xt", "axes"], ["m"], keepdims=1),
             helper.make_node("Resize", ["m", "", "", "sizes"], ["r"], mode="nearest"),
             helper.make_node("Cast", ["r"], ["tumour_probability"], to=TensorProto.UINT8)]
    sizes = [helper.make_node("Constant", [], ["nc"], value=helper.make_tensor("nc", TensorProto.INT64, [2], [1, 1])),
             helper.make_node("Concat", ["nc", "s"], ["sizes"], axis=0)]
    model = graph(nodes[:1] + sizes + nodes[1:], initializers=[AXES])
    onnx.checker.check_model(model)
    before = check_graph(model)
    assert any("Shape" in v.where for v in before)
    x = np.random.default_rng(0).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]  # noqa: E731
    expected = run(model)
    assert read_shapes_after_cast(model) == 1
    onnx.checker.check_model(model)
    assert check_graph(model) == []
    np.testing.assert_array_equal(run(model), expected)


@pytest.mark.slow
def test_info_says_whether_tensorrt_will_parse_a_model(tmp_path):
    import json
    import subprocess

    good = make_colour_model(tmp_path / "good.onnx")
    bad = graph([helper.make_node("Transpose", ["image"], ["t8"], perm=[0, 3, 1, 2]),
                 helper.make_node("Cast", ["t8"], ["x"], to=TensorProto.FLOAT),
                 helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
                 helper.make_node("Cast", ["m"], ["tumour_probability"], to=TensorProto.UINT8)], initializers=[AXES])
    onnx.save(bad, tmp_path / "bad.onnx")
    for path, conforms in ((good, True), (tmp_path / "bad.onnx", False)):
        r = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "info", str(path), "--json"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        parser = json.loads(r.stdout)["tensorrt_parser"]
        assert parser["conforms"] is conforms and parser["floor"] == "10.9"
        assert bool(parser["violations"]) is not conforms
