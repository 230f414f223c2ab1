"""Will TensorRT's ONNX parser take this graph? Everything that can be known without TensorRT.

A build takes minutes on a GPU machine; a graph the parser rejects should be refused where it is
made (``tseg-rt export``) and before a build starts (``tseg-rt build-engine``), with the node and
the rule. The rules are those of the oldest TensorRT the project supports,
:data:`TENSORRT_FLOOR` (10.9: the first release that parses opset-21 ``GroupNormalization``,
onnx-tensorrt changelog "TensorRT 10.9 GA: Added support for opset 21 GroupNorm"):

* **uint8** (onnx-tensorrt ``ModelImporter.cpp``: "TensorRT does not support UINT8 types for
  intermediate tensors"; operators.md: "UINT8 is only supported as network input or output tensor
  types"; NVIDIA/TensorRT#3985: "All UINT8 inputs must directly feed into a cast layer ... even just
  data-movement ops like reshape / transpose"; #4278): every consumer of a uint8 graph input is a
  ``Cast``; a uint8 graph output is produced by a ``Cast``; no other tensor (intermediate,
  initializer, constant) is uint8.
* **operators**: only operators onnx-tensorrt's ``docs/operators.md`` marks supported, minus
  those its changelog adds after 10.9 (``Attention`` in 10.14; ``RotaryEmbedding``,
  ``RMSNormalization``, ``TensorScatter`` in 10.15), each with the element types that table lists
  for it (checked on the node's first input, its data tensor), in the default ONNX domain only
  (other domains need plugins); ``Pow`` with an integer base only from 10.12.
* **opset** of the default domain in [9, 21]: 9 is the parser's oldest, 21 the newest this floor
  is known to parse (its opset-21 ``GroupNormalization``).
* **no float64** anywhere: TensorRT casts DOUBLE down to FLOAT with clamping (operators.md), which
  silently changes results.
* **dynamic dimensions only where the engine profile varies**: the image input is (N, H, W, 3)
  with only N, H and W allowed to be symbolic; the output is (N, 1, H, W); no other graph inputs.
* **attributes** the table restricts for operators our exporters emit: ``Resize`` modes
  (nearest/linear; half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric,
  align_corners; no antialiasing), pooling 2-D or 3-D with unit dilations.

What this cannot know (a real TensorRT build still decides): layer-specific limits such as the
2^31-element tensor limit at large batch (the profile keeps batch 1), tactic availability, and
memory. Shape inference runs first so that every tensor's type is known.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from tseg.runtime.errors import ModelError

TENSORRT_FLOOR = "10.9"
MIN_OPSET, MAX_OPSET = 9, 21

# Element type groups of operators.md's "Supported Types" column.
_F = ("FLOAT", "FLOAT16", "BFLOAT16")
_I = ("INT32", "INT64")
_B = ("BOOL",)
_U = ("UINT8",)


def _types(*groups: tuple[str, ...]) -> frozenset[str]:
    return frozenset(t for g in groups for t in g)


_FLOAT = _types(_F)
_FI = _types(_F, _I)
_FIB = _types(_F, _I, _B)
_FP32_16 = frozenset({"FLOAT", "FLOAT16"})
_QUANT = frozenset({"INT8", "FLOAT8E4M3FN", "FLOAT4E2M1", "INT4"})

#: Operator -> element types of its data input that TensorRT 10.9's parser supports.
SUPPORTED_OPS: dict[str, frozenset[str]] = {
    **{op: _FLOAT for op in (
        "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "BatchNormalization", "Ceil", "Celu",
        "Clip", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "Dropout", "Einsum", "Elu", "Erf", "Exp", "Floor",
        "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "GroupNormalization", "GRU", "HardSigmoid",
        "HardSwish", "Hardmax", "ImageScaler", "InstanceNormalization", "IsInf", "LayerNormalization", "LeakyRelu",
        "Log", "LogSoftmax", "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "MaxPool",
        "MeanVarianceNormalization", "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomNormal",
        "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Reciprocal", "Resize", "RNN", "Round",
        "ScaledTanh", "Scan", "Selu", "Sigmoid", "Sin", "Sinh", "Softmax", "Softplus", "Softsign", "Sqrt", "Tan",
        "Tanh", "ThresholdedRelu", "Upsample")},
    **{op: _FI for op in (
        "Abs", "Add", "ArgMax", "ArgMin", "DepthToSpace", "Div", "Equal", "Greater", "GreaterOrEqual", "IsNaN",
        "Less", "LessOrEqual", "Max", "Mean", "Min", "Mod", "Mul", "Neg", "Pad", "Range", "ReduceL1", "ReduceL2",
        "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
        "ReduceSumSquare", "Relu", "Scatter", "ScatterElements", "ScatterND", "Shrink", "Sign", "SpaceToDepth", "Sub",
        "Sum", "TopK", "Gelu")},
    **{op: _FIB for op in (
        "Concat", "Constant", "ConstantOfShape", "Expand", "EyeLike", "Flatten", "Gather", "GatherElements",
        "GatherND", "Identity", "If", "Loop", "OneHot", "Reshape", "ReverseSequence", "Shape", "Size", "Slice",
        "Split", "Squeeze", "Tile", "Transpose", "Trilu", "Unsqueeze", "Where")},
    **{op: _B for op in ("And", "Not", "Or", "Xor")},
    **{op: _FP32_16 for op in ("BlackmanWindow", "HammingWindow", "HannWindow", "DeformConv", "GridSample", "Mish",
                               "NonMaxSuppression", "NonZero", "RoiAlign")},
    "Cast": _types(_F, _I, _U, _B),
    "CastLike": _types(_F, _I, _U, _B),
    "DequantizeLinear": _QUANT,
    "STFT": frozenset({"FLOAT"}),
}

_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_COORDINATES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_POOLS = {"AveragePool", "MaxPool", "LpPool"}


@dataclass(frozen=True)
class Violation:
    """One reason the parser would reject the graph: the rule, the node (or tensor) and details."""

    rule: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.detail}"


class ConformanceError(ModelError):
    """The ONNX graph breaks a rule of TensorRT's ONNX parser."""

    def __init__(self, path: str | os.PathLike[str] | None, violations: list[Violation]) -> None:
        self.violations = violations
        shown = "; ".join(str(v) for v in violations[:5])
        more = f" (+{len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(path, f"TensorRT {TENSORRT_FLOOR}+ cannot parse this graph: {shown}{more}. "
                               "Re-export it with `tseg-rt export` from this version of tseg-rt")


