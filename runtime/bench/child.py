"""One step of ``tseg-rt bench --check`` in its own process (:func:`tseg.runtime.bench.check.run_step`).

    python -m tseg.runtime.bench.child STEP ARGS_JSON OUT_JSON

Writes the step's result to ``OUT_JSON``: its data, or ``{"skipped": reason}`` when a package or
device it needs is missing, or ``{"error": ..., "traceback": ...}``.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from typing import Any, Callable


def _executor(**kw: Any) -> dict[str, Any]:
    from tseg.runtime.bench.executor_check import check_executor

    return check_executor(**kw)


def _pytorch(progress: Callable[[dict[str, Any]], None] | None = None, **kw: Any) -> dict[str, Any]:
    missing = []
    for module, package in (("torch", "torch"), ("timm", "timm"),
                            ("segmentation_models_pytorch", "segmentation-models-pytorch")):
        try:
            __import__(module)
        except Exception:  # noqa: BLE001 - absent or broken: the step cannot run
            missing.append(package)
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed: the PyTorch rows need pip install 'tseg-rt[export]'"}
    from tseg.runtime.bench.torch_network import network_rows

    return network_rows(on_progress=progress, **kw)


def _engine(**kw: Any) -> dict[str, Any]:
    from tseg.runtime.bench.gpu_engines import engine_rows

    return engine_rows(**kw)


STEPS: dict[str, Callable[..., dict[str, Any]]] = {"executor": _executor, "pytorch": _pytorch, "engine": _engine}


def main(argv: list[str] | None = None) -> int:
    from tseg.runtime.errors import BackendUnavailableError
    from tseg.runtime.util.atomic import write_text

    step, args, out = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    def progress(partial: dict[str, Any]) -> None:  # what the parent keeps if it must stop this step
        write_text(out, json.dumps(dict(partial, partial=True), indent=1, default=str))

    kwargs = json.loads(args)
    if step == "pytorch":
        kwargs["progress"] = progress
    try:
        result = STEPS[step](**kwargs)
    except BackendUnavailableError as exc:
        result = {"skipped": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which goes on with the next step
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
    write_text(out, json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
