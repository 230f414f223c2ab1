"""DICOM whole-slide images: a series of ``.dcm`` files is one slide.

A DICOM WSI (VL Whole Slide Microscopy Image, DICOM PS3.3 A.32.8) is stored as one file per
pyramid level (and per label / overview image), all sharing a SeriesInstanceUID, usually alone
in a folder. Here:

* **discovery** — :func:`group_series` reads the headers of ``.dcm`` files (and of files without
  an extension that carry the ``DICM`` preamble) with pydicom, keeps the WSI ones and groups them
  by series; a series is named by its folder (:attr:`DicomSeries.slide_path` is the folder when it
  holds that series only, else the series' first file), so a folder of ``.dcm`` files is found by
  folder search and segmented once, however its files are named on the command line;
* **reading** — through OpenSlide (openslide-bin 4.x reads DICOM WSI with libdicom), opened on
  one file of the series: OpenSlide finds the series' other files in the same folder;
* **colour** — some converters (e.g. Bio-Formats' ``bfconvert`` without ``-precompressed``, libdicom
  issue #80) write baseline-JPEG frames encoded in YCbCr (JFIF) but label them
  ``PhotometricInterpretation = RGB``. OpenSlide follows the DICOM label (openslide PR #558) and
  returns the YCbCr samples as if they were RGB: glass turns salmon, tissue teal, and the
  network's probabilities move by up to 150 levels. :func:`frame_colour_space` reads the first
  frame's own JPEG markers with libjpeg's rules (JFIF -> YCbCr; Adobe APP14 transform 0 -> RGB,
  else YCbCr; component ids 'R','G','B' -> RGB; subsampled chroma -> YCbCr); when the frames are
  YCbCr but labelled RGB, :class:`DicomSource` converts the pixels OpenSlide returns back with the
  JFIF equations (the inverse of what the encoder did), per pyramid level, and says so in
  :attr:`DicomSource.colour_correction` (shown by ``Slide.info()`` and in ``summary.json``).
  Decision where the evidence is ambiguous (component ids 1, 2, 3, no JFIF or Adobe marker, no
  subsampling): the DICOM label is trusted and nothing is converted.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from tseg.runtime.errors import UnsupportedSlideError
from tseg.runtime.util.safeio import open_regular
from tseg.runtime.wsi.dicom_attributes import attribute_problem, check_series_files, refusal
from tseg.runtime.wsi.mpp import openslide_mpp
from tseg.runtime.wsi.base import background_colour, rgba_to_rgb
from tseg.runtime.wsi.openslide_source import keep_largest_tile, largest_tile

log = logging.getLogger(__name__)

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: Baseline and extended (8-bit) JPEG: the transfer syntaxes the YCbCr mislabel occurs with.
JPEG_8BIT = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
DICOM_SUFFIX = ".dcm"
_PIXEL_DATA = (0x7FE0, 0x0010)
_ITEM = (0xFFFE, 0xE000)
_HEADER_BYTES = 1 << 16


def has_dicom_preamble(path: Path) -> bool:
    """True if ``path`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open_regular(path) as fh:  # a FIFO or device: not DICOM, and never waited for
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_candidate(path: Path) -> bool:
    """A file folder search considers as DICOM: ``.dcm``, or no extension and a DICOM preamble."""
    if path.suffix.lower() == DICOM_SUFFIX:
        return True
    return path.suffix == "" and has_dicom_preamble(path)


@dataclass(frozen=True)
class DicomFile:
    """What the header of one DICOM file says (``error`` set when it could not be read)."""

    path: Path
    series_uid: str | None = None
    sop_class: str | None = None
    image_type: tuple[str, ...] = ()
    photometric: str | None = None
    transfer_syntax: str | None = None
    total_size: tuple[int, int] | None = None  # TotalPixelMatrixColumns, Rows
    error: str | None = None

    @property
    def is_wsi(self) -> bool:
        return self.error is None and self.sop_class == WSI_SOP_CLASS and bool(self.series_uid)

    @property
    def flavour(self) -> str:
        """VOLUME, LABEL, OVERVIEW, THUMBNAIL (the third value of ImageType)."""
        return self.image_type[2].upper() if len(self.image_type) > 2 else ""


def read_header(path: str | Path) -> DicomFile:
    """The header of one file, without its pixel data."""
    import pydicom

    p = Path(path)
    try:  # pydicom parses elements when they are read: every conversion stays inside the try
        with open_regular(p) as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
        problem = attribute_problem(ds)  # from raw values: before pydicom converts (and maybe refuses) them
        if problem and str(ds.get("SOPClassUID", "")) == WSI_SOP_CLASS:
            return DicomFile(p, sop_class=WSI_SOP_CLASS, error=refusal(problem))
        meta = getattr(ds, "file_meta", None)
        image_type = ds.get("ImageType") or ()
        return DicomFile(
            p,
            series_uid=str(ds.get("SeriesInstanceUID", "")) or None,
            sop_class=str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
            or None,
            image_type=tuple(str(v) for v in ((image_type,) if isinstance(image_type, str) else image_type)),
            photometric=str(ds.get("PhotometricInterpretation", "")) or None,
            transfer_syntax=str(meta.get("TransferSyntaxUID", "")) if meta is not None else None,
            total_size=_total_size(ds),
        )
    except Exception as exc:  # pydicom raises InvalidDicomError, OSError, ValueError, ...
        return DicomFile(p, error=f"not a readable DICOM file ({exc or type(exc).__name__})")


def _total_size(ds: Any) -> tuple[int, int] | None:
    """``TotalPixelMatrixColumns/Rows`` as whole numbers >= 1, None when absent; ValueError when
    they are anything else (several values, text, zero), naming the attribute even where pydicom
    refuses the value itself (its strict mode, ``enforce_valid_values``, which a host program or
    a library imported before may have turned on: wsidicomizer's import does, and tseg-rt undoes
    it, :func:`tseg.runtime.outputs.dicom_source.wsidicomizer_class`)."""
    values = []
    for name in ("TotalPixelMatrixColumns", "TotalPixelMatrixRows"):
        try:
            values.append(ds.get(name))
        except Exception as exc:  # pydicom's strict mode: "Invalid value for VR IS: 'abc'"
            raise ValueError(f"{name} is not a valid value ({exc})") from None
    cols, rows = values
    if cols is None or rows is None:
        return None
    size = []
    for name, value in (("TotalPixelMatrixColumns", cols), ("TotalPixelMatrixRows", rows)):
        if isinstance(value, bool) or not isinstance(value, (int, str, bytes)) or not str(value).strip().isdigit():
            raise ValueError(f"{name} is {value!r}, not one whole number")
        if int(value) < 1:
            raise ValueError(f"{name} is {value!r}")
        size.append(int(value))
    return (size[0], size[1])


@dataclass(frozen=True)
class DicomSeries:
    """The WSI files of one series in one folder."""

    folder: Path
    uid: str
    files: tuple[Path, ...]
    alone: bool  # the only WSI series in its folder

    @property
    def slide_path(self) -> Path:
        """What stands for the series as a slide: its folder, or its first file when the folder
        holds other series too."""
        return self.folder if self.alone else self.files[0]


def group_series(files: Iterable[Path]) -> tuple[list[DicomSeries], list[DicomFile]]:
    """Group DICOM files into WSI series. Returns the series and the files that are not part of
    one (unreadable, or not a whole-slide image), with the reason in ``error``/``sop_class``.

    Other WSI files in the same folders are read too, so a series named by some of its files is
    still complete (OpenSlide reads the whole folder)."""
    headers: dict[Path, DicomFile] = {}
    rejected: list[DicomFile] = []
    folders: set[Path] = set()
    for f in files:
        folders.add(Path(f).parent)
        h = read_header(f)
        headers[Path(f).resolve()] = h
        if not h.is_wsi:
            rejected.append(h)
    wanted = {headers[Path(f).resolve()].series_uid for f in files if headers[Path(f).resolve()].is_wsi}
    by_folder: dict[Path, dict[str, list[Path]]] = {}
    for folder in folders:
        for f in sorted(folder.iterdir()):
            if not f.is_file() or f.name.startswith(".") or not is_dicom_candidate(f):
                continue
            h = headers.get(f.resolve()) or read_header(f)
            headers[f.resolve()] = h
            if h.is_wsi:
                by_folder.setdefault(folder, {}).setdefault(str(h.series_uid), []).append(f)
    series: list[DicomSeries] = []
    for folder, groups in sorted(by_folder.items()):
        for uid, members in sorted(groups.items(), key=lambda kv: str(kv[1][0])):
            if uid in wanted:
                series.append(DicomSeries(folder, uid, tuple(sorted(members)), alone=len(groups) == 1))
    return series, rejected


def series_for(path: str | Path) -> DicomSeries:
    """The series a slide path stands for: a folder holding one WSI series, or one of its files."""
    p = Path(path)
    if p.is_dir():
        files = [f for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith(".") and is_dicom_candidate(f)]
        if not files:
            raise UnsupportedSlideError(p, "is a folder without DICOM files; give a slide file or a DICOM series folder")
        found, rejected = group_series(files)
        invalid = [h for h in rejected if h.sop_class == WSI_SOP_CLASS and h.error]
        if invalid and (not found or any(h.path.parent == p for h in invalid)):
            raise UnsupportedSlideError(invalid[0].path, invalid[0].error)
        if not found:
            raise UnsupportedSlideError(p, "holds no DICOM whole-slide image (VL Whole Slide Microscopy) files")
        if len(found) > 1:
            raise UnsupportedSlideError(
                p, f"holds {len(found)} DICOM whole-slide series; give one .dcm file of the series you want")
        check_series_files(found[0].files)
        return found[0]
    h = read_header(p)
    if h.error:
        raise UnsupportedSlideError(p, h.error)
    if not h.is_wsi:
        raise UnsupportedSlideError(
            p, f"is DICOM but not a whole-slide image (SOP class {h.sop_class}); tseg-rt reads VL Whole Slide Microscopy")
    found, _ = group_series([p])
    series = next(s for s in found if s.uid == h.series_uid)
    check_series_files(series.files)
    return series


# --- the colour space of JPEG frames -------------------------------------------------------------


def first_fragment(path: Path, limit: int = _HEADER_BYTES) -> bytes | None:
    """The first ``limit`` bytes of the first fragment of encapsulated pixel data."""
    import pydicom

    with open_regular(path) as fh:
        pydicom.dcmread(fh, stop_before_pixels=True)
        head = fh.read(12)
        if len(head) < 12 or struct.unpack("<HH", head[:4]) != _PIXEL_DATA:
            return None
        if struct.unpack("<I", head[8:12])[0] != 0xFFFFFFFF:
            return None  # native (not encapsulated) pixel data
        for _ in range(2):  # the basic offset table item, then the first fragment
            item = fh.read(8)
            if len(item) < 8 or struct.unpack("<HH", item[:4]) != _ITEM:
                return None
            length = struct.unpack("<I", item[4:8])[0]
            if _ == 0:
                fh.seek(length, 1)
            else:
                return fh.read(min(length, limit))
    return None


def frame_colour_space(jpeg: bytes) -> str | None:
    """``"YCbCr"``, ``"RGB"`` or ``None`` (no evidence) for a 3-component JPEG stream, decided
    from its markers as libjpeg decides (see the module docstring)."""
    if len(jpeg) < 4 or jpeg[:2] != b"\xff\xd8":
        return None
    jfif, adobe, components = False, None, None
    i = 2
    while i + 4 <= len(jpeg):
        if jpeg[i] != 0xFF:
            return None
        marker = jpeg[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
        payload = jpeg[i + 4 : i + 2 + length]
        if marker == 0xE0 and payload[:5] == b"JFIF\x00":
            jfif = True
        elif marker == 0xEE and payload[:5] == b"Adobe" and len(payload) >= 12:
            adobe = payload[11]
        elif marker in (0xC0, 0xC1, 0xC2) and len(payload) >= 6:
            n = payload[5]
            components = [(payload[6 + 3 * k], payload[7 + 3 * k]) for k in range(n) if 8 + 3 * k <= len(payload)]
        elif marker == 0xDA:
            break
        i += 2 + length
    if components is None or len(components) != 3:
        return None
    if jfif:
        return "YCbCr"
    if adobe is not None:
        return "RGB" if adobe == 0 else "YCbCr"
    ids = tuple(c[0] for c in components)
    if ids == (82, 71, 66):
        return "RGB"
    if len({c[1] for c in components}) > 1:
        return "YCbCr"  # subsampled chroma: nobody subsamples R and B
    return None


def mislabelled_ycbcr(header: DicomFile) -> bool:
    """True when the file's JPEG frames are YCbCr but its PhotometricInterpretation says RGB."""
    if header.photometric != "RGB" or header.transfer_syntax not in JPEG_8BIT:
        return False
    try:
        frame = first_fragment(header.path)
    except Exception as exc:  # unreadable pixel data: OpenSlide will report it when reading
        log.debug("%s: cannot read the first frame (%s)", header.path, exc)
        return False
    return frame is not None and frame_colour_space(frame) == "YCbCr"


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """JFIF YCbCr -> RGB (ITU-T T.871): the inverse of what a JPEG encoder did, uint8 in and out."""
    ycrcb = np.ascontiguousarray(ycbcr[..., [0, 2, 1]])
    import cv2

    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)


# --- the slide source ---------------------------------------------------------------------------


class DicomSource:
    """A DICOM WSI series read through OpenSlide, with mislabelled YCbCr levels converted back
    to RGB. Implements :class:`tseg.runtime.wsi.base.SlideSource`."""

    def __init__(self, path: Path) -> None:
        import openslide

        self.series = series_for(path)
        first = self.series.files[0]
        try:
            self._slide = openslide.OpenSlide(str(first))
        except openslide.OpenSlideError as exc:
            raise UnsupportedSlideError(path, f"OpenSlide cannot read this DICOM series: {exc}") from exc
        self.properties = dict(self._slide.properties)
        self.vendor = self.properties.get("openslide.vendor", "dicom")
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        self._downsamples = list(self._slide.level_downsamples)
        self.background = background_colour(self.properties)
        self._largest = largest_tile(self.properties, self.level_dimensions)
        keep_largest_tile(self._slide, self._largest[0])  # a 16384 px frame: decoded once, not per block
        self._mpp = openslide_mpp(self.properties)
        headers = [read_header(f) for f in self.series.files]
        volumes = [h for h in headers if h.flavour == "VOLUME"]
        self._convert = [any(mislabelled_ycbcr(h) for h in volumes if h.total_size == tuple(dims))
                         for dims in self.level_dimensions]
        fixed = [i for i, c in enumerate(self._convert) if c]
        self.colour_correction: str | None = None
        if fixed:
            self.colour_correction = (
                f"JPEG frames are YCbCr but labelled PhotometricInterpretation=RGB (level(s) "
                f"{', '.join(map(str, fixed))}); converted to RGB. Fix the converter that wrote this series.")
            log.warning("%s: %s", path, self.colour_correction)
        self.properties["tseg.colour_correction"] = self.colour_correction or "none"
        self.properties["tseg.dicom_series"] = self.series.uid
        self.properties["tseg.dicom_files"] = str(len(self.series.files))

    def mpp(self) -> tuple[float | None, float | None]:
        return self._mpp

    def largest_chunk(self) -> tuple[int, int]:
        """Bytes of the largest frame a read decodes (RGBA), and the number of frames in its level."""
        return self._largest

    def dct_scales(self, level: int) -> tuple[int, ...]:
        """No DCT-scaled decoding: OpenSlide decodes the frames."""
        return ()

    def read_level(self, level: int, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        ds = self._downsamples[level]
        location = (int(round(x * ds)), int(round(y * ds)))
        rgba = np.asarray(self._slide.read_region(location, level, (int(width), int(height))))
        if self._convert[level]:
            rgba = np.concatenate([ycbcr_to_rgb(rgba[..., :3]), rgba[..., 3:]], axis=-1)
        return rgba_to_rgb(rgba, self.background)

    def associated_images(self) -> list[str]:
        return sorted(self._slide.associated_images)

    def close(self) -> None:
        self._slide.close()


def is_dicom_slide_path(path: Path) -> bool:
    """Whether :func:`tseg.runtime.wsi.slide.open_slide` should read ``path`` as a DICOM series."""
    if path.is_dir():
        return any(f.is_file() and is_dicom_candidate(f) for f in path.iterdir())
    return is_dicom_candidate(path) or has_dicom_preamble(path)


def series_files(path: Path) -> Sequence[Path]:
    """The files of the series a DICOM slide path stands for (for fingerprints)."""
    return series_for(path).files


def describe(series: DicomSeries) -> dict[str, Any]:
    return {"folder": str(series.folder), "series_uid": series.uid, "files": [f.name for f in series.files]}
