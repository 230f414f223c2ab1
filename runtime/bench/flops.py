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

Shapes come from ONNX's own shape inference at the concrete input shape (with data
propagation, which follows the ``Shape`` arithmetic of dynamic-size graphs; operators it has no
rule for, such as GroupNormalization, keep their input's shape). ONNX Runtime's symbolic shape
inference is not used: it needs ``sympy``, which the runtime does not install, and gave up on a
Conv of the bundled model with ONNX Runtime 1.30. The weights are not loaded
(``load_external_data=False``): counting the paper's 73-million-parameter graph needs its shapes
only. :func:`count_flops_scaled` counts a fully convolutional graph at small sizes and scales by
pixels, equal to the exact count (tested) where shape inference works at both.

For the paper's network (eca_nfnet_l3 + DeepLabV3+) this gives 42.01 TFLOP per 7680 x 7680 tile,
the "about 42 TFLOP" of docs/performance.md; the tests compare the graph count with
``torch.utils.flop_counter.FlopCounterMode`` on the same PyTorch module.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from fractions import Fraction
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


#: Operators whose output has their first input's shape. ONNX's shape inference has no rule for
#: some of them (GroupNormalization, a function since opset 18): :func:`_infer` carries the shape.
SAME_SHAPE = frozenset(("GroupNormalization", "InstanceNormalization", "LayerNormalization",
                        "BatchNormalization", "Softmax", "LogSoftmax", "Dropout", "Identity",
                        *(op for op in ELEMENTWISE if op not in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min",
                                                                 "Sum", "Mean", "Where", "Equal", "Less", "Greater",
                                                                 "LessOrEqual", "GreaterOrEqual", "And", "Or",
                                                                 "PRelu"))))


def _elem_types(model: Any) -> dict[str, int]:
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]}
    types.update({init.name: init.data_type for init in model.graph.initializer})
    return types


def _int_values(model: Any, shapes: dict[str, list[Any]]) -> dict[str, Any]:
    """The values of the small integer tensors that describe sizes (``Shape`` and its arithmetic),
    folded with NumPy: what ONNX's inference does not expose, e.g. a ``Range`` over the batch."""
    import numpy as np
    from onnx import numpy_helper

    values: dict[str, Any] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
                              if i.data_type in (6, 7) and math.prod(i.dims) <= 64
                              and (i.raw_data or i.int64_data or i.int32_data or not i.dims)}
    binary = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.floor_divide}
    for node in model.graph.node:
        op, ins = node.op_type, [values.get(i) for i in node.input if i]
        try:
            if op == "Constant":
                t = _attr(node, "value", None)
                out = numpy_helper.to_array(t) if t is not None and t.data_type in (6, 7) else None
            elif op == "Shape" and _known(shapes.get(node.input[0])):
                out = np.array(shapes[node.input[0]][_attr(node, "start", 0):_attr(node, "end", None)], np.int64)
            elif any(v is None for v in ins):
                continue
            elif op in binary:
                out = binary[op](ins[0], ins[1])
            elif op in ("Squeeze", "Unsqueeze"):
                axes = tuple(int(a) for a in (ins[1] if len(ins) > 1 else _attr(node, "axes", [])))
                out = (np.squeeze(ins[0], axes or None) if op == "Squeeze"
                       else np.expand_dims(ins[0], axes))
            elif op == "Gather":
                out = np.take(ins[0], ins[1], axis=_attr(node, "axis", 0))
            elif op == "Concat":
                out = np.concatenate(ins, axis=_attr(node, "axis", 0))
            elif op in ("Cast", "Identity"):
                out = ins[0]
            elif op == "Range":
                out = np.arange(ins[0], ins[1], ins[2])
            elif op == "Reshape":
                out = ins[0].reshape([d if d else s for d, s in zip(ins[1], ins[0].shape)] if 0 in ins[1]
                                     else ins[1])
            else:
                continue
        except (ValueError, IndexError, TypeError):  # not a size computation this folding follows
            continue
        if out is not None and np.issubdtype(np.asarray(out).dtype, np.integer):
            values[node.output[0]] = np.asarray(out)
    return values


