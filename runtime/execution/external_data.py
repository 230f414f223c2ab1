"""ONNX external data checked by tseg-rt itself before any runtime reads it.

An ONNX file may keep its weights in other files (``TensorProto.data_location = EXTERNAL``, with a
``location`` relative to the model's folder). A model from elsewhere could name ``/etc/shadow``,
``../../secret`` or a symbolic link that leads out of the model's folder, or a FIFO that blocks
the reader. ONNX Runtime refuses locations outside the folder only from version 1.32 on (this
project allows 1.18), and TensorRT's ONNX parser reads what it is told; so the project checks,
for every external tensor (initializers, sparse initializers, node attributes, subgraphs and
functions, at any depth):

* a ``location`` is given, is relative, and resolves (symbolic links followed) inside the model's
  folder (resolved too);
* it is a regular file (never a FIFO, socket or device);
* ``offset`` and ``length``, when given, are non-negative integers that lie inside that file.

:func:`check_external_data` raises :class:`~tseg.runtime.errors.ModelError` naming the model, the
tensor and the problem; a model without external data costs one parse of its graph without its
weights (``onnx.load(..., load_external_data=False)``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Iterator

from tseg.runtime.errors import ModelError
from tseg.runtime.util.safeio import kind_of


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of ``graph``: initializers, sparse initializers, node attributes and
    the graphs inside them."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        for sparse in attr.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attr.HasField("g"):
            yield from _tensors(attr.g)
        for graph in attr.graphs:
            yield from _tensors(graph)


def all_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of an ONNX ModelProto, its functions included."""
    yield from _tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _int_field(entries: dict[str, str], key: str) -> int | None | str:
    value = entries.get(key)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        return f"{key} {value!r} is not an integer"
    return number if number >= 0 else f"{key} {number} is negative"


def tensor_problem(tensor: Any, folder: Path) -> str | None:
    """Why one external tensor cannot be read safely from ``folder`` (the model's), or None."""
    entries = {e.key: e.value for e in tensor.external_data}
    name = tensor.name or "(unnamed)"
    location = entries.get("location", "")
    if not location:
        return f"tensor '{name}' is stored externally but names no file"
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        return f"tensor '{name}' names the absolute path {location!r}; external data must lie in the model's folder"
    if "\0" in location:
        return f"tensor '{name}' names {location!r}, which holds a NUL byte and cannot be a file name"
    root = folder.resolve()
    try:
        target = (folder / location).resolve()
    except (OSError, ValueError) as exc:  # a link loop, a name too long
        return f"tensor '{name}' names {location!r}, which cannot be resolved ({getattr(exc, 'strerror', None) or exc})"
    if target != root and root not in target.parents:
        return (f"tensor '{name}' names {location!r}, which leads to {target}, outside the model's folder {root} "
                "(through '..' or a symbolic link)")
    try:
        st = os.stat(target)
    except (OSError, ValueError) as exc:
        return f"tensor '{name}': its data file {location!r} cannot be read ({getattr(exc, 'strerror', None) or exc})"
    if not stat.S_ISREG(st.st_mode):
        return f"tensor '{name}': its data file {location!r} is {kind_of(st.st_mode)}, not a regular file"
    offset, length = _int_field(entries, "offset"), _int_field(entries, "length")
    for value in (offset, length):
        if isinstance(value, str):
            return f"tensor '{name}': {value}"
    start = offset or 0
    if start > st.st_size or (length is not None and start + length > st.st_size):
        return (f"tensor '{name}': bytes {start}-{start + (length or 0)} of {location!r} are asked for, but the file "
                f"holds {st.st_size} bytes (truncated?)")
    return None


def external_data_problems(model: Any, model_path: str | os.PathLike[str]) -> list[str]:
    """Every problem of ``model``'s external data (a loaded ModelProto of ``model_path``)."""
    from onnx import TensorProto

    folder = Path(os.path.abspath(model_path)).parent
    problems = []
    for tensor in all_tensors(model):
        if tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL:
            problem = tensor_problem(tensor, folder)
            if problem:
                problems.append(problem)
    return problems


def check_external_data(model_path: str | os.PathLike[str], model: Any = None) -> None:
    """Refuse (:class:`~tseg.runtime.errors.ModelError`) a model whose external data would be read
    from outside its folder, from something other than a regular file, or past a file's end.
    ``model``: the ModelProto if already loaded (without its external data)."""
    if model is None:
        import onnx

        try:
            model = onnx.load(str(model_path), load_external_data=False)
        except Exception as exc:  # the runtime reports unreadable models in its own words
            raise ModelError(model_path, f"not a readable ONNX model (corrupt or not ONNX): {exc}") from None
    problems = external_data_problems(model, model_path)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ModelError(model_path, f"refused: {problems[0]}{more}. Keep a model's external data files in its "
                                     "folder, as `onnx.save(..., save_as_external_data=True)` writes them")
