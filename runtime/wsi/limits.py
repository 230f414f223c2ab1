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
  (measured: ``python -m benchmarks.slide_memory``), plus the tiles in flight. More than the
  machine has (its physical memory, or the limit of the container or cgroup it runs in, or
  ``RLIMIT_AS``) is refused with :class:`~tseg.runtime.errors.SlideTooLargeError`, saying how much
  is needed and how much there is. The model's own working memory comes on top (the backend was
  loaded already, so it is part of what the process holds).

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
GB = 1e9


def machine_memory_bytes() -> int | None:
    """What this process may use at most: physical memory, lowered by a cgroup (v2 ``memory.max``
    or v1 ``memory.limit_in_bytes``) or ``RLIMIT_AS`` limit; None when unknown."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
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


@dataclass(frozen=True)
class SlideBudget:
    """What a slide claims and what processing it needs (for messages, ``info`` and tests)."""

    size_mm: tuple[float, float]
    max_slide_mm: float
    model_px: tuple[int, int]  # the slide at the model's resolution
    model_mpp: float
    needed_bytes: int
    machine_bytes: int | None

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
        return (f"processing it needs about {self.needed_bytes / GB:.1f} GB of memory (its probability map of "
                f"{w} x {h} px at {self.model_mpp:g} µm/px, merged and written, about {BYTES_PER_MODEL_PIXEL:g} bytes "
                f"a pixel, and the tiles in flight), more than the {self.machine_bytes / GB:.1f} GB this machine "
                "has for it")

    def as_dict(self) -> dict[str, Any]:
        return {"size_mm": [round(v, 4) for v in self.size_mm], "max_slide_mm": self.max_slide_mm,
                "memory_needed_gb": round(self.needed_bytes / GB, 2),
                "memory_available_gb": round(self.machine_bytes / GB, 2) if self.machine_bytes else None,
                "problems": [p for p in (self.size_problem, self.memory_problem) if p]}


def slide_budget(size_mm: tuple[float, float], model_px: tuple[int, int], model_mpp: float = 1.0,
                 tile_px: int = 7680, tiles_in_flight: int = 4, max_slide_mm: float = MAX_SLIDE_MM,
                 machine_bytes: int | None = None) -> SlideBudget:
    """The :class:`SlideBudget` of a slide of ``size_mm`` that is ``model_px`` at the model's
    resolution, read in tiles of ``tile_px``; ``machine_bytes`` None: :func:`machine_memory_bytes`."""
    if not (isinstance(max_slide_mm, (int, float)) and math.isfinite(max_slide_mm) and max_slide_mm > 0):
        raise InvalidArgumentError(f"max_slide_mm must be a positive number of mm, got {max_slide_mm!r}")
    w, h = model_px
    tile = min(tile_px, max(w, h)) ** 2
    needed = int(BYTES_PER_MODEL_PIXEL * w * h + BYTES_PER_TILE_PIXEL * tile * tiles_in_flight)
    return SlideBudget(size_mm, float(max_slide_mm), (int(w), int(h)), float(model_mpp), needed,
                       machine_bytes if machine_bytes is not None else machine_memory_bytes())


def check_budget(path: Any, budget: SlideBudget) -> None:
    """Refuse a slide whose :class:`SlideBudget` has a problem (size first), before work."""
    if budget.size_problem:
        raise ImplausibleSizeError(path, budget.size_problem + ".",
                                   {"api": "If it is real, pass max_slide_mm= (or the right mpp=).",
                                    "cli": "If it is real, pass --max-slide-mm (or the right --mpp)."})
    if budget.memory_problem:
        raise SlideTooLargeError(path, budget.memory_problem + ". Process it on a machine with more memory.")


def budget_for(slide: Any, model_mpp: float = 1.0, tile_px: int = 7680, tiles_in_flight: int = 4,
               max_slide_mm: float = MAX_SLIDE_MM, machine_bytes: int | None = None) -> SlideBudget:
    """The :class:`SlideBudget` of an open :class:`~tseg.runtime.wsi.slide.Slide` for a model at
    ``model_mpp`` with ``tile_px`` tiles (``tseg-rt info``: the paper's 1 µm/px and 7680 px)."""
    w0, h0 = slide.dimensions
    fx, fy = model_mpp / slide.mpp_x, model_mpp / slide.mpp_y
    model_px = (max(1, int(w0 / max(fx, 1.0))), max(1, int(h0 / max(fy, 1.0))))  # never more than level 0
    return slide_budget(slide.size_mm(), model_px, model_mpp, tile_px, tiles_in_flight, max_slide_mm, machine_bytes)
