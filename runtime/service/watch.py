"""The hot folder: process each slide that appears in a folder, once, when it is complete.

**Polling, not file-system events.** inotify (and libraries built on it, such as watchdog's
default observer) sees only changes made through this machine's kernel: a scanner writing to an
NFS or SMB share from another host produces no event here, and events are lost when their queue
overflows. Scanners write to shared folders, so the folder is listed every ``poll_s`` seconds
(``os.scandir``: a few milliseconds for thousands of files) and sizes and modification times are
compared. This is what watchdog's ``PollingObserver`` does too; doing it here avoids a dependency.

**When a slide is complete.** A slide file (an OpenSlide extension) is complete when its size and
modification time have not changed for ``settle_s`` seconds. A DICOM series (the ``.dcm`` files of
a folder, or files without an extension that carry the DICOM preamble) is complete when every file
of the folder has been unchanged for ``settle_s`` seconds, every whole-slide file is whole
(encapsulated pixel data ends with its sequence delimiter; native pixel data is as long as its
rows, columns, samples and frames say) and the series has a VOLUME image. Files being copied under
a temporary name (``x.svs.part``, hidden ``.x.svs``) are not slides and are ignored until renamed.
On NFS, file attributes are cached by the client (``acregmax``, 60 s by default): choose a
``settle_s`` above it, or mount the share with a shorter ``actimeo``.

**Exactly once.** A slide is submitted with its signature (size and modification time of each of
its files) in the same database transaction as its job (``watched`` in
:mod:`tseg.runtime.service.store`). A slide whose signature is recorded is not submitted again,
after a restart too; a changed file (rescanned, replaced) is submitted again, and the resume rules
of ``tseg-rt run`` then decide (a result of identical content is reused). Slides whose results are
already in the results folder (from ``tseg-rt run``) are submitted once and skipped quickly.

**Failures.** A slide that fails is logged, kept in the cohort report, and not retried unless its
file changes, or once per start with ``retry_failed`` (``tseg-rt watch --retry-failed``).

**One bad entry never stops the others.** A folder that cannot be listed or looked into (a
``lost+found`` at the top of a share), or an entry whose handling fails, is skipped with one
warning (once per start, not once per poll), and everything else is taken. Names are handled as
the file system has them, bytes that are not UTF-8 included (the store keeps them as bytes).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tseg.runtime.errors import InvalidArgumentError, TsegError
from tseg.runtime.util.safeio import kind_of

log = logging.getLogger(__name__)

_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")


@dataclass(frozen=True)
class Candidate:
    """A slide (or a folder of DICOM files) as the last scan saw it."""

    key: str  # the path as text: the slide file, or the DICOM folder
    path: Path
    dicom: bool
    signature: str


def _signature(entries: list[tuple[str, int, int]]) -> str:
    h = hashlib.sha256()
    for name, size, mtime_ns in sorted(entries):
        h.update(f"{name}\0{size}\0{mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def dicom_file_complete(path: Path) -> str | None:
    """None if the DICOM file is whole, else why not (see the module docstring)."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        size = path.stat().st_size
    except Exception as exc:  # truncated headers raise all sorts of errors
        return f"{path.name}: not readable yet ({exc})"
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax and syntax not in _NATIVE_SYNTAXES:
        with open(path, "rb") as fh:
            fh.seek(max(0, size - len(_SEQUENCE_DELIMITER)))
            tail = fh.read()
        return None if tail == _SEQUENCE_DELIMITER else f"{path.name}: its pixel data is not complete yet"
    try:
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                    * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("BitsAllocated", 8)) // 8)
    except (AttributeError, TypeError, ValueError):
        return None  # no pixel description: nothing to check
    return None if size >= expected else f"{path.name}: {size} bytes, its pixel data needs {expected}"


