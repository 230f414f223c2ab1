"""What a slide may claim before any pixel of it is read: its physical size, and the memory its
processing needs.

A slide's size is only numbers in its tags: a 4.9 MB TIFF can claim 200000 x 200000 px (every
tile entry pointing at one tile). Read as it claims, it makes a run grind for minutes with memory
rising until the machine runs out, and then say only "out of memory". So, after a slide is opened
and before its overview is read (:meth:`tseg.runtime.execution.segmenter.Segmenter.segment_slide`),
and in ``tseg-rt info``:

* **Physical size.** A side longer than ``max_slide_mm`` (default :data:`MAX_SLIDE_MM`, 100 mm;
  glass slides are 75 x 25 mm, large-format ones 75 x 50 mm) is implausible for glass: refused
  with :class:`~tseg.runtime.errors.ImplausibleSizeError`, which says the size, the limit and
  ``--max-slide-mm`` (the resolution metadata may be wrong too: ``--mpp``).
* **Memory.** Processing keeps the probability map at the model's resolution in memory with its
  merge, post-processing and pyramidal output: :data:`BYTES_PER_MODEL_PIXEL` bytes a pixel
  (measured: ``python -m benchmarks.slide_memory``), plus the tiles in flight, plus the reader's
  buffers (the largest chunk a read decodes, once in the decoded-tile cache and once per reader
  thread decoding, and the blocks being resampled: :func:`reader_bytes`), plus the loaded model
  and the backend's working memory for one tile (:class:`BackendMemory`: on the CPU, measured per
  model and recorded in its contract by :mod:`tseg.runtime.execution.working_memory`; a model
  without a measurement is assumed as heavy as the paper's network). More
  than the machine has (its physical memory, or the limit of the container or cgroup it runs in,
  or ``RLIMIT_AS``) is refused with :class:`~tseg.runtime.errors.SlideTooLargeError`, saying how
  much is needed, for what, and how much there is, before any pixel is decoded.

Both are decided from the slide's metadata alone, in microseconds.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass
from typing import Any

from tseg.runtime.errors import ImplausibleSizeError, InvalidArgumentError, SlideTooLargeError

#: Longest side of a plausible slide, in mm (``--max-slide-mm``).
MAX_SLIDE_MM = 100.0
#: Memory per pixel of the slide at the model's resolution that processing holds at its peak
#: (probability map, merge, post-processing, pyramidal TIFF output), in bytes. Measured with
#: 1024 px tiles on 48-108 MP slides: 4.7 (``python -m benchmarks.slide_memory``); rounded up.
BYTES_PER_MODEL_PIXEL = 5.0
#: Bytes per tile pixel of one tile in flight (RGB in, probability out).
BYTES_PER_TILE_PIXEL = 4
#: A measured per-pixel working memory is raised by this factor: run-to-run and allocator slack
#: (five measurements of the bundled model at 2048 px: 121.5 to 124.0 B/px, 2% apart).
MEASURED_MARGIN = 1.1
#: A decoded chunk a reader cannot avoid when nothing says otherwise (256 px RGBA tiles).
DEFAULT_CHUNK_BYTES = 256 * 256 * 4
GB = 1e9


def machine_memory_bytes(root: str = "/") -> int | None:
    """What this process may use at most: physical memory, lowered by the memory limit of the
    cgroup it runs in or any cgroup above it (v2 ``memory.max``, v1 ``memory.limit_in_bytes``, as
    ``/proc/self/cgroup`` names it) or by ``RLIMIT_AS``; None when unknown. ``root``: for tests."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    for path in cgroup_limit_files(root):
        try:
            with open(path, encoding="ascii") as fh:
                text = fh.read(64).strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
            limits.append(int(text))
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY and soft > 0:
            limits.append(int(soft))
    except (AttributeError, ValueError, OSError):
        pass
    return min(limits) if limits else None


