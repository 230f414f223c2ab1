"""Which finished result belongs to which slide, and whether it can be reused.

Library functions shared by ``tseg-rt run`` (:mod:`tseg.runtime.cohort.batch`) and anything that
distributes slides over processes or machines; nothing here depends on the rest of a batch.

**Identity.** A slide is its resolved path (for a DICOM series: its folder, or its first file
when the folder holds several series) plus a content fingerprint: SHA-256 over the size and the
first and last MiB of the file (the header, the first tiles and, for TIFFs written back to front,
the directories at the end); for a DICOM series over each file's name, size, first and last
64 KiB; for MIRAX, the ``.mrxs`` file and its ``Slidedat.ini``. Reading 2 MiB costs nothing
next to segmenting the slide; a rescanned or replaced file changes it.

**Result folder.** ``OUT/<stem>`` — the file name without its extension (a DICOM series: its
folder's name) — unless that folder holds, or a live process is making, the result of another
slide; then ``OUT/<stem>-<first 8 hex digits of SHA-1 of the resolved path>``. The choice depends
only on the slide and on what ``OUT`` holds, never on which other slides are in the batch or
their order, and it is taken under the folder's lock (:func:`claim_result_folder`).

**The same slide** (:func:`match_slide`): a recorded result is this slide's when its path is
this slide's path (``same``; ``changed`` when the fingerprint differs: the file was replaced),
or when its fingerprint is this slide's and its recorded path no longer exists (``moved``).
Anything else is another slide's.

**Reuse** (:func:`decide`), for a finished result (``summary.json`` present) of this slide:

* ``--overwrite``, an unreadable summary, a changed slide file, another model file (SHA-256; the
  plans of one ONNX model built for several GPU types count as one model), another level-0
  resolution, background tiles skipped differently, or other opt-in reading speed-ups
  (``--level-tolerance``, ``--dct-scaling``) -> **run** again;
* only ``low`` / ``high`` / ``prune`` differ -> **post-process** again from the saved maps
  (no network; equal to a fresh run with those thresholds);
* everything equal -> **skip**.

A result made with ``--mpp X`` is reused by a run without ``--mpp`` when the slide's own metadata
is missing or implausible (that run could not do better) or equals X.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from tseg.runtime.errors import OutputError

log = logging.getLogger(__name__)

FINGERPRINT_BYTES = 1 << 20
DICOM_FINGERPRINT_BYTES = 1 << 16
#: Hidden file that marks a folder as a tseg-rt result folder (written first, with the identity).
RESULT_MARKER = ".tseg-rt-result"
SUMMARY = "summary.json"
_MULTI_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.btf")
#: Relative difference under which two level-0 resolutions are the same.
MPP_TOLERANCE = 0.005


def slide_stem(path: Path) -> str:
    """A slide file's name without its extension (``x.ome.tiff`` -> ``x``)."""
    name = path.name
    for multi in _MULTI_SUFFIXES:
        if name.lower().endswith(multi):
            return name[: -len(multi)]
    return path.stem


def _is_dicom(path: Path) -> bool:
    from tseg.runtime.wsi.dicom import is_dicom_slide_path

    return is_dicom_slide_path(path)


def result_stem(path: Path) -> str:
    """The plain result-folder name of a slide: its stem; for a DICOM series, its folder's name."""
    if _is_dicom(path):
        return (path if path.is_dir() else path.parent).resolve().name or "dicom"
    return slide_stem(path)


def _hash_file(h: Any, path: Path, edge: int) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}\0{size}\0".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(edge))
        if size > edge:
            fh.seek(max(edge, size - edge))
            h.update(fh.read(edge))


def fingerprint(path: Path) -> tuple[str, int]:
    """``("sha256:<hex>", size in bytes)`` of a slide's content (see the module docstring)."""
    h = hashlib.sha256()
    if _is_dicom(path):
        from tseg.runtime.wsi.dicom import series_for

        series = series_for(path)
        h.update(f"dicom\0{series.uid}\0".encode())
        files = list(series.files)
        for f in files:
            _hash_file(h, f, DICOM_FINGERPRINT_BYTES)
        return "sha256:" + h.hexdigest(), sum(f.stat().st_size for f in files)
    _hash_file(h, path, FINGERPRINT_BYTES)
    size = path.stat().st_size
    if path.suffix.lower() == ".mrxs":
        ini = path.with_suffix("") / "Slidedat.ini"
        if ini.is_file():
            _hash_file(h, ini, FINGERPRINT_BYTES)
    return "sha256:" + h.hexdigest(), size


