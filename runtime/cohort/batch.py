"""Folder batches that resume and lose nothing (``tseg-rt run``).

* Inputs are files and folders (:mod:`tseg.runtime.cohort.slide_lists`: folders searched
  recursively for slides and DICOM series, never into result folders; slides CSV lists).
* Each slide's outputs go to a result folder whose name depends on the slide alone, and a
  finished result is reused only when it is this slide's and was made with these settings;
  otherwise it is post-processed again (only thresholds or the overlay differ) or redone. The rules are in
  :mod:`tseg.runtime.cohort.resume` (identity, names, decisions), shared with distributed runners.
  One slide is processed by :func:`tseg.runtime.cohort.runner.run_slide`.
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
  (their partial outputs are removed), which finished, and which were not started.
* Where the slides run is the caller's choice, and this module only dispatches to a runner: this
  process or ``workers`` local processes (:mod:`tseg.runtime.cohort.local`), or a Ray cluster
  (``ray=``, :mod:`tseg.runtime.cohort.ray_batch`); every worker runs
  :func:`~tseg.runtime.cohort.runner.process_slide` (the same folders, locks and resume
  decisions), and this process keeps the outcomes (:class:`~tseg.runtime.cohort.outcomes.Ledger`):
  the same table and exit status wherever slides ran. The runners depend on the runner and ledger
  modules, never on this one. Each
  failed slide's reason is kept in the results folder for the cohort report
  (:func:`tseg.runtime.cohort.report.record_outcome`), and forgotten once the slide is finished.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from tseg.runtime.cohort.local import run_here, run_in_processes
from tseg.runtime.cohort.outcomes import BatchEvents, Ledger, SlideOutcome
from tseg.runtime.cohort.locks import remove_stale_locks
from tseg.runtime.cohort.runner import check_output_root
from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.wsi.locator import SlideRef, is_remote

log = logging.getLogger(__name__)

def run_batch(slides: Sequence[SlideRef], out: Path, segmenter: Any = None, overwrite: bool = False,
              workers: int | None = 1, engine: str | None = None, providers: Any = None,
              devices: Sequence[int] = (), settings: dict[str, Any] | None = None,
              events: BatchEvents | None = None,
              slide_settings: Mapping[str, Mapping[str, Any]] | None = None,
              wait_for_locks: bool = True, quiet_worker_load: bool = False,
              ray: str | None = None, max_worker_deaths: int = 2, dicom: Any = None) -> list[SlideOutcome]:
    """Process ``slides`` into ``out``: in this process with ``segmenter``, in ``workers``
    processes each loading its own backend from ``engine`` (one per device in ``devices``), or,
    with ``ray`` (``"auto"`` or a cluster address), on a Ray cluster, one long-lived worker per
    GPU or CPU worker (``workers``: how many; None: as many as the cluster has room for; see
    :mod:`tseg.runtime.cohort.ray_batch`, which also explains ``max_worker_deaths``).

    ``slide_settings`` maps a slide path (as given) to per-slide settings (``mpp``, ``low``,
    ``high``, ...) that override ``settings`` for that slide. Slides whose lock another process
    holds are waited for at the end (``wait_for_locks``), or reported as ``locked``.
    ``events`` (:class:`~tseg.runtime.cohort.outcomes.BatchEvents`) hears of slides starting and
    finishing, tiles finished anywhere (every runner) and the tiles of the slide being processed
    in this process. ``dicom``
    (:class:`~tseg.runtime.outputs.dicom_export.DicomOptions`): make each result's DICOM objects
    and store them where it says (not with ``ray`` yet). Slides may be DICOMweb series URLs.
    Raises :class:`BatchInterrupted` on Ctrl-C."""
    if ray is not None and (dicom is not None or any(is_remote(s) for s in slides)):
        raise InvalidArgumentError("DICOMweb slides and DICOM outputs do not run on Ray yet: run without --ray "
                                   "(--workers N runs slides in parallel on this machine)")
    check_output_root(out)
    stale = remove_stale_locks(out)
    if stale:
        log.info("removed %d stale lock file(s) in %s", stale, out)
    per_slide = {str(k): dict(v) for k, v in (slide_settings or {}).items()}
    ledger = Ledger(slides, out, events)
    if ray is not None:
        from tseg.runtime.cohort.ray_batch import run_on_ray

        run_on_ray(slides, out, ledger, address=ray, engine=engine, providers=providers, settings=settings or {},
                   per_slide=per_slide, overwrite=overwrite, workers=workers, wait_for_locks=wait_for_locks,
                   max_worker_deaths=max_worker_deaths, quiet_load=quiet_worker_load)
    elif workers is None or workers <= 1:
        run_here(slides, out, ledger, segmenter, per_slide=per_slide, overwrite=overwrite,
                 wait_for_locks=wait_for_locks, dicom=dicom)
    else:
        run_in_processes(slides, out, ledger, workers=workers, engine=engine, providers=providers, devices=devices,
                         settings=settings or {}, per_slide=per_slide, overwrite=overwrite,
                         wait_for_locks=wait_for_locks, quiet_worker_load=quiet_worker_load, dicom=dicom)
    return ledger.sorted()
