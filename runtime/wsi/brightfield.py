"""Is a slide H&E brightfield? The model is trained on H&E-stained sections imaged in brightfield
(paper, *Methods: Sample acquisition and preparation*); fluorescence, multiplex and grey images
are refused unless the user forces them (``allow_non_brightfield``, ``--allow-non-brightfield``).

The reason is read from the file's own metadata, in the user's terms: the NDPI fluorescence
channel and wavelength, the QPTIFF channel names, OME channels (illumination, contrast method,
wavelengths, samples per pixel), DICOM photometric interpretation, samples per pixel and
illumination type, the TIFF samples per pixel, and OpenSlide's illumination properties. The
``*_reason`` functions are pure (metadata in, reason or None out); :func:`file_reason` reads the
metadata of a local file.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterable, Mapping

from tseg.runtime.errors import NonBrightfieldError

log = logging.getLogger(__name__)

#: What every refusal says after the reason.
WHY = ("tseg-rt segments H&E brightfield slides only: its model was trained on H&E-stained sections "
       "imaged in brightfield and has not been validated on any other kind of image")
FIX = {"api": "To segment it anyway, pass allow_non_brightfield=True.",
       "cli": "To segment it anyway, pass --allow-non-brightfield."}
#: DICOM Illumination Type codes (DCM, PS3.16 CID 8123) that are not brightfield.
DICOM_NOT_BRIGHTFIELD = {"111743": "epifluorescence illumination", "111742": "reflected illumination"}
#: TIFF PhotometricInterpretation values of grey images.
TIFF_GREY = {0: "MINISWHITE", 1: "MINISBLACK"}


def refusal(path: Path | str, reason: str) -> NonBrightfieldError:
    """The error for a slide that is not H&E brightfield, naming the file, the reason and the fix."""
    return NonBrightfieldError(path, f"{reason}; {WHY}.", FIX)


def _names(values: Iterable[str | None]) -> str:
    return ", ".join(v for v in dict.fromkeys(v.strip() for v in values if v and v.strip()))


def ndpi_reason(tags: Mapping[str, Any]) -> str | None:
    """A Hamamatsu NDPI's fluorescence channel (tag 65434) and emission wavelength (65451)."""
    channel = str(tags.get("Fluorescence") or "").strip()
    if not channel:
        return None
    wavelength = tags.get("Wavelength")
    nm = f", emission {float(wavelength):g} nm" if isinstance(wavelength, (int, float)) and wavelength > 0 else ""
    return f"it is a fluorescence scan (Hamamatsu NDPI fluorescence channel '{channel}'{nm})"


def qptiff_reason(descriptions: Iterable[str], samples: Iterable[int]) -> str | None:
    """An Akoya/PerkinElmer QPTIFF whose full-resolution pages are grey channels (multiplex
    fluorescence: one page per fluorophore); ``descriptions``/``samples`` of those pages."""
    names, grey = [], False
    for text, spp in zip(descriptions, samples):
        try:
            root = ET.fromstring(re.sub(r"^\s*<\?xml[^>]*\?>", "", text))  # declared utf-16, read as text
        except ET.ParseError:
            continue
        if (root.findtext("ImageType") or "").strip() != "FullResolution":
            continue
        grey = grey or int(spp) == 1
        names.append(root.findtext("Name"))
    if not grey:
        return None
    channels = _names(names)
    return (f"it is a multiplex fluorescence image (Akoya/PerkinElmer QPTIFF, channels {channels or 'unnamed'}, "
            "one grey image each)")


def ome_reason(ome_xml: str) -> str | None:
    """OME channels that are fluorescence (illumination, contrast method, wavelengths) or grey."""
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None:
        return None
    channels = [el for el in pixels if el.tag.endswith("Channel")]
    names = _names(c.get("Name") or c.get("Fluor") for c in channels)
    label = f" ({names})" if names else ""
    for c in channels:
        how = (c.get("IlluminationType") or "") + " " + (c.get("ContrastMethod") or "")
        if "fluoresc" in how.lower() or c.get("EmissionWavelength") or c.get("ExcitationWavelength"):
            wave = c.get("EmissionWavelength")
            nm = f", emission {wave} {c.get('EmissionWavelengthUnit', 'nm')}" if wave else ""
            return f"it is a fluorescence image (OME channel{label}: {how.strip() or 'fluorescence'}{nm})"
    samples = [int(c.get("SamplesPerPixel") or 0) for c in channels]
    if channels and all(s == 1 for s in samples):
        many = f"{len(channels)} grey channels" if len(channels) > 1 else "one grey channel"
        return f"it is not an RGB colour image (OME: {many}{label}, 1 sample per pixel)"
    return None


