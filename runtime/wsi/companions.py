"""The other files a slide names, listed before the slide is opened.

Some formats are more than one file, and the slide itself says which others a reader opens:

* Hamamatsu VMS/VMU: ``ImageFile``, ``ImageFile(x,y)``, ``MapFile``, ``OptimisationFile`` and
  ``MacroImage`` in the ``.vms``/``.vmu`` key file (OpenSlide opens them relative to its folder);
* MIRAX: the data folder beside the ``.mrxs`` (same name without the extension), its
  ``Slidedat.ini`` and the data files that names, and everything else in that folder;
* OME-TIFF: every ``<UUID FileName="...">`` of its OME-XML (tifffile opens those files for a
  multi-file OME-TIFF, relative to the slide's folder);
* DICOM: the other files of the series' folder.

The other formats OpenSlide and tifffile read here (Aperio, Hamamatsu NDPI, Leica, Ventana,
Philips, Sakura, generic and OME TIFF of one file) are one file. :func:`companion_files` reads
only the slide's own small key files (never blocking, regular files only: :mod:`util.safeio`)
and never a companion, so a caller (the service's roots check) can decide whether each may be
opened before any reader touches it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from tseg.runtime.util.safeio import check_regular, open_regular, read_bytes

log = logging.getLogger(__name__)

#: Keys of a Hamamatsu ``.vms``/``.vmu`` file that name another file (OpenSlide's hamamatsu reader).
VMS_KEYS = re.compile(r"^(ImageFile(\(\d+,\d+\))?|MapFile|OptimisationFile|MacroImage)$")
#: Key files are a few KiB; a bigger one is not read (and then not a slide OpenSlide would open).
KEY_FILE_LIMIT = 4 * 2**20


def _key_values(path: Path) -> list[tuple[str, str]]:
    """``key=value`` lines of an INI-style key file (sections ignored), read safely."""
    text = read_bytes(path, limit=KEY_FILE_LIMIT).decode("utf-8", "replace").lstrip("\ufeff")
    pairs = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith((";", "#", "[")):
            pairs.append((key.strip(), value.strip()))
    return pairs


def _named(folder: Path, value: str) -> list[Path]:
    """The file(s) ``value`` may mean in ``folder``: OpenSlide joins it to the folder (a leading
    ``/`` kept inside it), Python would take an absolute path as it is: both are listed."""
    found = [folder / value.lstrip("/\\")]
    if Path(value).is_absolute():
        found.append(Path(value))
    return found


def vms_companions(path: Path) -> list[Path]:
    """The files a Hamamatsu ``.vms``/``.vmu`` names."""
    out: list[Path] = []
    for key, value in _key_values(path):
        if value and VMS_KEYS.match(key):
            out += _named(path.parent, value)
    return out


def mirax_companions(path: Path) -> list[Path]:
    """A MIRAX slide's data folder, the files in it and the data files its ``Slidedat.ini`` names."""
    folder = path.with_suffix("")
    out: list[Path] = [folder]
    if not folder.is_dir():
        return out
    entries = sorted(folder.iterdir())
    out += entries
    index = folder / "Slidedat.ini"
    try:
        check_regular(index)
        pairs = _key_values(index)
    except (OSError, UnicodeError):
        return out  # the reader reports a missing or unreadable index, inside the roots
    for key, value in pairs:
        if value and re.fullmatch(r"FILE_\d+", key):
            out += _named(folder, value)
    return out


def ome_companions(path: Path) -> list[Path]:
    """The files a (multi-file) OME-TIFF's OME-XML names in ``<UUID FileName="...">``, parsed as
    tifffile parses it (so entities cannot hide a name from this check)."""
    import tifffile
    from xml.etree import ElementTree

    try:
        with open_regular(path) as fh, tifffile.TiffFile(fh, name=path.name) as tif:
            xml = tif.ome_metadata if tif.is_ome else None
    except Exception:  # not a TIFF tifffile reads: it opens nothing else either
        return []
    if not xml:
        return []
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return []
    return [path.parent / e.attrib["FileName"] for e in root.iter()
            if e.tag.rsplit("}", 1)[-1] == "UUID" and e.attrib.get("FileName")]


def dicom_companions(path: Path) -> list[Path]:
    """The other files of a DICOM series' folder (``path`` is the folder or one of its files)."""
    folder = path if path.is_dir() else path.parent
    return sorted(folder.iterdir())


def companion_files(path: str | Path) -> list[Path]:
    """Every other file (or folder) a reader of the slide ``path`` opens, as named (not resolved),
    listed without opening any of them (see the module docstring). ``OSError`` when ``path``
    itself cannot be read."""
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir() or suffix == ".dcm" or suffix == "":
        return dicom_companions(p)
    if suffix in (".vms", ".vmu"):
        return vms_companions(p)
    if suffix == ".mrxs":
        return mirax_companions(p)
    if suffix in (".tif", ".tiff", ".btf", ".qptiff") or p.name.lower().endswith((".ome.tif", ".ome.tiff")):
        return ome_companions(p)
    return []
