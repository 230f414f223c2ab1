"""Evaluation against reference annotations (the paper's statistics), synthetic slides, the demo."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The old module ``tseg.runtime.evaluation``'s names, deprecated (see :mod:`tseg.runtime.compat`)."""
    from tseg.runtime.compat import forward

    return forward(__name__, name)