def cgroup_limit_files(root: str = "/") -> list[str]:
    """The memory-limit files of this process's cgroups and of every cgroup above them (a
    container's limit may sit on a parent), v2 and v1, and the mount's own root files."""
    base = os.path.join(root, "sys/fs/cgroup")
    files = [os.path.join(base, "memory.max"), os.path.join(base, "memory", "memory.limit_in_bytes")]
    try:
        with open(os.path.join(root, "proc/self/cgroup"), encoding="utf-8", errors="replace") as fh:
            lines = fh.read(65536).splitlines()
    except OSError:
        return files
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, group = parts[1].split(","), parts[2].strip("/")
        if parts[0] == "0" and parts[1] == "":
            folder, name = base, "memory.max"
        elif "memory" in controllers:
            folder, name = os.path.join(base, "memory"), "memory.limit_in_bytes"
        else:
            continue
        steps = [s for s in group.split("/") if s and s not in (".", "..")]
        files += [os.path.join(folder, *steps[:i], name) for i in range(len(steps), 0, -1)]
    return files


def reader_bytes(chunk_bytes: int, chunks: int, threads: int, block_px: int) -> int:
    """Memory the reader holds at most: the largest decoded chunk kept in the decoded-tile cache,
    one more being decoded by each thread (at most one per chunk: threads wait for a chunk another
    is decoding), and each thread's block (RGBA read, RGB, resampled)."""
    decoding = max(1, min(threads, chunks))
    return int(chunk_bytes * (1 + decoding) + threads * block_px * block_px * 11)


@dataclass(frozen=True)
class BackendMemory:
    """What a backend holds: the loaded model (``model_bytes``) and, for one tile of ``pixels``
    px, ``fixed_bytes + bytes_per_px * pixels`` of working memory; ``basis`` says where the
    figures come from (for ``info`` and messages)."""

    model_bytes: int
    fixed_bytes: int
    bytes_per_px: float
    basis: str

    def working_bytes(self, pixels: int) -> int:
        return int(self.fixed_bytes + self.bytes_per_px * pixels)

    @classmethod
    def measured_cpu(cls, entry: Any) -> "BackendMemory":
        """From a contract's ``working_memory["cpu"]``: the line fitted through tiles of ``side``
        and ``half_side`` px (``fixed_bytes`` + ``bytes_per_px`` a pixel), raised by
        :data:`MEASURED_MARGIN` (:mod:`tseg.runtime.execution.working_memory`)."""
        fixed = int(entry.get("fixed_bytes", 0))
        return cls(int(entry["session_bytes"]), int(fixed * MEASURED_MARGIN),
                   float(entry["bytes_per_px"]) * MEASURED_MARGIN,
                   f"measured for this model on the CPU ({fixed / 2**20:.0f} MiB + {entry['bytes_per_px']:.0f} B per "
                   f"tile pixel, from tiles of up to {entry['side']} px, onnxruntime {entry.get('onnxruntime', '?')})")


#: ONNX Runtime on the CPU for a model without a measurement: as the paper's network measured
#: (an eca_nfnet_l3 + DeepLabV3+ export, FP32, 296 MB): a session of 824 MiB and 336 B per tile
#: pixel at 2048 px (``python -m tseg.runtime.execution.working_memory paper.fp32.onnx``, 2 CPUs,
#: onnxruntime 1.32); rounded up. A lighter model is over-counted until it is measured.
UNMEASURED_CPU = BackendMemory(832 * 2**20, 0, 340.0 * MEASURED_MARGIN,
                               "not measured for this model: assumed as heavy as the paper's network on the CPU")
#: A GPU backend (TensorRT, ONNX Runtime CUDA): the activations and weights live in the device's
#: memory; the host holds pinned input/output copies of the tiles in flight.
GPU = BackendMemory(0, 64 * 2**20, 8.0, "a GPU backend: its host side only")


