"""CSV cells that a spreadsheet will not run as formulas (OWASP, *CSV Injection*).

Slide names and paths come from folders tseg-rt does not control, and its CSVs are opened in
spreadsheets, which take a cell starting with ``=``, ``+``, ``-`` or ``@`` as a formula (and some
also one starting with a tab or a carriage return): a slide named ``=HYPERLINK(...)`` would run.
OWASP's rule, applied to every CSV the project writes (:func:`tseg.runtime.util.atomic.write_csv`):

* a text cell starting with one of ``= + - @ TAB CR`` gets a leading ``'``, so the spreadsheet
  shows it as text (``=SUM(A1)`` -> ``'=SUM(A1)``);
* numbers stay numbers: Python ints and floats are written as they are, and so is text that is a
  plain decimal number (``-2.5``, ``+1e-3``); ``-2+3`` is not a number and is neutralised;
* text that already starts with ``'`` followed, after any further ``'``, by one of those
  characters gets one more ``'``, so :func:`restore_cell` gives back exactly what was written.

Readers of CSVs the project wrote (and the ``--csv`` slides list, which may be cut from one)
undo it with :func:`restore_cell`.
"""

from __future__ import annotations

import re
from typing import Any

#: First characters a spreadsheet may take as the start of a formula (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_NEUTRALISED = re.compile(r"'+[=+\-@\t\r]")


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text) is not None


def safe_cell(value: Any) -> Any:
    """``value`` as a CSV cell that no spreadsheet runs (see the module docstring)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_STARTS) and not _is_number(text):
        return "'" + text
    if _NEUTRALISED.match(text):
        return "'" + text
    return text


def restore_cell(text: str) -> str:
    """The text :func:`safe_cell` was given (one leading ``'`` removed where it added one)."""
    if _NEUTRALISED.match(text):
        return text[1:]
    return text