def dicom_series_complete(files: list[Path]) -> tuple[list[Any], str | None]:
    """The WSI series among ``files`` and None when all are complete, else ``([], why not)``."""
    from tseg.runtime.wsi.dicom_source import group_series, read_header

    headers = [read_header(f) for f in files]
    wsi = [h for h in headers if h.is_wsi]
    if not wsi:
        unreadable = [h for h in headers if h.error]
        return [], (f"{unreadable[0].path.name}: {unreadable[0].error}" if unreadable else "no whole-slide image file")
    for h in wsi:
        why = dicom_file_complete(h.path)
        if why:
            return [], why
    if not any(h.flavour == "VOLUME" for h in wsi):
        return [], "no VOLUME image (pyramid level) yet"
    series, _ = group_series([h.path for h in wsi])
    return series, None


class HotFolder(threading.Thread):
    """Polls ``folder`` and submits complete slides to ``service`` (a
    :class:`~tseg.runtime.service.core.Service`) once each (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str], service: Any, settle_s: float = 30.0, poll_s: float = 2.0,
                 retry_failed: bool = False) -> None:
        super().__init__(name=f"tseg-watch-{Path(folder).name}", daemon=True)
        # Absolute from the start: the service resolves a relative slide path against its first root,
        # which would join a relative hot folder onto itself a second time ("hot/hot/x.tiff").
        self.folder = Path(os.path.abspath(folder))
        if not self.folder.is_dir():
            raise InvalidArgumentError(f"{folder}: no such folder to watch")
        if settle_s < 0 or poll_s <= 0:
            raise InvalidArgumentError(f"settle time must be >= 0 and poll interval > 0 s, got {settle_s}, {poll_s}")
        self.service = service
        self.settle_s = float(settle_s)
        self.poll_s = float(poll_s)
        self.retry_failed = retry_failed
        self._halt = threading.Event()
        self._seen: dict[str, tuple[str, float]] = {}  # key -> (signature, since when unchanged)
        self._handled: dict[str, str] = {}  # key -> signature submitted (or given up) in this process
        self._retried: set[str] = set()
        self._waiting_said: dict[str, str] = {}
        self._preamble: dict[tuple[str, int, int], bool] = {}
        self.scans = 0

    # --- scanning --------------------------------------------------------------------------------

    def _is_dicom(self, path: Path, size: int, mtime_ns: int) -> bool:
        if path.suffix.lower() == ".dcm":
            return True
        if path.suffix:
            return False
        key = (str(path), size, mtime_ns)
        if key not in self._preamble:
            from tseg.runtime.wsi.dicom_source import has_dicom_preamble

            self._preamble[key] = has_dicom_preamble(path)
        return self._preamble[key]

    def scan(self) -> dict[str, Candidate]:
        """Every slide file and DICOM folder under the folder, with its signature."""
        from tseg.runtime.cohort.slide_lists import SLIDE_SUFFIXES
        from tseg.runtime.cohort.identity import is_result_folder

        results = os.path.realpath(self.service.out)
        found: dict[str, Candidate] = {}
        dicom: dict[str, list[tuple[str, int, int]]] = {}

        def taken(here: str, d: str) -> bool:
            try:
                return (not d.startswith(".") and os.path.realpath(os.path.join(here, d)) != results
                        and not is_result_folder(Path(here) / d))
            except OSError as exc:  # a folder the service may not look into
                where = os.path.join(here, d)
                self._warn_once(where, "unreadable", f"skipping {where}: {exc.strerror or exc}")
                return False

        def unlisted(exc: OSError) -> None:
            self._warn_once(str(exc.filename), "unreadable", f"skipping {exc.filename}: cannot list it "
                                                             f"({exc.strerror or exc})")

        for here, dirs, files in os.walk(self.folder, onerror=unlisted):
            dirs[:] = sorted(d for d in dirs if taken(here, d))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = Path(here) / name
                try:
                    st = path.stat()
                except OSError:
                    continue  # removed meanwhile
                if not stat.S_ISREG(st.st_mode):  # a FIFO, socket or device: never a slide, never opened
                    self._warn_once(str(path), "not regular", f"skipping {path}: it is {kind_of(st.st_mode)}, "
                                                              "not a regular file")
                    continue
                if name.lower().endswith(SLIDE_SUFFIXES):
                    found[str(path)] = Candidate(str(path), path, False, _signature([(name, st.st_size, st.st_mtime_ns)]))
                elif self._is_dicom(path, st.st_size, st.st_mtime_ns):
                    dicom.setdefault(here, []).append((name, st.st_size, st.st_mtime_ns))
        for here, entries in dicom.items():
            found[here] = Candidate(here, Path(here), True, _signature(entries))
        return found

    def scan_once(self, now: float | None = None) -> list[str]:
        """One poll: returns the keys submitted."""
        now = time.monotonic() if now is None else now
        self.scans += 1
        current = self.scan()
        for gone in set(self._seen) - set(current):
            self._seen.pop(gone, None)
        submitted = []
        for key, cand in current.items():
            seen = self._seen.get(key)
            if seen is None or seen[0] != cand.signature:
                self._seen[key] = (cand.signature, now)
                continue
            if now - seen[1] < self.settle_s or self._handled.get(key) == cand.signature:
                continue
            try:
                if self._due(cand):
                    submitted.append(key)
            except Exception as exc:  # one entry must not stop the others
                self._handled[key] = cand.signature
                self._warn_once(key, "failed", f"skipping {cand.path}: {exc}")
        return submitted

    def _warn_once(self, key: str, why: str, message: str) -> None:
        """Log ``message`` once per entry and reason (a scan repeats every poll)."""
        if self._waiting_said.get(key) != why:
            self._waiting_said[key] = why
            log.warning("%s", message)

    def _due(self, cand: Candidate) -> bool:
        """Submit a stable candidate unless already recorded; True when submitted."""
        store = self.service.store
        recorded = store.watched(cand.key)
        if recorded is not None and recorded[0] == cand.signature:
            job = store.get(recorded[1])
            if not (self.retry_failed and job is not None and job.state == "failure" and cand.key not in self._retried):
                self._handled[cand.key] = cand.signature
                return False
            self._retried.add(cand.key)
            log.info("%s: failed before (%s); trying once more (--retry-failed)", cand.path, job.error_code)
        targets: list[tuple[str, str]] = [(str(cand.path), cand.key)]
        if cand.dicom:
            files = [p for p in sorted(cand.path.iterdir()) if p.is_file() and not p.name.startswith(".")
                     and self._is_dicom(p, p.stat().st_size, p.stat().st_mtime_ns)]
            series, why = dicom_series_complete(files)
            if why is not None:
                if self._waiting_said.get(cand.key) != why:
                    log.warning("%s: DICOM series not complete, waiting: %s", cand.path, why)
                    self._waiting_said[cand.key] = why
                return False
            if len(series) > 1:
                targets = [(str(s.slide_path), f"{cand.key}#{s.uid}") for s in series]
        self._handled[cand.key] = cand.signature
        for path, key in targets:
            try:
                sub = self.service.submit(path, source="watch", watch_key=key, watch_signature=cand.signature)
                log.info("%s: complete; job %s (%s)", path, sub.job.id, sub.how)
            except TsegError as exc:
                log.error("%s: not submitted: %s", path, exc)
        if len(targets) > 1:  # the folder itself: recorded so that a restart does not submit it again
            self.service.store.record_watched(cand.key, cand.signature, "")
        return True

    # --- the thread ------------------------------------------------------------------------------

    def run(self) -> None:
        log.info("watching %s (every %.3g s; a slide is taken when unchanged for %.3g s)", self.folder, self.poll_s,
                 self.settle_s)
        while not self._halt.is_set():
            try:
                self.scan_once()
            except Exception as exc:  # a vanished share must not end the watcher
                log.warning("%s: scan failed (%s); trying again", self.folder, exc)
            self._halt.wait(self.poll_s)

    def halt(self) -> None:
        """Take nothing more (returns at once; :meth:`stop` also waits for the thread)."""
        self._halt.set()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(30)
