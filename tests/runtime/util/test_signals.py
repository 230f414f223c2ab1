"""SIGTERM (scancel, a time limit, preemption) stops a command as Ctrl-C does: the slide being
processed is named, its partial outputs removed, its lock released, exit status 143; in one
process, and with worker processes when the whole process group is signalled (as Slurm does)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import make_slow_model, make_square_slide
from tseg.runtime.cohort.outcomes import BatchInterrupted
from tseg.runtime.util.signals import EXIT_TERMINATED, Terminated, exit_status, stop_once, terminate_as_interrupt


def test_sigterm_raises_once_then_the_clean_up_is_left_alone():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = False
    with pytest.raises(Terminated) as stopped:
        with terminate_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # interrupted by the handler
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM during the clean-up: ignored
                time.sleep(0.05)
                cleaned = True
    assert cleaned and isinstance(stopped.value, KeyboardInterrupt) and exit_status(stopped.value) == 143
    assert exit_status(KeyboardInterrupt()) == 130 and EXIT_TERMINATED == 143
    assert signal.getsignal(signal.SIGTERM) is before  # restored
    stop = BatchInterrupted([], ["/s/x.svs"], ["/s/y.svs"], signal.SIGTERM)
    assert stop.message().startswith("terminated (SIGTERM: scancel, a time limit") and "/s/x.svs" in stop.message()


def test_a_worker_stops_on_the_first_of_sigint_and_sigterm_and_ignores_the_other():
    """Slurm signals the worker (SIGTERM) and its main process passes the stop on (SIGINT)."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    cleaned = False
    try:
        with pytest.raises(KeyboardInterrupt) as stopped:
            stop_once((signal.SIGINT, signal.SIGTERM))
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # arrives during the clean-up: ignored
                time.sleep(0.05)
                cleaned = True
        assert cleaned and not isinstance(stopped.value, Terminated)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    root = tmp_path_factory.mktemp("sigterm")
    (root / "in").mkdir()
    slides = [root / "in" / "big1.tiff", root / "in" / "big2.tiff"]
    for seed, slide in enumerate(slides):
        make_square_slide(slide, width_um=5000, height_um=3500, tissue_um=(100, 100, 4800, 3300),
                          square_um=(1000, 1000, 1500, 1000), seed=seed)
    return {"slides": slides, "model": make_slow_model(root / "slow.onnx")}


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".lock")]


def _run(slides: list[Path], model: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tseg.runtime.cli", "run", *map(str, slides), "--engine", str(model),
                             "--out", str(out), "--no-progress", "--providers", "cpu", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(paths: list[Path], proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.3)  # inside the tile loop


@pytest.mark.slow
def test_sigterm_mid_slide_removes_its_partial_outputs_and_exits_143(slow, tmp_path):
    out = tmp_path / "out"
    big = slow["slides"][0]
    proc = _run([big], slow["model"], out)
    _wait_for([out / ".big1.lock"], proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert f"terminated (SIGTERM: scancel, a time limit, preemption or a shutdown) while processing {big}" in stderr
    assert "partial outputs were removed" in stderr and "Traceback" not in stderr
    assert not (out / "big1").exists() and leftovers(out) == []


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_stops_every_worker_cleanly(slow, tmp_path):
    """Slurm signals every process of a job: the main process and its workers all get SIGTERM."""
    out = tmp_path / "out"
    proc = _run(slow["slides"], slow["model"], out, "--workers", "2")
    _wait_for([out / ".big1.lock", out / ".big2.lock"], proc)
    os.killpg(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "terminated (SIGTERM" in stderr and "Traceback" not in stderr
    assert not (out / "big1").exists() and not (out / "big2").exists() and leftovers(out) == []


def test_a_stop_inside_a_deferred_block_is_raised_at_its_end():
    """SIGTERM arriving while run_tiles starts its threads used to be raised inside
    Thread.start's lock handling ("RuntimeError: release unlocked lock", a traceback instead of
    the clean stop): within stops_deferred it is raised when the block ends, once."""
    import signal as sig

    from tseg.runtime.util.signals import Terminated, stop_once, stops_deferred

    previous = stop_once((sig.SIGTERM,))
    try:
        reached = []
        with pytest.raises(Terminated):
            with stops_deferred():
                os.kill(os.getpid(), sig.SIGTERM)
                for _ in range(1000):  # the handler runs between bytecodes: it must not raise here
                    reached.append(1)
        assert len(reached) == 1000
    finally:
        sig.signal(sig.SIGTERM, previous[sig.SIGTERM])
