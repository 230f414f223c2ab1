"""Structural checks of JPEG tiles, so that the fast decoder fails where OpenSlide fails.

OpenSlide turns every libjpeg warning into an error: a tile cut short ("Premature end of JPEG
file") fails the slide. imagecodecs (the fast TIFF path, :mod:`tseg.runtime.wsi.slide`) ignores
libjpeg's warnings and exposes none of them: the same tile decodes as grey, silently. Our decision
(the issue allowed failing or warning): **lost data fails the slide on both paths**, naming the
level, the tile and what is wrong, because a probability map with grey holes reported as done is
worse than a failure a user sees.

Before a JPEG tile is decoded on the fast path, :func:`jpeg_problem` checks what libjpeg warns
about when data is lost, from the markers alone (no decoding: 1.6 µs a tile of CMU-1 against
162 µs to decode it, ``python -m benchmarks.jpeg_check``):

* the stream starts with SOI and its marker segments are complete;
* every byte between segments belongs to one (libjpeg: "extraneous bytes before marker");
* where a restart interval is defined (or the frame is progressive), the entropy-coded data of
  each scan contains no marker but restart markers, and those come in sequence (libjpeg: "must
  resync", "premature end of data segment"); a baseline tile without restart markers is not
  walked, as no marker can be missing from it;
* with a restart interval (DRI) and one interleaved baseline scan, every restart marker the
  frame's size calls for is present (data cut out of the middle of a tile);
* an end-of-image marker ends the data (libjpeg: "Premature end of JPEG file").

Corruption inside the Huffman-coded data that leaves the markers intact (a flipped bit) can only
be seen by decoding; OpenSlide reports it when libjpeg does ("bad Huffman code"), the fast path
cannot. A JPEG stream (``tables``) of the TIFF's ``JPEGTables`` tag is checked the same way,
without a scan.
"""

from __future__ import annotations

import re

_SOI, _EOI, _SOS, _DRI, _TEM = 0xD8, 0xD9, 0xDA, 0xDD, 0x01
_RST = range(0xD0, 0xD8)
_BASELINE_SOF = (0xC0, 0xC1)
_SOF = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
_PREMATURE = "the data ends before its end-of-image marker (libjpeg: \"Premature end of JPEG file\")"


def _mcus(sof: bytes) -> int | None:
    """MCUs of an interleaved scan of the frame whose SOF payload is ``sof``."""
    if len(sof) < 6:
        return None
    height, width, ncomp = int.from_bytes(sof[1:3], "big"), int.from_bytes(sof[3:5], "big"), sof[5]
    if len(sof) < 6 + 3 * ncomp or height == 0 or width == 0 or ncomp == 0:
        return None
    hmax = max(sof[6 + 3 * i + 1] >> 4 for i in range(ncomp)) or 1
    vmax = max(sof[6 + 3 * i + 1] & 15 for i in range(ncomp)) or 1
    return -(-width // (8 * hmax)) * -(-height // (8 * vmax))


#: A marker that ends a scan: 0xFF (after any fill bytes) followed by neither 0x00 (a stuffed
#: 0xFF) nor a restart marker. Searched by the regular-expression engine, in C.
_SCAN_END = re.compile(rb"\xff+[^\x00\xff\xd0-\xd7]")
_RESTART = re.compile(rb"\xff+([\xd0-\xd7])")
_EIGHT = bytes(range(0xD0, 0xD8))


def _scan(data: bytes, start: int) -> tuple[int, int, str | None]:
    """Walk the entropy-coded data from ``start``: ``(position of the marker that ends it,
    restart markers seen, problem)``."""
    found = _SCAN_END.search(data, start)
    if found is None:
        return len(data), 0, _PREMATURE
    stop = found.end() - 2  # the 0xFF of the marker (fill bytes before it belong to no segment)
    restarts = b"".join(_RESTART.findall(data, start, stop))
    expected = (_EIGHT * (len(restarts) // 8 + 1))[: len(restarts)]  # RST0 RST1 ... RST7 RST0 ...
    if restarts != expected:
        at = next(i for i, (a, b) in enumerate(zip(restarts, expected)) if a != b)
        return stop, at, (f"restart marker RST{restarts[at] - 0xD0} where RST{expected[at] - 0xD0} belongs: data "
                          "between restart markers is missing (libjpeg: \"must resync\")")
    return stop, len(restarts), None


def defines_restarts(tables: bytes | None) -> bool:
    """Whether a ``JPEGTables`` stream may set a restart interval for the tiles (a DRI marker)."""
    return bool(tables) and b"\xff\xdd" in tables


def jpeg_problem(data: bytes, tables: bool = False, restarts_in_tables: bool = True) -> str | None:
    """What is structurally wrong with the JPEG stream ``data`` (one tile), or None.
    ``tables``: ``data`` is an abbreviated table-only stream (no scan expected).
    ``restarts_in_tables``: the tiles' ``JPEGTables`` may define a restart interval
    (:func:`defines_restarts`); when neither they nor the tile do, a baseline tile that ends with
    its end-of-image marker is whole as far as markers can tell (no restart marker can be missing),
    and its entropy-coded data is not walked (about 2 µs a tile instead of 10-30)."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != _SOI:
        return "it does not start with a JPEG start-of-image marker"
    pos, sof, interval, scans, restarts, components = 2, b"", 0, 0, 0, 0
    unknown_interval = restarts_in_tables  # a DRI in the tables: its interval is not known here
    while True:
        if pos >= n:
            return _PREMATURE
        if data[pos] != 0xFF:
            nxt = data.find(b"\xff", pos)
            extra = (nxt if nxt >= 0 else n) - pos
            return f"{extra} byte(s) of garbage between its segments (libjpeg: \"extraneous bytes before marker\")"
        while pos < n and data[pos] == 0xFF and pos + 1 < n and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 1 >= n:
            return _PREMATURE
        marker = data[pos + 1]
        if marker == _EOI:
            if not tables and scans == 0:
                return "it holds no image data (no scan before its end-of-image marker)"
            break
        if marker == _TEM or marker in _RST:
            pos += 2
            continue
        if marker in (_SOI, 0x00):
            return f"an unexpected marker 0xFF{marker:02X} at byte {pos}"
        if pos + 4 > n:
            return _PREMATURE
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > n:
            return f"its 0xFF{marker:02X} segment at byte {pos} runs past the end of the data ({_PREMATURE})"
        payload = data[pos + 4 : end]
        if marker in _SOF:
            sof = bytes([marker]) + payload
        elif marker == _DRI and len(payload) >= 2:
            interval = int.from_bytes(payload[:2], "big")
        if marker != _SOS:
            pos = end
            continue
        if tables:
            return "a table-only stream holds a scan"
        scans += 1
        components = payload[0] if payload else 0
        # The common case: a baseline tile without restart markers that ends with EOI.
        if (data.endswith(b"\xff\xd9") and not interval and not unknown_interval and sof[:1]
                and sof[0] in _BASELINE_SOF):
            pos = n - 2
            continue
        pos, seen, problem = _scan(data, end)
        if problem:
            return problem
        restarts += seen
    if interval and scans == 1 and sof[:1] and sof[0] in _BASELINE_SOF:
        mcus = _mcus(sof[1:])
        if mcus is not None and len(sof) > 6 and components == sof[6]:
            wanted = -(-mcus // interval) - 1
            if restarts < wanted:
                return (f"{restarts} of its {wanted} restart markers are present: data is missing (libjpeg: "
                        "\"Corrupt JPEG data: premature end of data segment\")")
    return None

