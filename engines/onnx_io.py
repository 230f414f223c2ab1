"""What an exported ONNX model gives an engine build: its model contract, I/O tensors and precision.

Checked before TensorRT is touched (:func:`tseg.engines.build.build_engine`), so a model that
cannot become an engine is refused in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tseg.runtime.errors import ContractError, ModelError, ModelNotFoundError
from tseg.runtime.execution.backends.base import file_sha256
from tseg.runtime.execution.contract import METADATA_KEY, ModelContract
from tseg.runtime.execution.external_data import check_external_data


@dataclass(frozen=True)
class OnnxIO:
    contract: ModelContract
    input_name: str
    output_name: str
    precision: str
    sha256: str


def inspect_onnx(path: str | os.PathLike[str]) -> OnnxIO:
    """Contract and I/O of an ONNX model for engine building: uint8 NHWC in, uint8 N1HW out."""
    import onnx

    p = Path(path)
    if not p.exists():
        raise ModelNotFoundError(p, "no such ONNX file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise ModelError(p, f"not a readable ONNX model: {exc}") from exc
    check_external_data(p, model)  # TensorRT's parser reads external data wherever it is told
    props = {m.key: m.value for m in model.metadata_props}
    if METADATA_KEY not in props:
        raise ContractError(p, f"the ONNX file has no '{METADATA_KEY}' model contract; export it with "
                               "`tseg-rt export` (engines must carry the contract the runtime needs)")
    contract = ModelContract.from_json(props[METADATA_KEY], str(p))
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ContractError(p, f"the graph has {len(inputs)} inputs; engines take one uint8 NHWC image")
    x = inputs[0]
    y = next((o for o in model.graph.output if o.name == contract.output_name), None)

    def describe(v: Any) -> tuple[int, list[Any]]:
        t = v.type.tensor_type
        return t.elem_type, [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]

    x_type, x_dims = describe(x)
    if x.name != contract.input_name or x_type != onnx.TensorProto.UINT8 or len(x_dims) != 4 or x_dims[3] not in (3, ""):
        raise ContractError(p, f"input '{x.name}' is {onnx.TensorProto.DataType.Name(x_type)} {x_dims}; engines "
                               "take uint8 NHWC RGB (N, H, W, 3) named as the contract says; re-export with `tseg-rt export`")
    if y is None:
        raise ContractError(p, f"no output named '{contract.output_name}'")
    y_type, y_dims = describe(y)
    if y_type != onnx.TensorProto.UINT8 or len(y_dims) != 4 or y_dims[1] not in (1, ""):
        raise ContractError(p, f"output '{y.name}' is {onnx.TensorProto.DataType.Name(y_type)} {y_dims}; engines "
                               "give uint8 (N, 1, H, W); re-export with `tseg-rt export`")
    fp16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    precision = "fp16" if fp16 or contract.precision == "fp16" else "fp32"
    return OnnxIO(contract, x.name, y.name, precision, file_sha256(p))