def backend_memory(backend: Any) -> BackendMemory:
    """The :class:`BackendMemory` of a loaded backend: a GPU one's host side, or on the CPU its
    contract's measurement (:data:`UNMEASURED_CPU` without one)."""
    if backend_kind(backend) == "gpu":
        return GPU
    recorded = getattr(getattr(backend, "contract", None), "working_memory", None) or {}
    entry = recorded.get("cpu") if hasattr(recorded, "get") else None
    return BackendMemory.measured_cpu(entry) if entry else UNMEASURED_CPU


def backend_kind(backend: Any) -> str:
    """"cpu" for ONNX Runtime on the CPU (and backends that do not say), else "gpu"."""
    providers = getattr(backend, "providers", None) or ["CPUExecutionProvider"]
    if getattr(backend, "kind", "onnxruntime") == "tensorrt" or providers[0] != "CPUExecutionProvider":
        return "gpu"
    return "cpu"


def as_backend_memory(backend: "str | BackendMemory") -> BackendMemory:
    """``"cpu"`` (a model not measured), ``"gpu"``, or a :class:`BackendMemory` as it is."""
    if isinstance(backend, BackendMemory):
        return backend
    if backend not in ("cpu", "gpu"):
        raise InvalidArgumentError(f"backend must be 'cpu', 'gpu' or a BackendMemory, got {backend!r}")
    return GPU if backend == "gpu" else UNMEASURED_CPU


@dataclass(frozen=True)
class SlideBudget:
    """What a slide claims and what processing it needs (for messages, ``info`` and tests)."""

    size_mm: tuple[float, float]
    max_slide_mm: float
    model_px: tuple[int, int]  # the slide at the model's resolution
    model_mpp: float
    needed_bytes: int
    machine_bytes: int | None
    #: What ``needed_bytes`` is made of: "map", "tiles", "reader", "model", "backend" (bytes).
    parts: tuple[tuple[str, int], ...] = ()
    #: Where the model and backend parts come from (:attr:`BackendMemory.basis`).
    backend_basis: str = ""

    @property
    def size_problem(self) -> str | None:
        w, h = self.size_mm
        if max(w, h) <= self.max_slide_mm:
            return None
        return (f"the slide claims {w:.1f} x {h:.1f} mm, larger than any glass slide (sides above "
                f"{self.max_slide_mm:g} mm are refused): its size or resolution metadata is probably wrong")

    @property
    def memory_problem(self) -> str | None:
        if self.machine_bytes is None or self.needed_bytes <= self.machine_bytes:
            return None
        w, h = self.model_px
        what = {"map": f"its probability map of {w} x {h} px at {self.model_mpp:g} µm/px, merged and written",
                "tiles": "the tiles in flight", "reader": "the reader's decoded tiles and blocks",
                "model": "the loaded model", "backend": "the model's working memory for one tile"}
        parts = ", ".join(f"{what.get(k, k)} {v / GB:.1f} GB" for k, v in self.parts if v >= 0.05 * GB)
        unmeasured = ("; the model's working memory was not measured, so it was taken as the paper's network's: "
                      "measure it with `python -m tseg.export.working_memory MODEL.onnx`"
                      if self.backend_basis == UNMEASURED_CPU.basis else "")
        return (f"processing it needs about {self.needed_bytes / GB:.1f} GB of memory ({parts}), more than the "
                f"{self.machine_bytes / GB:.1f} GB this machine (or its container) has for it{unmeasured}")

    def as_dict(self) -> dict[str, Any]:
        return {"size_mm": [round(v, 4) for v in self.size_mm], "max_slide_mm": self.max_slide_mm,
                "memory_needed_gb": round(self.needed_bytes / GB, 2),
                "memory_parts_gb": {k: round(v / GB, 2) for k, v in self.parts},
                "memory_available_gb": round(self.machine_bytes / GB, 2) if self.machine_bytes else None,
                "memory_model": self.backend_basis,
                "problems": [p for p in (self.size_problem, self.memory_problem) if p]}


