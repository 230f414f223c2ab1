"""The service's Prometheus text (:mod:`tseg.runtime.service.metrics`), in this process."""

from __future__ import annotations

import pytest

from tseg.runtime.service.metrics import Metrics


def samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_long_polls_waiting_counts_the_polls_inside_their_wait():
    """``tseg_long_polls_waiting``: a gauge of the long polls waiting now (a test waits for it
    before it stops the service under a long poll); back to 0 when a wait ends, by an error too."""
    m = Metrics("1.0")
    text = m.render({})
    assert "# TYPE tseg_long_polls_waiting gauge" in text and samples(text)["tseg_long_polls_waiting"] == 0
    with m.long_poll():
        with m.long_poll():
            assert samples(m.render({}))["tseg_long_polls_waiting"] == 2
        assert samples(m.render({}))["tseg_long_polls_waiting"] == 1
    with pytest.raises(RuntimeError), m.long_poll():
        raise RuntimeError("the client went away")
    assert samples(m.render({}))["tseg_long_polls_waiting"] == 0
