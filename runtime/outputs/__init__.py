"""Per-slide result files: what a run writes into each result folder, and how it is read back."""

from __future__ import annotations
