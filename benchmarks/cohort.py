"""A cohort of small synthetic slides through ``--workers 2`` (local processes) and through Ray
(a local instance, 2 workers), in the same run: slides per hour, and the time per slide that
Ray adds. The baseline is the local run, measured in the same run on the same slides.

    python -m benchmarks.cohort [--quick] [--slides N] [--json F]

What is measured, per configuration (fresh output folders, the same slides, the bundled
demonstration model on ONNX Runtime CPU):

* ``batch_wall_s``: ``run_batch`` from call to return, including starting the workers and loading
  the model in each (processes spawned; Ray actors created); for Ray, with Ray already running;
* ``ray_start_s``: starting the local Ray instance (``ray.init``), reported apart: a cluster is
  started once, not per batch;
* ``slides_per_hour`` = slides / batch wall; ``mean_slide_s``: the time each worker spent on a
  slide (``SlideOutcome.seconds``), which is the same work in both;
* ``ray_overhead_per_slide_s`` = (Ray batch wall - local batch wall) / slides: what Ray adds per
  slide in this run (scheduling, actor start amortised over the cohort, progress polling).

The two configurations alternate (local, Ray, local, Ray, ...: ``--rounds 3``) and each figure is
the best (shortest) of its rounds, the run least disturbed by other jobs on a shared machine;
every round's wall time is listed too.

``per_slide_costs`` are what a capacity estimate needs: per slide, the seconds a worker spends
on everything but the network (``outcome seconds - infer_s``: opening, overview, background,
reading and resizing, merging, post-processing, polygons, writing the outputs), per megapixel at
the model's 1 µm/px, and each stage's busy seconds (medians over the slides of the best round).

The masks of both runs are compared byte for byte (``identical_masks``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import cached_slide, peak_rss_mb, write_json


def _slides(count: int, quick: bool) -> list[Path]:
    size = (2.0, 1.5) if quick else (4.0, 3.0)
    return [cached_slide("cohort", seed=100 + i, width_mm=size[0], height_mm=size[1], mpp=0.5, n_tumours=1)
            for i in range(count)]


def _run(slides: list[Path], out: Path, **kwargs: Any) -> dict[str, Any]:
    from tseg.runtime.cohort.batch import run_batch
    from tseg.runtime.models import default_model_path

    t0 = time.perf_counter()
    outcomes = run_batch(slides, out, None, engine=str(default_model_path()), providers="cpu",
                         quiet_worker_load=True, **kwargs)
    wall = time.perf_counter() - t0
    failed = [o.error for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(f"slides failed: {failed}")
    seconds = [o.seconds for o in outcomes]
    stages = ("open_s", "overview_s", "background_s", "read_s", "infer_s", "merge_s", "postprocess_s", "polygons_s")
    costs = {
        "size_mp_at_1mpp": [o.summary["slide"]["size_at_model_mpp"][0] * o.summary["slide"]["size_at_model_mpp"][1] / 1e6
                            for o in outcomes],
        "seconds_excluding_inference": [o.seconds - o.summary["timings_s"]["infer_s"] for o in outcomes],
        "stage_s": {k: [o.summary["timings_s"].get(k, 0.0) for o in outcomes] for k in stages},
        "outputs_s": [o.seconds - o.summary["timings_s"]["total_s"] for o in outcomes],
    }
    return {"batch_wall_s": wall, "slides_per_hour": 3600 * len(slides) / wall,
            "mean_slide_s": sum(seconds) / len(seconds),
            "workers_seen": len({o.worker for o in outcomes}),
            "tiles_run": sum(o.summary.get("tiles", {}).get("tiles_run", 0) for o in outcomes), "_costs": costs}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 tiny slides (a smoke run, not a measurement)")
    parser.add_argument("--slides", type=int, default=None, help="cohort size (default 12; quick 3)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None, help="alternations local/Ray (default 3; quick 1)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import logging

    import ray

    from tseg.runtime.cohort.ray_cluster import route_ray_logs

    route_ray_logs(logging.ERROR)
    count = args.slides or (3 if args.quick else 12)
    rounds = args.rounds or (1 if args.quick else 3)
    slides = _slides(count, args.quick)
    work = Path(tempfile.mkdtemp(prefix="tseg-cohort-bench-"))
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    try:
        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=128 * 1024 * 1024,
                 configure_logging=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        try:
            for r in range(rounds):
                runs["local"].append(_run(slides, work / f"local-{r}", workers=args.workers))
                runs["ray"].append(_run(slides, work / f"ray-{r}", workers=args.workers, ray="auto"))
        finally:
            ray.shutdown()
        identical = all((work / "local-0" / p.stem / name).read_bytes() == (work / "ray-0" / p.stem / name).read_bytes()
                        for p in slides for name in ("mask.png", "probability.png", "probability.tif"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(values: list[float]) -> float:
        v = sorted(values)
        return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2

    def summarise(kind: str) -> dict[str, Any]:
        best = min(runs[kind], key=lambda x: x["batch_wall_s"])
        wall = best["batch_wall_s"]
        return {"batch_wall_s": wall, "slides_per_hour": 3600 * count / wall, "mean_slide_s": best["mean_slide_s"],
                "rounds_batch_wall_s": [round(x["batch_wall_s"], 3) for x in runs[kind]],
                "workers_seen": best["workers_seen"], "tiles_run": best["tiles_run"]}

    local, on_ray = summarise("local"), summarise("ray")
    costs = min(runs["local"], key=lambda x: x["batch_wall_s"])["_costs"]
    excl = median(costs["seconds_excluding_inference"])
    size = median(costs["size_mp_at_1mpp"])
    per_slide_costs = {
        "size_mp_at_1mpp": size,
        "seconds_excluding_inference": excl,
        "seconds_excluding_inference_per_mp": excl / size,
        "stage_s": {k: median(v) for k, v in costs["stage_s"].items()},
        "outputs_s": median(costs["outputs_s"]),
        "note": f"medians over the {count} slides of the best local round, {args.workers} workers on {os.cpu_count()} CPUs",
    }
    on_ray["ray_start_s"] = ray_start
    on_ray["slides_per_hour_including_ray_start"] = 3600 * count / (on_ray["batch_wall_s"] + ray_start)
    out = {
        "benchmark": "cohort",
        "mode": "quick" if args.quick else "full",
        "slides": count,
        "slide_mm": [2.0, 1.5] if args.quick else [4.0, 3.0],
        "workers": args.workers,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "model": "bundled demonstration model, ONNX Runtime CPU",
        "local_processes": local,
        "ray_local_instance": on_ray,
        "ray_over_local_wall": on_ray["batch_wall_s"] / local["batch_wall_s"],
        "ray_overhead_per_slide_s": (on_ray["batch_wall_s"] - local["batch_wall_s"]) / count,
        "identical_masks": identical,
        "per_slide_costs": per_slide_costs,
        "peak_rss_mb_driver": peak_rss_mb(),
    }
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
