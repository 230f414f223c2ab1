"""The source images DICOM results refer to, and what a site fills in for slides that are not DICOM.

A DICOM Segmentation or annotation object must name the images it was derived from (their study,
series, instances and Frame of Reference) and copies the patient, study and specimen from them.
:func:`source_images` finds them for a result:

* **DICOM input** (a series folder, or a DICOMweb series): the VOLUME instances of the series,
  read as headers (files) or metadata (WADO-RS). The results join the slide's study as new
  series, with its patient and specimen; a site's metadata file is not used for these.
* **Other formats, ``convert_slide``**: the slide is first written as DICOM WSI by wsidicomizer
  (SVS and NDPI tiles copied losslessly, other formats re-encoded as JPEG) into the result's
  ``dicom/slide/``, in a new study carrying the site's metadata; the results refer to those
  images, so an archive holds the slide and its results together and a viewer can show both.
* **Other formats, no conversion**: a stand-in description of the slide as DICOM WSI (a pyramid
  halving from level 0, the slide's size and resolution, a new study, Frame of Reference and
  the site's metadata) that is never stored: the objects are valid and self-consistent, but a
  viewer needs the slide itself (convert it, then).

**Site metadata** (:func:`read_metadata_file`): a CSV file with a ``path`` column (a slide path,
relative to the CSV's folder) and any of the columns of :data:`SITE_FIELDS` (patient ID and
name, birth date, sex, accession number, study ID and description, referring physician, slide
(container) ID, specimen ID and description, institution). A slide without a row gets empty
patient attributes, and its summary says so: fill them in before results go into an archive.

Missing Image Orientation (Slide) or Total Pixel Matrix Origin in a DICOM source (both required)
are assumed to be the standard orientation and the origin, with a warning in the summary.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from tseg.runtime.errors import InvalidArgumentError, OutputError
from tseg.runtime.wsi.dicom_source import WSI_SOP_CLASS

log = logging.getLogger(__name__)

#: CSV column -> (DICOM keyword, value representation) of what a site fills in.
SITE_FIELDS: dict[str, tuple[str, str]] = {
    "patient_id": ("PatientID", "LO"), "patient_name": ("PatientName", "PN"),
    "patient_birth_date": ("PatientBirthDate", "DA"), "patient_sex": ("PatientSex", "CS"),
    "accession_number": ("AccessionNumber", "SH"), "study_id": ("StudyID", "SH"),
    "study_description": ("StudyDescription", "LO"), "referring_physician_name": ("ReferringPhysicianName", "PN"),
    "container_id": ("ContainerIdentifier", "LO"), "specimen_id": ("SpecimenIdentifier", "LO"),
    "specimen_description": ("SpecimenShortDescription", "LO"), "institution_name": ("InstitutionName", "LO"),
}
_MAX_LENGTH = {"LO": 64, "PN": 64, "SH": 16, "CS": 16, "DA": 8}
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")
STANDARD_ORIENTATION = [0.0, -1.0, 0.0, -1.0, 0.0, 0.0]  # rows along -Y, columns along -X (label left)
STAND_IN_TILE = 256
#: Specific Character Set of every object tseg-rt writes: UTF-8 (PS3.5 §6.1.2.3).
UTF8 = "ISO_IR 192"
#: Slice Thickness (µm) written when a source gives neither it nor an Imaged Volume Depth.
DEFAULT_SECTION_UM = 4.0


@dataclass(frozen=True)
class SiteMetadata:
    """Validated site values for one slide (CSV column -> text)."""

    values: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> "SiteMetadata":
        """Check values against their DICOM types; InvalidArgumentError naming ``where`` and the column."""
        values: dict[str, str] = {}
        for column, value in raw.items():
            if column == "path" or value is None or str(value).strip() == "":
                continue
            if column not in SITE_FIELDS:
                raise InvalidArgumentError(f"{where}: unknown column {column!r}; allowed: path, "
                                           + ", ".join(SITE_FIELDS))
            text = str(value).strip()
            vr = SITE_FIELDS[column][1]
            if vr == "DA":
                text = text.replace("-", "")
                if not re.fullmatch(r"\d{8}", text):
                    raise InvalidArgumentError(f"{where}: {column} must be a date YYYY-MM-DD or YYYYMMDD, got {value!r}")
            if vr == "CS" and column == "patient_sex":
                text = text.upper()
                if text not in ("M", "F", "O"):
                    raise InvalidArgumentError(f"{where}: patient_sex must be M, F or O, got {value!r}")
            if len(text) > _MAX_LENGTH[vr] or "\\" in text:
                raise InvalidArgumentError(f"{where}: {column} must be at most {_MAX_LENGTH[vr]} characters without "
                                           f"backslashes (DICOM {vr}), got {len(text)}")
            values[column] = text
        return cls(values)

    def apply(self, ds: Any, specimen_uid: str) -> None:
        """Write the values into a source image dataset (patient, study, slide, specimen)."""
        from pydicom import Dataset

        if any(not text.isascii() for text in self.values.values()):
            ds.SpecificCharacterSet = UTF8  # PS3.3 C.12.1.1.2; else the bytes are written as Latin-1
        for column, text in self.values.items():
            keyword = SITE_FIELDS[column][0]
            if keyword not in ("SpecimenIdentifier", "SpecimenShortDescription"):
                setattr(ds, keyword, text)
        ds.ContainerIdentifier = self.values.get("container_id") or "unknown"  # type 1
        specimen = Dataset()
        specimen.SpecimenIdentifier = self.values.get("specimen_id") or self.values.get("container_id") or "unknown"
        specimen.SpecimenUID = specimen_uid
        specimen.IssuerOfTheSpecimenIdentifierSequence = []
        specimen.SpecimenPreparationSequence = []
        if self.values.get("specimen_description"):
            specimen.SpecimenShortDescription = self.values["specimen_description"]
        ds.SpecimenDescriptionSequence = [specimen]
        ds.IssuerOfTheContainerIdentifierSequence = []
        ds.ContainerTypeCodeSequence = []


def read_metadata_file(path: str | os.PathLike[str]) -> dict[str, SiteMetadata]:
    """``{resolved slide path: SiteMetadata}`` from a site metadata CSV (see the module docstring)."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidArgumentError(f"{p}: cannot read the DICOM metadata CSV ({exc})") from None
    if rows and "path" not in rows[0]:
        raise InvalidArgumentError(f"{p}: the DICOM metadata CSV needs a 'path' column")
    table: dict[str, SiteMetadata] = {}
    for n, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row.get("path"):
            raise InvalidArgumentError(f"{p}, row {n}: empty path")
        slide = Path(row["path"]).expanduser()
        slide = slide if slide.is_absolute() else p.parent / slide
        table[str(slide.resolve())] = SiteMetadata.parse(row, f"{p}, row {n}")
    return table


