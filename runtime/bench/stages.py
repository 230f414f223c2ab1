"""Where the time of whole slides goes, which stage limits throughput, and what to do about it.

Pure functions over what the pipeline itself recorded: each slide's ``summary.json``
(``timings_s``, written by :class:`~tseg.runtime.execution.segmenter.Segmenter` and
:func:`~tseg.runtime.outputs.files.write_outputs`) and the wall time of
:func:`~tseg.runtime.cohort.runner.process_slide`. Nothing is re-run to be timed.

The stages (seconds summed over the slides):

* ``read``: opening the slide, reading its 5 µm/px overview and reading every tile at the model's
  resolution (``open_s + overview_s + read_s``);
* ``tissue``: the background segmentation (``background_s``);
* ``infer``: the backend's time on the tiles (``infer_s``: the inference loop less the time it
  waited for tiles to read or merge);
* ``merge``: accumulating tile outputs into the probability map (``merge_s``);
* ``postprocess``: smoothing, thresholds, pruning and polygons (``postprocess_s + polygons_s``);
* ``outputs``: writing the result files (``outputs_s``).

**Shares** are each stage's seconds over the sum of all stages' seconds, so they add up to 100 %:
where the work goes. Reading, inference and merging run at the same time in the tile pipeline
(:mod:`tseg.runtime.execution.pipeline`), so the shares are not a split of the wall clock; the
wall clock is in ``wall_s`` and the backend's use of it in ``backend_busy`` (infer seconds over
wall seconds).

**The limiting stage** is the one with the largest share: speeding up any other stage cannot
raise throughput by more than that stage's share. The advice follows from it (module
docstring of :func:`advice`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

STAGES = ("read", "tissue", "infer", "merge", "postprocess", "outputs")
_PARTS = {"read": ("open_s", "overview_s", "read_s"), "tissue": ("background_s",), "infer": ("infer_s",),
          "merge": ("merge_s",), "postprocess": ("postprocess_s", "polygons_s"), "outputs": ("outputs_s",)}
#: The backend is kept busy when reading and merging take at most this share of its time.
BUSY_TARGET = 0.9


def stage_seconds(timings: Mapping[str, Any]) -> dict[str, float]:
    """One slide's ``timings_s`` grouped into :data:`STAGES` (missing entries count 0)."""
    return {stage: float(sum(float(timings.get(k) or 0.0) for k in keys)) for stage, keys in _PARTS.items()}


def shares(seconds: Mapping[str, float]) -> dict[str, float]:
    """Each stage's percentage of the summed stage seconds (0 for all when nothing was timed)."""
    total = sum(seconds.values())
    return {k: (100.0 * v / total if total > 0 else 0.0) for k, v in seconds.items()}


def analyse(slides: Sequence[Mapping[str, Any]], backend: Mapping[str, Any], usable_cores: int | None,
            reader_threads: int | None) -> dict[str, Any]:
    """Totals, shares, slides/hour, backend busy fraction, limiting stage and advice.

    ``slides``: per slide, ``timings_s`` (its summary's), ``wall_s`` (the whole slide, files
    included) and optionally ``reading`` (:func:`tseg.runtime.bench.end_to_end.reading_facts`).
    ``backend``: the backend's ``describe()``. Slides that failed are not passed here."""
    if not slides:
        return {"slides": 0}
    seconds = {stage: 0.0 for stage in STAGES}
    wall = tile_wall = tile_read = 0.0
    tiles_run = 0
    for s in slides:
        for stage, v in stage_seconds(s["timings_s"]).items():
            seconds[stage] += v
        wall += float(s["wall_s"])
        tile_wall += float(s["timings_s"].get("wall_s") or 0.0)
        tile_read += float(s["timings_s"].get("read_s") or 0.0)
        tiles_run += int((s.get("tiles") or {}).get("tiles_run") or 0)
    share = shares(seconds)
    limiting = max(STAGES, key=lambda k: seconds[k])
    pipeline_slowest = max(tile_read, seconds["infer"], seconds["merge"])
    result: dict[str, Any] = {
        "slides": len(slides), "tiles_run": tiles_run, "wall_s": wall,
        "slides_per_hour": 3600.0 * len(slides) / wall if wall > 0 else None,
        "stage_seconds": seconds, "stage_shares_percent": share, "shares_sum_percent": sum(share.values()),
        "backend_busy": seconds["infer"] / wall if wall > 0 else None,
        "tile_stage_wall_s": tile_wall,
        "tile_stage_overlap": tile_wall / pipeline_slowest if pipeline_slowest > 0 else None,
        "limiting_stage": limiting,
    }
    result["advice"] = advice(result, backend, usable_cores, reader_threads, [s.get("reading") for s in slides])
    return result


