"""Folder batches that resume and lose nothing (``tseg-rt run``).

* Inputs are files and folders; folders are searched recursively for the extensions OpenSlide
  and the tifffile path read (DICOM ``.dcm`` files only when named explicitly, since a DICOM
  slide is a folder of files). Files inside the output folder are ignored.
* Each slide's outputs go to ``OUT/<slide name>/`` (the file name without its extension; a
  second slide with the same name gets ``-<8 hex digits of its path's hash>`` appended).
* A slide whose ``summary.json`` exists is skipped unless ``overwrite``.
* A slide is processed under a per-slide lock (``OUT/.<name>.lock``, ``flock``), so two
  processes on the same output folder never write the same slide; the second skips it.
* Outputs are built in a hidden temporary folder and renamed into place when complete; a run
  killed at any point (SIGKILL included) leaves no folder that looks finished, and stale
  temporary folders are removed by the next run. Outputs are deterministic, so a rerun after
  a kill writes byte-identical files (``summary.json`` aside, which records timings).
* One bad slide never stops the batch: its error is recorded and the next slide runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import NoSlidesFoundError, OutputError, TsegError
from .outputs import SUMMARY, write_outputs

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide",
                  ".bif", ".btf", ".qptiff")
EXPLICIT_ONLY_SUFFIXES = (".dcm",)
_MULTI_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.btf")


def slide_stem(path: Path) -> str:
    name = path.name
    for multi in _MULTI_SUFFIXES:
        if name.lower().endswith(multi):
            return name[: -len(multi)]
    return path.stem


def find_slides(inputs: Iterable[str | os.PathLike[str]], exclude: Path | None = None) -> list[Path]:
    """Slide files among ``inputs`` (files as given; folders searched recursively), sorted."""
    found: list[Path] = []
    missing = []
    exclude_resolved = exclude.resolve() if exclude is not None else None
    for item in inputs:
        p = Path(item)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if not f.is_file() or any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if exclude_resolved is not None and exclude_resolved in f.resolve().parents:
                    continue
                if f.name.lower().endswith(SLIDE_SUFFIXES):
                    found.append(f)
        else:
            missing.append(str(p))
    if missing:
        raise NoSlidesFoundError(f"no such file or folder: {', '.join(missing)}")
    unique = sorted({f.resolve(): f for f in found}.values(), key=lambda f: str(f))
    if not unique:
        raise NoSlidesFoundError(
            "no slides found in " + ", ".join(str(i) for i in inputs)
            + f" (looked for {', '.join(SLIDE_SUFFIXES)}; name other files explicitly)")
    return unique


def output_names(slides: Sequence[Path]) -> list[str]:
    """``OUT`` sub-folder names: file stems, made unique with a short hash of the path."""
    names: list[str] = []
    seen: set[str] = set()
    for s in slides:
        name = slide_stem(s)
        if name in seen:
            name = f"{name}-{hashlib.sha1(str(s.resolve()).encode()).hexdigest()[:8]}"
        seen.add(name)
        names.append(name)
    return names


@dataclass
class SlideOutcome:
    slide: str
    name: str
    status: str  # done | skipped (exists) | locked | failed
    error: str | None = None
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped")


class SlideLock:
    """Exclusive, non-blocking per-slide lock; released on close or process death."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a+")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"{os.getpid()}\n")
        self._fh.flush()

    def release(self) -> None:
        if not self._fh.closed:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()