def slide_budget(size_mm: tuple[float, float], model_px: tuple[int, int], model_mpp: float = 1.0,
                 tile_px: int = 7680, tiles_in_flight: int = 4, max_slide_mm: float = MAX_SLIDE_MM,
                 machine_bytes: int | None = None, reader: int = 0,
                 backend: str | BackendMemory = "cpu") -> SlideBudget:
    """The :class:`SlideBudget` of a slide of ``size_mm`` that is ``model_px`` at the model's
    resolution, read in tiles of ``tile_px`` with ``reader`` bytes of reader buffers
    (:func:`reader_bytes`) on ``backend`` (a :class:`BackendMemory`, or "cpu" for a model not
    measured, or "gpu": :func:`as_backend_memory`); ``machine_bytes`` None:
    :func:`machine_memory_bytes`."""
    if not (isinstance(max_slide_mm, (int, float)) and math.isfinite(max_slide_mm) and max_slide_mm > 0):
        raise InvalidArgumentError(f"max_slide_mm must be a positive number of mm, got {max_slide_mm!r}")
    memory = as_backend_memory(backend)
    w, h = model_px
    tile = min(tile_px, w) * min(tile_px, h)  # the largest tile: a slide smaller than one is one tile
    parts = (("map", int(BYTES_PER_MODEL_PIXEL * w * h)), ("tiles", int(BYTES_PER_TILE_PIXEL * tile * tiles_in_flight)),
             ("reader", int(reader)), ("model", memory.model_bytes), ("backend", memory.working_bytes(tile)))
    needed = sum(v for _, v in parts)
    return SlideBudget(size_mm, float(max_slide_mm), (int(w), int(h)), float(model_mpp), needed,
                       machine_bytes if machine_bytes is not None else machine_memory_bytes(), parts, memory.basis)


def check_budget(path: Any, budget: SlideBudget) -> None:
    """Refuse a slide whose :class:`SlideBudget` has a problem (size first), before work."""
    if budget.size_problem:
        raise ImplausibleSizeError(path, budget.size_problem + ".",
                                   {"api": "If it is real, pass max_slide_mm= (or the right mpp=).",
                                    "cli": "If it is real, pass --max-slide-mm (or the right --mpp)."})
    if budget.memory_problem:
        raise SlideTooLargeError(path, budget.memory_problem + ". Process it on a machine with more memory.")


def budget_for(slide: Any, model_mpp: float = 1.0, tile_px: int = 7680, tiles_in_flight: int = 4,
               max_slide_mm: float = MAX_SLIDE_MM, machine_bytes: int | None = None,
               backend: str | BackendMemory = "cpu") -> SlideBudget:
    """The :class:`SlideBudget` of an open :class:`~tseg.runtime.wsi.slide.Slide` for a model at
    ``model_mpp`` with ``tile_px`` tiles on ``backend`` (``tseg-rt info``: the paper's 1 µm/px and
    7680 px, on the CPU); the reader's part from the slide's largest chunk (``largest_chunk()`` of
    its source: bytes decoded, chunks in its level)."""
    w0, h0 = slide.dimensions
    fx, fy = model_mpp / slide.mpp_x, model_mpp / slide.mpp_y
    model_px = (max(1, int(w0 / max(fx, 1.0))), max(1, int(h0 / max(fy, 1.0))))  # never more than level 0
    largest = getattr(slide.source, "largest_chunk", None)
    chunk, chunks = largest() if largest is not None else (DEFAULT_CHUNK_BYTES, 1)
    reader = reader_bytes(chunk, chunks, slide.reader_threads, slide.block_px)
    return slide_budget(slide.size_mm(), model_px, model_mpp, tile_px, tiles_in_flight, max_slide_mm, machine_bytes,
                        reader, backend)
