"""Benchmarks: throughput and peak memory, each against a baseline measured in the same run.

Run ``python -m benchmarks`` for the suite, or one script, e.g. ``python -m benchmarks.read_tile``.
Figures are printed and written as JSON; nothing here is asserted as a wall-clock time.
"""