@dataclass(frozen=True)
class SlideIdentity:
    """Who a slide is: resolved path, content fingerprint, size, and its result-folder stem."""

    path: str
    fingerprint: str
    size_bytes: int
    stem: str

    @property
    def path_hash(self) -> str:
        return hashlib.sha1(self.path.encode()).hexdigest()[:8]

    @property
    def hashed_name(self) -> str:
        return f"{self.stem}-{self.path_hash}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def slide_identity(path: str | os.PathLike[str]) -> SlideIdentity:
    """The identity of a slide path; raises OSError (or a SlideError for DICOM) if unreadable."""
    p = Path(path)
    fp, size = fingerprint(p)
    return SlideIdentity(str(p.resolve()), fp, size, result_stem(p))


# --- what a result folder records -------------------------------------------------------------


def read_summary(folder: Path) -> dict[str, Any] | None:
    """The folder's ``summary.json``, or None when absent; OutputError when unreadable."""
    path = folder / SUMMARY
    if not path.exists():
        return None
    redo = "rerun `tseg-rt run --overwrite` for its slide"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise OutputError(path, f"corrupt (not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}); "
                                f"{redo}") from exc
    except UnicodeDecodeError as exc:
        raise OutputError(path, f"corrupt (not UTF-8 text); {redo}") from exc
    except OSError as exc:
        raise OutputError(path, f"unreadable ({exc.strerror or exc})") from exc
    if not isinstance(data, dict):
        raise OutputError(path, f"corrupt (not a JSON object); {redo}")
    return data


def write_marker(folder: Path, identity: SlideIdentity) -> None:
    """Mark ``folder`` as a tseg-rt result folder of ``identity`` (first file written)."""
    from tseg.runtime.util.atomic import write_text

    write_text(folder / RESULT_MARKER, json.dumps({"tseg_rt_result": 1, "slide": identity.to_dict()}, indent=2) + "\n")


def is_result_folder(folder: Path) -> bool:
    """A tseg-rt result folder: it has the marker, or (older results) a summary.json beside a
    probability map."""
    return (folder / RESULT_MARKER).is_file() or (
        (folder / SUMMARY).is_file() and ((folder / "probability.png").exists() or (folder / "probability.tif").exists()))


def recorded_slide(folder: Path) -> dict[str, Any] | None:
    """The identity a result folder records (summary first, then the marker), or None."""
    try:
        summary = read_summary(folder)
    except OutputError:
        summary = None
    if summary and isinstance(summary.get("slide"), dict) and summary["slide"].get("path"):
        return summary["slide"]
    try:
        marker = json.loads((folder / RESULT_MARKER).read_text(encoding="utf-8"))
        return marker["slide"] if isinstance(marker.get("slide"), dict) else None
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def match_slide(recorded: Mapping[str, Any], identity: SlideIdentity) -> str:
    """``same``, ``changed`` (same path, other content), ``moved`` (same content, the recorded
    path is gone) or ``other``."""
    rec_path = str(recorded.get("path", ""))
    rec_fp = recorded.get("fingerprint")
    if rec_path == identity.path:
        if rec_fp is None:  # a result from before fingerprints: compare sizes
            return "same" if recorded.get("size_bytes") in (None, identity.size_bytes) else "changed"
        return "same" if rec_fp == identity.fingerprint else "changed"
    if rec_fp == identity.fingerprint and not Path(rec_path).exists():
        return "moved"
    return "other"


# --- locks and the result folder name ---------------------------------------------------------


class LockBusy(Exception):
    """The lock is held by another live process; ``holder`` is what it wrote (or None)."""

    def __init__(self, path: Path, holder: dict[str, Any] | None) -> None:
        self.path = path
        self.holder = holder
        super().__init__(f"{path}: held by {describe_holder(holder)}")


def describe_holder(holder: Mapping[str, Any] | None) -> str:
    if not holder:
        return "another tseg-rt process"
    job = f" (slurm {holder['slurm']})" if holder.get("slurm") else ""
    return f"tseg-rt process {holder.get('pid', '?')} on {holder.get('host', '?')}{job}"


def read_holder(path: Path, tries: int = 10, pause_s: float = 0.05) -> dict[str, Any] | None:
    """What the holder of a lock wrote into it (retried briefly while it is being written)."""
    for _ in range(tries):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass
        time.sleep(pause_s)
    return None