def _infer(model: Any) -> Any:
    """ONNX's own shape inference (with data propagation, so ``Shape`` arithmetic before a
    ``Resize`` is followed) at the graph's concrete input size; shapes the exporter recorded
    symbolically are dropped first, and operators ONNX has no rule for get their input's shape."""
    import onnx

    del model.graph.value_info[:]
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    for _ in range(len(model.graph.node) + 1):
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        shapes, types = _shapes(inferred), _elem_types(inferred)
        carried = [onnx.helper.make_tensor_value_info(node.output[0], types.get(node.input[0], 1),
                                                      shapes[node.input[0]])
                   for node in inferred.graph.node
                   if node.op_type in SAME_SHAPE and node.input and _known(shapes.get(node.input[0]))
                   and not _known(shapes.get(node.output[0]))]
        carried += [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, list(value.shape))
                    for name, value in _int_values(inferred, shapes).items()
                    if name in types and not _known(shapes.get(name)) and value.ndim and 0 not in value.shape]
        if not carried:
            return inferred
        model.graph.value_info.extend(carried)
    return inferred


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


def _load(source: str | Path | Any) -> Any:
    """An ``onnx.ModelProto``, loaded without its weights, or a copy of the one given."""
    import onnx

    if isinstance(source, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(source)
        return copy
    try:
        return onnx.load(str(source), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(source, f"not a readable ONNX model ({exc})") from None


def count_flops(path: str | Path, height: int, width: int, batch: int = 1) -> FlopCount:
    """FLOP of the model file at ``path`` on a uint8 (batch, height, width, 3) input (tseg-rt's
    graph layout), counted from the graph (weights are not loaded). Where shape inference cannot
    follow the graph at that size, a fully convolutional graph is counted at small sizes and
    scaled (:func:`count_flops_scaled`)."""
    try:
        return count_model_flops(_load(path), (batch, height, width, 3))
    except ModelError as exact_failed:
        try:
            scaled = count_flops_scaled(path, height, width, batch)
        except ModelError:
            raise exact_failed from None
        log.info("%s: counted at small tiles and scaled to %dx%d px (%s)", path, height, width, exact_failed.message)
        return scaled


#: Tile sides at which :func:`count_flops_scaled` counts (multiples of any network stride up to 256).
SCALE_SIDES = (256, 512, 768)


def count_flops_scaled(source: str | Path | Any, height: int, width: int, batch: int = 1) -> FlopCount:
    """FLOP of a fully convolutional graph at ``height`` x ``width``, from exact counts at three
    small squares (:data:`SCALE_SIDES`): every count of such a graph is affine in the pixels (the
    pooled branch of an ASPP is a constant part), so two sizes fix the line and the third checks
    it. A graph whose counts are not affine (fixed sizes, global reshapes) is refused."""
    if height % SCALE_SIDES[0] or width % SCALE_SIDES[0]:
        raise ModelError(None, f"{height}x{width} px is not a multiple of {SCALE_SIDES[0]}: not scaled")
    counts = [count_model_flops(_load(source), (batch, s, s, 3)) for s in SCALE_SIDES]
    pixels = [s * s for s in SCALE_SIDES]
    target = height * width

    def extrapolate(values: list[int], what: str) -> int:
        slope = Fraction(values[1] - values[0], pixels[1] - pixels[0])
        base = values[0] - slope * pixels[0]
        scaled = base + slope * target
        if base + slope * pixels[2] != values[2] or scaled.denominator != 1:
            raise ModelError(None, f"the graph's {what} are not affine in the pixels: not fully convolutional, "
                                   "so a count at small tiles cannot be scaled")
        return int(scaled)

    macs = extrapolate([c.macs for c in counts], "multiply-adds")
    other = extrapolate([c.other_flop for c in counts], "other operations")
    ops = sorted(set().union(*(c.by_op for c in counts)))
    by_op = {op: extrapolate([c.by_op.get(op, 0) for c in counts], f"{op} operations") for op in ops}
    uncounted = tuple(sorted(set().union(*(c.uncounted_ops for c in counts))))
    return FlopCount((batch, height, width, 3), macs, other, by_op, uncounted)
