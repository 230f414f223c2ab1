"""The engine manifest ``<engine>.json`` (e.g. ``model.plan.json``) and checks that need no TensorRT.

A TensorRT engine is tied to the TensorRT version and the GPU's compute capability it was built
with. The manifest records those, the GPU, the optimisation profile, the engine's device memory,
the ONNX file's sha256 and its model contract, and the build settings; the runtime reads it to
refuse, with the reason, an engine that cannot run here, and to get the model contract without
parsing the plan.

The format lives here, with the runtime that loads plans (:mod:`tseg.runtime.execution.backends.tensorrt_loader`);
``tseg.engines.build`` above it writes manifests with :func:`write_manifest`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from tseg.runtime.errors import EngineMismatchError, ModelError, ModelNotFoundError
from tseg.runtime.execution.backends.base import file_sha256
from tseg.runtime.execution.contract import ModelContract
from tseg.runtime.util.atomic import write_text
from tseg.runtime.util.safeio import UnsafeFileError, read_json

FORMAT = "tseg-engine-manifest"
FORMAT_VERSION = 1


def manifest_path(plan: str | os.PathLike[str]) -> Path:
    p = Path(plan)
    return p.with_name(p.name + ".json")


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
    def from_dict(cls, data: Any, source: str) -> "EngineManifest":
        """A manifest from parsed JSON, validated against :data:`SCHEMA` (and its model contract);
        :class:`~tseg.runtime.errors.ModelError` naming ``source`` and the first field at fault."""
        if not isinstance(data, Mapping):
            raise ModelError(source, f"not a tseg engine manifest: the file holds a JSON {_json_kind(data)}, not an "
                                     f"object. {REBUILD}")
        if data.get("format") != FORMAT:
            raise ModelError(source, f"not a tseg engine manifest (format {data.get('format')!r}). {REBUILD}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelError(source, f"manifest format version {data.get('format_version')!r} is not supported "
                                     f"(this tseg-rt reads version {FORMAT_VERSION}). {REBUILD}")
        problem = schema_problem(data)
        if problem:
            raise ModelError(source, f"invalid engine manifest: {problem}. {REBUILD}")
        ModelContract.from_dict(data["contract"], source)  # ContractError naming the manifest
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


REBUILD = "Rebuild the engine with `tseg-rt build-engine`, which writes the manifest beside the plan"


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _shape(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_is_int(v) and v > 0 for v in value)


def _profile(value: Any) -> bool:
    return isinstance(value, dict) and all(_shape(value.get(k)) for k in ("min", "opt", "max")) \
        and value["min"][1] <= value["opt"][1] <= value["max"][1]


def _gpu(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("compute_capability"), str) \
        and isinstance(value.get("name", ""), str)


#: Every field of a manifest: (required, check, what it must be). The runtime uses these values to
#: refuse engines and to size buffers, so a manifest from elsewhere is checked field by field.
SCHEMA: dict[str, tuple[bool, Callable[[Any], bool], str]] = {
    "format": (True, _text, "a string"),
    "format_version": (True, _is_int, "an integer"),
    "plan": (True, _text, "the plan's file name (a string)"),
    "plan_sha256": (True, _sha256, "the plan's SHA-256 (64 lower-case hex digits)"),
    "plan_bytes": (True, lambda v: _is_int(v) and v >= 0, "a byte count (an integer >= 0)"),
    "tensorrt_version": (True, _text, "a version string such as \"10.9.0.34\""),
    "gpu": (True, _gpu, "an object with the GPU's compute_capability (a string such as \"9.0\") and name"),
    "precision": (True, _text, "a string such as \"fp16\""),
    "profile": (True, _profile, "an object with min, opt and max input shapes [1, H, W, 3] of positive integers, "
                                "min <= opt <= max"),
    "device_memory_bytes": (True, lambda v: v is None or (_is_int(v) and v >= 0), "a byte count or null"),
    "onnx": (True, lambda v: isinstance(v, dict) and (v.get("sha256") is None or _sha256(v["sha256"])),
             "an object whose sha256, if any, is 64 lower-case hex digits"),
    "contract": (True, lambda v: isinstance(v, dict), "an object (the model contract)"),
    "build": (False, lambda v: isinstance(v, dict), "an object"),
    "cuda": (False, lambda v: isinstance(v, dict), "an object"),
    "io": (False, lambda v: isinstance(v, dict), "an object"),
}


def schema_problem(data: Mapping[str, Any]) -> str | None:
    """The first field of ``data`` that breaks :data:`SCHEMA`, in words, or None."""
    for name, (required, check, what) in SCHEMA.items():
        if name not in data:
            if required:
                return f"field '{name}' is missing (it must be {what})"
            continue
        if not check(data[name]):
            value = json.dumps(data[name])
            shown = value if len(value) <= 60 else value[:57] + "..."
            return f"field '{name}' is {shown} ({_json_kind(data[name])}); it must be {what}"
    return None


#: A manifest is a few KiB; anything much larger is not one (and is not read whole).
MANIFEST_BYTES = 1 << 20


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
        data = read_json(mp, limit=MANIFEST_BYTES)
    except UnicodeDecodeError as exc:
        raise ModelError(mp, f"unreadable engine manifest: not UTF-8 text (byte {exc.start}). {REBUILD}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(mp, f"unreadable engine manifest: not valid JSON ({exc.msg} at line {exc.lineno}, column "
                             f"{exc.colno}). {REBUILD}") from None
    except UnsafeFileError as exc:
        raise ModelError(mp, f"unreadable engine manifest: it {exc.what}") from None
    except OSError as exc:
        raise ModelError(mp, f"unreadable engine manifest: {exc.strerror or exc}") from None
    manifest = EngineManifest.from_dict(data, str(mp))
    if verify:
        actual = file_sha256(p)
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
