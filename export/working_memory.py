"""Record a model's measured CPU memory in its contract (``working_memory["cpu"]``).

``tseg-rt export`` does this for every model it writes. For a model exported before, or an ONNX
file that carries a contract written by hand::

    python -m tseg.export.working_memory MODEL.onnx [--side PX] [--out OUT.onnx]

measures it (:func:`tseg.runtime.execution.working_memory.measure_cpu`: two tiles, each in a
fresh process)
and rewrites the file with the entry added (to a temporary name, then renamed: the model is never
half-written). Only the ``tseg`` metadata changes: the graph and its weights stay as they were.
A model without a contract is refused: it runs with the paper's values, and its memory is assumed
as the paper's network's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from tseg.runtime.errors import ContractError, TsegError
from tseg.runtime.execution.contract import METADATA_KEY, ModelContract
from tseg.runtime.execution.working_memory import measure_cpu
from tseg.runtime.util.atomic import atomic_write

log = logging.getLogger(__name__)


def with_working_memory(path: Path, entry: dict[str, Any], out: Path) -> ModelContract:
    """Write ``path`` to ``out`` with ``entry`` as its contract's ``working_memory["cpu"]``."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ContractError(str(path), f"the model has no '{METADATA_KEY}' contract to record its memory in; "
                                       "export it with `tseg-rt export`")
    contract = ModelContract.from_json(props[METADATA_KEY], str(path))
    contract = contract.with_updates(working_memory={**contract.working_memory, "cpu": dict(entry)})
    props[METADATA_KEY] = contract.to_json()
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    atomic_write(out, lambda tmp: onnx.save(model, str(tmp)))
    return contract


def record_working_memory(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                          side: int | None = None) -> dict[str, Any]:
    """Measure ``path`` on the CPU and record the result in its contract (in place, or in ``out``);
    returns the entry."""
    path = Path(path)
    entry = measure_cpu(path, side)
    with_working_memory(path, entry, Path(out) if out else path)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tseg.export.working_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="an .onnx model with a tseg contract")
    parser.add_argument("--side", type=int, default=None,
                        help="tile side to measure at (default: the model's tile size, at most 2048 px)")
    parser.add_argument("--out", default=None, help="write the model here instead of in place")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        entry = record_working_memory(args.model, args.out, args.side)
    except TsegError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(entry, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
