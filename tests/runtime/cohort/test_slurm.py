"""``docs/tseg-rt-array.sbatch`` under a real single-node Slurm (``tests/slurm.py``), as a user meets it.

The project's script is submitted as docs/cohorts.md says (``sbatch --array=0-2 SCRIPT SLIDES RESULTS
[run options]``, from a folder of one's own, the venv not active and named by ``TSEG_RT_VENV``),
with a dependent report job, for a generated cohort: three small slides and one large one, run by
a test-only model that is the colour model plus work that changes nothing (outputs identical),
so that the large slide is still running when its task is cancelled. Then: the cancelled task
stopped mid-slide and cleaned up (SIGTERM), the report job named the slide not run and its shard
and exited 3, the resubmitted task (``SHARDS=3 sbatch --array=K``, venv active) finished it and
skipped the rest of its shard, a finished task requeued (as preemption does) appended to its log
and skipped its slide, every slide ran to completion exactly once, byte-identical to a local run,
and ``tseg-rt report --slides`` finds the cohort complete (exit 0) with each slide's Slurm task
and host in the ``worker`` column. A second test: the two mistakes a user makes first (a partial
array without ``SHARDS``, no tseg-rt to be found) stop each task at once with the fix in its log.

The script's own resource lines are used as written, except where this machine is smaller than
them (fewer than 2 CPUs or 12 GB): then ``--cpus-per-task`` / ``--mem`` are given on the sbatch
command line, as the script's header tells a site to do.

Without Slurm (or not as root) the module is skipped with the reason; on CI (``$CI``) that is a
failure (``.ci/run`` installs ``slurm-wlm`` and ``munge``).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, make_slow_model, make_square_slide
from requirements import require
from slurm import SlurmCluster, unavailable
from tseg.runtime.cohort.batch import run_batch
from tseg.runtime.cohort.locks import read_holder
from tseg.runtime.cohort.shard import shard_index
from tseg.runtime.execution.segmenter import Segmenter
from tseg.runtime.outputs.summary import SUMMARY

pytestmark = pytest.mark.slow

SCRIPT = REPO / "docs" / "tseg-rt-array.sbatch"
SHARDS = 3
VENV = Path(sys.prefix)
TSEG_RT = VENV / "bin" / "tseg-rt"


@pytest.fixture(scope="module")
def slurm():
    require("slurm", unavailable())
    require("slurm", None if TSEG_RT.is_file() else f"the jobs run the tseg-rt of the venv running the tests, and "
                                                    f"{TSEG_RT} does not exist (run pytest with the venv's python)")
    cluster = SlurmCluster()
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    slides = root / "cohort"
    slides.mkdir()
    big = slides / "big.tiff"
    make_square_slide(big, width_um=5000, height_um=3500, tissue_um=(100, 100, 4800, 3300),
                      square_um=(1000, 1000, 1500, 1000))
    # Shards follow the slides' paths, which the temporary folder changes from run to run: name
    # one small slide for each shard, so that every task has work, and the large slide's shard
    # a small slide sorted before it (finished before the cancel, skipped after the resubmission).
    for k, (square, seed) in enumerate((((600, 400, 500, 400), 0), ((200, 200, 300, 300), 2),
                                        ((300, 300, 400, 200), 3))):
        prefix = "a" if k == shard_index(big, SHARDS) else "s"
        name = next(f"{prefix}{i}" for i in range(1000) if shard_index(slides / f"{prefix}{i}.tiff", SHARDS) == k)
        make_square_slide(slides / f"{name}.tiff", square_um=square, seed=seed)
    reference = root / "reference"
    found = sorted(slides.iterdir())
    slow = make_slow_model(root / "slow.onnx")  # the same model as the jobs: the overlay's legend names it
    local = run_batch(found, reference, Segmenter(slow, providers="cpu"))
    assert all(o.status == "done" for o in local)
    return {"root": root, "slides": slides, "found": found, "reference": reference, "slow": slow}


def user_env(venv_active: bool, **extra: str) -> dict[str, str]:
    """A user's shell: the venv on PATH (``activate``) or not at all, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "TSEG_RT", "TSEG_RT_VENV", "SHARDS")}
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p and Path(p) != VENV / "bin"]
    if venv_active:
        path.insert(0, str(VENV / "bin"))
        env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = os.pathsep.join(path)
    env.update(extra)
    return env


