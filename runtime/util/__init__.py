"""Utilities with no knowledge of slides or models: atomic writes, parallel jobs, versions."""
