"""DICOM results of a finished result folder (``--dicom-out``), and storing them (``--stow URL``).

Settings are per run (:class:`DicomOptions`, picklable, no secrets: credentials are read where
they are used) and per slide (its site metadata, looked up by the slide's resolved path), so the
command line, worker processes and the service (``serve``/``watch``) make the same objects by
calling :func:`export_dicom` on a finished result folder, under the slide's lock.

The objects are built from the folder's own files (``mask.png``, ``foreground.png``,
``probability.png``, ``tumour.geojson``, ``summary.json``), never from memory, so a result made
without ``--dicom-out`` gets them on the next run with it (no network run), and a result whose
thresholds were changed (``tseg-rt postprocess``, or a run that post-processes again) gets new
ones: ``dicom/manifest.json`` records the SHA-256 of those files, and objects are rebuilt when
they differ. In ``OUT/<slide>/dicom/``:

* ``tumour-seg-<i>.dcm`` — the BINARY Segmentation pyramid (tumour and tissue), finest first;
* ``probability-seg-<i>.dcm`` — the one-segment FRACTIONAL Segmentation pyramid;
* ``tumour-annotations.dcm`` — Microscopy Bulk Simple Annotations (polygons, holes, areas); none
  when the result has no tumour region;
* ``slide/*.dcm`` — the slide itself as DICOM WSI (``convert_slide``, non-DICOM inputs only);
* ``manifest.json`` — every object's file, SOP Class, SOP Instance and Series UIDs, the source,
  the UIDs of a new study, warnings, sizes and build time; ``stow.json`` — what was stored where.

Series: results are new series in the source's study, numbered 9001 (SEG), 9002 (probability),
9003 (annotations). The folder is built beside ``dicom/`` and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tseg.runtime.errors import OutputError
from tseg.runtime.outputs.dicom_source import SiteMetadata, SourceImages

log = logging.getLogger(__name__)

DICOM_FOLDER = "dicom"
MANIFEST = "manifest.json"
INPUTS = ("mask.png", "foreground.png", "probability.png", "tumour.geojson")
STAND_IN_REFUSED = ("not stored: the slide is not DICOM, so its objects refer to a slide the archive does not "
                    "have, with empty patient attributes. Add --dicom-wsi (store the slide as DICOM with its results) "
                    "or --dicom-metadata CSV (its patient, accession and specimen); or --stow-stand-in to store them "
                    "as they are (docs/dicom.md)")
OBJECT_FILES = {"seg": "tumour-seg-", "probability": "probability-seg-", "annotations": "tumour-annotations"}
SERIES = {"seg": (9001, "tseg-rt tumour segmentation"), "probability": (9002, "tseg-rt tumour probability"),
          "annotations": (9003, "tseg-rt tumour regions")}


@dataclass(frozen=True)
class DicomOptions:
    """What to make and where to store it, for every slide of a run.

    ``convert_slide``: write non-DICOM slides as DICOM WSI too; ``compress``: JPEG 2000 lossless
    probability maps; ``stow_url``: a DICOMweb root to store into (STOW-RS) after writing;
    ``credentials_file``: where that server's credentials are (util/http; else the environment);
    ``site``: site metadata by resolved slide path (:func:`~.dicom_source.read_metadata_file`)."""

    convert_slide: bool = False
    compress: bool = True
    stow_url: str | None = None
    credentials_file: str | None = None
    site: Mapping[str, SiteMetadata] = field(default_factory=dict)
    stow_stand_in: bool = False

    def site_for(self, slide_key: str) -> SiteMetadata | None:
        return self.site.get(slide_key)


def make_options(convert_slide: bool = False, stow_url: str | None = None, credentials_file: str | None = None,
                 metadata_file: str | os.PathLike[str] | None = None, compress: bool = True,
                 stow_stand_in: bool = False) -> DicomOptions:
    """Checked :class:`DicomOptions`: the libraries are there, the STOW URL is a DICOMweb root
    without credentials, the metadata file reads. Raises InvalidArgumentError before any slide."""
    from tseg.runtime.errors import InvalidArgumentError
    from tseg.runtime.outputs.dicom_source import read_metadata_file
    from tseg.runtime.outputs.stow import check_stow_url

    needed = ["highdicom", "pydicom"] + (["dicomweb_client"] if stow_url else []) + (
        ["wsidicomizer"] if convert_slide else [])
    for module in needed:
        try:
            __import__(module)
        except ImportError:
            raise InvalidArgumentError(f"DICOM outputs need {module}: pip install 'tseg-rt[dicom]'") from None
    if compress:
        try:
            __import__("openjpeg")
        except ImportError:
            log.warning("pylibjpeg-openjpeg is missing: probability maps are written uncompressed")
            compress = False
    site = read_metadata_file(metadata_file) if metadata_file is not None else {}
    return DicomOptions(convert_slide=convert_slide, compress=compress,
                        stow_url=check_stow_url(stow_url) if stow_url else None,
                        credentials_file=str(credentials_file) if credentials_file else None, site=site,
                        stow_stand_in=stow_stand_in)


def _sha256(path: Path) -> str:
    from tseg.runtime.util.safeio import open_regular

    h = hashlib.sha256()
    with open_regular(path, below=path.parent.parent) as fh:  # no links in a result folder (safeio)
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _result_image(path: Path) -> Any:
    """A PNG of a result folder, never through a link in or to the folder, never a FIFO (safeio)."""
    import cv2
    import numpy as np

    from tseg.runtime.util.safeio import read_bytes

    try:
        data = read_bytes(path, below=path.parent.parent, limit=None)
    except OSError as exc:
        raise OutputError(path, f"unreadable ({getattr(exc, 'what', None) or exc.strerror or exc}); rerun `tseg-rt "
                                "run --overwrite` for its slide") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise OutputError(path, "not a readable PNG; rerun `tseg-rt run --overwrite` for its slide")
    return image


def _result_json(path: Path) -> Any:
    """A JSON file of a result folder, read as :func:`_result_image` reads images."""
    from tseg.runtime.util.safeio import read_json

    try:
        return read_json(path, below=path.parent.parent, limit=None)
    except (OSError, ValueError) as exc:
        raise OutputError(path, f"unreadable ({getattr(exc, 'what', None) or exc}); rerun `tseg-rt run "
                                "--overwrite` for its slide") from None


def _read_json(path: Path) -> dict[str, Any] | None:
    from tseg.runtime.util.safeio import read_json

    try:
        data = read_json(path, below=path.parent.parent)  # no links in a result folder (safeio)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Any) -> None:
    from tseg.runtime.util.atomic import write_text

    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``dicom/manifest.json`` of a result folder, or None."""
    return _read_json(Path(folder) / DICOM_FOLDER / MANIFEST)


