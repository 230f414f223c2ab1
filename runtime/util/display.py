"""Text from folders shown safely: on a terminal, in a log line, in a picture's legend.

Slide names come from folders tseg-rt does not control: a newline forges a second log line or
breaks a one-line legend, an escape sequence recolours or clears a terminal, a bidirectional
override reorders what is shown, and bytes that are not UTF-8 (kept by Python as surrogates)
cannot even be encoded. :func:`printable` shows all of them as backslash escapes.
"""

from __future__ import annotations

import re

#: Characters a terminal acts on or that split a line (C0 and C1 controls, DEL), bidirectional
#: overrides (which reorder what is shown), and the surrogates Python keeps for bytes of a file
#: name that are not UTF-8.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: "re.Match[str]") -> str:
    char = match.group(0)
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """``text`` safe for one line of a terminal or a log: a slide named with a newline, an escape
    sequence (colours, cursor moves, a cleared screen) or bytes that are not UTF-8 is shown with
    backslash escapes (``\\n``, ``\\x1b``, ``\\xff``), never acted on."""
    return _UNPRINTABLE.sub(_escape_char, text)