@dataclass
class SourceImages:
    """The images results refer to: VOLUME levels (finest first), how they were found, files
    to store with the results (a converted slide), and what had to be assumed."""

    kind: str  # dicom | dicomweb | converted | stand-in
    volumes: list[Any]
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def level0(self) -> Any:
        return self.volumes[0]


def volume_levels(datasets: Sequence[Any], where: str) -> list[Any]:
    """The VOLUME images of a series, one per size, finest first."""
    by_size: dict[tuple[int, int], Any] = {}
    for ds in datasets:
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        if str(ds.get("SOPClassUID", "")) != WSI_SOP_CLASS or len(image_type) < 3 or image_type[2] != "VOLUME":
            continue
        size = (int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows))
        by_size.setdefault(size, ds)
    if not by_size:
        raise OutputError(where, "the DICOM series has no VOLUME images to refer to")
    return [by_size[s] for s in sorted(by_size, key=lambda s: -s[0] * s[1])]


def complete(volumes: list[Any]) -> list[str]:
    """Fill in what highdicom needs and a source may lack (our copies only); say what was assumed."""
    from pydicom import Dataset
    from pydicom.uid import generate_uid

    notes = []
    pyramid = next((str(ds.PyramidUID) for ds in volumes if "PyramidUID" in ds), None) or generate_uid()
    specimen = generate_uid()
    for ds in volumes:
        ds.PyramidUID = ds.get("PyramidUID", pyramid)  # highdicom groups a pyramid's levels by it
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, None)
        if "ImageOrientationSlide" not in ds:
            ds.ImageOrientationSlide = STANDARD_ORIENTATION
            notes.append("the source has no Image Orientation (Slide); the standard orientation was assumed")
        if "TotalPixelMatrixOriginSequence" not in ds:
            origin = Dataset()
            origin.XOffsetInSlideCoordinateSystem, origin.YOffsetInSlideCoordinateSystem = 0.0, 0.0
            ds.TotalPixelMatrixOriginSequence = [origin]
            notes.append("the source has no Total Pixel Matrix Origin; (0, 0) mm was assumed")
        if not ds.get("ContainerIdentifier") or not ds.get("SpecimenDescriptionSequence"):
            SiteMetadata({"container_id": str(ds.get("ContainerIdentifier") or "unknown")}).apply(ds, specimen)
            notes.append("the source has no Specimen module (slide and specimen identifiers); 'unknown' was written")
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        if not float(measures.get("SliceThickness") or 0) > 0:  # type 1C in the SEG (PS3.3 C.7.6.16.2.1), > 0
            from pydicom.valuerep import DS

            depth = float(ds.get("ImagedVolumeDepth") or 0)  # µm
            plausible = 0.5 <= depth <= 100.0
            depth_um = depth if plausible else DEFAULT_SECTION_UM
            measures.SliceThickness = DS(depth_um / 1000.0, auto_format=True)
            notes.append(f"the source has no (or a zero) Slice Thickness; {depth_um:g} µm "
                         f"({'its Imaged Volume Depth' if plausible else 'a typical section'}) was written")
        if "FrameOfReferenceUID" not in ds:
            raise OutputError(str(ds.get("SOPInstanceUID", "?")), "the source image has no Frame of Reference UID; "
                                                                   "results cannot be placed on it")
    frames = {str(ds.FrameOfReferenceUID) for ds in volumes}
    if len(frames) > 1:  # viewers need one Frame of Reference across a pyramid: the base level's
        base = str(volumes[0].FrameOfReferenceUID)
        for ds in volumes:
            ds.FrameOfReferenceUID = base
        notes.append(f"the source series {volumes[0].get('SeriesInstanceUID', '?')} has a Frame of Reference per "
                     f"level ({len(frames)} different UIDs, where a pyramid has one); every object uses the base "
                     f"level's, {base}")
    return sorted(set(notes))