def tiff_reason(samples: int, photometric: int) -> str | None:
    """A grey TIFF (1 sample per pixel): brightfield H&E scans are RGB colour."""
    if int(samples) == 1 or int(photometric) in TIFF_GREY:
        what = TIFF_GREY.get(int(photometric), str(photometric))
        return f"it is a grey image, not an RGB colour scan ({samples} sample(s) per pixel, photometric {what})"
    return None


def dicom_reason(dataset: Any) -> str | None:
    """A DICOM WSI whose pixels are monochrome or whose optical path is not brightfield."""
    photometric = str(dataset.get("PhotometricInterpretation", "") or "")
    samples = dataset.get("SamplesPerPixel")
    if photometric.startswith("MONOCHROME") or samples == 1:
        return (f"it is a monochrome image, not an RGB colour scan (DICOM PhotometricInterpretation "
                f"{photometric or '?'}, SamplesPerPixel {samples if samples is not None else '?'})")
    for path in dataset.get("OpticalPathSequence") or []:
        for code in path.get("IlluminationTypeCodeSequence") or []:
            value = str(code.get("CodeValue", ""))
            if value in DICOM_NOT_BRIGHTFIELD:
                meaning = str(code.get("CodeMeaning", "") or DICOM_NOT_BRIGHTFIELD[value])
                wave = path.get("IlluminationWaveLength")
                nm = f", {float(wave):g} nm" if wave is not None else ""
                return f"it is not a brightfield image (DICOM optical path illumination: {meaning}{nm})"
    return None


def source_reason(source: Any) -> str | None:
    """What an opened source says: a DICOMweb series' base level attributes
    (:func:`dicom_reason`), and OpenSlide's illumination properties (:func:`properties_reason`)."""
    dataset = getattr(source, "base_dataset", None)
    if callable(dataset):
        try:
            reason = dicom_reason(dataset())
        except Exception as exc:  # metadata the check cannot use: the reader decides
            log.debug("%s: metadata not checked for brightfield (%s)", getattr(source, "path", "?"), exc)
            reason = None
        if reason:
            return reason
    return properties_reason(getattr(source, "properties", {}) or {})


def properties_reason(properties: Mapping[str, str]) -> str | None:
    """OpenSlide properties naming a fluorescence illumination (e.g. ``leica.illumination-source``)."""
    for key, value in properties.items():
        if key.lower().endswith(("illumination-source", "illumination")) and "fluoresc" in str(value).lower():
            return f"it is a fluorescence scan ({key} = {value})"
    return None


def _tiff_file_reason(path: Path) -> str | None:
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        page = tif.pages[0]
        if tif.is_ndpi:
            return ndpi_reason(page.ndpi_tags or {})
        if tif.is_qpi:
            pages = list(tif.pages)
            return qptiff_reason([p.description for p in pages], [p.samplesperpixel for p in pages])
        if tif.is_ome and tif.ome_metadata:
            reason = ome_reason(tif.ome_metadata)
            if reason:
                return reason
        return tiff_reason(page.samplesperpixel, page.photometric)


def _dicom_file_reason(path: Path) -> str | None:
    import pydicom

    from tseg.runtime.util.safeio import open_regular
    from tseg.runtime.wsi.dicom_source import series_for

    for file in series_for(path).files:
        with open_regular(file) as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
        image_type = [str(v).upper() for v in (ds.get("ImageType") or ())]
        if len(image_type) > 2 and image_type[2] != "VOLUME":
            continue  # a label or overview photo says nothing about the scan
        reason = dicom_reason(ds)
        if reason:
            return reason
    return None


def file_reason(path: Path) -> str | None:
    """Why the local slide ``path`` (a file or a DICOM series folder) is not H&E brightfield, from
    its metadata, or None (brightfield, or nothing says otherwise; unreadable files are left to the
    readers, which say why)."""
    from tseg.runtime.util.safeio import open_regular
    from tseg.runtime.wsi.dicom_source import is_dicom_slide_path

    try:
        if is_dicom_slide_path(path):
            return _dicom_file_reason(path)
        if path.is_file():
            with open_regular(path) as fh:  # never blocks on a FIFO planted at a slide's name
                head = fh.read(4)
            if head[:2] in (b"II", b"MM"):
                return _tiff_file_reason(path)
    except Exception as exc:  # a reader will fail on it with its own words
        log.debug("%s: metadata not checked for brightfield (%s)", path, exc)
    return None