class SlideLock:
    """An exclusive per-result-folder lock (``flock``), released on :meth:`release` or process
    death. The file holds who holds it (pid, host, slide). ``wait`` blocks until it is free.

    The lock file is removed when released, so finished and failed slides leave none; a waiter
    that locked a file removed meanwhile notices (different inode) and locks the new one.
    Raises :class:`LockBusy` when held elsewhere (and not waiting), and
    :class:`~tseg.runtime.errors.OutputError` when the lock file cannot be created.
    """

    def __init__(self, path: Path, holder: Mapping[str, Any] | None = None, wait: bool = False,
                 poll_s: float = 0.25, on_wait: Callable[[dict[str, Any] | None], None] | None = None) -> None:
        self.path = path
        waited = False
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                reason = {errno.ENOSPC: "no space or inodes left on the device",
                          errno.EISDIR: "a folder is in the way"}.get(exc.errno, exc.strerror or str(exc))
                raise OutputError(path, f"cannot create the slide's lock file: {reason}; free space or "
                                        "remove what is in the way, or choose another --out") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder_now = read_holder(path)
                if not wait:
                    raise LockBusy(path, holder_now) from None
                if on_wait and not waited:
                    on_wait(holder_now)
                waited = True
                time.sleep(poll_s)
                continue
            except OSError as exc:
                os.close(fd)
                raise OutputError(path, f"cannot lock: {exc.strerror or exc}") from exc
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # removed by its previous holder after we opened it: lock the new one
                os.close(fd)
                continue
            break
        self._fd: int | None = fd
        from tseg.runtime.cohort.worker import worker_info

        info = {**worker_info(), **dict(holder or {})}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:
            pass  # who holds it is informative only

    def release(self, remove: bool = True) -> None:
        if self._fd is None:
            return
        if remove:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def remove_stale_locks(out: Path) -> int:
    """Remove lock files in ``out`` that no live process holds (left by killed runs)."""
    removed = 0
    for path in out.glob(".*.lock"):
        try:
            SlideLock(path).release(remove=True)
            removed += 1
        except (LockBusy, OutputError):
            continue
    return removed


def claim_result_folder(out: Path, identity: SlideIdentity, wait: bool = False,
                        on_wait: Callable[[dict[str, Any] | None], None] | None = None) -> tuple[str, SlideLock]:
    """The result-folder name for ``identity`` in ``out``, with its lock held.

    Raises :class:`LockBusy` when another live process works on this slide (or, not waiting,
    on a slide whose identity it has not written yet)."""
    holder = {"slide": identity.path, "fingerprint": identity.fingerprint}
    stem, hashed = identity.stem, identity.hashed_name

    def lock(name: str) -> SlideLock:
        return SlideLock(out / f".{name}.lock", holder, wait=wait, on_wait=on_wait)

    if (out / hashed).exists():
        return hashed, lock(hashed)
    try:
        plain = SlideLock(out / f".{stem}.lock", holder, wait=False)
    except LockBusy as busy:
        if busy.holder and busy.holder.get("slide") and busy.holder.get("slide") != identity.path:
            return hashed, lock(hashed)  # a live process is making another slide's result there
        if not wait:
            raise
        plain = lock(stem)
    folder = out / stem
    recorded = recorded_slide(folder) if folder.exists() else None
    foreign = folder.exists() and recorded is None and (not folder.is_dir() or any(folder.iterdir()))
    if not foreign and (recorded is None or match_slide(recorded, identity) != "other"):
        return stem, plain
    plain.release(remove=True)
    return hashed, lock(hashed)


# --- reuse --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    """What a run would make: the settings that decide a result."""

    model_sha256: str
    model_path: str
    low: int
    high: int
    prune: bool
    skip_background: bool
    mpp: tuple[float, float] | None  # the override, or None for the slide's metadata
    #: Other model files that make the same results: the plans of one ONNX model built for other
    #: GPUs (a folder of plans, ``--engine PLANS/``), so that a heterogeneous cluster does not redo
    #: a slide because another GPU type finished it.
    equivalent_sha256: frozenset[str] = frozenset()
    level_tolerance: float = 0.0  # opt-in reading speed-ups: they change the pixels read
    dct_scaling: bool = False


@dataclass(frozen=True)
class Decision:
    action: str  # run | skip | postprocess
    reason: str
    match: str = "same"  # same | changed | moved | new


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= MPP_TOLERANCE * max(abs(a), abs(b))


def _fmt_mpp(v: Any) -> str:
    return "x".join(f"{float(x):.4g}" for x in v) if isinstance(v, (list, tuple)) else str(v)