def site_resources(cluster: SlurmCluster) -> list[str]:
    """sbatch options for a node smaller than the script's default request (2 CPUs, 12 GB)."""
    extra = []
    if cluster.node_cpus() < 2:
        extra.append("--cpus-per-task=1")
    if cluster.node_memory_mb() < 12 * 1024:
        extra.append(f"--mem={cluster.node_memory_mb() // 2}M")
    return extra


def table(log: str) -> list[tuple[str, str]]:
    """(slide, status) rows of the results tables in a task's log."""
    rows = []
    for line in log.splitlines():
        for bar in ("│", "|"):
            cells = [c.strip() for c in line.split(bar)[1:-1]]
            if len(cells) == 6 and cells[1] in ("done", "failed", "skipped", "post-processed"):
                rows.append((cells[0], cells[1]))
    return rows


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != SUMMARY}


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".lock")]


def wait_for(path: Path, cluster: SlurmCluster, jobs: list[str], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline or not cluster.active(jobs):
            raise AssertionError(f"{path} never appeared while {jobs} ran\n" + cluster.logs())
        time.sleep(0.05)


def wait_for_holder(lock: Path, cluster: SlurmCluster, jobs: list[str], timeout_s: float = 60.0) -> dict:
    """What the task holding ``lock`` wrote into it, once it names its Slurm task: the file is
    created and locked before its holder is written, and a loaded machine may take a while."""
    deadline = time.monotonic() + timeout_s
    holder: dict = {}
    while True:
        holder = read_holder(lock) or {}
        if "slurm" in holder:
            return holder
        if time.monotonic() > deadline or not cluster.active(jobs):
            raise AssertionError(f"{lock} never named its Slurm task while {jobs} ran (holder: {holder})\n"
                                 + cluster.logs())
        time.sleep(0.05)


def test_an_array_job_cancelled_mid_slide_and_resubmitted_runs_every_slide_once(slurm, cohort, tmp_path):
    submit = tmp_path / "submit"  # where the user runs sbatch: the logs go here
    submit.mkdir()
    results = tmp_path / "results"
    slides, big = cohort["slides"], cohort["slides"] / "big.tiff"
    run_args = [str(slides), str(results), "--engine", str(cohort["slow"]), "--providers", "cpu"]
    resources = site_resources(slurm)

    # 1. The submission of docs/cohorts.md: the venv not active, named by TSEG_RT_VENV; a dependent report job.
    job = slurm.sbatch([f"--array=0-{SHARDS - 1}", *resources, str(SCRIPT), *run_args], submit,
                       user_env(False, TSEG_RT_VENV=str(VENV)))
    report_job = slurm.sbatch([f"--dependency=afterany:{job}", *resources, "--wrap",
                               f"{TSEG_RT} report {results} --slides {slides} --shards {SHARDS}"], submit,
                              user_env(False))

    # 2. Cancel the task working on the large slide, mid-slide: its lock says which task it is.
    lock = results / ".big.lock"
    wait_for(lock, slurm, [job])
    holder = wait_for_holder(lock, slurm, [job])
    task = shard_index(big, SHARDS)
    assert holder["slurm"].split()[0] == f"{job}_{task}" and holder["host"], holder
    slurm.scancel(f"{job}_{task}")
    slurm.wait([job, report_job], timeout_s=240)

    done = slurm.finished()
    assert done[f"{job}_{task}"]["JobState"] == "CANCELLED", done
    for k in set(range(SHARDS)) - {task}:
        assert (done[f"{job}_{k}"]["JobState"], done[f"{job}_{k}"]["ExitCode"]) == ("COMPLETED", "0:0"), done
    cancelled_log = (submit / f"tseg-rt-{job}_{task}.log").read_text()
    assert "terminated (SIGTERM" in cancelled_log and f"while processing {big}" in cancelled_log, cancelled_log
    assert "partial outputs were removed" in cancelled_log and "Traceback" not in cancelled_log, cancelled_log
    assert not (results / "big").exists() and leftovers(results) == [], sorted(p.name for p in results.iterdir())

    # 3. The report job knew the cohort: the slide not run, its shard, exit status 3.
    report_log = (submit / f"slurm-{report_job}.out").read_text()
    assert (done[report_job]["JobState"], done[report_job]["ExitCode"]) == ("FAILED", "3:0"), (done, report_log)
    assert "4 slide(s): 3 finished, 0 failed, 1 not run, 0 running" in report_log, report_log
    assert f"not run: {big}: no result in {results}; shard {task} of {SHARDS}" in report_log, report_log
    assert f"sbatch --array={task} with SHARDS={SHARDS}" in report_log, report_log

    # 4. Resubmit that task as the report says, the venv active this time.
    again = slurm.sbatch([f"--array={task}", *resources, str(SCRIPT), *run_args], submit,
                         user_env(True, SHARDS=str(SHARDS)))
    slurm.wait([again], timeout_s=240)
    assert (slurm.finished()[f"{again}_{task}"]["ExitCode"]) == "0:0"
    again_log = (submit / f"tseg-rt-{again}_{task}.log").read_text()
    rows = table(again_log)
    skipped = next(p.stem for p in cohort["found"] if p != big and shard_index(p, SHARDS) == task)
    assert rows == [(skipped, "skipped"), ("big", "done")], again_log

    # 5. A finished task requeued (as preemption would): its log is appended to, not truncated,
    # and the second attempt skips what the first finished.
    requeued = next(k for k in range(SHARDS) if k != task)
    log_before = (submit / f"tseg-rt-{job}_{requeued}.log").read_text()
    slurm.requeue(f"{job}_{requeued}")
    slurm.wait([job], timeout_s=120)
    log_after = (submit / f"tseg-rt-{job}_{requeued}.log").read_text()
    assert log_after.startswith(log_before) and "attempt 1;" in log_before and "attempt 2;" in log_after, log_after
    assert table(log_after[len(log_before):]) == [(n, "skipped") for n, _ in table(log_before)], log_after

    # 6. Every slide once, finished, byte-identical to a local run, made by the task of its shard:
    # the tables of the tasks that ended (the cancelled task printed none: it finished `skipped`
    # before it was cancelled, and its result records that task).
    logs = [p.read_text() for p in sorted(submit.glob("tseg-rt-*.log"))]
    ran = [name for log in logs for name, status in table(log) if status == "done"]
    assert sorted(ran + [skipped]) == sorted(p.stem for p in cohort["found"]), ran
    assert "1 slide(s) finished, 0 failed, 1 left" in cancelled_log, cancelled_log
    made = sorted(p.name for p in results.iterdir() if not p.name.startswith(".") and p.is_dir())
    assert made == sorted(p.stem for p in cohort["found"]) and leftovers(results) == []
    for slide in cohort["found"]:
        assert files(results / slide.stem) == files(cohort["reference"] / slide.stem), slide.name
        worker = json.loads((results / slide.stem / SUMMARY).read_text())["worker"]
        first = again if slide == big else job  # the skipped slide: still the first task's result
        assert worker.split()[1] == f"{first}_{shard_index(slide, SHARDS)}", worker

    # 7. The cohort's report, from the command line: complete, exit 0, the Slurm task of each slide.
    r = subprocess.run([str(TSEG_RT), "report", str(results), "--slides", str(slides), "--shards", str(SHARDS)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "4 slide(s): 4 finished, 0 failed, 0 not run, 0 running" in r.stdout, r.stdout
    with open(results / "cohort.csv", newline="", encoding="utf-8") as fh:
        report_rows = list(csv.DictReader(fh))
    assert sorted(row["name"] for row in report_rows) == sorted(p.stem for p in cohort["found"])
    assert all(row["status"] == "done" and row["worker"].startswith("slurm ") for row in report_rows), report_rows


def test_a_partial_array_without_shards_or_without_tseg_rt_stops_with_the_fix(slurm, cohort, tmp_path):
    """Two mistakes a user makes, each a task that fails at once with the fix in its log (exit 2)."""
    submit = tmp_path / "submit"
    submit.mkdir()
    resources = site_resources(slurm)
    args = [str(SCRIPT), str(cohort["slides"]), str(tmp_path / "results")]
    partial = slurm.sbatch(["--array=1", *resources, *args], submit, user_env(True))
    # No venv active, none named, and no .venv where sbatch ran.
    lost = slurm.sbatch(["--array=0-1", *resources, *args], submit, user_env(False))
    slurm.wait([partial, lost], timeout_s=120)
    done = slurm.finished()
    assert done[f"{partial}_1"]["ExitCode"] == "2:0", done
    log = (submit / f"tseg-rt-{partial}_1.log").read_text()
    assert "is not 0-(N-1)" in log and "SHARDS=N" in log, log
    for k in (0, 1):
        assert done[f"{lost}_{k}"]["ExitCode"] == "2:0", done
        log = (submit / f"tseg-rt-{lost}_{k}.log").read_text()
        assert "no tseg-rt found" in log and "TSEG_RT_VENV=" in log, log
    assert not (tmp_path / "results").exists()  # nothing ran
