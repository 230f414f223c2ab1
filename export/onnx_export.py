"""``tseg-rt export CHECKPOINT -o model.onnx``: a checkpoint becomes an ONNX graph of the whole
tile computation, with the model contract as metadata, verified against PyTorch.

* Input ``image``: uint8 (N, H, W, 3) RGB; output ``tumour_probability``: uint8 (N, 1, H, W);
  N, H and W dynamic, H and W multiples of the network's divisor (derived from the architecture:
  16 for the paper's DeepLabV3+ with output stride 16, see :mod:`tseg.training.config`).
* The graph is one TensorRT's ONNX parser accepts (:mod:`tseg.engines.conformance`): the uint8
  image is cast before anything else reads it (the exporter's ``Shape`` of the input is rewired
  to the Cast, :func:`read_shapes_after_cast`), the uint8 output comes from a Cast; export
  refuses, naming the node and the rule, to write a graph that breaks a parser rule.
* Exporter: PyTorch's dynamo exporter at opset 21, which emits ONNX's native
  ``GroupNormalization`` (TensorRT parses it from 10.9). Measured here: the legacy TorchScript
  exporter at the same opset decomposes every GroupNorm into Reshape/InstanceNormalization/Mul/
  Add chains with Shape arithmetic (an FP16 error source, docs/training.md), so we use dynamo.
  The example batch has N = 2 (N = 1 would be specialised away).
* ``precision="fp16"`` writes a mixed-precision graph for TensorRT's strongly typed builds
  (see :mod:`tseg.export.network`) and keeps the FP32 graph beside it as ``<name>.fp32.onnx``.
* The parity report (printed by the CLI, saved as ``<name>.parity.json``) compares, on real H&E
  at the traced size and two non-square sizes: PyTorch FP32 (the unmodified network) against
  ONNX Runtime FP32, and, for FP16, the FP16 graph against the FP32 graph. The export fails
  (nothing is left under the output name) when FP32 parity is worse than 1 level or more than
  1e-4 of the pixels differ.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tseg.runtime.util.atomic import write_text
from tseg.runtime.execution.backends.base import file_sha256
from tseg.runtime.execution.contract import METADATA_KEY, ModelContract
from tseg.runtime.errors import InvalidArgumentError, ModelError, OutputError

from .network import TileModel, prepare_network
from .parity import agreement, fp32_parity_ok, parity_inputs

log = logging.getLogger(__name__)

OPSET = 21
INPUT_NAME = "image"
OUTPUT_NAME = "tumour_probability"


class ParityError(ModelError):
    """The exported graph does not reproduce PyTorch closely enough."""


@dataclass
class ExportReport:
    onnx: Path
    contract: dict[str, Any]
    parity: dict[str, Any] = field(default_factory=dict)
    fixes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    fp32_onnx: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"onnx": str(self.onnx), "fp32_onnx": str(self.fp32_onnx) if self.fp32_onnx else None,
                "parity": self.parity, "graph_fixes": self.fixes, "seconds": round(self.seconds, 2),
                "contract": self.contract}


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _export_graph(module: Any, path: Path, traced: tuple[int, int], divisor: int) -> None:
    import torch

    h, w = traced
    if h % divisor or w % divisor:
        raise InvalidArgumentError(f"the traced size {h} x {w} must be a multiple of the divisor {divisor}")
    example = torch.zeros((2, h, w, 3), dtype=torch.uint8)
    dims = {0: torch.export.Dim("batch", min=1, max=64),
            1: divisor * torch.export.Dim("h", min=2, max=16384 // divisor),
            2: divisor * torch.export.Dim("w", min=2, max=16384 // divisor)}
    with torch.no_grad():
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes={"image": dims}, verbose=False)
    program.save(str(path))


def read_shapes_after_cast(model: Any) -> int:
    """Make every ``Shape``/``Size`` of a uint8 graph input read the input's ``Cast`` instead.

    The dynamo exporter reads symbolic sizes with ``Shape(image)``; TensorRT's parser rejects any
    consumer of a uint8 network input other than a Cast (see :mod:`tseg.engines.conformance`).
    A Cast keeps the shape, so the rewired graph computes the same values. Returns the number of
    nodes rewired."""
    import onnx

    initializers = {i.name for i in model.graph.initializer}
    rewired = 0
    for graph_input in model.graph.input:
        if graph_input.name in initializers or graph_input.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            continue
        consumers = [n for n in model.graph.node if graph_input.name in n.input]
        cast = next((n for n in consumers if n.op_type == "Cast"), None)
        if cast is None:
            continue
        moved = [n for n in consumers if n.op_type in ("Shape", "Size")]
        for node in moved:
            node.input[0] = cast.output[0]
        if moved:  # the Cast reads only the graph input: it can go first, keeping the order topological
            index = next(i for i, n in enumerate(model.graph.node) if n.op_type == "Cast"
                         and list(n.output) == list(cast.output))
            order = [index] + [i for i in range(len(model.graph.node)) if i != index]
            nodes = []
            for i in order:
                copy = onnx.NodeProto()
                copy.CopyFrom(model.graph.node[i])
                nodes.append(copy)
            del model.graph.node[:]
            model.graph.node.extend(nodes)
        rewired += len(moved)
    return rewired


def _finish(path: Path, contract: ModelContract) -> None:
    """Attach the contract, make uint8 I/O TensorRT-parsable, check the graph (checker, strict
    shape inference, TensorRT parser conformance)."""
    import onnx

    from tseg.engines.conformance import require_conformance

    model = onnx.load(str(path))
    read_shapes_after_cast(model)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: contract.to_json()})
    model.producer_name = "tseg-rt"
    model.doc_string = "tseg-rt tile computation: uint8 NHWC RGB -> uint8 N1HW tumour probability x 255"
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.save(model, str(path))
    require_conformance(path, contract.input_name, contract.output_name)


def graph_facts(path: str | Path) -> dict[str, Any]:
    """Operator counts and the checks the issue asks for (no training BN, no shape-computed Pad)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    training_bn = [n.name for n in model.graph.node if n.op_type == "BatchNormalization"
                   and any(a.name == "training_mode" and a.i for a in n.attribute)]
    dynamic_pads = [n.name for n in model.graph.node if n.op_type == "Pad" and len(n.input) > 1
                    and n.input[1] not in constants]
    return {"ops": ops, "nodes": len(model.graph.node), "training_batchnorm": training_bn,
            "input_dependent_pads": dynamic_pads, "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))}


def _ort_run(path: Path, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    from tseg.runtime.execution.backends.onnxruntime import OnnxRuntimeBackend

    with OnnxRuntimeBackend(path, providers="cpu") as backend:
        return [backend.infer(img[None])[0, 0] for img in images]


def _torch_run(module: Any, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [module(torch.from_numpy(np.ascontiguousarray(img[None])))[0, 0].numpy() for img in images]


def parity_sizes(traced: tuple[int, int], divisor: int) -> list[tuple[int, int]]:
    """The traced size and two non-square sizes, multiples of the divisor."""
    h, w = traced
    a = (max(2, round(h * 0.75 / divisor)) * divisor, max(2, round(w * 1.25 / divisor)) * divisor)
    b = (max(2, round(h * 1.25 / divisor)) * divisor, max(2, round(w * 0.5 / divisor)) * divisor)
    return [traced, a, b]


def export_checkpoint(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
                      precision: str = "fp32", traced_size: tuple[int, int] = (512, 512),
                      tile_size: int = 7680, min_overlap: int = 1024, low: int = 85, high: int = 229,
                      overwrite: bool = False, check_parity: bool = True, name: str | None = None,
                      measure_memory: bool = True) -> ExportReport:
    """Export a tseg checkpoint (see :mod:`tseg.training.checkpoint`) to ONNX, with parity checks;
    ``measure_memory``: measure the written model's CPU memory and record it in its contract
    (:mod:`tseg.export.working_memory`: a tile of at most 2048 px and one of half that side, each
    in a fresh process)."""
    from tseg.training.checkpoint import load_checkpoint

    t0 = time.perf_counter()
    out = Path(out)
    if precision not in ("fp32", "fp16"):
        raise InvalidArgumentError(f"precision must be fp32 or fp16, got {precision!r}")
    fp32_out = out.with_name(out.name.removesuffix(".onnx") + ".fp32.onnx") if precision == "fp16" else out
    for p in {out, fp32_out}:
        if p.exists() and not overwrite:
            raise OutputError(p, "exists; pass --overwrite to replace it")
    if not out.parent.exists():
        raise OutputError(out.parent, "the output folder does not exist")
    loaded = load_checkpoint(checkpoint)
    cfg = loaded.config
    divisor = cfg.divisor
    base_contract = ModelContract(
        name=name or f"tseg {cfg.encoder} DeepLabV3+ (step {loaded.content.get('step')})",
        mpp=float(loaded.content["mpp"]), tile_size=tile_size, min_overlap=min_overlap, divisor=divisor,
        classes=tuple(loaded.content["classes"]), class_labels=tuple(loaded.content["class_labels"]),
        tumour_index=int(loaded.content["tumour_index"]), mean=tuple(loaded.mean), std=tuple(loaded.std),
        low_threshold=low, high_threshold=high, input_name=INPUT_NAME, output_name=OUTPUT_NAME,
        model=loaded.content["model_config"],
        provenance={
            "source_checkpoint": str(Path(checkpoint).resolve()),
            "source_checkpoint_sha256": file_sha256(Path(checkpoint)),
            "checkpoint_step": loaded.content.get("step"),
            "checkpoint_provenance": {k: v for k, v in loaded.content.get("provenance", {}).items()
                                      if k in ("index_sha256", "imported_from", "versions", "saved")},
            "exporter": {"tseg-rt": _version("tseg-rt"), "torch": _version("torch"), "onnx": _version("onnx"),
                         "onnxscript": _version("onnxscript"), "timm": _version("timm"),
                         "segmentation-models-pytorch": _version("segmentation-models-pytorch"),
                         "opset": OPSET, "exporter": "torch.onnx dynamo"},
            "traced_size": list(traced_size),
        })
    reference = TileModel(loaded.model, loaded.mean, loaded.std, base_contract.tumour_index).eval()
    network, fixes = prepare_network(loaded.model)
    fp32_module = TileModel(network, loaded.mean, loaded.std, base_contract.tumour_index).eval()
    report_parity: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".tseg-export-") as tmp:
        tmp_fp32 = Path(tmp) / "fp32.onnx"
        _export_graph(fp32_module, tmp_fp32, traced_size, divisor)
        facts = graph_facts(tmp_fp32)
        if facts["training_batchnorm"] or facts["input_dependent_pads"]:
            raise ModelError(checkpoint, f"the exported graph still has training BatchNormalization "
                                         f"{facts['training_batchnorm'][:3]} or input-dependent Pad "
                                         f"{facts['input_dependent_pads'][:3]}")
        sizes = parity_sizes(traced_size, divisor)
        images, source = parity_inputs(sizes)
        fp32_contract = base_contract.with_updates(precision="fp32")
        _finish(tmp_fp32, fp32_contract.with_updates(provenance={**base_contract.provenance, "parity_inputs": source}))
        if check_parity:
            torch_out = _torch_run(reference, images)
            ort32 = _ort_run(tmp_fp32, images)
            a32 = agreement(torch_out, ort32)
            report_parity = {"inputs": source, "sizes": [list(s) for s in sizes],
                             "pytorch_fp32_vs_onnxruntime_fp32": a32.as_dict(),
                             "per_size": [agreement([t], [o]).as_dict() for t, o in zip(torch_out, ort32)],
                             "fp32_gate": {"max_levels": 1, "max_fraction_differing": 1e-4, "passed": fp32_parity_ok(a32)}}
            if not fp32_parity_ok(a32):
                _write_report(out, report_parity, fixes, facts)
                raise ParityError(out, f"FP32 parity failed: {a32.max_level_difference} levels max, "
                                       f"{a32.fraction_differing:.2e} of pixels differ (allowed: 1 level, 1e-4); "
                                       f"report in {out.with_suffix('.parity.json')}; no model written")
        final_contract = fp32_contract
        if precision == "fp16":
            net16, fixes16 = prepare_network(loaded.model, fp16=True)
            fixes["fp32_islands"] = fixes16["fp32_islands"]
            tmp16 = Path(tmp) / "fp16.onnx"
            _export_graph(TileModel(net16, loaded.mean, loaded.std, base_contract.tumour_index, fp16=True).eval(),
                          tmp16, traced_size, divisor)
            final_contract = base_contract.with_updates(precision="fp16")
            _finish(tmp16, final_contract.with_updates(provenance={**base_contract.provenance, "parity_inputs": source}))
            if check_parity:
                report_parity["fp16_vs_fp32_graph"] = agreement(_ort_run(tmp_fp32, images), _ort_run(tmp16, images)).as_dict()
            if measure_memory:
                final_contract = _record_memory(tmp16)
                _record_memory(tmp_fp32)
            os.replace(tmp_fp32, fp32_out)
            os.replace(tmp16, out)
        else:
            if measure_memory:
                final_contract = _record_memory(tmp_fp32)
            os.replace(tmp_fp32, out)
    report = ExportReport(out, final_contract.to_dict(), report_parity, fixes, time.perf_counter() - t0,
                          fp32_out if precision == "fp16" else None)
    _write_report(out, report_parity, fixes, graph_facts(out), report)
    return report


def _record_memory(path: Path) -> ModelContract:
    """Measure ``path`` on the CPU and record it in its contract, in place (before it is renamed)."""
    from tseg.export.working_memory import with_working_memory
    from tseg.runtime.execution.working_memory import measure_cpu

    return with_working_memory(path, measure_cpu(path), path)


def _write_report(out: Path, parity: dict[str, Any], fixes: dict[str, int], facts: dict[str, Any],
                  report: ExportReport | None = None) -> None:
    data = report.as_dict() if report else {"onnx": None, "parity": parity, "graph_fixes": fixes}
    data["graph"] = facts
    write_text(out.with_name(out.name.removesuffix(".onnx") + ".parity.json"),
               json.dumps(data, indent=2, default=str) + "\n")