def check_output_root(out: Path) -> None:
    """Create ``out`` and prove it writable, or raise OutputError naming it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".tseg-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise OutputError(out, f"the output folder is not writable ({exc.strerror or exc}); choose another --out") from exc


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def process_slide(segmenter: Any, slide: Path, out: Path, name: str, overwrite: bool = False,
                  on_tile: Callable[[int, bool], None] | None = None,
                  on_plan: Callable[[int], None] | None = None) -> SlideOutcome:
    """Segment one slide into ``out/name`` atomically, under the slide's lock."""
    t0 = time.perf_counter()
    final = out / name
    if (final / SUMMARY).exists() and not overwrite:
        return SlideOutcome(str(slide), name, "skipped")
    try:
        lock = SlideLock(out / f".{name}.lock")
    except BlockingIOError:
        return SlideOutcome(str(slide), name, "locked", "another tseg-rt process is working on this slide")
    try:
        if (final / SUMMARY).exists() and not overwrite:  # finished while we waited for the lock
            return SlideOutcome(str(slide), name, "skipped")
        for stale in list(out.glob(f".{name}.tmp-*")) + list(out.glob(f".{name}.old-*")):
            log.info("removing %s left by an interrupted run", stale)
            _remove(stale)
        tmp = out / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            result = segmenter.segment_slide(slide, on_tile=on_tile, on_plan=on_plan)
            write_outputs(result, tmp, segmenter.contract.mpp)
            if final.exists():
                old = out / f".{name}.old-{os.getpid()}"
                os.rename(final, old)
                os.rename(tmp, final)
                _remove(old)
            else:
                os.rename(tmp, final)
        except BaseException:
            _remove(tmp)
            raise
        return SlideOutcome(str(slide), name, "done", seconds=time.perf_counter() - t0, summary=result.summary)
    except TsegError as exc:
        return SlideOutcome(str(slide), name, "failed", str(exc), time.perf_counter() - t0)
    except MemoryError:
        return SlideOutcome(str(slide), name, "failed", f"{slide}: out of memory", time.perf_counter() - t0)
    except OSError as exc:
        return SlideOutcome(str(slide), name, "failed", f"{slide}: {exc}", time.perf_counter() - t0)
    except Exception as exc:  # a bug or a library error on an odd slide: report it, keep going
        log.exception("unexpected error on %s", slide)
        return SlideOutcome(str(slide), name, "failed", f"{slide}: unexpected error: {exc!r}",
                            time.perf_counter() - t0)
    finally:
        lock.release()


# --- several processes ------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(engine: str | None, providers: Any, devices: list[int], counter: Any,
                 settings: dict[str, Any], log_level: int) -> None:
    logging.basicConfig(level=log_level)
    from .segmenter import Segmenter

    with counter.get_lock():
        index = counter.value
        counter.value += 1
    device = devices[index % len(devices)] if devices else 0
    _WORKER["segmenter"] = Segmenter(engine, providers=providers, device_id=device, **settings)


def _worker_run(slide: str, out: str, name: str, overwrite: bool) -> SlideOutcome:
    return process_slide(_WORKER["segmenter"], Path(slide), Path(out), name, overwrite)


def run_batch(slides: Sequence[Path], out: Path, segmenter: Any = None, overwrite: bool = False,
              workers: int = 1, engine: str | None = None, providers: Any = None,
              devices: Sequence[int] = (), settings: dict[str, Any] | None = None,
              on_slide_start: Callable[[Path, str], None] | None = None,
              on_slide_done: Callable[[SlideOutcome], None] | None = None,
              on_tile: Callable[[int, bool], None] | None = None,
              on_plan: Callable[[int], None] | None = None) -> list[SlideOutcome]:
    """Process ``slides`` into ``out``: in this process with ``segmenter``, or in ``workers``
    processes each loading its own backend from ``engine`` (one per device in ``devices``)."""
    check_output_root(out)
    names = output_names(slides)
    outcomes: list[SlideOutcome] = []
    if workers <= 1:
        for slide, name in zip(slides, names):
            if on_slide_start:
                on_slide_start(slide, name)
            outcome = process_slide(segmenter, slide, out, name, overwrite, on_tile, on_plan)
            outcomes.append(outcome)
            if on_slide_done:
                on_slide_done(outcome)
        return outcomes
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(engine, providers, list(devices), counter, settings or {},
                                       logging.getLogger().level)) as pool:
        pending = {}
        for slide, name in zip(slides, names):
            pending[pool.submit(_worker_run, str(slide), str(out), name, overwrite)] = (slide, name)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                slide, name = pending.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # a worker died or failed to load the engine
                    outcome = SlideOutcome(str(slide), name, "failed", f"{slide}: worker failed: {exc}")
                outcomes.append(outcome)
                if on_slide_done:
                    on_slide_done(outcome)
    order = {str(s): i for i, s in enumerate(slides)}
    return sorted(outcomes, key=lambda o: order[o.slide])