def _made_from(folder: Path) -> dict[str, str]:
    missing = [name for name in INPUTS if not (folder / name).is_file()]
    if missing:
        raise OutputError(folder, f"missing {', '.join(missing)}: not a finished tseg-rt result; rerun its slide")
    return {name: _sha256(folder / name) for name in INPUTS}


def _site_values(summary: Mapping[str, Any] | None, options: DicomOptions) -> dict[str, str]:
    site = options.site_for(str(((summary or {}).get("slide") or {}).get("path", "")))
    return dict(site.values) if site is not None else {}


def is_current(folder: str | os.PathLike[str], options: DicomOptions) -> bool:
    """Whether ``dicom/`` holds objects made from the folder's present files, with the same site
    metadata (and the slide's conversion, when asked for)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("made_from") != _made_from(folder):
        return False
    if manifest.get("site", {}) != _site_values(_read_json(folder / "summary.json"), options):
        return False
    if manifest.get("failed"):
        return False
    kind = (manifest.get("source") or {}).get("kind")
    return not (options.convert_slide and kind == "stand-in")


def _source_images(summary: Mapping[str, Any], uids: dict[str, str], options: DicomOptions,
                   build: Path, previous: Path | None) -> SourceImages:
    from tseg.runtime.outputs import dicom_source as src
    from tseg.runtime.wsi.dicomweb_source import DicomWebLocation, connect, is_dicomweb_url, series_datasets

    slide = summary["slide"]
    key = str(slide["path"])
    if is_dicomweb_url(key):
        connection = connect(DicomWebLocation.parse(key), options.credentials_file)
        try:
            return SourceImages("dicomweb", src.volume_levels(series_datasets(connection), key))
        finally:
            connection.close()
    from tseg.runtime.wsi.dicom_source import series_for

    path = Path(key)
    if slide.get("vendor") == "dicom":  # a DICOM series (OpenSlide's vendor name): its own study
        if not path.exists():
            raise OutputError(path, "the DICOM series is gone; its headers are needed to refer to it")
        return SourceImages("dicom", src.volume_levels(src.read_headers(series_for(path).files), key))
    site = options.site_for(key)
    notes = [] if site and site.values else [
        "no site metadata (patient, accession, specimen) for this slide: the objects have empty patient attributes; "
        "give --dicom-metadata FILE before they go into an archive"]
    if options.convert_slide:
        old = previous / "slide" if previous is not None else None
        if old is not None and old.is_dir() and any(old.glob("*.dcm")):
            # Same slide, same site metadata (else the UIDs are new): keep its conversion.
            shutil.copytree(old, build / "slide", copy_function=_link_or_copy)
            files = sorted((build / "slide").glob("*.dcm"))
        else:
            if not path.is_file():
                raise OutputError(path, "the slide file is gone; it is needed to write it as DICOM")
            files = src.convert_slide(path, build / "slide", uids, site)
        return SourceImages("converted", src.volume_levels(src.read_headers(files), key), files, notes)
    size0 = tuple(int(v) for v in slide["dimensions_level0"])
    mpp0 = tuple(float(v) for v in slide["mpp_level0"])
    return SourceImages("stand-in", src.stand_in(size0, mpp0, uids, site), [], notes)  # type: ignore[arg-type]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _save(obj: Any, path: Path) -> dict[str, Any]:
    from tseg.runtime.outputs.dicom_source import UTF8

    obj.SpecificCharacterSet = UTF8  # names as UTF-8, whatever the source's set (issue 29, defect 4)
    obj.save_as(str(path), enforce_file_format=True)
    return {"file": path.name, "sop_class_uid": str(obj.SOPClassUID), "sop_instance_uid": str(obj.SOPInstanceUID),
            "series_instance_uid": str(obj.SeriesInstanceUID), "bytes": path.stat().st_size}


def write_dicom(folder: str | os.PathLike[str], options: DicomOptions) -> dict[str, Any]:
    """Build every DICOM object of a finished result folder into ``folder/dicom/`` (replacing what
    was there); returns the manifest. OutputError names what is missing or inconsistent."""
    import cv2

    from tseg.runtime.outputs import dicom as objects
    from tseg.runtime.outputs.dicom_source import check_geometry, complete

    folder = Path(folder)
    t0 = time.perf_counter()
    summary = _read_json(folder / "summary.json")
    if summary is None or not isinstance(summary.get("slide"), dict):
        raise OutputError(folder, "no readable summary.json: not a finished tseg-rt result; rerun its slide")
    made_from = _made_from(folder)
    target = folder / DICOM_FOLDER
    previous = read_manifest(folder) or {}
    site = _site_values(summary, options)
    if previous.get("site", {}) != site:  # other patient or specimen: another study, never the same UIDs
        previous = {}
    uids = dict(previous.get("uids") or {})
    slide_id = (summary["slide"].get("fingerprint") or summary["slide"].get("path"), site)
    for name in ("study", "frame", "slide_series", "pyramid", "specimen"):  # same slide and site: same study
        uids.setdefault(name, str(objects.content_uid("tseg-rt", name, *slide_id)))
    for stale in list(folder.glob(f".{DICOM_FOLDER}.tmp-*")) + list(folder.glob(f".{DICOM_FOLDER}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run (the caller holds the slide's lock)
    build = folder / f".{DICOM_FOLDER}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    build.mkdir()
    try:
        source = _source_images(summary, uids, options, build, target if target.is_dir() and previous else None)
        slide = summary["slide"]
        check_geometry(source, slide["dimensions_level0"], str(folder))
        warnings = list(source.warnings) + complete(source.volumes)
        mask = _result_image(folder / "mask.png") > 0
        tissue = _result_image(folder / "foreground.png") > 0
        probability = _result_image(folder / "probability.png")
        geojson = _result_json(folder / "tumour.geojson")
        mpp0 = (float(slide["mpp_level0"][0]), float(slide["mpp_level0"][1]))
        algorithm = objects.Algorithm.from_summary(summary)
        result_um = objects.result_pixel_um(source.level0, mpp0)
        series = result_series(summary, made_from, site, source)
        made = [dict(_slide_entry(f, build), kind="slide") for f in source.files]
        failed: dict[str, str] = {}  # one object failing does not stop the others (issue 29)

        def build_seg() -> None:
            for i, seg in enumerate(objects.tumour_segmentation(source.volumes, mask, tissue, result_um, algorithm,
                                                                series["seg"])):
                made.append(dict(_save(seg, build / f"tumour-seg-{i}.dcm"), kind="seg", level=i))

        def build_probability() -> None:
            for i, seg in enumerate(objects.probability_segmentation(
                    source.volumes, probability, result_um, algorithm, series["probability"], options.compress)):
                made.append(dict(_save(seg, build / f"probability-seg-{i}.dcm"), kind="probability", level=i))

        def build_annotations() -> None:
            ann = objects.tumour_annotations(source.level0, geojson, mpp0, algorithm, series["annotations"])
            if ann is not None:  # no tumour region, no annotation object (the SEG says so)
                made.append(dict(_save(ann, build / "tumour-annotations.dcm"), kind="annotations"))

        for kind, step in (("seg", build_seg), ("probability", build_probability), ("annotations", build_annotations)):
            try:
                step()
            except Exception as exc:  # highdicom's checks raise ValueError, TypeError, AttributeError...
                log.debug("%s: DICOM %s failed", folder.name, kind, exc_info=exc)
                failed[kind] = f"{type(exc).__name__}: {str(exc)[:300]}"
                made[:] = [o for o in made if o["kind"] != kind]
                for path in build.glob(f"{OBJECT_FILES[kind]}*.dcm"):
                    path.unlink()
        level0 = source.level0
        manifest = {
            "made_from": made_from, "site": site, "uids": uids, "objects": made, "warnings": warnings,
            "failed": failed, "supersedes": superseded(previous, made),
            "source": {"kind": source.kind, "study_instance_uid": str(level0.StudyInstanceUID),
                       "series_instance_uid": str(level0.SeriesInstanceUID),
                       "frame_of_reference_uid": str(level0.FrameOfReferenceUID),
                       "level0_sop_instance_uid": str(level0.SOPInstanceUID)},
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if target.is_dir() and (target / "stow.json").is_file():
            shutil.copy2(target / "stow.json", build / "stow.json")  # which instances servers already hold
        _write_json(build / MANIFEST, manifest)
        _replace(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    for text in warnings:
        log.warning("%s: DICOM: %s", folder.name, text)
    for kind, old in manifest["supersedes"].items():
        log.warning("%s: DICOM: the new %s series supersedes series %s (the archive keeps both)", folder.name,
                    SERIES[kind][1], old)
    if failed:
        raise OutputError(folder / DICOM_FOLDER, failure_message(failed))
    return manifest


def result_series(summary: Mapping[str, Any], made_from: Mapping[str, str], site: Mapping[str, str],
                  source: SourceImages) -> dict[str, Any]:
    """The three result series. Their UIDs (and their instances') are derived from the result's
    content, the site metadata and the source images, so the same result gives the same series (a
    re-send replaces, never duplicates), and a changed one new series; the description says
    what they were made with (thresholds, model, date of the result)."""
    from tseg.runtime.outputs import dicom as objects

    level0 = source.level0
    content = (json.dumps([made_from, site], sort_keys=True), source.kind, str(level0.StudyInstanceUID),
               str(level0.SeriesInstanceUID))
    settings = summary.get("settings") or {}
    sha = str(((summary.get("model") or {}).get("backend") or {}).get("sha256") or "")[:8]
    made = f" t{settings.get('low', '?')}-{settings.get('high', '?')} m{sha or '?'} {str(summary.get('created', ''))[:10]}"
    series = {}
    for kind, (number, description) in SERIES.items():
        seed = objects.content_uid("tseg-rt result", kind, *content)
        series[kind] = objects.Series(str(seed), number, (description + made).strip()[:64], seed=str(seed))
    return series


def superseded(previous: Mapping[str, Any], made: list[dict[str, Any]]) -> dict[str, str]:
    """``{kind: series UID}`` of the earlier result's series that the new objects replace."""
    new = {o["kind"]: o["series_instance_uid"] for o in made}
    old = {o["kind"]: o["series_instance_uid"] for o in previous.get("objects", []) if o.get("kind") in SERIES}
    return {kind: uid for kind, uid in old.items() if new.get(kind) != uid}


def failure_message(failed: Mapping[str, str]) -> str:
    """What could not be made and why; the others were written. A failure here is the result's
    or the source's (deterministic): running again makes the same, so the message says so."""
    parts = "; ".join(f"the {SERIES[kind][1].removeprefix('tseg-rt ')} object ({OBJECT_FILES[kind]}*.dcm): {why}"
                      for kind, why in failed.items())
    return (f"could not make {parts}. The other DICOM objects were written. Running again gives the same; "
            "please report it with the slide's summary.json")


def _slide_entry(path: Path, build: Path) -> dict[str, Any]:
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    return {"file": str(path.relative_to(build)), "sop_class_uid": str(ds.SOPClassUID),
            "sop_instance_uid": str(ds.SOPInstanceUID), "series_instance_uid": str(ds.SeriesInstanceUID),
            "bytes": path.stat().st_size}


def _replace(build: Path, target: Path) -> None:
    """Put ``build`` in place of ``target`` (a rename; the old folder goes after)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    os.rename(build, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def summary_entry(manifest: Mapping[str, Any], stow: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``summary.json`` says about the DICOM objects (its ``dicom`` section)."""
    by_kind: dict[str, Any] = {}
    for obj in manifest.get("objects", []):
        entry = by_kind.setdefault(obj["kind"], {"series_instance_uid": obj["series_instance_uid"], "instances": 0,
                                                 "bytes": 0})
        entry["instances"] += 1
        entry["bytes"] += int(obj.get("bytes", 0))
    data = {"folder": DICOM_FOLDER, "source": manifest.get("source"), "series": by_kind,
            "warnings": manifest.get("warnings", []), "seconds": manifest.get("seconds")}
    if manifest.get("supersedes"):
        data["supersedes"] = dict(manifest["supersedes"])
    if stow:
        data["stow"] = {k: stow[k] for k in ("url", "stored", "time") if k in stow}
    return data


def export_dicom(folder: str | os.PathLike[str], options: DicomOptions) -> dict[str, Any]:
    """Make ``folder``'s DICOM objects unless current ones exist, store them when
    ``options.stow_url`` is set (only instances that server does not hold yet), and record both
    in ``summary.json``. Returns the summary's ``dicom`` section. Call under the slide's lock."""
    from tseg.runtime.outputs.stow import stow_folder

    folder = Path(folder)
    manifest = read_manifest(folder) if is_current(folder, options) else None
    if manifest is None:
        manifest = write_dicom(folder, options)
    if (options.stow_url and (manifest.get("source") or {}).get("kind") == "stand-in" and not manifest.get("site")
            and not options.stow_stand_in):
        raise OutputError(folder, STAND_IN_REFUSED)
    stow = (stow_folder(folder / DICOM_FOLDER, manifest["objects"], options.stow_url, options.credentials_file,
                        folder.name) if options.stow_url else None)
    entry = summary_entry(manifest, stow)
    summary = _read_json(folder / "summary.json") or {}
    if summary.get("dicom") != entry:
        summary["dicom"] = entry
        _write_json(folder / "summary.json", summary)
    return entry
