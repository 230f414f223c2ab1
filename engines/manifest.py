"""The engine manifest ``<engine>.json`` (e.g. ``model.plan.json``) and checks that need no TensorRT.

A TensorRT engine is tied to the TensorRT version and the GPU's compute capability it was built
with. The manifest records those, the GPU, the optimisation profile, the engine's device memory,
the ONNX file's sha256 and its model contract, and the build settings; the runtime reads it to
refuse, with the reason, an engine that cannot run here, and to get the model contract without
parsing the plan.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tseg.runtime.util.atomic import write_text
from tseg.runtime.execution.backends import file_sha256
from tseg.runtime.execution.contract import METADATA_KEY, ModelContract
from tseg.runtime.errors import ContractError, EngineMismatchError, ModelError, ModelNotFoundError

FORMAT = "tseg-engine-manifest"
FORMAT_VERSION = 1


def manifest_path(plan: str | os.PathLike[str]) -> Path:
    p = Path(plan)
    return p.with_name(p.name + ".json")


sha256_file = file_sha256  # one implementation (tseg.runtime.execution.backends), named here for engines


@dataclass
class EngineManifest:
    plan: str
    plan_sha256: str
    plan_bytes: int
    tensorrt_version: str
    gpu: dict[str, Any]
    precision: str
    profile: dict[str, list[int]]
    device_memory_bytes: int | None
    onnx: dict[str, Any]
    contract: dict[str, Any]
    build: dict[str, Any] = field(default_factory=dict)
    cuda: dict[str, Any] = field(default_factory=dict)
    io: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def model_contract(self) -> ModelContract:
        return ModelContract.from_dict(self.contract, self.plan)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> "EngineManifest":
        if data.get("format") != FORMAT:
            raise ModelError(source, f"not a tseg engine manifest (format {data.get('format')!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelError(source, f"manifest format version {data.get('format_version')} is not supported")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise ModelError(source, f"incomplete engine manifest: {exc}") from None


def write_manifest(manifest: EngineManifest, plan: str | os.PathLike[str]) -> Path:
    return write_text(manifest_path(plan), json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")


def read_manifest(plan: str | os.PathLike[str], verify: bool = True) -> EngineManifest:
    """The manifest beside ``plan``; with ``verify`` its sha256 must match the plan file."""
    p = Path(plan)
    if not p.exists():
        raise ModelNotFoundError(p, "no such engine file")
    mp = manifest_path(p)
    if not mp.exists():
        raise ModelError(p, f"engine without manifest: {mp.name} is missing. tseg-rt writes it beside the "
                            "plan in `tseg-rt build-engine`; rebuild the engine (plans from other tools "
                            "carry no model contract)")
    try:
        data = json.loads(mp.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(mp, f"unreadable engine manifest: {exc}") from exc
    manifest = EngineManifest.from_dict(data, str(mp))
    if verify:
        actual = sha256_file(p)
        if actual != manifest.plan_sha256:
            raise EngineMismatchError(p, f"the plan's sha256 {actual[:12]}... does not match its manifest "
                                         f"({manifest.plan_sha256[:12]}...): the plan or {mp.name} was replaced; "
                                         "rebuild with `tseg-rt build-engine`")
    return manifest


def version_key(version: str) -> tuple[int, int, int, int]:
    """TensorRT's four version parts (major, minor, patch, build), missing ones as 0:
    ``"10.9.0.34"`` -> (10, 9, 0, 34). A suffix such as ``.post1`` is not part of the build."""
    parts = []
    for piece in str(version).split(".")[:4]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits) if digits else 0)
    parts += [0] * (4 - len(parts))
    return (parts[0], parts[1], parts[2], parts[3])


def incompatibilities(manifest: EngineManifest, tensorrt_version: str, device: Mapping[str, Any]) -> list[str]:
    """Why this engine cannot run with ``tensorrt_version`` on ``device`` (empty: it can).

    A serialized engine runs only with the TensorRT it was built with: major, minor, patch *and*
    build must match (engines are not built version-compatible here), and only on the compute
    capability it was built for."""
    reasons = []
    if version_key(manifest.tensorrt_version) != version_key(tensorrt_version):
        reasons.append(f"it was built with TensorRT {manifest.tensorrt_version}, this machine has TensorRT "
                       f"{tensorrt_version} (major, minor, patch and build must all match)")
    built_cc = str(manifest.gpu.get("compute_capability"))
    here_cc = str(device.get("compute_capability"))
    if built_cc != here_cc:
        reasons.append(f"it was built for compute capability {built_cc} ({manifest.gpu.get('name')}), this GPU is "
                       f"{here_cc} ({device.get('name')})")
    return reasons


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
    return OnnxIO(contract, x.name, y.name, precision, sha256_file(p))
