"""Per-slide result files: what a run writes into each result folder, and how it is read back."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The old module ``tseg.runtime.outputs``'s names, deprecated (see :mod:`tseg.runtime.compat`)."""
    from tseg.runtime.compat import forward

    return forward(__name__, name)