def decide(folder: Path, identity: SlideIdentity, wanted: Wanted, overwrite: bool = False,
           metadata_mpp: Callable[[], tuple[float, float] | None] | None = None) -> Decision:
    """Run, skip or post-process again (see the module docstring). ``metadata_mpp`` returns the
    slide's own plausible level-0 resolution (or None); it is called only when needed."""
    if overwrite:
        return Decision("run", "--overwrite", "same")
    try:
        summary = read_summary(folder)
    except OutputError as exc:
        return Decision("run", f"redone: the previous {SUMMARY} is unreadable ({exc})", "same")
    if summary is None:
        return Decision("run", "new", "new")
    slide = summary.get("slide") if isinstance(summary.get("slide"), dict) else {}
    how = match_slide(slide, identity) if slide.get("path") else "same"
    if how == "changed":
        return Decision("run", "redone: the slide file changed since its result was made", how)
    model = summary.get("model", {}) if isinstance(summary.get("model"), dict) else {}
    made_sha = (model.get("backend") or {}).get("sha256")
    if made_sha != wanted.model_sha256 and made_sha not in wanted.equivalent_sha256:
        made = (model.get("backend") or {}).get("path", "another model")
        short = (made_sha or "?")[:12]
        return Decision("run", f"redone: the result was made with another model ({made}, sha256 {short}...), "
                               f"now {wanted.model_path} (sha256 {wanted.model_sha256[:12]}...)", how)
    settings = summary.get("settings", {}) if isinstance(summary.get("settings"), dict) else {}
    made_mpp = slide.get("mpp_level0")
    if made_mpp is None:
        return Decision("run", "redone: the result does not record its resolution", how)
    if wanted.mpp is not None:
        if not all(_close(a, b) for a, b in zip(made_mpp, wanted.mpp)):
            return Decision("run", f"redone: made at {_fmt_mpp(made_mpp)} µm/px level 0, now {_fmt_mpp(wanted.mpp)}", how)
    elif slide.get("mpp_source") == "override":
        own = metadata_mpp() if metadata_mpp else None
        if own is not None and not all(_close(a, b) for a, b in zip(made_mpp, own)):
            return Decision("run", f"redone: made with --mpp {_fmt_mpp(made_mpp)}, now the slide's metadata "
                                   f"{_fmt_mpp(own)} µm/px", how)
    if bool(settings.get("skip_background", True)) != wanted.skip_background:
        return Decision("run", "redone: background tiles were handled differently", how)
    made_read = (float(settings.get("level_tolerance_percent") or 0.0), bool(settings.get("dct_scaling", False)))
    want_read = (float(wanted.level_tolerance), bool(wanted.dct_scaling))
    if made_read != want_read:
        return Decision("run", f"redone: read with --level-tolerance {made_read[0]:g}"
                               f"{' --dct-scaling' if made_read[1] else ''}, now --level-tolerance {want_read[0]:g}"
                               f"{' --dct-scaling' if want_read[1] else ''}", how)
    made_t = (settings.get("low"), settings.get("high"), bool(settings.get("prune", True)))
    want_t = (wanted.low, wanted.high, wanted.prune)
    if made_t != want_t:
        def fmt(t: tuple[Any, Any, bool]) -> str:
            return f"low/high {t[0]}/{t[1]}" + ("" if t[2] else ", no pruning")
        return Decision("postprocess", f"post-processed again: made with {fmt(made_t)}, now {fmt(want_t)} "
                                       "(from the saved maps, no network)", how)
    if how == "moved":
        return Decision("skip", f"finished (the slide moved from {slide.get('path')})", how)
    return Decision("skip", "finished with these settings", how)


def wanted_from(segmenter: Any) -> Wanted:
    """What ``segmenter`` would make (model file hash, thresholds, resolution override)."""
    s = segmenter.settings
    mpp = s.mpp
    if mpp is not None:
        mpp = (float(mpp), float(mpp)) if isinstance(mpp, (int, float)) else (float(mpp[0]), float(mpp[1]))
        if not all(math.isfinite(v) for v in mpp):
            mpp = None
    backend = segmenter.backend
    return Wanted(backend.sha256, str(backend.path), int(segmenter.low), int(segmenter.high), bool(s.prune),
                  bool(s.skip_background), mpp, frozenset(getattr(backend, "equivalent_sha256", ()) or ()),
                  float(s.level_tolerance), bool(s.dct_scaling))
