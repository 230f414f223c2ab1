"""tseg-rt runtime: read slides, tile, run a model, merge and post-process. No PyTorch.

The names below are imported lazily, so that light modules (``tseg.runtime.execution.executor``,
``tseg.runtime.execution.cuda``, ``tseg.runtime.method.tiling``) can be used without OpenCV or OpenSlide loaded.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Segmenter": ".execution.segmenter",
    "Result": ".execution.segmenter",
    "Slide": ".wsi.slide",
    "open_slide": ".wsi.slide",
    "TsegError": ".errors",
    "load_backend": ".execution.backends",
    "run_batch": ".cohort.batch",
    "write_report": ".cohort.report",
    "write_outputs": ".outputs.files",
    "render_overlay": ".outputs.overlay",
    "OverlayLegend": ".outputs.overlay",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