def on_gpu(backend: Mapping[str, Any]) -> bool:
    """Whether the backend runs on a GPU (a TensorRT engine, or ONNX Runtime's CUDA/TensorRT provider)."""
    if backend.get("kind") == "tensorrt":
        return True
    providers = backend.get("providers") or []
    return bool(providers) and providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def cores_for_busy_backend(read_s: float, merge_s: float, infer_s: float, threads: int) -> int | None:
    """Cores at which reading and merging would keep the backend >= 90 % busy, **extrapolated**
    linearly from this run: ``threads`` reader threads worked ``read_s`` (core-seconds at most
    ``threads x read_s``) and one merge thread ``merge_s``. An upper bound when the threads were
    not all busy; None without inference time."""
    if infer_s <= 0:
        return None
    core_seconds = threads * read_s + merge_s
    return max(1, math.ceil(core_seconds / (BUSY_TARGET * infer_s)))


def advice(result: Mapping[str, Any], backend: Mapping[str, Any], usable_cores: int | None,
           reader_threads: int | None, reading: Sequence[Mapping[str, Any] | None]) -> list[str]:
    """What to change, given the limiting stage (most useful first).

    * ``infer`` on a CPU backend: move inference to a GPU (TensorRT engine or the CUDA provider);
      on a GPU: the GPU is the limit, as it should be: more or faster GPUs, not more cores.
    * ``read``: more reader threads (up to the cores), a pyramid level nearer 1 µm/px (the slide's
      decoded source pixels per network pixel are named), ``--level-tolerance`` where a level is
      within a few per cent, and the cores per GPU that would keep the backend busy
      (extrapolated).
    * ``merge``: more cores (the merge runs in parallel bands).
    * ``tissue``, ``postprocess``, ``outputs``: these run once per slide outside the tile pipeline:
      several slides at a time (``--workers``) overlap them with another slide's inference.
    """
    seconds = result["stage_seconds"]
    share = result["stage_shares_percent"]
    limiting = result["limiting_stage"]
    busy = result.get("backend_busy") or 0.0
    gpu = on_gpu(backend)
    lines: list[str] = []
    if limiting == "infer":
        if gpu:
            lines.append(f"The backend limits throughput ({share['infer']:.0f} % of the work; busy {100 * busy:.0f} % "
                         "of the wall time), as it should on a GPU: the CPU keeps up. More throughput needs a faster "
                         "GPU or more of them (`tseg-rt run --devices 0,1`), not more CPU cores.")
        else:
            lines.append(f"Inference on the CPU limits throughput ({share['infer']:.0f} % of the work). Run a "
                         "TensorRT engine on a GPU (`tseg-rt build-engine model.onnx -o model.plan`) or ONNX "
                         "Runtime's CUDA provider (onnxruntime-gpu, `--providers cuda`): on a CPU the paper's "
                         "network takes minutes per 7680² tile.")
        return lines
    what = {"read": "Reading slides", "merge": "Merging tile outputs", "tissue": "Background segmentation",
            "postprocess": "Post-processing", "outputs": "Writing the output files"}[limiting]
    lines.append(f"{what} limits throughput ({share[limiting]:.0f} % of the work); the backend is busy "
                 f"{100 * busy:.0f} % of the wall time.")
    if limiting == "read":
        threads = reader_threads or 0
        if usable_cores and threads and threads < usable_cores:
            lines.append(f"Raise `--reader-threads` (now {threads}; this process may use {usable_cores} cores): "
                         "tiles are read in blocks by that many threads.")
        for r in reading:
            if not r:
                continue
            ratio = r.get("source_pixels_per_network_pixel") or 1.0
            if ratio >= 1.5:
                lines.append(f"{r['name']} is read from pyramid level {r['level']} ({r['level_mpp']:.3g} µm/px): "
                             f"{ratio:.1f} source pixels are decoded per network pixel. A slide with a level at or "
                             "just below 1 µm/px (scanners commonly write a 4x level) reads that many times fewer.")
            if r.get("tolerance_percent") is not None:
                lines.append(f"{r['name']}: `--level-tolerance {r['tolerance_percent']}` would read level "
                             f"{r['tolerance_level']} ({r['tolerance_level_mpp']:.4g} µm/px, "
                             f"{r['tolerance_fewer_pixels']:.0f}x fewer pixels), resizing it up by under "
                             f"{r['tolerance_percent']} %: faster, but not the paper's exact reading (docs/performance.md).")
        if gpu and threads:
            cores = cores_for_busy_backend(seconds["read"], seconds["merge"], seconds["infer"], threads)
            if cores:
                lines.append(f"About {cores} CPU cores per GPU would keep this backend >= 90 % busy on such slides "
                             f"(extrapolated linearly from this run's {threads} reader threads; an upper bound).")
        elif not gpu:
            lines.append("With inference on a GPU, reading would limit even more: measure with the engine you "
                         "will deploy.")
    elif limiting == "merge":
        lines.append("More CPU cores: the merge runs in parallel bands on all of them.")
    else:
        lines.append("This stage runs once per slide, outside the tile pipeline: process two or more slides at a "
                     "time (`tseg-rt run --workers 2`, or per GPU with `--devices`) so that it overlaps another "
                     "slide's inference; more CPU cores per GPU.")
    return lines
