"""Evaluation against reference annotations (the paper's statistics), synthetic slides, the demo."""

from __future__ import annotations
