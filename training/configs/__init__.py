"""Bundled training configurations (TOML)."""
