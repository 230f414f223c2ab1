"""What the HTTP service costs and gives, against `tseg-rt run` on the same slides in the same run.

    python -m benchmarks.service [--quick] [--queued N] [--json F]

Small synthetic slides (1.5 x 1.1 mm at 0.5 µm/px, one tile each), the bundled demonstration model
on ONNX Runtime CPU, fresh results folders. Measured:

* ``run_cold``: one `tseg-rt run SLIDE` process per slide, as software without the service would
  call it (interpreter start, imports, model load, the slide): seconds per slide.
* ``run_batch``: one `tseg-rt run` process over the queued slides: seconds per slide (its start-up
  amortised); ``run_batch_warm``: the same work in this process with the model loaded beforehand
  (:func:`tseg.runtime.cohort.batch.run_batch`, what every job runs): the per-slide baseline.
* ``service_sequential``: a warm `tseg-rt serve` (started and ready beforehand, not counted):
  submit one slide, wait for its job (``GET /v1/jobs/{id}?wait=60``, a long poll), then the next; end-to-end seconds
  per slide. Each is alternated with the same slide through ``run_batch`` in this process (model
  loaded), so both see the same machine load: ``overhead_vs_run_s`` is the median of the pairs'
  differences. The service's start-up time to ready is
  reported apart. Time to first tile: from the job's start, and from submission.
* ``service_queued``: the same N slides submitted at once; seconds from the first submission to
  the last success, per slide; alternated with the same slides through ``run_batch`` in this
  process (``--rounds``, the best of each), and the ratio of the two (and to ``run_batch``).
* ``status_latency``: while a second round of N slides is processed, a concurrency sweep in the
  manner of Triton's perf_analyzer: C clients (C = 1, 2, 4, 8, 16) each call
  ``GET /v1/jobs/{id}`` back to back for a fixed number of requests (keep-alive connections);
  p50 / p99 latency in ms and requests per second at each C. Client and service share the
  machine's cores (as a scanner's software on the same workstation would).
* ``memory``: the service's resident memory when ready and its peak (``VmHWM``) at the end; the
  peak of one cold `tseg-rt run` process (``ru_maxrss`` of the child).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import cached_slide, write_json

CLI = [sys.executable, "-m", "tseg.runtime.cli"]


def _slides(count: int) -> list[Path]:
    return [cached_slide("service", seed=300 + i, width_mm=1.5, height_mm=1.1, mpp=0.5, n_tumours=1)
            for i in range(count)]


def _quantile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))]


def _status_kb(pid: int, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1e3
    except OSError:
        pass
    return None


class Service:
    """A `tseg-rt serve` subprocess on a free loopback port."""

    def __init__(self, root: Path, out: Path) -> None:
        self.out = out
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([*CLI, "serve", "--root", str(root), "--out", str(out), "--port", "0",
                                      "--no-report", "--providers", "cpu"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import httpx

        info = out / ".tseg-service" / "service.json"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tseg-rt serve exited with {self.proc.returncode}")
            try:
                data = json.loads(info.read_text())
            except (OSError, ValueError):
                data = {}
            if data.get("pid") == self.proc.pid:
                try:
                    if httpx.get(data["url"] + "/v1/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.02)
        self.ready_s = time.perf_counter() - t0
        self.url = data["url"]

    def client(self):  # noqa: ANN201
        import httpx

        # Idle connections dropped after 2 s: the service closes them after 5 s, httpx's default too.
        return httpx.Client(base_url=self.url, timeout=60.0, limits=httpx.Limits(keepalive_expiry=2))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def _wait(client: Any, job_id: str) -> dict:
    """The job once it has ended (long polls: ``?wait=60``)."""
    while True:
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
        if job["state"] in ("success", "failure", "cancelled"):
            if job["state"] != "success":
                raise RuntimeError(f"job failed: {job}")
            return job


def _sweep(url: str, job_id: str, levels: list[int], requests: int, running: Any) -> list[dict[str, Any]]:
    import httpx

    rows = []
    for clients in levels:
        latencies: list[float] = []
        lock = threading.Lock()

        def worker() -> None:
            mine = []
            with httpx.Client(base_url=url, timeout=60.0, limits=httpx.Limits(keepalive_expiry=2)) as c:
                c.get(f"/v1/jobs/{job_id}")  # connect first: measure requests, not TCP set-up
                for _ in range(requests):
                    t0 = time.perf_counter()
                    r = c.get(f"/v1/jobs/{job_id}")
                    mine.append(time.perf_counter() - t0)
                    assert r.status_code == 200
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=worker) for _ in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        rows.append({"clients": clients, "requests": len(latencies), "p50_ms": round(1e3 * _quantile(latencies, 0.5), 2),
                     "p99_ms": round(1e3 * _quantile(latencies, 0.99), 2), "requests_per_s": round(len(latencies) / wall, 1),
                     "job_running_at_end": running() > 0})
        print(f"  status calls, {clients} client(s): p50 {rows[-1]['p50_ms']} ms, p99 {rows[-1]['p99_ms']} ms")
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 slides, a short sweep (a smoke run)")
    parser.add_argument("--queued", type=int, default=None, help="slides queued at once (default 50; quick 10)")
    parser.add_argument("--cold", type=int, default=None, help="cold `tseg-rt run` processes (default 5; quick 2)")
    parser.add_argument("--rounds", type=int, default=None, help="queued rounds, alternating with the in-process "
                                                                   "run (default 3; quick 1)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    queued = args.queued or (10 if args.quick else 50)
    cold = args.cold or (2 if args.quick else 5)
    sequential = min(queued, 10)
    levels = [1, 4, 16] if args.quick else [1, 2, 4, 8, 16]
    requests = 50 if args.quick else 200
    slides = _slides(queued)
    work = Path(tempfile.mkdtemp(prefix="tseg-service-bench-"))
    root = work / "slides"
    root.mkdir()
    for s in slides:  # copies (links out of the root are refused); a second for the second queued round
        shutil.copy(s, root / s.name)
        shutil.copy(s, root / f"again-{s.name}")
    result: dict[str, Any] = {"slides": {"count": queued, "size_mm": [1.5, 1.1], "mpp": 0.5, "tiles_each": 1},
                              "machine": {"cpus": os.cpu_count()}}
    try:
        cold_s = []
        for i in range(cold):
            t0 = time.perf_counter()
            subprocess.run([*CLI, "run", str(slides[i]), "--out", str(work / f"cold-{i}"), "--no-report",
                            "--no-progress", "--providers", "cpu"], check=True, capture_output=True)
            cold_s.append(time.perf_counter() - t0)
        result["run_cold"] = {"per_slide_s": round(statistics.median(cold_s), 3), "runs": [round(v, 3) for v in cold_s],
                              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e3, 1)}
        t0 = time.perf_counter()
        subprocess.run([*CLI, "run", *map(str, slides), "--out", str(work / "batch"), "--no-report", "--no-progress",
                        "--providers", "cpu"], check=True, capture_output=True)
        batch = time.perf_counter() - t0
        result["run_batch"] = {"wall_s": round(batch, 2), "per_slide_s": round(batch / queued, 3)}
        from tseg.runtime.cohort.batch import run_batch
        from tseg.runtime.execution.segmenter import Segmenter

        seg = Segmenter(None, providers="cpu")  # the same work in this process, model loaded beforehand
        run_batch(slides[-1:], work / "warm-up", seg)
        t0 = time.perf_counter()
        run_batch(slides, work / "warm", seg)
        warm = time.perf_counter() - t0
        result["run_batch_warm"] = {"wall_s": round(warm, 2), "per_slide_s": round(warm / queued, 3)}
        print(f"run: cold {result['run_cold']['per_slide_s']} s/slide, batch {result['run_batch']['per_slide_s']} "
              f"s/slide, in process with the model loaded {result['run_batch_warm']['per_slide_s']} s/slide")

        service = Service(root, work / "service")
        try:
            ready_rss = _status_kb(service.proc.pid, "VmRSS")
            with service.client() as c:
                latencies, direct, first_tile, first_tile_submit, runs = [], [], [], [], []
                for i, s in enumerate(slides[:sequential]):
                    # Alternating with the same slide in process, so that both see the same machine load.
                    for which in ((0, 1) if i % 2 else (1, 0)):
                        if which == 0:
                            t0 = time.perf_counter()
                            run_batch([s], work / f"direct-{i}", seg)
                            direct.append(time.perf_counter() - t0)
                            continue
                        t0 = time.perf_counter()
                        job = c.post("/v1/jobs", json={"path": str(root / s.name)}).json()
                        job = _wait(c, job["id"])
                        latencies.append(time.perf_counter() - t0)
                        first_tile.append(job["time_to_first_tile_s"])
                        queue_s = (_iso(job["started_at"]) - _iso(job["submitted_at"]))
                        first_tile_submit.append(queue_s + job["time_to_first_tile_s"])
                        runs.append(_iso(job["finished_at"]) - _iso(job["started_at"]))
                per_slide = statistics.median(latencies)
                overhead = statistics.median([a - b for a, b in zip(latencies, direct)])
                result["service_sequential"] = {
                    "slides": sequential, "per_slide_s": round(per_slide, 3),
                    "run_in_process_per_slide_s": round(statistics.median(direct), 3),
                    "overhead_vs_run_s": round(overhead, 3),
                    "job_run_s": round(statistics.median(runs), 3),
                    "time_to_first_tile_from_start_s": round(statistics.median(first_tile), 3),
                    "time_to_first_tile_from_submit_s": round(statistics.median(first_tile_submit), 3),
                    "start_to_ready_s": round(service.ready_s, 2)}
                print(f"service, one at a time: {result['service_sequential']}")
                walls, warms = [], []
                for r in range(rounds):  # alternating with the in-process run: the best of each
                    t0 = time.perf_counter()
                    run_batch(slides, work / f"round-{r}", seg)
                    warms.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    ids = [c.post("/v1/jobs", json={"path": str(root / s.name), "overwrite": True}).json()["id"]
                           for s in slides]
                    for job_id in ids:
                        _wait(c, job_id)
                    walls.append(time.perf_counter() - t0)
                wall, best_warm = min(walls), min(warms)
                result["service_queued"] = {"slides": queued, "rounds": rounds, "wall_s": round(wall, 2),
                                            "per_slide_s": round(wall / queued, 3),
                                            "slides_per_hour": round(3600 * queued / wall),
                                            "run_in_process_wall_s": round(best_warm, 2),
                                            "ratio_to_run_in_process": round(wall / best_warm, 3),
                                            "ratio_to_run_batch_cli": round(wall / batch, 3),
                                            "all_rounds_s": {"service": [round(v, 2) for v in walls],
                                                             "run_in_process": [round(v, 2) for v in warms]}}
                seg.close()
                print(f"service, {queued} queued: {result['service_queued']}")
                ids = [c.post("/v1/jobs", json={"path": str(root / f"again-{s.name}")}).json()["id"] for s in slides]
                sweep = _sweep(service.url, ids[len(ids) // 2], levels, requests,
                               lambda: c.get("/v1/info").json()["jobs"]["running"])
                for job_id in ids:
                    _wait(c, job_id)
                result["status_latency"] = {"while": f"{queued} slides queued and processed", "endpoint":
                                            "GET /v1/jobs/{id}", "requests_per_client": requests, "levels": sweep}
            result["memory"] = {"service_ready_rss_mb": ready_rss,
                                "service_peak_rss_mb": _status_kb(service.proc.pid, "VmHWM"),
                                "run_cold_peak_rss_mb": result["run_cold"]["peak_rss_mb"]}
            print(f"memory: {result['memory']}")
        finally:
            service.stop()
        same = all((work / "service" / s.stem / n).read_bytes() == (work / "batch" / s.stem / n).read_bytes()
                   for s in slides for n in ("mask.png", "probability.png", "tumour.geojson"))
        result["identical_to_run"] = same
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.json, result)
    return result


def _iso(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


if __name__ == "__main__":
    main()
