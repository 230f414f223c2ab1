"""Which slides a batch runs: folders searched for slides, and slides CSV lists.

Folders are searched recursively for the extensions OpenSlide and the tifffile path read, and
for DICOM series (the ``.dcm`` files of one series are one slide, however many files it has and
however they were named: :mod:`tseg.runtime.wsi.dicom`). Hidden folders, the output folder and
every tseg-rt result folder (marked with ``.tseg-rt-result``, or holding a ``summary.json``
beside a probability map) are not searched, so results are never taken for slides.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from tseg.runtime.wsi.locator import SlideRef, as_slide, is_remote, slide_key
from tseg.runtime.cohort.identity import is_result_folder
from tseg.runtime.errors import NoSlidesFoundError
from tseg.runtime.wsi.mpp import parse_mpp

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide",
                  ".bif", ".btf", ".qptiff")
DICOM_SUFFIXES = (".dcm",)


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


def find_slides(inputs: Iterable[str | os.PathLike[str]], exclude: Path | None = None) -> list[SlideRef]:
    """Slides among ``inputs`` (files as given; folders searched recursively), sorted.

    A DICOM series is one entry (its folder, or its first file when the folder holds several
    series); DICOM files that are not whole-slide images are skipped in folders and kept, to fail
    with their reason, when named explicitly. A DICOMweb series URL is one slide, kept as its
    canonical URL (a string, after the local slides; :mod:`tseg.runtime.wsi.locator`)."""
    from tseg.runtime.wsi.dicom import group_series, is_dicom_candidate

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
    unique: list[SlideRef] = sorted({f.resolve(): f for f in found}.values(), key=lambda f: str(f))
    unique += sorted(remote)
    if not unique:
        raise NoSlidesFoundError(
            "no slides found in " + ", ".join(str(i) for i in inputs)
            + f" (looked for {', '.join(SLIDE_SUFFIXES + DICOM_SUFFIXES)} and DICOM series; name other files "
            "explicitly)")
    return unique


#: Columns a slides CSV may have besides ``path``, and how each is read.
SLIDES_CSV_COLUMNS = ("mpp", "mpp_x", "mpp_y", "low", "high", "prune")


def read_slides_csv(path: str | os.PathLike[str]) -> list[tuple[SlideRef, dict[str, Any]]]:
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
    out: list[tuple[SlideRef, dict[str, Any]]] = []
    for n, raw in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        where = f"{p}, row {n}"
        if not row.get("path"):
            raise InvalidArgumentError(f"{where}: empty path")
        if is_remote(row["path"]):  # a DICOMweb series URL
            slide: SlideRef = as_slide(row["path"])
        else:
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


def collect_slides(inputs: Sequence[str | os.PathLike[str]], rows: Sequence[tuple[SlideRef, dict[str, Any]]],
                   exclude: Path | None = None) -> tuple[list[SlideRef], dict[str, dict[str, Any]]]:
    """The slides named or found in ``inputs``, then those of a slides CSV's ``rows``
    (:func:`read_slides_csv`), each once; and each row's settings by the slide's path as listed
    (the form ``run_batch(slide_settings=...)`` takes)."""
    found = find_slides(inputs, exclude=exclude) if inputs else []
    known = {slide_key(p) for p in found}
    per_slide: dict[str, dict[str, Any]] = {}
    for path, row in rows:
        for p in find_slides([path], exclude=exclude):
            if slide_key(p) not in known:
                found.append(p)
                known.add(slide_key(p))
            per_slide[str(next(f for f in found if slide_key(f) == slide_key(p)))] = row
    return found, per_slide
