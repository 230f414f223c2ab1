"""Batches on Ray (``run_batch(ray=...)``, ``tseg-rt run --ray``) on one local Ray instance shared by
the module: the same results as a local run, a worker killed mid-slide, a slide that kills its
workers, resume across runs, Ctrl-C, and one backend per worker for many slides."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import make_colour_model, make_slow_model, make_square_slide
from tseg.runtime.cohort.batch import run_batch
from tseg.runtime.errors import ClusterError
from tseg.runtime.outputs.summary import SUMMARY
from tseg.runtime.cohort.progress import BatchProgress
from tseg.runtime.execution.segmenter import Segmenter

pytestmark = pytest.mark.slow  # every test here starts a process or a server, or takes seconds

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'tseg-rt[ray]'; CI installs it with [dev])")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module (2 CPUs: this machine's); its address for the CLI."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 1024 * 1024,
             configure_logging=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    d = root / "in"
    d.mkdir()
    make_square_slide(d / "a.tiff")
    make_square_slide(d / "b.tiff", square_um=(200, 200, 300, 300), seed=2)
    make_square_slide(d / "c.tiff", square_um=(300, 300, 400, 200), seed=3)
    (d / "broken.svs").write_bytes(b"\x00" * 1001)
    # A slide that takes a few seconds with the small-tile model (the kill tests need time).
    big = root / "big"
    big.mkdir()
    make_square_slide(big / "big.tiff", width_um=5000, height_um=3500, tissue_um=(100, 100, 4800, 3300),
                      square_um=(1000, 1000, 1500, 1000))
    model = make_colour_model(root / "colour.onnx")
    reference = root / "reference"
    slides = sorted(d.iterdir()) + [big / "big.tiff"]
    local = run_batch(slides, reference, Segmenter(model))
    return {"root": root, "in": d, "big": big / "big.tiff", "model": model, "reference": reference,
            "slides": slides, "local": local}


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != SUMMARY}


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".lock")]


def test_same_results_as_a_local_run_and_one_backend_per_worker(cluster, data, tmp_path):
    out = tmp_path / "out"
    bar = BatchProgress(len(data["slides"]), enabled=False, per_slide_tiles=False)
    outcomes = run_batch(data["slides"], out, ray="auto", engine=str(data["model"]), providers="cpu", workers=2,
                         events=bar)
    assert [(o.slide, o.name, o.status) for o in outcomes] == [(o.slide, o.name, o.status) for o in data["local"]]
    # The cohort's progress: every slide counted once, every tile of every worker counted.
    assert (bar.done, bar.failed, bar.running) == (len(outcomes) - 1, 1, 0)
    assert bar.tiles == sum(o.summary["tiles"]["tiles_total"] for o in outcomes if o.status == "done") > 0
    broken = next(o for o in outcomes if o.name == "broken")
    assert broken.error_cli == next(o for o in data["local"] if o.name == "broken").error_cli
    for o in outcomes:
        if o.status == "done":
            assert files(out / o.name) == files(data["reference"] / o.name), o.name  # byte-identical
            ours, theirs = (json.loads((f / o.name / SUMMARY).read_text()) for f in (out, data["reference"]))
            assert ours["areas"] == theirs["areas"] and ours["tiles"]["tiles_run"] == theirs["tiles"]["tiles_run"]
            assert o.worker and "pid" in o.worker
    assert len({o.worker for o in outcomes if o.worker}) <= 2
    assert leftovers(out) == []
    # One worker, several slides: all on one process, the backend loaded once.
    again = run_batch([data["in"] / n for n in ("a.tiff", "b.tiff", "c.tiff")], tmp_path / "one", ray="auto", engine=str(data["model"]), providers="cpu",
                      workers=1)
    assert [o.status for o in again] == ["done", "done", "done"] and len({o.worker for o in again}) == 1


def test_an_actor_loads_its_backend_once_for_many_slides(cluster, data, tmp_path):
    from tseg.runtime.cohort.ray_worker import worker_class

    actor = worker_class(ray).options(num_cpus=1).remote(str(data["model"]), "cpu", {}, 30, 0)
    (tmp_path / "out").mkdir()
    try:
        assert ray.get(actor.ready.remote())["error"] is None
        for slide in data["slides"][:2]:
            outcome, _logs, tiles = ray.get(actor.process.remote(str(slide), str(tmp_path / "out"), False, False, None))
            assert outcome.status == "done", outcome.error
            assert tiles == outcome.summary["tiles"]["tiles_total"] > 0  # this slide's tiles, returned with it
        stats = ray.get(actor.stats.remote())
        assert stats == {**stats, "backend_loads": 1, "slides": 2}
    finally:
        ray.kill(actor)


def _kill_holder(lock: Path, stop: threading.Event, killed: list[int], times: int) -> None:
    """SIGKILL whichever process holds ``lock`` (its pid is in the lock file), ``times`` times."""
    while not stop.is_set() and len(killed) < times:
        try:
            pid = json.loads(lock.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.02)
            continue
        if pid != os.getpid() and pid not in killed:
            time.sleep(0.3)  # inside the tile loop
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def test_a_worker_killed_mid_slide_is_replaced_and_the_slide_finishes(cluster, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_holder, args=(out / ".big.lock", stop, killed, 1))
    killer.start()
    try:
        outcomes = run_batch([data["big"], data["in"] / "a.tiff"], out, ray="auto", engine=str(data["model"]),
                             providers="cpu", workers=1)
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1
    big = outcomes[0]
    assert big.status == "done" and "worker(s) died" in big.detail, big
    assert outcomes[1].status == "done"
    assert files(out / "big") == files(data["reference"] / "big")
    assert leftovers(out) == []


def test_a_slide_that_kills_its_workers_fails_alone(cluster, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_holder, args=(out / ".big.lock", stop, killed, 2))
    killer.start()
    try:
        outcomes = run_batch([data["in"] / "a.tiff", data["big"], data["in"] / "b.tiff"], out, ray="auto",
                             engine=str(data["model"]), providers="cpu", workers=2)
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 2
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert "2 workers died while processing it" in outcomes[1].error and "big.tiff" in outcomes[1].error
    assert not (out / "big").exists() and leftovers(out) == []  # nothing that looks finished, nothing partial


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "tseg.runtime.cli", *map(str, args)], capture_output=True, text=True,
                          **kwargs)


def _table(stdout: str) -> list[tuple[str, str]]:
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 6 and cells[1] in ("done", "failed", "skipped", "post-processed"):
            rows.append((cells[0], cells[1], cells[2], cells[3], cells[4]))  # all but seconds
    return rows


def test_command_line_resume_and_exit_status_match_a_local_run(cluster, data, tmp_path):
    slides = data["in"]
    local = _cli("run", slides, "--engine", data["model"], "--out", tmp_path / "local", "--no-progress")
    out = tmp_path / "ray"
    first = _cli("run", slides, "--engine", data["model"], "--out", out, "--no-progress", "--ray", cluster,
                 "--providers", "cpu", "--workers", "2")
    assert first.returncode == local.returncode == 1, first.stderr  # the broken slide
    assert _table(first.stdout) == _table(local.stdout) and len(_table(local.stdout)) == 4
    assert [line for line in first.stderr.splitlines() if line.startswith("failed:")] == \
        [line for line in local.stderr.splitlines() if line.startswith("failed:")]
    assert (out / "report.html").exists() and (out / "cohort.csv").exists()
    second = _cli("run", slides, "--engine", data["model"], "--out", out, "--no-progress", "--ray", cluster,
                  "--providers", "cpu")
    assert [r[1] for r in _table(second.stdout)] == ["skipped", "skipped", "failed", "skipped"]
    third = _cli("run", slides, "--engine", data["model"], "--out", out, "--no-progress", "--ray", cluster,
                 "--providers", "cpu", "--low", "60")
    assert [r[1] for r in _table(third.stdout)] == ["post-processed", "post-processed", "failed", "post-processed"]
    assert third.returncode == 1


def test_ctrl_c_cancels_cleanly(cluster, data, tmp_path):
    out = tmp_path / "out"
    slow = make_slow_model(tmp_path / "slow.onnx")
    proc = subprocess.Popen([sys.executable, "-m", "tseg.runtime.cli", "run", str(data["big"]), "--engine",
                             str(slow), "--out", str(out), "--no-progress", "--ray", cluster, "--providers",
                             "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / ".big.lock").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted while processing" in stderr and "big.tiff" in stderr and "Traceback" not in stderr
    assert not (out / "big").exists() and leftovers(out) == []


def test_workers_that_cannot_load_the_model_stop_the_batch_with_the_reason(cluster, data, tmp_path):
    with pytest.raises(ClusterError, match="no Ray worker could load the model: .*no such model"):
        run_batch(data["slides"][:1], tmp_path / "out", ray="auto", engine=str(tmp_path / "missing.onnx"),
                  providers="cpu", workers=1)


def test_an_address_where_nothing_answers_is_refused_at_once(tmp_path, data):
    r = _cli("run", data["in"] / "a.tiff", "--engine", data["model"], "--out", tmp_path / "out", "--ray", "127.0.0.1:9",
             "--no-progress")
    assert r.returncode == 2 and "cannot connect to the Ray cluster at 127.0.0.1:9" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("run", data["in"], "--engine", data["model"], "--out", tmp_path / "out", "--ray", data["in"])
    assert r.returncode == 2 and "write --ray auto" in r.stderr  # a folder taken for the address
