"""The module paths of tseg-rt before its subpackages (commit b13c780), kept importable.

``import tseg.runtime.slide``, ``from tseg.runtime.segmenter import Segmenter`` and every other
old path still work: a finder on ``sys.meta_path`` (installed by ``tseg.runtime``) answers an
old name with the module that now holds it (the same module object, so patching either name
patches both) and emits a DeprecationWarning naming the new path. Names that moved out of a
module when it was split are re-exported by the module that kept its role (``cohort.batch``,
``cohort.resume``, ``wsi.slide``, ``execution.backends``).

Three old modules became packages of the same name: ``tseg.runtime.cli``, ``tseg.runtime.outputs``
and ``tseg.runtime.evaluation``. Their old names are forwarded (with the warning) by the
packages' ``__getattr__`` (:func:`forward`), except where a new submodule took the name: the
command functions of the old ``cli`` module (``run``, ``info``, ...: use the ``tseg-rt``
command or ``tseg.runtime.cli.main.app``) and ``evaluate`` of the old ``evaluation`` module,
which is now the module ``tseg.runtime.evaluation.evaluate`` (its function is
``tseg.runtime.evaluation.evaluate.evaluate``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

#: Old module path -> the module that holds its contents now.
MOVED = {
    "tseg.runtime.annotations": "tseg.runtime.evaluation.annotations",
    "tseg.runtime.atomic": "tseg.runtime.util.atomic",
    "tseg.runtime.background": "tseg.runtime.method.background",
    "tseg.runtime.backends": "tseg.runtime.execution.backends",
    "tseg.runtime.backends.onnxruntime": "tseg.runtime.execution.backends.onnxruntime",
    "tseg.runtime.backends.tensorrt": "tseg.runtime.execution.backends.tensorrt",
    "tseg.runtime.batch": "tseg.runtime.cohort.batch",
    "tseg.runtime.contract": "tseg.runtime.execution.contract",
    "tseg.runtime.cuda": "tseg.runtime.execution.cuda",
    "tseg.runtime.demo": "tseg.runtime.evaluation.demo",
    "tseg.runtime.dicom": "tseg.runtime.wsi.dicom",
    "tseg.runtime.executor": "tseg.runtime.execution.executor",
    "tseg.runtime.merge": "tseg.runtime.method.merge",
    "tseg.runtime.metrics": "tseg.runtime.evaluation.metrics",
    "tseg.runtime.parallel": "tseg.runtime.util.parallel",
    "tseg.runtime.pipeline": "tseg.runtime.execution.pipeline",
    "tseg.runtime.polygons": "tseg.runtime.method.polygons",
    "tseg.runtime.postprocess": "tseg.runtime.method.postprocess",
    "tseg.runtime.progress": "tseg.runtime.cohort.progress",
    "tseg.runtime.ray_batch": "tseg.runtime.cohort.ray_batch",
    "tseg.runtime.report": "tseg.runtime.cohort.report",
    "tseg.runtime.report_page": "tseg.runtime.cohort.report_page",
    "tseg.runtime.resample": "tseg.runtime.wsi.resample",
    "tseg.runtime.resume": "tseg.runtime.cohort.resume",
    "tseg.runtime.segmenter": "tseg.runtime.execution.segmenter",
    "tseg.runtime.shard": "tseg.runtime.cohort.shard",
    "tseg.runtime.slide": "tseg.runtime.wsi.slide",
    "tseg.runtime.synthetic": "tseg.runtime.evaluation.synthetic",
    "tseg.runtime.tiff": "tseg.runtime.wsi.tiff",
    "tseg.runtime.tiling": "tseg.runtime.method.tiling",
    "tseg.runtime.versions": "tseg.runtime.util.versions",
}

#: Old modules that are now packages: where their old names live now, name by name or for all.
FORWARDED: dict[str, Mapping[str, str]] = {
    "tseg.runtime.cli": {"app": "tseg.runtime.cli.main", "train_app": "tseg.runtime.cli.train:app",
                         "EXIT_ERROR": "tseg.runtime.cli.common", "EXIT_FAILED_SLIDES": "tseg.runtime.cli.common"},
    "tseg.runtime.outputs": {"*": "tseg.runtime.outputs.files"},
    "tseg.runtime.evaluation": {"*": "tseg.runtime.evaluation.evaluate"},
}


def deprecated(old: str, new: str) -> None:
    """Warn that ``old`` is deprecated for ``new``, attributed to the code that used it."""
    warnings.warn(f"{old} is deprecated: use {new} (tseg-rt's modules moved into subpackages; "
                  "see docs/architecture.md)", DeprecationWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """The ``stacklevel`` of the code that used the old name: the first frame outside this
    module, the packages' ``__getattr__`` and the import machinery (``warnings`` itself skips
    ``importlib._bootstrap`` frames when it counts), so that the warning names that code and is
    shown by default when it is a script."""
    frame, level = sys._getframe(2), 2  # the caller of deprecated()
    here = Path(__file__).parent
    while frame is not None:
        name = frame.f_code.co_filename
        counted = not ("importlib" in name and "_bootstrap" in name)
        ours = name == __file__ or (frame.f_code.co_name == "__getattr__" and Path(name).parent.parent == here)
        if counted and not ours and Path(name).parent.name != "importlib":
            return level
        frame, level = frame.f_back, level + counted
    return 1


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds old module paths and loads them as the module that holds them now."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname == "tseg.runtime.backends")

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import system sets __spec__ to the alias's: restored below
        return module

    def exec_module(self, module: ModuleType) -> None:
        alias = module.__spec__
        module.__spec__ = alias.loader_state
        deprecated(f"import {alias.name}", MOVED[alias.name])


def install() -> None:
    """Put the old-path finder first on ``sys.meta_path`` (once): first, so that an old path
    inside a moved package (``tseg.runtime.backends.onnxruntime``) is never loaded a second time
    from the package's new folder."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())


def forward(package: str, name: str) -> Any:
    """An old module-level ``name`` of ``package`` (an old module that is now a package), with
    the warning; AttributeError for names it never had (so submodules import as usual)."""
    table = FORWARDED[package]
    if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
        raise AttributeError(name)  # a submodule: the import system imports it
    target = table.get(name) or (table.get("*") if not name.startswith("_") else None)
    if target is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module_name), attr or name, _MISSING)
    if value is _MISSING:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    deprecated(f"{package}.{name}", f"{module_name}.{attr or name}")
    return value


_MISSING = object()
