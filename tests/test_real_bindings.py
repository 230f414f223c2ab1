"""The test cache's installs (tests/real_bindings.py): callers that ask for the same target at
once (pytest-xdist workers of one run) install it once, under a lock, and never remove a
target another caller may be importing from. A fake installer stands in for pip."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest

import real_bindings
from real_bindings import MARKER, Unavailable, _pip_target

REQ = "cuda-bindings>=12.9,<12.10"


def lock_of(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def lock_is_held(target: Path) -> bool:
    """Whether someone holds the target's lock (tried from a descriptor of our own)."""
    fd = os.open(lock_of(target), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_callers_at_once_install_once_under_the_lock(tmp_path):
    target = tmp_path / "cache" / "cuda-bindings-12"
    installs: list[str] = []
    start = threading.Barrier(4)

    def install(requirement: str, folder: Path) -> None:
        assert lock_is_held(target)
        installs.append(requirement)
        (folder / "cuda").mkdir()
        (folder / "cuda" / "__init__.py").write_text("")

    results: list[object] = []

    def call() -> None:
        start.wait()
        try:
            results.append(_pip_target(REQ, target, install=install))
        except BaseException as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [target] * 4
    assert installs == [REQ]
    assert (target / MARKER).read_text() == REQ and (target / "cuda" / "__init__.py").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == [".cuda-bindings-12.lock", "cuda-bindings-12"]


def test_a_caller_that_waited_for_the_lock_keeps_what_the_holder_made(tmp_path, monkeypatch):
    """The second xdist worker waits while the first installs; it then finds the target made
    and neither installs again nor removes it (the first may be importing from it)."""
    target = tmp_path / "cuda-bindings-12"
    waiting = threading.Event()
    real_locked = real_bindings._locked

    def locked(path: Path):
        waiting.set()  # checked the marker (none yet): now waits for the lock
        return real_locked(path)

    monkeypatch.setattr(real_bindings, "_locked", locked)

    def install(requirement: str, folder: Path) -> None:
        raise AssertionError("installed again")

    result: list[object] = []
    holder = os.open(lock_of(target), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        thread = threading.Thread(target=lambda: result.append(_pip_target(REQ, target, install=install)))
        thread.start()
        assert waiting.wait(timeout=60)
        target.mkdir()  # the holder's install, finished
        (target / "in_use.py").write_text("")
        (target / MARKER).write_text(REQ)
    finally:
        os.close(holder)
    thread.join()
    assert result == [target]
    assert (target / "in_use.py").exists()


def test_a_target_of_another_requirement_is_replaced_and_a_failed_install_leaves_nothing(tmp_path):
    target = tmp_path / "cuda-bindings-12"
    target.mkdir()
    (target / MARKER).write_text("cuda-bindings==12.8")
    (target / "old.py").write_text("")

    def fails(requirement: str, folder: Path) -> None:
        (folder / "partial").write_text("")
        raise Unavailable("no registry")

    with pytest.raises(Unavailable, match="no registry"):
        _pip_target(REQ, target, install=fails)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cuda-bindings-12.lock", "cuda-bindings-12"]

    def works(requirement: str, folder: Path) -> None:
        (folder / "new.py").write_text("")

    assert _pip_target(REQ, target, install=works) == target
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "new.py"]
    assert (target / MARKER).read_text() == REQ
