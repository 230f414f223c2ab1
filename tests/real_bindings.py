"""The real TensorRT and cuda-bindings Python bindings, for checking tseg-rt's calls on a CPU.

* TensorRT's bindings are small wheels on PyPI (``tensorrt-cu12-bindings``,
  ``tensorrt-cu13-bindings``: module ``tensorrt_bindings``); TensorRT's libraries are not
  (they come from NVIDIA's index). The bindings' ``tensorrt.so`` needs ``libnvinfer.so.N``,
  ``libnvonnxparser.so.N`` and ``libnvinfer_plugin.so.N`` for nine entry points only:
  :data:`STUB_SOURCE` defines them returning NULL/0, compiled here with the system C compiler
  under each soname, and loaded first with ``RTLD_GLOBAL`` by the driver, so that ``import
  tensorrt_bindings`` works for introspection (nothing can execute).
* cuda-bindings installs and imports without a GPU; the 13.x of the test environment is used as
  installed, 12.9.x is installed into the cache.

Wheels go to ``REPO/.cache/tseg-tests/`` (``$TSEG_TEST_CACHE``), fetched once with pip and reused;
concurrent test processes install each one once, under a lock (:func:`_pip_target`).
Where there is no C compiler or no registry, the checks are skipped with the reason, except on
CI (``$CI`` or ``$TSEG_REQUIRE_REAL_BINDINGS`` set), where that is a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from api_check import REPO
from requirements import require

#: TensorRT bindings version -> (PyPI package, library soname major, cuda-bindings major it pairs with).
TENSORRT = {
    "10.9.0.34": ("tensorrt-cu12-bindings", 10, 12),  # the floor: opset-21 GroupNormalization parsing
    "10.16.1.11": ("tensorrt-cu12-bindings", 10, 12),
    "11.4.0.106": ("tensorrt-cu13-bindings", 11, 13),
}
#: cuda-bindings major -> the requirement installed into the cache when the environment lacks it.
CUDA_BINDINGS = {12: "cuda-bindings>=12.9,<12.10", 13: "cuda-bindings>=13,<14"}

STUB_SOURCE = """\
/* Stand-ins for TensorRT's libraries: the nine symbols its Python bindings link to. */
#include <stddef.h>
void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void *logger, const char *lib_namespace) { return 0; }
"""
DRIVER = Path(__file__).resolve().parent / "api_surface_driver.py"


class Unavailable(Exception):
    """A prerequisite (compiler, registry) is missing: skip, or fail on CI."""


def cache_dir() -> Path:
    return Path(os.environ.get("TSEG_TEST_CACHE") or REPO / ".cache" / "tseg-tests")


MARKER = ".tseg-requirement"


def _pip_install(requirement: str, folder: Path) -> None:
    """``pip install --no-deps --target folder requirement``; :class:`Unavailable` when pip cannot."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--timeout", "20", "--retries", "1", "--target", str(folder), requirement]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
        raise Unavailable(f"pip could not fetch {requirement!r} (no registry, or no wheel for Python "
                          f"{sys.version_info.major}.{sys.version_info.minor} on this platform): {tail[0]}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed) while the block runs."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _installed(target: Path, requirement: str) -> bool:
    marker = target / MARKER
    try:
        return marker.read_text() == requirement
    except OSError:
        return False


def _pip_target(requirement: str, target: Path,
                install: Callable[[str, Path], None] = _pip_install) -> Path:
    """``requirement`` installed into ``target`` once (``install``: pip, by default), a marker
    file naming it; later calls reuse it.

    Test processes (pytest-xdist workers, two runs in one checkout) may ask for the same target
    at once: the install runs under an ``flock`` on ``.<target>.lock`` beside it, the marker is
    checked again under the lock (whoever waited finds the target made), and a target whose
    marker names ``requirement`` is never removed (another process may be importing from it);
    only one without a valid marker (an older requirement, a partial copy) is replaced."""
    if _installed(target, requirement):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if _installed(target, requirement):  # made by another process while this one waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            install(requirement, tmp)
            (tmp / MARKER).write_text(requirement)
            if target.exists() or target.is_symlink():
                shutil.rmtree(target)  # no valid marker: not in use by a run of this requirement
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone once renamed; left by a failed install
    return target


def tensorrt_bindings(version: str) -> Path:
    """A folder holding the real ``tensorrt_bindings`` package of ``version``."""
    package, major, _ = TENSORRT[version]
    # The folder's name starts with the library major: the driver loads stubs of that soname.
    return _pip_target(f"{package}=={version}", cache_dir() / "tensorrt" / version)


def cuda_bindings(major: int) -> Path | None:
    """A folder to put first on ``sys.path`` for cuda-bindings ``major`` (None: the installed one)."""
    try:
        import cuda.bindings

        if int(cuda.bindings.__version__.split(".")[0]) == major:
            return None
    except ImportError:
        pass
    return _pip_target(CUDA_BINDINGS[major], cache_dir() / f"cuda-bindings-{major}")


def stub_libraries(major: int) -> Path:
    """``libnvinfer.so.<major>``, ``libnvonnxparser.so.<major>``, ``libnvinfer_plugin.so.<major>``."""
    cc = next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)
    if cc is None:
        raise Unavailable("no C compiler (cc, gcc or clang) to build the stand-in TensorRT libraries")
    digest = hashlib.sha256(STUB_SOURCE.encode()).hexdigest()[:12]
    folder = cache_dir() / "stubs" / f"{major}-{digest}"
    names = [f"lib{lib}.so.{major}" for lib in ("nvinfer", "nvonnxparser", "nvinfer_plugin")]
    if all((folder / n).exists() for n in names):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f".stub.{os.getpid()}.c"  # this process's: another may be compiling its own
    source.write_text(STUB_SOURCE)
    try:
        for name in names:
            tmp = folder / f".{name}.{os.getpid()}"
            r = subprocess.run([cc, "-shared", "-fPIC", f"-Wl,-soname,{name}", "-o", str(tmp), str(source)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise Unavailable(f"{cc} could not build {name}: {r.stderr.strip()[-300:]}")
            tmp.replace(folder / name)  # atomic: a reader sees the whole library or none
    finally:
        source.unlink(missing_ok=True)
    return folder


def run_driver(work: Path, trt: Path | None = None, stubs: Path | None = None,
               cuda_path: Path | None = None) -> dict[str, Any]:
    """Run :mod:`api_surface_driver` in a fresh process (no visible CUDA device); its report."""
    out = work / "report.json"
    cmd = [sys.executable, str(DRIVER), "--out", str(out), "--work", str(work / "work")]
    if trt is not None:
        cmd += ["--trt", str(trt), "--stubs", str(stubs)]
    if cuda_path is not None:
        cmd += ["--cuda-path", str(cuda_path)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0 or not out.exists():
        raise AssertionError(f"the API-surface driver failed ({r.returncode}):\n{r.stderr[-4000:]}")
    report = json.loads(out.read_text())
    if "skipped" in report:
        pytest.skip(report["skipped"])
    return report


def tensorrt_report(version: str, work: Path) -> dict[str, Any]:
    """The driver's report for TensorRT ``version`` (with its cuda-bindings major)."""
    _, major, cuda_major = TENSORRT[version]
    try:
        stubs = stub_libraries(major)
        trt = tensorrt_bindings(version)
        cuda_path = cuda_bindings(cuda_major)
    except Unavailable as exc:
        require("real_bindings", str(exc))
    return run_driver(work, trt, stubs, cuda_path)


def cuda_report(major: int, work: Path) -> dict[str, Any]:
    try:
        cuda_path = cuda_bindings(major)
    except Unavailable as exc:
        require("real_bindings", str(exc))
    return run_driver(work, cuda_path=cuda_path)
