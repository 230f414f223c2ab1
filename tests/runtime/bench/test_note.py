"""The note ``tseg-rt bench`` prints with every run of the bundled model is whole sentences."""

from __future__ import annotations

from tseg.runtime.bench.report import format_result
from tseg.runtime.bench.run import DEMO_NOTE


def test_demo_note_is_not_cut_mid_sentence():
    assert DEMO_NOTE.endswith(".") and "--engine" in DEMO_NOTE
    assert not DEMO_NOTE.rstrip(".").endswith(("'s", " for a model", " a", " the"))
    assert DEMO_NOTE in format_result({"machine": {"cpu": {"model": "x", "usable_cores": 2}}, "note": DEMO_NOTE})
