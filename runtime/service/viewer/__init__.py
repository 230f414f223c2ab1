"""``tseg-rt view``: a local slide viewer over a results folder (Deep Zoom tiles, overlays, verdicts)."""
