"""Who a slide is and where its result goes: identity, fingerprints, result-folder names.

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
their order, and it is taken under the folder's lock
(:func:`tseg.runtime.cohort.locks.claim_result_folder`). A stem longer than
:func:`name_budget` bytes (names of up to 255 bytes are legal, and tseg-rt adds to them) is cut at
a character boundary and ends in ``~`` and 8 hex digits of the whole stem's hash
(:func:`fit_name`), so names stay unique and every derived name fits the file system.

**The same slide** (:func:`match_slide`): a recorded result is this slide's when its path is
this slide's path (``same``; ``changed`` when the fingerprint differs: the file was replaced),
or when its fingerprint is this slide's and its recorded path no longer exists (``moved``).
Anything else is another slide's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from tseg.runtime.errors import OutputError
from tseg.runtime.util.safeio import open_regular, read_json
from tseg.runtime.outputs.summary import SUMMARY, read_summary
from tseg.runtime.wsi.dicomweb_source import DicomWebLocation
from tseg.runtime.wsi.locator import is_remote

FINGERPRINT_BYTES = 1 << 20
DICOM_FINGERPRINT_BYTES = 1 << 16
#: Hidden file that marks a folder as a tseg-rt result folder (written first, with the identity).
RESULT_MARKER = ".tseg-rt-result"
_MULTI_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.btf")


#: The longest result-folder name, in bytes: a file system's longest name (255 bytes on ext4, XFS,
#: btrfs, NTFS, NFS) less what tseg-rt adds around a folder name for its siblings (the temporary
#: ``.<name>.tmp-<pid>-<8 hex>``, the lock ``.<name>.lock``, the thumbnail ``<name>.jpg`` and its
#: temporary ``.<name>.jpg.<pid>-<8 hex>.tmp``: at most 26 bytes; 32 are kept).
NAME_RESERVE_BYTES = 32
NAME_BYTES = 255 - NAME_RESERVE_BYTES


def name_budget(folder: Path) -> int:
    """The longest result-folder name for results in ``folder``: :data:`NAME_BYTES`, or less on a
    file system with shorter names (``pathconf`` NAME_MAX, e.g. 143 bytes on eCryptfs)."""
    try:
        longest = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return NAME_BYTES
    return max(24, min(NAME_BYTES, int(longest) - NAME_RESERVE_BYTES))


def fit_name(name: str, budget: int = NAME_BYTES) -> str:
    """``name`` if it is at most ``budget`` bytes (as the file system stores it); otherwise its
    longest prefix of whole characters that leaves room for ``~`` and 8 hex digits of the whole
    name's SHA-1, which keep two long names that share a prefix apart. Any name a file system
    allows (255 bytes, bytes that are not UTF-8) fits."""
    data = os.fsencode(name)
    if len(data) <= budget:
        return name
    room = budget - 9
    prefix = name
    while len(os.fsencode(prefix)) > room:
        prefix = prefix[:-1]
    return f"{prefix}~{hashlib.sha1(data).hexdigest()[:8]}"


def slide_stem(path: Path | str) -> str:
    """A slide file's name without its extension (``x.ome.tiff`` -> ``x``); for a DICOMweb
    series URL, its Series Instance UID."""
    if is_remote(path):
        return DicomWebLocation.parse(str(path)).series
    path = Path(path)
    name = path.name
    for multi in _MULTI_SUFFIXES:
        if name.lower().endswith(multi):
            return name[: -len(multi)]
    return path.stem


def _is_dicom(path: Path) -> bool:
    from tseg.runtime.wsi.dicom_source import is_dicom_slide_path

    return is_dicom_slide_path(path)


def result_stem(path: Path | str) -> str:
    """The plain result-folder name of a slide: its stem; for a DICOM series, its folder's name;
    for a DICOMweb series, its Series Instance UID."""
    if is_remote(path):
        return slide_stem(path)
    path = Path(path)
    if _is_dicom(path):
        return (path if path.is_dir() else path.parent).resolve().name or "dicom"
    return slide_stem(path)


def _hash_file(h: Any, path: Path, edge: int) -> None:
    with open_regular(path) as fh:  # a FIFO or device under a slide's name is refused, never blocks
        size = os.fstat(fh.fileno()).st_size
        h.update(os.fsencode(path.name) + f"\0{size}\0".encode())  # any name the file system allows
        h.update(fh.read(edge))
        if size > edge:
            fh.seek(max(edge, size - edge))
            h.update(fh.read(edge))


def fingerprint(path: Path) -> tuple[str, int]:
    """``("sha256:<hex>", size in bytes)`` of a slide's content (see the module docstring)."""
    h = hashlib.sha256()
    if _is_dicom(path):
        from tseg.runtime.wsi.dicom_source import series_for

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
        return hashlib.sha1(os.fsencode(self.path)).hexdigest()[:8]  # any bytes the file system allows

    @property
    def hashed_name(self) -> str:
        return self.folder_names()[1]

    def folder_names(self, budget: int = NAME_BYTES) -> tuple[str, str]:
        """The two result-folder names, ``<stem>`` and ``<stem>-<8 hex digits of the path's hash>``,
        each within ``budget`` bytes (:func:`fit_name`)."""
        return fit_name(self.stem, budget), f"{fit_name(self.stem, budget - 9)}-{self.path_hash}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def slide_identity(path: str | os.PathLike[str]) -> SlideIdentity:
    """The identity of a slide path; raises OSError (or a SlideError for DICOM) if unreadable.
    A DICOMweb series is its canonical URL and :func:`tseg.runtime.wsi.dicomweb_source.fingerprint`
    (size unknown: 0); asking the server, it fails as opening the slide would."""
    if is_remote(path):
        from tseg.runtime.wsi.dicomweb_source import connect, fingerprint as series_fingerprint

        location = DicomWebLocation.parse(str(path))
        connection = connect(location)
        try:
            return SlideIdentity(location.url, series_fingerprint(connection), 0, location.series)
        finally:
            connection.close()
    p = Path(path)
    fp, size = fingerprint(p)
    return SlideIdentity(str(p.resolve()), fp, size, result_stem(p))


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
        marker = read_json(folder / RESULT_MARKER, below=folder.parent)
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
