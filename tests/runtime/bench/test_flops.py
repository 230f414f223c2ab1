"""FLOP counted from ONNX graphs, against counts made independently (by hand, and by PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tseg.runtime.bench.flops import count_flops, count_model_flops
from tseg.runtime.errors import ModelError
from tseg.runtime.models import default_model_path


def _weight(name, *shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def small_graph():
    """uint8 NHWC (1, 32, 48, 3) -> Cast -> Transpose -> grouped strided dilated Conv -> ConvTranspose
    -> Relu -> Reshape -> batched MatMul -> Gemm (transB)."""
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["x"], perm=[0, 3, 1, 2]),
        # 3 -> 6 channels, groups 3, 3x3, stride 2, dilation 2, pads 2: out (1, 6, 16, 24)
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], group=3, kernel_shape=[3, 3], strides=[2, 2],
                         dilations=[2, 2], pads=[2, 2, 2, 2]),
        # ConvTranspose 6 -> 4, 2x2, stride 2: out (1, 4, 32, 48)
        helper.make_node("ConvTranspose", ["c1", "w2"], ["c2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["m"]),  # (4, 32, 48)
        helper.make_node("MatMul", ["m", "w3"], ["mm"]),  # (4, 32, 48) x (48, 10) -> (4, 32, 10)
        helper.make_node("Reshape", ["mm", "shape2"], ["g"]),  # (128, 10)
        helper.make_node("Gemm", ["g", "w4", "b4"], ["y"], transB=1),  # (128, 10) x (7, 10)^T -> (128, 7)
    ]
    inits = [_weight("w1", 6, 1, 3, 3), _weight("b1", 6), _weight("w2", 6, 4, 2, 2), _weight("w3", 48, 10),
             _weight("w4", 7, 10), _weight("b4", 7),
             numpy_helper.from_array(np.array([4, 32, 48], np.int64), "shape"),
             numpy_helper.from_array(np.array([128, 10], np.int64), "shape2")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["n", "h", "w", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_small_graph_counts_what_its_layer_shapes_say():
    c = count_model_flops(small_graph(), (1, 32, 48, 3))
    conv = 6 * 16 * 24 * (3 // 3) * 3 * 3  # output elements x input channels per group x kernel area
    deconv = 6 * 32 // 2 * 48 // 2 * 4 * 2 * 2  # input elements x output channels x kernel area
    matmul = 4 * 32 * 10 * 48
    gemm = 128 * 7 * 10
    assert c.macs == conv + deconv + matmul + gemm
    assert c.flop == 2 * c.macs  # the convention: one multiply-add is two FLOP
    assert c.by_op == {"Conv": 2 * conv, "ConvTranspose": 2 * deconv, "MatMul": 2 * matmul, "Gemm": 2 * gemm,
                       "Relu": 4 * 32 * 48}
    assert c.other_flop == 4 * 32 * 48 and c.uncounted_ops == ()
    assert c.as_dict()["convention"] == "1 multiply-add = 2 FLOP" and c.pixels == 32 * 48


@pytest.mark.slow
def test_the_bundled_model_equals_pytorchs_count_of_the_same_network():
    """The graph count of the shipped ONNX model against torch.utils.flop_counter on the PyTorch
    module it was exported from (training/configs/demo.toml), at two tile sizes."""
    pytest.importorskip("torch")
    from tseg.runtime.bench.torch_network import torch_flops

    for side in (256, 512):
        assert count_flops(default_model_path(), side, side).flop == torch_flops("demo", side)


@pytest.mark.slow
def test_the_papers_network_is_about_42_tflop_per_7680_tile():
    """docs/performance.md: about 42 TFLOP for one forward pass over a 7680 x 7680 tile (counted on the meta
    device: no weights, no arithmetic). The graph of the exported paper network is compared with
    this count in tests/export (slow: the export itself)."""
    pytest.importorskip("torch")
    from tseg.runtime.bench.torch_network import torch_flops

    assert torch_flops("paper", 7680) / 1e12 == pytest.approx(42.0, abs=0.05)


def test_bad_graphs_are_named(tmp_path):
    with pytest.raises(ModelError, match="rank 4, not 3"):
        count_model_flops(small_graph(), (32, 48, 3))
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="broken.onnx: not a readable ONNX model"):
        count_flops(bad, 64, 64)
    fixed = small_graph()
    fixed.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 32
    with pytest.raises(ModelError, match="fixed at 32 where 64 was asked"):
        count_model_flops(fixed, (1, 64, 48, 3))


def test_an_operator_of_unknown_cost_is_listed_not_guessed():
    model = small_graph()
    model.graph.node.append(helper.make_node("Det", ["y"], ["d"]))
    c = count_model_flops(model, (1, 32, 48, 3))
    assert c.uncounted_ops == ("Det",) and c.macs == count_model_flops(small_graph(), (1, 32, 48, 3)).macs


def test_counting_leaves_no_file_of_onnxruntimes_failed_inference_behind(tmp_path, monkeypatch):
    """ONNX Runtime's symbolic shape inference saves the graph (sym_shape_infer_temp.onnx) and its
    weights (<uuid>.data) into the current directory before it raises on shapes it cannot infer
    (seen with onnxruntime 1.30 on the bundled model at 7680²). The count falls back to ONNX's own
    inference and removes exactly those new files, nothing that was there before."""
    from onnxruntime.tools import symbolic_shape_infer

    def failing(model, **kwargs):
        (tmp_path / "sym_shape_infer_temp.onnx").write_bytes(b"graph")
        (tmp_path / "0b3c6a52-f008-11f1-87ca-02fc00000001.data").write_bytes(b"weights")
        raise Exception("Incomplete symbolic shape inference")

    monkeypatch.chdir(tmp_path)
    kept = tmp_path / "11111111-2222-3333-4444-555555555555.data"  # the user's, present before
    kept.write_bytes(b"mine")
    monkeypatch.setattr(symbolic_shape_infer.SymbolicShapeInference, "infer_shapes", staticmethod(failing))
    c = count_model_flops(small_graph(), (1, 32, 48, 3))
    assert c.by_op["Conv"] == 2 * 6 * 16 * 24 * 3 * 3  # ONNX's inference counted the same graph
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]


class _NoSympy:
    """An import hook that makes ``sympy`` unimportable, as with the runtime's install (pip install -e ., no dev extra)."""

    def find_spec(self, name, path=None, target=None):
        if name == "sympy" or name.startswith("sympy."):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None


