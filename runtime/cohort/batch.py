"""Folder batches that resume and lose nothing (``tseg-rt run``).

* Inputs are files and folders; folders are searched recursively for the extensions OpenSlide
  and the tifffile path read, and for DICOM series (the ``.dcm`` files of one series are one
  slide, however many files it has and however they were named: :mod:`tseg.runtime.wsi.dicom`).
  Hidden folders, the output folder and every tseg-rt result folder (marked with
  ``.tseg-rt-result``, or holding a ``summary.json`` beside a probability map) are not searched,
  so results are never taken for slides.
* Each slide's outputs go to a result folder whose name depends on the slide alone, and a
  finished result is reused only when it is this slide's and was made with these settings;
  otherwise it is post-processed again (only thresholds differ) or redone. The rules are in
  :mod:`tseg.runtime.cohort.resume` (identity, names, decisions), shared with distributed runners.
* A slide is processed under its result folder's lock (``OUT/.<name>.lock``, ``flock``): two
  processes never write the same result. A slide whose lock another live process holds is put
  back and waited for at the end of the batch, then decided again (usually: finished by the other
  process, so skipped). A lock that cannot be created fails that slide alone. Lock files are
  removed when their slide is finished or has failed, and stale ones at the start of a batch.
* Outputs are built in a hidden temporary folder and renamed into place when complete; a run
  killed at any point (SIGKILL included) leaves no folder that looks finished, and stale
  temporary folders are removed by the next run. Outputs are deterministic, so a rerun after
  a kill writes byte-identical files (``summary.json`` aside, which records timings).
* One bad slide never stops the batch: its error is recorded and the next slide runs.
* Ctrl-C (SIGINT) raises :class:`BatchInterrupted`, which says which slides were being processed
  (their partial outputs are removed), which finished, and which were not started; so does
  SIGTERM where the command line turned it into :class:`~tseg.runtime.util.signals.Terminated`
  (``scancel``, a time limit; worker processes handle both).
* Where the slides run is the caller's choice: in this process, in ``workers`` local processes,
  or on a Ray cluster (``ray=``, :mod:`tseg.runtime.cohort.ray_batch`); every worker runs
  :func:`process_slide` (the same folders, locks and resume decisions), and this process keeps
  the outcomes (:class:`_Ledger`): the same table and exit status wherever slides ran. Each
  failed slide's reason is kept in the results folder for the cohort report
  (:func:`tseg.runtime.cohort.report.record_outcome`), and forgotten once the slide is finished.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import shutil
import signal
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from tseg.runtime.errors import NoSlidesFoundError, OutputError, TsegError
from tseg.runtime.outputs.files import repostprocess, write_outputs
from tseg.runtime.cohort.worker import describe_worker
from tseg.runtime.util.signals import install_sigterm_handler
from tseg.runtime.cohort.resume import (  # noqa: F401 - SlideLock re-exported
    RESULT_MARKER,
    SlideLock,
    LockBusy,
    claim_result_folder,
    decide,
    describe_holder,
    is_result_folder,
    remove_stale_locks,
    result_stem,
    slide_identity,
    slide_stem,
    wanted_from,
    write_marker,
)

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide",
                  ".bif", ".btf", ".qptiff")
DICOM_SUFFIXES = (".dcm",)

__all__ = ["BatchInterrupted", "SlideLock", "SlideOutcome", "find_slides", "process_slide", "run_batch", "run_slide",
           "remove_abandoned", "slide_stem"]


def _walk(root: Path, exclude: Path | None) -> Iterable[Path]:
    """Files under ``root``, skipping hidden entries, ``exclude`` and tseg-rt result folders."""
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        keep = []
        for d in sorted(dirs):
            sub = here / d
            if d.startswith("."):
                continue
            if exclude is not None and sub.resolve() == exclude:
                continue
            if is_result_folder(sub):
                log.debug("not searching %s: a tseg-rt result folder", sub)
                continue
            keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            if not f.startswith("."):
                yield here / f


def find_slides(inputs: Iterable[str | os.PathLike[str]], exclude: Path | None = None) -> list[Path]:
    """Slides among ``inputs`` (files as given; folders searched recursively), sorted.

    A DICOM series is one entry (its folder, or its first file when the folder holds several
    series); DICOM files that are not whole-slide images are skipped in folders and kept, to fail
    with their reason, when named explicitly."""
    from tseg.runtime.wsi.dicom import group_series, is_dicom_candidate

    found: list[Path] = []
    dicom_files: list[Path] = []
    explicit_dicom: set[Path] = set()
    missing = []
    inputs = list(inputs)
    exclude_resolved = exclude.resolve() if exclude is not None else None
    for item in inputs:
        p = Path(item)
        if p.is_file():
            if is_dicom_candidate(p):
                dicom_files.append(p)
                explicit_dicom.add(p.resolve())
            else:
                found.append(p)
        elif p.is_dir():
            if is_result_folder(p):
                log.warning("%s is a tseg-rt result folder, not searched for slides", p)
                continue
            for f in _walk(p, exclude_resolved):
                if f.name.lower().endswith(SLIDE_SUFFIXES):
                    found.append(f)
                elif f.name.lower().endswith(DICOM_SUFFIXES) or (f.suffix == "" and is_dicom_candidate(f)):
                    dicom_files.append(f)
        else:
            missing.append(str(p))
    if missing:
        raise NoSlidesFoundError(f"no such file or folder: {', '.join(missing)}")
    if dicom_files:
        series, rejected = group_series(dicom_files)
        found.extend(s.slide_path for s in series)
        for r in rejected:
            if r.path.resolve() in explicit_dicom:
                found.append(r.path)  # named explicitly: it fails with its reason
            else:
                log.info("skipping %s: %s", r.path, r.error or f"not a whole-slide image (SOP class {r.sop_class})")
    unique = sorted({f.resolve(): f for f in found}.values(), key=lambda f: str(f))
    if not unique:
        raise NoSlidesFoundError(
            "no slides found in " + ", ".join(str(i) for i in inputs)
            + f" (looked for {', '.join(SLIDE_SUFFIXES + DICOM_SUFFIXES)} and DICOM series; name other files "
            "explicitly)")
    return unique


def parse_mpp(text: str | float, what: str = "--mpp") -> float | tuple[float, float]:
    """A level-0 resolution given by a user: ``X`` or ``X,Y`` in µm/px, positive, finite and
    plausible for a whole-slide image; InvalidArgumentError naming ``what`` otherwise."""
    from tseg.runtime.errors import InvalidArgumentError
    from tseg.runtime.wsi.slide import PLAUSIBLE_MPP

    raw = str(text).strip()
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError:
        raise InvalidArgumentError(f"{what} takes a number or X,Y in µm per pixel, got {raw!r}") from None
    if len(values) not in (1, 2):
        raise InvalidArgumentError(f"{what} takes a number or X,Y in µm per pixel, got {raw!r}")
    lo, hi = PLAUSIBLE_MPP
    for v in values:
        if not (v == v and v not in (float("inf"), float("-inf")) and v > 0):
            raise InvalidArgumentError(f"{what} must be a positive number of µm per pixel, got {raw!r}")
        if not lo <= v <= hi:
            raise InvalidArgumentError(f"{what} {raw} µm/px is outside the plausible range {lo}-{hi} µm/px for the "
                                       "level 0 of a whole-slide image (scanners write about 0.1-0.5)")
    return values[0] if len(values) == 1 else (values[0], values[1])


#: Columns a slides CSV may have besides ``path``, and how each is read.
SLIDES_CSV_COLUMNS = ("mpp", "mpp_x", "mpp_y", "low", "high", "prune")


def read_slides_csv(path: str | os.PathLike[str]) -> list[tuple[Path, dict[str, Any]]]:
    """``(slide path, per-slide settings)`` rows of a slides CSV.

    Columns: ``path`` (relative paths are taken from the CSV's folder), and optionally ``mpp``
    (``X`` or ``X,Y`` µm/px) or ``mpp_x`` + ``mpp_y``, ``low``, ``high`` (0-255) and ``prune``
    (true/false). Empty cells mean "the run's setting". Every row is checked before any slide is
    read; InvalidArgumentError names the file, row and column."""
    import csv

    from tseg.runtime.errors import InvalidArgumentError

    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = [c.strip() for c in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidArgumentError(f"{p}: cannot read the slides CSV ({exc})") from None
    if "path" not in columns:
        raise InvalidArgumentError(f"{p}: the slides CSV needs a 'path' column (has: {', '.join(columns) or 'none'})")
    unknown = [c for c in columns if c and c != "path" and c not in SLIDES_CSV_COLUMNS]
    if unknown:
        raise InvalidArgumentError(f"{p}: unknown column(s) {', '.join(unknown)}; allowed: path, "
                                   + ", ".join(SLIDES_CSV_COLUMNS))
    out: list[tuple[Path, dict[str, Any]]] = []
    for n, raw in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        where = f"{p}, row {n}"
        if not row.get("path"):
            raise InvalidArgumentError(f"{where}: empty path")
        slide = Path(row["path"]).expanduser()
        slide = slide if slide.is_absolute() else p.parent / slide
        settings: dict[str, Any] = {}
        if row.get("mpp"):
            settings["mpp"] = parse_mpp(row["mpp"], f"{where}: mpp")
        elif row.get("mpp_x") or row.get("mpp_y"):
            if not (row.get("mpp_x") and row.get("mpp_y")):
                raise InvalidArgumentError(f"{where}: give both mpp_x and mpp_y (or mpp)")
            settings["mpp"] = parse_mpp(f"{row['mpp_x']},{row['mpp_y']}", f"{where}: mpp_x,mpp_y")
        for key in ("low", "high"):
            if row.get(key):
                try:
                    value = int(row[key])
                except ValueError:
                    raise InvalidArgumentError(f"{where}: {key} must be an integer 0-255, got {row[key]!r}") from None
                if not 0 <= value <= 255:
                    raise InvalidArgumentError(f"{where}: {key} must be 0-255, got {value}")
                settings[key] = value
        if row.get("prune"):
            flag = row["prune"].lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                raise InvalidArgumentError(f"{where}: prune must be true or false, got {row['prune']!r}")
            settings["prune"] = flag in ("true", "1", "yes")
        out.append((slide, settings))
    if not out:
        raise InvalidArgumentError(f"{p}: the slides CSV has no rows")
    return out


@dataclass
class SlideOutcome:
    slide: str
    name: str
    status: str  # done | skipped | postprocessed | locked | failed
    error: str | None = None
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    detail: str = ""  # why it was skipped / redone / post-processed again, or who holds the lock
    holder: str = ""  # for ``locked``: the process holding the slide's lock
    error_cli: str | None = None  # the error as the command line shows it
    worker: str = ""  # which worker processed it (several processes or a cluster), for logs

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped", "postprocessed")


class BatchInterrupted(KeyboardInterrupt):
    """SIGINT (or SIGTERM, ``signum``) during a batch: what was finished, what was being
    processed, what was left."""

    def __init__(self, outcomes: list[SlideOutcome], in_progress: list[str], not_started: list[str],
                 signum: int = signal.SIGINT) -> None:
        self.outcomes = outcomes
        self.in_progress = in_progress
        self.not_started = not_started
        self.signum = int(signum)
        super().__init__(self.message())

    def message(self) -> str:
        from tseg.runtime.util.signals import describe_signal

        done = sum(o.ok for o in self.outcomes)
        failed = len(self.outcomes) - done
        current = (f"while processing {', '.join(self.in_progress)} (its partial outputs were removed)"
                   if self.in_progress else "between slides")
        return (f"{describe_signal(self)} {current}; {done} slide(s) finished, {failed} failed, "
                f"{len(self.in_progress) + len(self.not_started)} left"
                + (f" ({len(self.not_started)} not started)" if self.not_started else "")
                + ". Run the same command again to continue: finished slides are skipped.")


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
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _failed(slide: Path, name: str, exc: BaseException, t0: float) -> SlideOutcome:
    seconds = time.perf_counter() - t0
    if isinstance(exc, TsegError):
        return SlideOutcome(str(slide), name, "failed", str(exc), seconds, error_cli=exc.cli_message())
    if isinstance(exc, MemoryError):
        text = f"{slide}: out of memory"
    elif isinstance(exc, OSError):
        text = f"{slide}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    else:  # a bug or a library error on an odd slide: report it, keep going
        log.error("unexpected error on %s", slide, exc_info=exc)
        text = f"{slide}: unexpected error: {exc!r}"
    return SlideOutcome(str(slide), name, "failed", text, seconds, error_cli=text)


def _metadata_mpp(slide: Path) -> Callable[[], tuple[float, float] | None]:
    def read() -> tuple[float, float] | None:
        from tseg.runtime.wsi.slide import _open_source, _plausible

        try:
            source = _open_source(slide)
        except TsegError:
            return None
        try:
            return _plausible(source.mpp())
        finally:
            source.close()

    return read


def process_slide(segmenter: Any, slide: Path, out: Path, overwrite: bool = False,
                  on_tile: Callable[[int, bool], None] | None = None,
                  on_plan: Callable[[int], None] | None = None, wait_for_lock: bool = False,
                  on_wait: Callable[[dict[str, Any] | None], None] | None = None,
                  cancel: threading.Event | None = None) -> SlideOutcome:
    """Segment one slide into its result folder in ``out``, atomically, under the folder's lock.

    The folder and whether a finished result is reused, post-processed again or redone follow
    :mod:`tseg.runtime.cohort.resume` (names depend on the slide alone). A lock
    held by another live process gives status ``locked`` (with ``wait_for_lock``: wait for it).
    Setting ``cancel`` stops the tile loop: the slide fails and its partial outputs are removed."""
    t0 = time.perf_counter()
    slide = Path(slide)
    name = result_stem(slide) if slide.exists() else slide_stem(slide)
    try:
        identity = slide_identity(slide)
    except (TsegError, OSError) as exc:
        return _failed(slide, name, exc, t0)
    try:
        name, lock = claim_result_folder(out, identity, wait=wait_for_lock, on_wait=on_wait)
    except LockBusy as busy:
        who = describe_holder(busy.holder)
        return SlideOutcome(str(slide), identity.stem, "locked", detail=f"being processed by {who}", holder=who)
    except TsegError as exc:
        return _failed(slide, identity.stem, exc, t0)
    final = out / name
    try:
        decision = decide(final, identity, wanted_from(segmenter), overwrite, _metadata_mpp(slide))
        if decision.action == "skip":
            return SlideOutcome(str(slide), name, "skipped", detail=decision.reason)
        if decision.action == "postprocess":
            s = segmenter.settings
            summary = repostprocess(final, segmenter.low, segmenter.high, s.prune)
            return SlideOutcome(str(slide), name, "postprocessed", seconds=time.perf_counter() - t0,
                                summary=summary, detail=decision.reason)
        for stale in list(out.glob(f".{name}.tmp-*")) + list(out.glob(f".{name}.old-*")):
            log.info("removing %s left by an interrupted run", stale)
            _remove(stale)
        tmp = out / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True)
            write_marker(tmp, identity)
            result = segmenter.segment_slide(slide, on_tile=on_tile, on_plan=on_plan, cancel=cancel)
            result.summary["slide"].update(path=identity.path, fingerprint=identity.fingerprint,
                                           size_bytes=identity.size_bytes, result_folder=name)
            result.summary["worker"] = describe_worker()  # host, pid, Slurm job: for the report
            write_outputs(result, tmp, segmenter.contract.mpp)
            if final.exists() or final.is_symlink():
                old = out / f".{name}.old-{os.getpid()}"
                os.rename(final, old)
                os.rename(tmp, final)
                _remove(old)
            else:
                os.rename(tmp, final)
        except BaseException:
            _remove(tmp)
            raise
        detail = "" if decision.reason == "new" else decision.reason
        return SlideOutcome(str(slide), name, "done", seconds=time.perf_counter() - t0, summary=result.summary,
                            detail=detail)
    except Exception as exc:
        return _failed(slide, name, exc, t0)
    finally:
        lock.release(remove=True)


def run_slide(segmenter: Any, slide: Path, out: Path, overwrite: bool = False, wait_for_lock: bool = False,
              overrides: Mapping[str, Any] | None = None, **callbacks: Any) -> SlideOutcome:
    """:func:`process_slide` with the slide's own settings (``overrides``: a slides CSV row) on
    ``segmenter``'s loaded model: what every worker runs, local or on a cluster."""
    if overrides:
        try:
            segmenter = segmenter.with_settings(**overrides)
        except TsegError as exc:
            return _failed(Path(slide), slide_stem(Path(slide)), exc, time.perf_counter())
    return process_slide(segmenter, Path(slide), Path(out), overwrite=overwrite, wait_for_lock=wait_for_lock,
                         **callbacks)


def remove_abandoned(out: Path, slide: str | os.PathLike[str]) -> int:
    """Remove the temporary folders that dead workers left for ``slide`` in ``out`` (those whose
    marker names this slide and whose lock no live process holds), and their stale locks.
    Returns how many of this slide's temporary folders a live process still holds."""
    target = str(Path(slide).resolve())
    held = 0
    for tmp in out.glob(".*.tmp-*"):
        name = tmp.name[1 : tmp.name.rfind(".tmp-")]
        try:
            marker = json.loads((tmp / RESULT_MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(marker, dict) or (marker.get("slide") or {}).get("path") != target:
            continue
        try:
            lock = SlideLock(out / f".{name}.lock")
        except (LockBusy, TsegError):
            held += 1  # a live process works on it
            continue
        try:
            log.info("removing %s, left by a worker that died", tmp)
            _remove(tmp)
        finally:
            lock.release(remove=True)
    return held


class _Ledger:
    """This process's account of a batch: outcomes in input order, slides put back because
    another process held their lock, and what each finished or failed slide leaves for the
    cohort report. Whichever runner processes the slides, outcomes go through :meth:`finish`."""

    def __init__(self, slides: Sequence[Path], out: Path,
                 on_slide_done: Callable[[SlideOutcome], None] | None) -> None:
        self.order = {str(s): i for i, s in enumerate(slides)}
        self.out = out
        self.outcomes: list[SlideOutcome] = []
        self.holders: dict[str, str] = {}
        self._on_slide_done = on_slide_done

    def defer(self, slide: Path, outcome: SlideOutcome) -> None:
        """A slide whose lock another live process holds: come back to it at the end."""
        log.warning("%s: %s; coming back to it at the end", slide, outcome.detail)
        self.holders[str(slide)] = outcome.holder

    def finish(self, outcome: SlideOutcome) -> None:
        from tseg.runtime.cohort.report import record_outcome

        who = self.holders.get(outcome.slide)
        if who and outcome.status == "skipped":
            outcome.detail = f"finished by {who}, which held its lock ({outcome.detail})"
        elif who and outcome.status in ("done", "postprocessed"):
            outcome.detail = f"{who} held its lock but did not finish it; processed here" + (
                f" ({outcome.detail})" if outcome.detail else "")
        self.outcomes.append(outcome)
        try:
            record_outcome(self.out, outcome)
        except (TsegError, OSError) as exc:  # the report loses a line; the batch goes on
            log.warning("could not record the outcome of %s for the cohort report: %s", outcome.slide, exc)
        if self._on_slide_done:
            self._on_slide_done(outcome)

    def finished(self) -> set[str]:
        return {o.slide for o in self.outcomes}

    def sorted(self) -> list[SlideOutcome]:
        return sorted(self.outcomes, key=lambda o: self.order.get(o.slide, len(self.order)))

    def interrupted(self, slides: Sequence[Path], in_progress: Sequence[str],
                    cause: BaseException | None = None) -> BatchInterrupted:
        """What to raise after Ctrl-C or SIGTERM (``cause``: the KeyboardInterrupt caught)."""
        from tseg.runtime.util.signals import signal_of

        done = self.finished()
        left = [str(s) for s in slides if str(s) not in done and str(s) not in in_progress]
        signum = signal_of(cause) if cause is not None else signal.SIGINT
        return BatchInterrupted(self.sorted(), list(in_progress), left, signum)


# --- several processes ------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


class _Once(logging.Filter):
    """Lets each distinct message through once (workers repeat what every backend load logs)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


class _ToMainHandlers(logging.Handler):
    """Hands records from the workers to this process's own loggers (same format, one stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _worker_init(engine: str | None, providers: Any, devices: list[int], counter: Any,
                 settings: dict[str, Any], log_level: int, log_queue: Any, quiet_load: bool) -> None:
    # Ctrl-C reaches the workers from the main process (_interrupt_workers), SIGTERM from a
    # scheduler that signals every process of a job: both stop the slide and remove its partial
    # outputs. SIGINT is restored explicitly: a process started in the background of a shell
    # script inherits it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    install_sigterm_handler()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(log_level)
    from tseg.runtime.execution.segmenter import Segmenter

    with counter.get_lock():
        index = counter.value
        counter.value += 1
    device = devices[index % len(devices)] if devices else 0
    previous = root.level
    if quiet_load:  # the main process loaded the same model and reported its warnings already
        root.setLevel(logging.ERROR)
    try:
        _WORKER["segmenter"] = Segmenter(engine, providers=providers, device_id=device, **settings)
    finally:
        root.setLevel(previous)


def _worker_run(slide: str, out: str, overwrite: bool, wait_for_lock: bool,
                overrides: dict[str, Any] | None) -> SlideOutcome:
    outcome = run_slide(_WORKER["segmenter"], Path(slide), Path(out), overwrite, wait_for_lock, overrides)
    outcome.worker = describe_worker()
    return outcome


def _interrupt_workers(pool: ProcessPoolExecutor) -> None:
    """Pass Ctrl-C on to the workers so that they remove their partial outputs."""
    for proc in list(getattr(pool, "_processes", {}).values()):
        try:
            os.kill(proc.pid, signal.SIGINT)
        except OSError:
            pass


def run_batch(slides: Sequence[Path], out: Path, segmenter: Any = None, overwrite: bool = False,
              workers: int | None = 1, engine: str | None = None, providers: Any = None,
              devices: Sequence[int] = (), settings: dict[str, Any] | None = None,
              on_slide_start: Callable[[Path, str], None] | None = None,
              on_slide_done: Callable[[SlideOutcome], None] | None = None,
              on_tile: Callable[[int, bool], None] | None = None,
              on_plan: Callable[[int], None] | None = None,
              slide_settings: Mapping[str, Mapping[str, Any]] | None = None,
              wait_for_locks: bool = True, quiet_worker_load: bool = False,
              on_lock_wait: Callable[[Path, str], None] | None = None,
              ray: str | None = None, on_tiles: Callable[[int], None] | None = None,
              max_worker_deaths: int = 2) -> list[SlideOutcome]:
    """Process ``slides`` into ``out``: in this process with ``segmenter``, in ``workers``
    processes each loading its own backend from ``engine`` (one per device in ``devices``), or,
    with ``ray`` (``"auto"`` or a cluster address), on a Ray cluster, one long-lived worker per
    GPU or CPU worker (``workers``: how many; None: as many as the cluster has room for; see
    :mod:`tseg.runtime.cohort.ray_batch`, which also explains ``max_worker_deaths``).

    ``slide_settings`` maps a slide path (as given) to per-slide settings (``mpp``, ``low``,
    ``high``, ...) that override ``settings`` for that slide. Slides whose lock another process
    holds are waited for at the end (``wait_for_locks``), or reported as ``locked``.
    ``on_tiles(n)`` counts tiles finished anywhere (every runner); ``on_tile`` and ``on_plan``
    follow the tiles of the slide being processed in this process.
    Raises :class:`BatchInterrupted` on Ctrl-C."""
    check_output_root(out)
    stale = remove_stale_locks(out)
    if stale:
        log.info("removed %d stale lock file(s) in %s", stale, out)
    per_slide = {str(k): dict(v) for k, v in (slide_settings or {}).items()}
    ledger = _Ledger(slides, out, on_slide_done)

    def waiting(slide: Path) -> Callable[[dict[str, Any] | None], None]:
        def note(holder: dict[str, Any] | None) -> None:
            text = f"{slide}: waiting for {describe_holder(holder)}, which is processing it"
            log.warning(text)
            if on_lock_wait:
                on_lock_wait(slide, describe_holder(holder))
        return note

    if ray is not None:
        from tseg.runtime.cohort.ray_batch import run_on_ray

        run_on_ray(slides, out, ledger, address=ray, engine=engine, providers=providers, settings=settings or {},
                   per_slide=per_slide, overwrite=overwrite, workers=workers, wait_for_locks=wait_for_locks,
                   on_slide_start=on_slide_start, on_tiles=on_tiles, max_worker_deaths=max_worker_deaths,
                   quiet_load=quiet_worker_load)
        return ledger.sorted()

    if workers is None or workers <= 1:
        current: list[str] = []
        pending = list(slides)
        deferred: list[Path] = []

        def tile(index: int, was_run: bool) -> None:
            if on_tile:
                on_tile(index, was_run)
            if on_tiles:
                on_tiles(1)

        try:
            for wait_now in (False, True):
                queue, pending = (pending, []) if not wait_now else (deferred, [])
                while queue:
                    slide = queue.pop(0)
                    if on_slide_start:
                        on_slide_start(slide, result_stem(slide) if Path(slide).exists() else slide_stem(Path(slide)))
                    current[:] = [str(slide)]
                    outcome = run_slide(segmenter, slide, out, overwrite, wait_now, per_slide.get(str(slide)),
                                        on_tile=tile if (on_tile or on_tiles) else None, on_plan=on_plan,
                                        on_wait=waiting(slide))
                    current.clear()
                    outcome.worker = describe_worker()
                    if outcome.status == "locked" and not wait_now and wait_for_locks:
                        ledger.defer(slide, outcome)
                        deferred.append(slide)
                        continue
                    ledger.finish(outcome)
                if not wait_for_locks:
                    break
        except KeyboardInterrupt as stop:
            raise ledger.interrupted(slides, list(current), stop) from None
        return ledger.sorted()

    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    log_queue = ctx.Queue()
    forward = _ToMainHandlers()
    forward.addFilter(_Once())
    listener = logging.handlers.QueueListener(log_queue, forward)
    listener.start()
    running: dict[Any, Path] = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(engine, providers, list(devices), counter, settings or {},
                                         logging.getLogger().level, log_queue, quiet_worker_load))
    try:
        deferred = []
        for wait_now in (False, True):
            batch = list(slides) if not wait_now else deferred
            if wait_now:
                for slide in batch:
                    log.info("%s: waiting for the process that holds its lock", slide)
            for slide in batch:
                future = pool.submit(_worker_run, str(slide), str(out), overwrite, wait_now,
                                     per_slide.get(str(slide)))
                running[future] = slide
            deferred = []
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    slide = running.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as exc:  # a worker died or failed to load the engine
                        text = f"{slide}: worker failed: {exc}"
                        outcome = SlideOutcome(str(slide), slide_stem(Path(slide)), "failed", text, error_cli=text)
                    if outcome.status == "locked" and not wait_now and wait_for_locks:
                        ledger.defer(slide, outcome)
                        deferred.append(slide)
                        continue
                    if on_tiles and outcome.summary.get("tiles"):
                        on_tiles(int(outcome.summary["tiles"].get("tiles_total", 0)))
                    ledger.finish(outcome)
            if not wait_for_locks or not deferred:
                break
    except KeyboardInterrupt as stop:
        _interrupt_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        in_progress = [str(s) for f, s in running.items() if f.running() or f.done()]
        raise ledger.interrupted(slides, in_progress, stop) from None
    finally:
        pool.shutdown(wait=True)
        listener.stop()
    return ledger.sorted()