def _type_name(elem_type: int) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(elem_type)


def _dims(value_info: Any) -> list[int | str | None]:
    out: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _node_name(node: Any) -> str:
    return f"{node.op_type} '{node.name or (node.output[0] if node.output else '?')}'"


def _subgraphs(node: Any) -> Iterator[Any]:
    import onnx

    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _tensor_types(graph: Any, outer: dict[str, int]) -> dict[str, int]:
    types = dict(outer)
    for collection in (graph.input, graph.output, graph.value_info):
        for v in collection:
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
                types[v.name] = v.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _attribute(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _check_nodes(graph: Any, types: dict[str, int], top_inputs: set[str], top_outputs: set[str],
                 violations: list[Violation]) -> None:
    for node in graph.node:
        where = _node_name(node)
        if node.domain not in ("", "ai.onnx"):
            violations.append(Violation("operator", where, f"domain '{node.domain}' needs a TensorRT plugin"))
            continue
        supported = SUPPORTED_OPS.get(node.op_type)
        if supported is None:
            violations.append(Violation("operator", where, f"{node.op_type} is not supported by TensorRT "
                                                           f"{TENSORRT_FLOOR}'s ONNX parser"))
        elif node.input and node.input[0] and node.input[0] in types:
            t = _type_name(types[node.input[0]])
            allowed = supported - {"INT32", "INT64"} if node.op_type == "Pow" else supported  # int base: 10.12+
            if t not in allowed and t != "UINT8":  # uint8 has its own rule below
                violations.append(Violation("type", where, f"input '{node.input[0]}' is {t}; TensorRT supports "
                                                           f"{node.op_type} on {', '.join(sorted(allowed))}"))
        # uint8: graph inputs feed only Casts; only a Cast makes a uint8 graph output; nothing else is uint8.
        for name in node.input:
            if name in top_inputs and types.get(name) == _uint8() and node.op_type != "Cast":
                violations.append(Violation("uint8", where, f"reads the uint8 graph input '{name}' directly; "
                                                            "TensorRT needs a Cast to be its only consumer"))
        for name in node.output:
            if types.get(name) != _uint8():
                continue
            if not (name in top_outputs and node.op_type == "Cast"):
                violations.append(Violation("uint8", where, f"produces the uint8 tensor '{name}'; TensorRT allows "
                                                            "uint8 only as a graph input or a Cast's graph output"))
        if node.op_type == "Cast" and _attribute(node, "to") == _double():
            violations.append(Violation("float64", where, "casts to DOUBLE"))
        if node.op_type == "Resize":
            mode = _attribute(node, "mode", "nearest")
            coordinates = _attribute(node, "coordinate_transformation_mode", "half_pixel")
            if mode not in _RESIZE_MODES:
                violations.append(Violation("attribute", where, f"Resize mode '{mode}' (TensorRT: nearest, linear)"))
            if coordinates not in _RESIZE_COORDINATES:
                violations.append(Violation("attribute", where, f"Resize coordinate mode '{coordinates}'"))
            if _attribute(node, "antialias", 0):
                violations.append(Violation("attribute", where, "Resize antialiasing is not supported"))
        if node.op_type in _POOLS:
            kernel = _attribute(node, "kernel_shape", [])
            dilations = _attribute(node, "dilations", [])
            if len(kernel) not in (2, 3):
                violations.append(Violation("attribute", where, f"{len(kernel)}-D pooling (TensorRT: 2-D or 3-D)"))
            if dilations and any(d != 1 for d in dilations):
                violations.append(Violation("attribute", where, f"pooling dilations {list(dilations)}"))
        for sub in _subgraphs(node):
            _check_nodes(sub, _tensor_types(sub, types), set(), set(), violations)


def _uint8() -> int:
    import onnx

    return onnx.TensorProto.UINT8


def _double() -> int:
    import onnx

    return onnx.TensorProto.DOUBLE


def _check_io(graph: Any, input_name: str | None, output_name: str | None, violations: list[Violation]) -> None:
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        violations.append(Violation("inputs", "graph", f"{len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                                                       "an engine takes one image tensor"))
    for x in inputs:
        dims = _dims(x)
        if input_name is not None and x.name != input_name:
            violations.append(Violation("inputs", f"input '{x.name}'", f"the contract names it '{input_name}'"))
        if len(dims) != 4 or dims[3] != 3:
            violations.append(Violation("dynamic", f"input '{x.name}'", f"shape {dims}: expected (N, H, W, 3) "
                                                                       "with 3 channels fixed"))
    for y in graph.output:
        if output_name is not None and y.name != output_name:
            continue
        dims = _dims(y)
        if len(dims) != 4 or dims[1] != 1:
            violations.append(Violation("dynamic", f"output '{y.name}'", f"shape {dims}: expected (N, 1, H, W)"))
    for init in graph.initializer:
        if init.data_type == _uint8():
            violations.append(Violation("uint8", f"initializer '{init.name}'", "uint8 constants are not supported"))


def check_graph(model: Any, input_name: str | None = None, output_name: str | None = None) -> list[Violation]:
    """All violations of the parser rules above in ``model`` (an ``onnx.ModelProto``); empty = conforms."""
    import onnx

    violations: list[Violation] = []
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    opset = opsets.get("ai.onnx")
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        violations.append(Violation("opset", "model", f"default-domain opset {opset}; TensorRT {TENSORRT_FLOOR} "
                                                      f"parses opsets {MIN_OPSET}-{MAX_OPSET}"))
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is best effort; the raw graph is checked instead
        inferred = model
    graph = inferred.graph
    types = _tensor_types(graph, {})
    for name, elem in types.items():
        if elem == _double():
            violations.append(Violation("float64", f"tensor '{name}'", "DOUBLE is cast down to FLOAT by TensorRT"))
    top_inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    top_outputs = {o.name for o in graph.output}
    for y in graph.output:
        if types.get(y.name) == _uint8():
            if not any(y.name in n.output for n in graph.node):  # producers are checked with the nodes
                violations.append(Violation("uint8", f"output '{y.name}'", "a uint8 graph output must be produced by "
                                                                           "a Cast"))
    _check_io(graph, input_name, output_name, violations)
    _check_nodes(graph, types, top_inputs, top_outputs, violations)
    return violations


def check_onnx_file(path: str | os.PathLike[str], input_name: str | None = None,
                    output_name: str | None = None) -> list[Violation]:
    """:func:`check_graph` on a file (weights are not needed and not loaded)."""
    import onnx

    return check_graph(onnx.load(str(Path(path)), load_external_data=False), input_name, output_name)


def require_conformance(path: str | os.PathLike[str], input_name: str | None = None,
                        output_name: str | None = None, violations: Iterable[Violation] | None = None) -> None:
    """Raise :class:`ConformanceError` naming ``path`` when the graph breaks a parser rule."""
    found = list(violations) if violations is not None else check_onnx_file(path, input_name, output_name)
    if found:
        raise ConformanceError(path, found)