@pytest.fixture
def no_sympy(monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "sympy" or m.startswith(("sympy.", "onnxruntime.tools.symbolic"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoSympy(), *sys.meta_path])
    with pytest.raises(ImportError):
        __import__("sympy")


def test_the_bundled_model_is_counted_without_sympy(no_sympy):
    """`pip install -e .` brings no sympy: the count must not need it (it said "TFLOP/s unknown")."""
    c = count_flops(default_model_path(), 7680, 7680)
    assert c.tflop == pytest.approx(0.11, abs=0.01) and c.uncounted_ops == ()


def test_a_count_scaled_from_small_tiles_equals_the_exact_count(no_sympy):
    """Fully convolutional: FLOP are affine in the pixels (the ASPP's pooled branch is a constant
    part), so counts at 256², 512² and 768² give the 7680² count exactly."""
    from tseg.runtime.bench.flops import count_flops_scaled

    exact = count_flops(default_model_path(), 7680, 7680)
    scaled = count_flops_scaled(default_model_path(), 7680, 7680)
    assert scaled.macs == exact.macs and scaled.other_flop == exact.other_flop
    assert scaled.by_op == exact.by_op


def test_a_graph_that_is_not_fully_convolutional_is_not_scaled():
    from tseg.runtime.bench.flops import count_flops_scaled

    model = small_graph()  # its Reshapes fix the sizes: only 32 x 48 works
    with pytest.raises(ModelError):
        count_flops_scaled(model, 64, 96)
