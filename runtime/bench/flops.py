"""Floating-point operations of an ONNX model at a given tile size, counted from the graph.

The count is what TFLOP/s figures divide by, so it follows the convention of the literature and
of PyTorch's ``torch.utils.flop_counter`` (and fvcore): **one multiply-add (MAC) = 2 FLOP**, and
only the operators that multiply matrices are counted in the headline figure:

* ``Conv``: output elements x (input channels / groups) x kernel area;
* ``ConvTranspose``: input elements x (output channels / groups) x kernel area;
* ``MatMul``: output elements x the shared dimension K; ``Gemm``: M x N x K.

Biases, activations, normalisations, pooling, resizing and softmax are counted separately
(``other_flop``, an estimate: 1 FLOP per output element of an element-wise operator, 2 per element
of an inference BatchNormalization, 5 per element of Group/Instance/Layer normalisation, 3 per
element of a softmax, the kernel area per output element of a pooling, 1 per input element of a
reduction, 2 per interpolation weight of a linear Resize). For the paper's network they are a few
per cent of the total and memory-bound rather than compute-bound, which is why they stay out of
TFLOP/s. Data movement (Reshape, Concat, Slice, Cast, Pad, ...) counts 0.

Shapes come from shape inference at the concrete input shape: ONNX Runtime's symbolic shape
inference (it follows the ``Shape`` arithmetic of dynamic-size graphs through ``Resize``), with
ONNX's own as the fallback. The weights are not loaded (``load_external_data=False``): counting
the paper's 73-million-parameter graph needs its shapes only.

For the paper's network (eca_nfnet_l3 + DeepLabV3+) this gives 42.01 TFLOP per 7680 x 7680 tile,
the "about 42 TFLOP" of docs/performance.md; the tests compare the graph count with
``torch.utils.flop_counter.FlopCounterMode`` on the same PyTorch module.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tseg.runtime.errors import ModelError

log = logging.getLogger(__name__)

MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")

#: FLOP per output element (estimates, see the module docstring).
ELEMENTWISE = {op: 1 for op in (
    "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Pow",
    "Reciprocal", "Neg", "Abs", "Clip", "Max", "Min", "Erf", "Gelu", "Softplus", "Elu", "Selu", "Celu", "Floor",
    "Ceil", "Round", "Sum", "Mean", "Mish", "HardSigmoid", "HardSwish", "Sign", "Where", "Equal", "Less",
    "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or")}
ELEMENTWISE.update({"HardSigmoid": 2, "HardSwish": 3, "Gelu": 8, "Mish": 4, "Softplus": 2})
PER_INPUT_ELEMENT = {"BatchNormalization": 2, "GroupNormalization": 5, "InstanceNormalization": 5,
                     "LayerNormalization": 5, "Softmax": 3, "LogSoftmax": 3, "ReduceMean": 1, "ReduceSum": 1,
                     "ReduceMax": 1, "ReduceMin": 1, "ReduceL2": 2, "GlobalAveragePool": 1, "GlobalMaxPool": 1}
POOLS = ("AveragePool", "MaxPool", "LpPool")
#: Operators that move or describe data without arithmetic.
FREE = frozenset((
    "Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Cast", "CastLike",
    "Shape", "Size", "Gather", "GatherElements", "GatherND", "Expand", "Tile", "Pad", "Identity", "Constant",
    "ConstantOfShape", "Range", "Dropout", "DepthToSpace", "SpaceToDepth", "ScatterND",
    "NonZero", "TopK", "ArgMax", "ArgMin", "QuantizeLinear", "DequantizeLinear", "If", "Loop", "Trilu"))


@dataclass(frozen=True)
class FlopCount:
    """FLOP of one forward pass over an input of ``input_shape`` (see the module docstring)."""

    input_shape: tuple[int, ...]
    macs: int
    other_flop: int
    by_op: dict[str, int] = field(default_factory=dict)  # FLOP per operator type (MAC ops: 2 x MACs)
    uncounted_ops: tuple[str, ...] = ()  # operator types with unknown cost (neither counted nor free)

    @property
    def flop(self) -> int:
        """The headline count: 2 x the multiply-adds of Conv, ConvTranspose, MatMul and Gemm."""
        return 2 * self.macs

    @property
    def tflop(self) -> float:
        return self.flop / 1e12

    @property
    def pixels(self) -> int:
        """Pixels of the input image(s): batch x height x width of the NHWC input."""
        n, h, w = self.input_shape[:3]
        return int(n) * int(h) * int(w)

    def as_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "convention": "1 multiply-add = 2 FLOP",
                "flop": self.flop, "tflop": round(self.tflop, 6), "macs": self.macs,
                "other_flop": self.other_flop,
                "other_share": round(self.other_flop / (self.flop + self.other_flop), 6) if self.flop else None,
                "flop_per_pixel": round(self.flop / self.pixels, 3) if self.pixels else None,
                "by_op": dict(sorted(self.by_op.items(), key=lambda kv: -kv[1])),
                "uncounted_ops": list(self.uncounted_ops)}


def _concrete(model: Any, shape: Sequence[int]) -> None:
    """Give the (first) graph input the concrete ``shape``."""
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if not inputs:
        raise ModelError(None, "the graph has no input")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ModelError(None, f"the graph input '{inputs[0].name}' has rank {len(dims)}, not {len(shape)}")
    for d, value in zip(dims, shape):
        if d.HasField("dim_value") and d.dim_value not in (0, value):
            raise ModelError(None, f"the graph input '{inputs[0].name}' is fixed at {d.dim_value} where {value} "
                                 "was asked; count it at its own size")
        d.ClearField("dim_param")
        d.dim_value = int(value)


#: What ONNX Runtime's symbolic shape inference saves into the *current directory* when it cannot
#: infer every shape (before it raises): the graph, and its weights as external data under a random
#: UUID name. Files of these names that appear during the call are removed, so that counting never
#: leaves files behind.
SYMBOLIC_LEFTOVER = re.compile(r"sym_shape_infer_temp\.onnx|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.data")


def _leftover_names() -> set[str]:
    try:
        return {name for name in os.listdir(".") if SYMBOLIC_LEFTOVER.fullmatch(name)}
    except OSError:
        return set()


def _infer(model: Any) -> Any:
    before = _leftover_names()
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as exc:  # noqa: BLE001 - an op it does not know: ONNX's inference may still do
        log.debug("symbolic shape inference failed (%s); using onnx.shape_inference", exc)
    finally:
        for name in _leftover_names() - before:
            Path(name).unlink(missing_ok=True)
    import onnx

    return onnx.shape_inference.infer_shapes(model, data_prop=True)


def _shapes(model: Any) -> dict[str, list[Any]]:
    shapes: dict[str, list[Any]] = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = list(a.t.dims)
    return shapes


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _numel(shape: list[Any]) -> int:
    return int(math.prod(shape))


def _known(shape: list[Any] | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def _node_macs(node: Any, shape: Any) -> int:
    op = node.op_type
    if op == "Conv":
        return _numel(shape(node.output[0])) * _numel(shape(node.input[1])[1:])
    if op == "ConvTranspose":
        return _numel(shape(node.input[0])) * _numel(shape(node.input[1])[1:])
    if op == "MatMul":
        return _numel(shape(node.output[0])) * int(shape(node.input[0])[-1])
    if op == "Gemm":
        a = shape(node.input[0])
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return _numel(shape(node.output[0])) * int(k)
    raise AssertionError(op)


def _node_other(node: Any, shape: Any) -> int | None:
    """Estimated FLOP of a non-MAC node, 0 for data movement, None when the cost is unknown."""
    op = node.op_type
    if op in FREE:
        return 0
    if op in ELEMENTWISE:
        return ELEMENTWISE[op] * _numel(shape(node.output[0]))
    if op in PER_INPUT_ELEMENT:
        return PER_INPUT_ELEMENT[op] * _numel(shape(node.input[0]))
    if op in POOLS:
        return _numel(shape(node.output[0])) * _numel(_attr(node, "kernel_shape", [1]))
    if op == "Resize":
        mode = _attr(node, "mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode == "nearest":
            return 0
        out = shape(node.output[0])
        return 2 * (2 ** max(len(out) - 2, 0)) * _numel(out)
    return None


def count_model_flops(model: Any, input_shape: Sequence[int]) -> FlopCount:
    """Count an in-memory ``onnx.ModelProto`` (modified: its input is made concrete)."""
    _concrete(model, input_shape)
    inferred = _infer(model)
    shapes = _shapes(inferred)

    def shape(name: str) -> list[int]:
        s = shapes.get(name)
        if not _known(s):
            raise KeyError(name)
        return s  # type: ignore[return-value]

    macs, other = 0, 0
    by_op: dict[str, int] = {}
    uncounted: set[str] = set()
    for node in inferred.graph.node:
        try:
            if node.op_type in MAC_OPS:
                m = _node_macs(node, shape)
                macs += m
                by_op[node.op_type] = by_op.get(node.op_type, 0) + 2 * m
                continue
            f = _node_other(node, shape)
        except KeyError as missing:
            if node.op_type in MAC_OPS:
                raise ModelError(None, f"the shape of '{missing.args[0]}' ({node.op_type} node '{node.name}') could "
                                     f"not be inferred at input {tuple(input_shape)}") from None
            f = None  # an estimate only: leave it out, but say so
        if f is None:
            if node.op_type not in FREE:
                uncounted.add(node.op_type)
            continue
        if f:
            other += f
            by_op[node.op_type] = by_op.get(node.op_type, 0) + f
    return FlopCount(tuple(int(v) for v in input_shape), macs, other, by_op, tuple(sorted(uncounted)))


def count_flops(path: str | Path, height: int, width: int, batch: int = 1) -> FlopCount:
    """FLOP of the model file at ``path`` on a uint8 (batch, height, width, 3) input (tseg-rt's
    graph layout), counted from the graph (weights are not loaded)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(path, f"not a readable ONNX model ({exc})") from None
    return count_model_flops(model, (batch, height, width, 3))
