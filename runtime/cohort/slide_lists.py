"""Which slides a batch runs: folders searched for slides, and slides CSV lists.

Folders are searched recursively for the extensions OpenSlide and the tifffile path read, and
for DICOM series (the ``.dcm`` files of one series are one slide, however many files it has and
however they were named: :mod:`tseg.runtime.wsi.dicom_source`). Hidden folders, the output folder and
every tseg-rt result folder (marked with ``.tseg-rt-result``, or holding a ``summary.json``
beside a probability map) are not searched, so results are never taken for slides.

**One file, one slide.** A file listed under several names (a symbolic link to it, a hard link,
the same path spelt twice) is one slide, run once, with one result (:func:`same_file`). Its name
never depends on the order of the inputs: the file's own name when it is among them (a name that
is not a symbolic link), otherwise the first of its names in sorted order.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, Iterable, Sequence

from tseg.runtime.wsi.locator import SlideRef, as_slide, is_remote, slide_key
from tseg.runtime.cohort.identity import is_result_folder
from tseg.runtime.cohort.slides_csv import check_conflict
from tseg.runtime.errors import NoSlidesFoundError
from tseg.runtime.util.safeio import kind_of

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide",
                  ".bif", ".btf", ".qptiff")
DICOM_SUFFIXES = (".dcm",)


def same_file(slide: SlideRef) -> str:
    """One key for every name of one file (or DICOM folder): its device and inode, which a hard
    link shares too; the resolved path when it cannot be stat'ed; a DICOMweb URL as it is."""
    if is_remote(slide):
        return str(slide)
    try:
        st = os.stat(slide)
    except OSError:
        return str(Path(slide).resolve())
    return f"inode:{st.st_dev}:{st.st_ino}"


def _preferred(names: Sequence[Path]) -> Path:
    """The name a file listed several times goes by: not a symbolic link first, then sorted."""
    return min(names, key=lambda f: (f.is_symlink(), str(f)))


def _walk(root: Path, exclude: Path | None) -> Iterable[Path]:
    """Regular files under ``root`` (links to regular files included), skipping hidden entries,
    ``exclude`` and tseg-rt result folders. Anything else a folder holds under a file's name (a
    FIFO, socket or device, a broken link) is skipped with a warning: opening a FIFO blocks until
    someone writes to it, and even the DICOM sniffing of files without an extension opens them.
    Decided from ``scandir`` entries (``stat`` only for links), never by opening."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("not searching %s: %s", folder, exc.strerror or exc)
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows links, as os.walk lists them (it does not descend them)
                is_file = entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                if entry.is_symlink():
                    continue
                if exclude is not None and path.resolve() == exclude:
                    continue
                if is_result_folder(path):
                    log.debug("not searching %s: a tseg-rt result folder", path)
                    continue
                subfolders.append(path)
            elif is_file:
                yield path
            else:
                try:
                    what = kind_of(os.stat(path).st_mode)
                except OSError:
                    what = "a broken link" if entry.is_symlink() else "unreadable"
                log.warning("skipping %s: it is %s, not a regular file", path, what)
        stack.extend(reversed(subfolders))


def find_slides(inputs: Iterable[str | os.PathLike[str]], exclude: Path | None = None) -> list[SlideRef]:
    """Slides among ``inputs`` (files as given; folders searched recursively), sorted.

    A DICOM series is one entry (its folder, or its first file when the folder holds several
    series); DICOM files that are not whole-slide images are skipped in folders and kept, to fail
    with their reason, when named explicitly. A DICOMweb series URL is one slide, kept as its
    canonical URL (a string, after the local slides; :mod:`tseg.runtime.wsi.locator`)."""
    from tseg.runtime.wsi.dicom_source import group_series, is_dicom_candidate

    found: list[Path] = []
    remote: set[str] = set()
    dicom_files: list[Path] = []
    explicit_dicom: set[Path] = set()
    missing = []
    inputs = list(inputs)
    exclude_resolved = exclude.resolve() if exclude is not None else None
    for item in inputs:
        if is_remote(item):
            remote.add(str(as_slide(item)))
            continue
        p = Path(item)
        if p.exists() and not p.is_file() and not p.is_dir():
            found.append(p)  # named explicitly: a FIFO, socket or device fails with its reason, unopened
        elif p.is_file():
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
    names: dict[str, list[Path]] = {}
    for f in found:
        names.setdefault(same_file(f), []).append(f)
    unique: list[SlideRef] = sorted((_preferred(n) for n in names.values()), key=lambda f: str(f))
    unique += sorted(remote)
    if not unique:
        raise NoSlidesFoundError(
            "no slides found in " + ", ".join(str(i) for i in inputs)
            + f" (looked for {', '.join(SLIDE_SUFFIXES + DICOM_SUFFIXES)} and DICOM series; name other files "
            "explicitly)")
    return unique


def _slides_of(slide: SlideRef, exclude: Path | None) -> list[SlideRef]:
    """What one slides-CSV path stands for: a DICOMweb URL, or the file itself when it is a regular
    file with a slide extension (no search: millions of rows stay cheap), else what
    :func:`find_slides` finds."""
    if is_remote(slide):
        return [as_slide(slide)]
    path = Path(slide)
    if path.name.lower().endswith(SLIDE_SUFFIXES):
        try:
            if stat.S_ISREG(os.stat(path).st_mode):
                return [path]
        except OSError:
            pass
    return find_slides([path], exclude=exclude)


def collect_slides(inputs: Sequence[str | os.PathLike[str]], rows: Iterable[Any], exclude: Path | None = None,
                   source: str = "the slides CSV") -> tuple[list[SlideRef], dict[str, dict[str, Any]]]:
    """The slides named or found in ``inputs``, then those of a slides CSV's ``rows``
    (:func:`~tseg.runtime.cohort.slides_csv.iter_slides_csv`, streamed, or ``(path, settings)``
    pairs), each once; and each row's settings by the slide's path as listed (the form
    ``run_batch(slide_settings=...)`` takes). Two rows that give one slide (the same file under any
    name: :func:`same_file`) different settings are an InvalidArgumentError naming both rows (``source`` names
    the CSV). Memory grows with the distinct slides, not with the rows."""
    found = find_slides(inputs, exclude=exclude) if inputs else []
    listed = {same_file(p): p for p in found}  # the file -> the slide as first listed
    first_row: dict[str, tuple[int, dict[str, Any]]] = {}
    per_slide: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(rows, start=2):
        number, path, settings = entry if len(entry) == 3 else (index, *entry)
        for p in _slides_of(path, exclude):
            key = same_file(p)
            if key in first_row:
                check_conflict(slide_key(p), first_row[key], (number, settings), source)
                continue
            first_row[key] = (number, settings)
            if key not in listed:
                listed[key] = p
                found.append(p)
            per_slide[str(listed[key])] = settings
    return found, per_slide
