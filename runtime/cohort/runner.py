"""One slide into its result folder, atomically, under the folder's lock: what every worker runs.

The folder and whether a finished result is reused, post-processed again or redone follow
:mod:`tseg.runtime.cohort.resume`. Outputs are built in a hidden temporary folder and renamed
into place when complete; a run killed at any point (SIGKILL included) leaves no folder that
looks finished, and stale temporary folders are removed by the next run. One bad slide never
stops a batch: its error becomes a ``failed`` outcome.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

from tseg.runtime.cohort.outcomes import SlideOutcome, failed_outcome
from tseg.runtime.cohort.worker import describe_worker
from tseg.runtime.cohort.identity import RESULT_MARKER, result_stem, slide_identity, slide_stem, write_marker
from tseg.runtime.cohort.locks import LockBusy, SlideLock, claim_result_folder, describe_holder
from tseg.runtime.cohort.resume import decide, wanted_from
from tseg.runtime.errors import DicomWebError, OutputError, SlideChangedError, TsegError
from tseg.runtime.util.atomic import remove_path, replace_folder
from tseg.runtime.util.safeio import open_fd, read_json
from tseg.runtime.util.http import RETRY_STATUS
from tseg.runtime.outputs.files import repostprocess, write_outputs
from tseg.runtime.wsi.locator import SlideRef, as_slide, is_remote, slide_exists, slide_key
from tseg.runtime.wsi.dispatch import stored_mpp

log = logging.getLogger(__name__)


def check_output_root(out: Path) -> None:
    """Create ``out`` and prove it writable, or raise OutputError naming it (and the file in the
    way, when ``out`` or a folder above it is a file)."""
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(out, f"the output folder is not writable: {blocker} is a file, not a folder; "
                               "choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".tseg-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        fd = open_fd(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, follow=False)  # never through a planted link
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise OutputError(out, f"the output folder is not writable ({exc.strerror or exc}); choose another --out") from exc


def process_slide(segmenter: Any, slide: SlideRef, out: Path, overwrite: bool = False,
                  on_tile: Callable[[int, bool], None] | None = None,
                  on_plan: Callable[[int], None] | None = None, wait_for_lock: bool = False,
                  on_wait: Callable[[dict[str, Any] | None], None] | None = None,
                  cancel: threading.Event | None = None, dicom: Any = None) -> SlideOutcome:
    """Segment one slide (a path, or a DICOMweb series URL) into its result folder in ``out``,
    atomically, under the folder's lock.

    The folder and whether a finished result is reused, post-processed again or redone follow
    :mod:`tseg.runtime.cohort.resume` (names depend on the slide alone). A lock
    held by another live process gives status ``locked`` (with ``wait_for_lock``: wait for it).
    Setting ``cancel`` stops the tile loop: the slide fails and its partial outputs are removed.
    ``dicom`` (:class:`~tseg.runtime.outputs.dicom_export.DicomOptions`): also make the result's
    DICOM objects (and store them), for new, reused and post-processed results alike
    (:func:`with_dicom`)."""
    t0 = time.perf_counter()
    slide = as_slide(slide)
    name = result_stem(slide) if slide_exists(slide) else slide_stem(slide)
    try:
        identity = slide_identity(slide)
    except (TsegError, OSError) as exc:
        return failed_outcome(slide, name, exc, t0)
    try:
        name, lock = claim_result_folder(out, identity, wait=wait_for_lock, on_wait=on_wait)
    except LockBusy as busy:
        who = describe_holder(busy.holder)
        return SlideOutcome(str(slide), identity.stem, "locked", detail=f"being processed by {who}", holder=who)
    except TsegError as exc:
        return failed_outcome(slide, identity.stem, exc, t0)
    final = out / name
    try:
        decision = decide(final, identity, wanted_from(segmenter), overwrite, lambda: stored_mpp(slide))
        if decision.action == "skip":
            return with_dicom(SlideOutcome(str(slide), name, "skipped", detail=decision.reason), final, dicom, t0)
        if decision.action == "postprocess":
            s = segmenter.settings
            summary = repostprocess(final, segmenter.low, segmenter.high, s.prune, overlay_style=s.overlay_style,
                                    overlay_opacity=s.overlay_opacity)
            return with_dicom(SlideOutcome(str(slide), name, "postprocessed", seconds=time.perf_counter() - t0,
                                           summary=summary, detail=decision.reason), final, dicom, t0)
        pattern = glob.escape(name)  # a name may hold [ ] * ?: never match another slide's folders
        for stale in list(out.glob(f".{pattern}.tmp-*")) + list(out.glob(f".{pattern}.old-*")):
            log.info("removing %s left by an interrupted run", stale)
            remove_path(stale)
        tmp = out / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True)
            write_marker(tmp, identity)
            result = segmenter.segment_slide(slide, on_tile=on_tile, on_plan=on_plan, cancel=cancel)
            _check_unchanged(slide, identity)
            result.summary["slide"].update(path=identity.path, fingerprint=identity.fingerprint,
                                           size_bytes=identity.size_bytes, result_folder=name)
            result.summary["worker"] = describe_worker()  # host, pid, Slurm task: for the report
            write_outputs(result, tmp, segmenter.contract.mpp)
            if dicom is not None:
                keep_dicom(final, tmp)
            replace_folder(tmp, final, out / f".{name}.old-{os.getpid()}")
        except BaseException:
            remove_path(tmp)
            raise
        detail = "" if decision.reason == "new" else decision.reason
        return with_dicom(SlideOutcome(str(slide), name, "done", seconds=time.perf_counter() - t0,
                                       summary=result.summary, detail=detail), final, dicom, t0)
    except Exception as exc:
        return failed_outcome(slide, name, exc, t0)
    finally:
        lock.release(remove=True)


def _check_unchanged(slide: SlideRef, identity: Any) -> None:
    """The slide's content fingerprint again, after reading: the Segmenter notices size and time
    changes (wsi/snapshot.py); this also a rewrite that kept both (``touch -r``, a copy with
    preserved times) in the bytes fingerprinted. (A DICOMweb series is not asked again: its
    instances do not change under one Series Instance UID.)"""
    if is_remote(slide):
        return
    try:
        now = slide_identity(slide)
    except (TsegError, OSError) as exc:
        raise SlideChangedError(slide, f"the file changed while it was read (it can no longer be read: "
                                       f"{getattr(exc, 'strerror', None) or exc}); nothing was kept") from exc
    if (now.fingerprint, now.size_bytes) != (identity.fingerprint, identity.size_bytes):
        raise SlideChangedError(slide, "the file changed while it was read (its content fingerprint differs from the "
                                       "one taken before reading); nothing was kept. Run it again once the file "
                                       "is complete")


def keep_dicom(final: Path, tmp: Path) -> None:
    """The earlier result's ``dicom/`` carried into its replacement (``--overwrite``): an
    unchanged result keeps its objects (not rebuilt, not stored again), a changed one names the
    series it supersedes (issue 29). Links are copied as links (and then refused by the reader)."""
    old = final / "dicom"
    if final.is_dir() and not final.is_symlink() and old.is_dir() and not old.is_symlink():
        try:
            shutil.copytree(old, tmp / "dicom", symlinks=True, copy_function=_link_or_copy)
        except OSError as exc:  # a half-copied folder is rebuilt from scratch
            log.warning("%s: the earlier DICOM objects could not be kept (%s); they are made again", final.name, exc)
            shutil.rmtree(tmp / "dicom", ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def with_dicom(outcome: SlideOutcome, final: Path, dicom: Any, t0: float) -> SlideOutcome:
    """``outcome`` after making (and storing) the result's DICOM objects, when ``dicom`` asks.
    The result folder is complete whatever happens here; a failure fails the slide with a message
    saying so, and the next run makes or stores what is missing without running the network."""
    if dicom is None:
        return outcome
    from tseg.runtime.outputs.dicom_export import export_dicom

    try:
        entry = export_dicom(final, dicom)
    except Exception as exc:
        failed = failed_outcome(outcome.slide, outcome.name, exc, t0)
        stored = isinstance(exc, DicomWebError)
        if stored:  # the slide first, then where its objects were going (issue 29)
            failed.error = failed.error_cli = (f"{outcome.slide}: storing its DICOM objects at {exc.url} failed: "
                                               f"{exc.message}")
        note = (f"; the result in {final} is complete, but its DICOM objects could not be "
                f"{'stored' if stored else 'made'}")
        if stored and (exc.status is None or exc.status in RETRY_STATUS):  # the network: may pass next time
            note += ": run the same command again to retry (the slide is not segmented again)"
        failed.error = (failed.error or "") + note
        failed.error_cli = (failed.error_cli or "") + note
        failed.summary = outcome.summary
        return failed
    if outcome.summary:
        outcome.summary = dict(outcome.summary, dicom=entry)
    stored = (entry.get("stow") or {}).get("url")
    outcome.detail = "; ".join(d for d in (outcome.detail, f"DICOM stored at {stored}" if stored else "") if d)
    outcome.seconds = time.perf_counter() - t0
    return outcome


def run_slide(segmenter: Any, slide: SlideRef, out: Path, overwrite: bool = False, wait_for_lock: bool = False,
              overrides: Mapping[str, Any] | None = None, **callbacks: Any) -> SlideOutcome:
    """:func:`process_slide` with the slide's own settings (``overrides``: a slides CSV row) on
    ``segmenter``'s loaded model: what every worker runs, local or on a cluster."""
    slide = as_slide(slide)
    if overrides:
        try:
            segmenter = segmenter.with_settings(**overrides)
        except TsegError as exc:
            return failed_outcome(slide, slide_stem(slide), exc, time.perf_counter())
    return process_slide(segmenter, slide, Path(out), overwrite=overwrite, wait_for_lock=wait_for_lock,
                         **callbacks)


def remove_abandoned(out: Path, slide: str | os.PathLike[str]) -> int:
    """Remove the temporary folders that dead workers left for ``slide`` in ``out`` (those whose
    marker names this slide and whose lock no live process holds), and their stale locks.
    Returns how many of this slide's temporary folders a live process still holds."""
    target = slide_key(slide)
    held = 0
    for tmp in out.glob(".*.tmp-*"):
        name = tmp.name[1 : tmp.name.rfind(".tmp-")]
        try:
            marker = read_json(tmp / RESULT_MARKER, below=out)
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
            remove_path(tmp)
        finally:
            lock.release(remove=True)
    return held
