"""The model contract: everything the runtime must know about a model, as validated data.

It travels with the model: one JSON object under the key ``tseg`` in the ONNX file's
``metadata_props`` (written by ``tseg.export``, read here), and inside the TensorRT engine's
manifest (``model.plan.json``). This module is the only definition of its schema, so the
exporter writes exactly what the runtime reads.

Schema (version 1)::

    {
      "schema_version": 1,
      "name": str,                       # free text
      "mpp": float,                      # µm/px the network sees (paper: 1.0)
      "tile_size": int,                  # inference tile side in px (paper: 7680)
      "min_overlap": int,                # minimum tile overlap in px (paper: 1024)
      "divisor": int,                    # tile sides are zero-padded to a multiple of this (paper: 16)
      "classes": [str, ...],             # output classes, in channel order
      "class_labels": [int, ...],        # mask label of each class (paper: 0, 127, 255)
      "tumour_index": int,               # channel of the tumour class
      "mean": [r, g, b], "std": [r, g, b],  # standardisation of x / 255 (inside the graph)
      "low_threshold": int, "high_threshold": int,  # hysteresis defaults (85, 229)
      "input_name": str, "output_name": str,
      "input": "uint8 NHWC RGB", "output": "uint8 N1HW tumour probability x 255, floored",
      "precision": "fp32" | "fp16",
      "model": {...},                    # architecture config (training's build_model input)
      "provenance": {...},               # source checkpoint sha256, versions, training step ...
      "working_memory": {                # optional: measured by tseg.runtime.execution.working_memory
        "cpu": {"session_bytes": int, "side": int, "tile_bytes": int, "half_side": int,
                "half_tile_bytes": int, "fixed_bytes": int, "bytes_per_px": float,
                "threads": int, "onnxruntime": str}
      }
    }

A model without a contract runs with the paper's values (:data:`PAPER`) and a warning.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence

from tseg.runtime.errors import ContractError

log = logging.getLogger(__name__)

METADATA_KEY = "tseg"
SCHEMA_VERSION = 1
INPUT_SPEC = "uint8 NHWC RGB"
OUTPUT_SPEC = "uint8 N1HW tumour probability x 255, floored"


@dataclass(frozen=True)
class ModelContract:
    name: str = "tseg pan-cancer tumour segmentation"
    mpp: float = 1.0
    tile_size: int = 7680
    min_overlap: int = 1024
    divisor: int = 16  # *Method application*, step 2; the exporter writes the network's own
    classes: tuple[str, ...] = ("background", "tissue", "tumour")
    class_labels: tuple[int, ...] = (0, 127, 255)
    tumour_index: int = 2
    mean: tuple[float, float, float] = (0.8297992, 0.7106879, 0.8241846)
    std: tuple[float, float, float] = (0.1051075, 0.1543867, 0.09917571)
    low_threshold: int = 85
    high_threshold: int = 229
    input_name: str = "image"
    output_name: str = "tumour_probability"
    input: str = INPUT_SPEC
    output: str = OUTPUT_SPEC
    precision: str = "fp32"
    model: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    working_memory: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ContractError(None, "invalid model contract: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("classes", "class_labels", "mean", "std"):
            data[key] = list(data[key])
        data["model"] = dict(self.model)
        data["provenance"] = dict(self.provenance)
        data["working_memory"] = dict(self.working_memory)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_updates(self, **changes: Any) -> "ModelContract":
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> "ModelContract":
        if not isinstance(data, Mapping):
            raise ContractError(source, f"the '{METADATA_KEY}' metadata is not a JSON object")
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ContractError(
                source,
                f"model contract schema_version {version} is not supported by this tseg-rt "
                f"(expects {SCHEMA_VERSION}); upgrade tseg-rt or re-export the model",
            )
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            log.warning("%s: ignoring unknown model contract fields %s", source or "model", unknown)
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("classes", "class_labels", "mean", "std"):
            if key in kwargs:
                if not isinstance(kwargs[key], (list, tuple)):
                    raise ContractError(source, f"model contract field '{key}' must be a list")
                kwargs[key] = tuple(kwargs[key])
        try:
            return cls(**kwargs)
        except ContractError as exc:
            raise ContractError(source, str(exc)) from None
        except TypeError as exc:
            raise ContractError(source, f"malformed model contract: {exc}") from None

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> "ModelContract":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(source, f"the '{METADATA_KEY}' metadata is not valid JSON: {exc}") from None
        return cls.from_dict(data, source)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _problems(c: ModelContract) -> list[str]:
    p: list[str] = []
    if not (isinstance(c.mpp, (int, float)) and math.isfinite(c.mpp) and c.mpp > 0):
        p.append(f"mpp must be a positive number, got {c.mpp!r}")
    for name in ("tile_size", "divisor"):
        v = getattr(c, name)
        if not _is_int(v) or v < 1:
            p.append(f"{name} must be a positive integer, got {v!r}")
    if not _is_int(c.min_overlap) or c.min_overlap < 0 or (_is_int(c.tile_size) and c.min_overlap >= c.tile_size):
        p.append(f"min_overlap must be an integer in [0, tile_size), got {c.min_overlap!r}")
    if not c.classes or not all(isinstance(x, str) for x in c.classes):
        p.append("classes must be a non-empty list of names")
    if len(c.class_labels) != len(c.classes) or not all(_is_int(x) and 0 <= x <= 255 for x in c.class_labels):
        p.append("class_labels must give one 0-255 label per class")
    if not _is_int(c.tumour_index) or not 0 <= c.tumour_index < len(c.classes):
        p.append(f"tumour_index must index classes, got {c.tumour_index!r}")
    for name in ("mean", "std"):
        v = getattr(c, name)
        if len(v) != 3 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
            p.append(f"{name} must be three numbers (R, G, B)")
    if len(c.std) == 3 and any(isinstance(x, (int, float)) and x <= 0 for x in c.std):
        p.append("std must be positive")
    if not (_is_int(c.low_threshold) and _is_int(c.high_threshold) and 0 <= c.low_threshold < c.high_threshold <= 255):
        p.append(f"thresholds must satisfy 0 <= low < high <= 255, got {c.low_threshold!r}, {c.high_threshold!r}")
    for name in ("input_name", "output_name"):
        if not isinstance(getattr(c, name), str) or not getattr(c, name):
            p.append(f"{name} must be a non-empty string")
    if c.precision not in ("fp32", "fp16"):
        p.append(f"precision must be 'fp32' or 'fp16', got {c.precision!r}")
    if not isinstance(c.model, Mapping) or not isinstance(c.provenance, Mapping):
        p.append("model and provenance must be JSON objects")
    p += _working_memory_problems(c.working_memory)
    return p


def _working_memory_problems(wm: Any) -> list[str]:
    """The ``working_memory`` entry: ``cpu`` (the only kind measured) with sizes as numbers; a
    kind this version does not know is left alone (a newer exporter may measure more)."""
    if not isinstance(wm, Mapping):
        return ["working_memory must be a JSON object"]
    cpu = wm.get("cpu")
    if cpu is None:
        return []
    if not isinstance(cpu, Mapping):
        return ["working_memory.cpu must be a JSON object"]
    required, optional = ("session_bytes", "tile_bytes", "side"), ("fixed_bytes", "half_side", "half_tile_bytes")
    bad = [k for k in required + optional
           if (k in required or k in cpu) and (not _is_int(cpu.get(k)) or cpu[k] < 0)]
    per_px = cpu.get("bytes_per_px")
    if isinstance(per_px, bool) or not (isinstance(per_px, (int, float)) and math.isfinite(per_px) and per_px >= 0):
        bad.append("bytes_per_px")
    if _is_int(cpu.get("side")) and cpu["side"] < 1:
        bad.append("side")
    return [f"working_memory.cpu needs non-negative numbers for {', '.join(sorted(set(bad)))}"] if bad else []


#: The paper's values, used (with a warning) for a model that carries no contract.
PAPER = ModelContract()


# --- the graph's inputs and outputs against the contract ----------------------------------------

#: One graph tensor as the loader sees it: ``(name, element type, shape)``; the element type is a
#: numpy-style name (``"uint8"``), a shape entry is an int (fixed), or a str / None (dynamic).
TensorSpec = tuple[str, str, Sequence[Any]]

_REEXPORT = "Re-export the model with `tseg-rt export` (uint8 NHWC in, uint8 N1HW out, H and W dynamic)"


def _fixed(dim: Any) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def layout_problem(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], contract: ModelContract) -> str | None:
    """Why a graph cannot run under the contract, or ``None`` when it can.

    The runtime feeds one uint8 (N, H, W, 3) RGB batch and reads a uint8 (N, 1, H, W) map; tiles
    vary in size (edge tiles, slides smaller than one tile), so H and W must be dynamic, and a
    batch is one tile, so N is dynamic or 1. Checked at load, so that a model that cannot work
    is refused in one line instead of failing on every slide.
    """
    if len(inputs) != 1:
        return f"the graph has {len(inputs)} inputs; tseg-rt needs one uint8 (N, H, W, 3) image input"
    name, dtype, shape = inputs[0]
    shape = list(shape)
    if name != contract.input_name:
        return f"the contract names input '{contract.input_name}' but the graph's input is '{name}'"
    if dtype != "uint8":
        return (f"input '{name}' is {dtype}; tseg-rt feeds uint8 RGB (normalisation belongs inside the graph). "
                + _REEXPORT)
    if len(shape) != 4:
        return f"input '{name}' has shape {shape}; tseg-rt feeds (N, H, W, 3). " + _REEXPORT
    if shape[3] != 3:
        if shape[1] == 3:
            return (f"input '{name}' is channels-first {tuple(shape)}; tseg-rt feeds channels-last "
                    "(N, H, W, 3). " + _REEXPORT)
        return f"input '{name}' has {shape[3]!r} channels last; tseg-rt feeds (N, H, W, 3) with 3 fixed. " + _REEXPORT
    if _fixed(shape[1]) or _fixed(shape[2]):
        return (f"input '{name}' has a fixed size {shape[1]} x {shape[2]}; tiles vary in size (edge tiles, slides "
                "smaller than one tile), so H and W must be dynamic. " + _REEXPORT)
    if _fixed(shape[0]) and shape[0] != 1:
        return f"input '{name}' has a fixed batch of {shape[0]}; tseg-rt runs one tile at a time (N dynamic or 1)"
    out = next((o for o in outputs if o[0] == contract.output_name), None)
    if out is None:
        return f"the graph has no output '{contract.output_name}' (outputs: {[o[0] for o in outputs]})"
    oname, otype, oshape = out[0], out[1], list(out[2])
    if otype != "uint8" or len(oshape) != 4 or (_fixed(oshape[1]) and oshape[1] != 1) or oshape[1] == 3:
        return (f"output '{oname}' is {otype} {oshape}; tseg-rt expects uint8 (N, 1, H, W) tumour probability "
                "x 255. " + _REEXPORT)
    if _fixed(oshape[2]) or _fixed(oshape[3]):
        return f"output '{oname}' has a fixed size {oshape[2]} x {oshape[3]}; H and W must follow the input. " + _REEXPORT
    return None