def stand_in(size0: tuple[int, int], mpp0: tuple[float, float], uids: Mapping[str, str],
             site: SiteMetadata | None) -> list[Any]:
    """A never-stored description of the slide as a DICOM WSI pyramid (levels halving from level
    0 down to one tile): see the module docstring."""
    from pydicom import Dataset
    from pydicom.uid import generate_uid

    levels, (w, h), k = [], size0, 0
    while True:
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = WSI_SOP_CLASS, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["slide_series"]
        ds.FrameOfReferenceUID, ds.PyramidUID = uids["frame"], uids["pyramid"]
        ds.Modality, ds.ImageType = "SM", ["ORIGINAL" if k == 0 else "DERIVED", "PRIMARY", "VOLUME", "NONE"]
        ds.SeriesNumber, ds.InstanceNumber, ds.PositionReferenceIndicator = 1, k + 1, "SLIDE_CORNER"
        ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
        ds.Rows = ds.Columns = STAND_IN_TILE
        ds.NumberOfFrames = math.ceil(w / STAND_IN_TILE) * math.ceil(h / STAND_IN_TILE)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.DimensionOrganizationType, ds.ImageOrientationSlide = "TILED_FULL", STANDARD_ORIENTATION
        origin = Dataset()
        origin.XOffsetInSlideCoordinateSystem, origin.YOffsetInSlideCoordinateSystem = 0.0, 0.0
        ds.TotalPixelMatrixOriginSequence = [origin]
        measures, shared = Dataset(), Dataset()
        measures.PixelSpacing = [mpp0[1] * 2**k / 1000.0, mpp0[0] * 2**k / 1000.0]
        measures.SliceThickness = 0.001
        shared.PixelMeasuresSequence = [measures]
        ds.SharedFunctionalGroupsSequence = [shared]
        for keyword in _TYPE2:
            setattr(ds, keyword, None)
        (site or SiteMetadata()).apply(ds, uids["specimen"])
        levels.append(ds)
        if w <= STAND_IN_TILE and h <= STAND_IN_TILE:
            return levels
        w, h, k = max(1, w // 2), max(1, h // 2), k + 1


def wsidicomizer_class() -> Any:
    """``wsidicomizer.WsiDicomizer``, imported without its side effect on the whole process.

    Importing wsidicomizer sets ``pydicom.config.enforce_valid_values = True``, pydicom's strict
    mode for reading and writing, for every later DICOM file of the process: in a service that had
    written one slide as DICOM, a file with one malformed value (an ``IS`` of ``"abc"``), read
    with a warning before, would fail from then on. pydicom's two validation modes are restored
    as they were before the import."""
    from pydicom import config

    before = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    try:
        from wsidicomizer import WsiDicomizer
    except ImportError:
        raise InvalidArgumentError("writing the slide as DICOM needs the dicom extra: pip install "
                                   "'tseg-rt[dicom]'") from None
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = before
    return WsiDicomizer


def convert_slide(slide: Path, folder: Path, uids: Mapping[str, str], site: SiteMetadata | None) -> list[Path]:
    """Write ``slide`` as DICOM WSI files into ``folder`` with wsidicomizer (labels, overviews and
    thumbnails left out: labels carry names), in the result's study. Returns the files."""
    WsiDicomizer = wsidicomizer_class()  # noqa: N806 - a class
    from pydicom import Dataset

    extra = Dataset()
    extra.StudyInstanceUID, extra.SeriesInstanceUID = uids["study"], uids["slide_series"]
    extra.FrameOfReferenceUID = uids["frame"]
    (site or SiteMetadata()).apply(extra, uids["specimen"])
    folder.mkdir(parents=True, exist_ok=True)
    try:
        files = WsiDicomizer.convert(slide, folder, metadata_post_processor=extra, include_label=False,
                                     include_overview=False, include_thumbnail=False, tile_size=None)
    except Exception as exc:  # wsidicomizer/opentile raise many kinds for formats they cannot read
        raise OutputError(slide, f"wsidicomizer cannot write this slide as DICOM ({exc}); run without --dicom-wsi "
                                 "(the objects then refer to a stand-in description of the slide)") from exc
    return sorted(Path(f) for f in files)


def read_headers(files: Sequence[Path]) -> list[Any]:
    import pydicom

    return [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]


def check_geometry(source: SourceImages, size0: Sequence[int], where: str) -> None:
    """The source's level 0 must be the slide the result was made from."""
    level0 = source.level0
    found = (int(level0.TotalPixelMatrixColumns), int(level0.TotalPixelMatrixRows))
    if found != tuple(int(v) for v in size0):
        raise OutputError(where, f"the DICOM source's level 0 is {found[0]} x {found[1]} px but the result was made "
                                 f"from {size0[0]} x {size0[1]} px; rerun the slide")
