"""`tseg-rt view` as users run it (a subprocess on a free loopback port) in real headless
Chromium: the page loads without errors, the tumour overlay lies on the tumour at full
resolution (within 2 screen pixels), the layers toggle, and a verdict saved in the page reaches
``cohort.csv``."""

from __future__ import annotations

import base64
import csv
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from browser import Browser, chromium_path
from tseg.runtime.cohort.report import write_report

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ORANGE = np.array([230, 159, 0])  # the tumour colour (RGB)


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    if exe is None:
        reason = "no headless browser here (Debian: apt-get install chromium)"
        if os.environ.get("CI") or os.environ.get("TSEG_REQUIRE_BROWSER"):  # .ci/run installs Chromium
            pytest.fail(f"{reason} (required here: $CI or $TSEG_REQUIRE_BROWSER is set)")
        pytest.skip(reason)
    with Browser(exe, timeout_s=60) as b:
        b.send("Emulation.setDeviceMetricsOverride", {"width": 1200, "height": 800, "deviceScaleFactor": 1,
                                                      "mobile": False}, session=True)
        yield b


@pytest.fixture(scope="module")
def viewer(viewer_result):
    proc = subprocess.Popen([sys.executable, "-m", "tseg.runtime.cli", "view", str(viewer_result["out"]), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 90
    url = ""
    while time.monotonic() < deadline and not url:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        if line.startswith("tseg-rt view: http://127.0.0.1:"):
            url = line.split()[-1]
    assert url, "tseg-rt view did not print its URL"
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def screenshot(b: Browser) -> np.ndarray:
    data = b.send("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


#: How long the page must be quiet (no request asked for or answered) before it counts as drawn:
#: covers only the browser's own steps after the last tile arrived (Bokeh asks for tiles 65 ms
#: after a change and draws a tile on its next frame), never the server's time for a tile (a
#: request in flight, however slow, keeps the page unsettled).
QUIET_S = 1.0
SETTLE_TIMEOUT_S = 120.0


class Settled:
    """Follows the page's requests from the Network domain's events (the browser records each
    one as asked for, then finished or failed) to tell when every tile has arrived."""

    def __init__(self, b: Browser) -> None:
        self.b = b
        b.evaluate("1")  # drain the events Chromium has sent
        self.read = len(b.events)  # events of b.events already looked at (earlier pages' are not followed)
        self.in_flight: dict[str, str] = {}  # request id -> URL

    def _update(self) -> bool:
        """Read the events since the last call; True when any request started or ended."""
        self.b.evaluate("1")  # drain the events Chromium has sent
        events, self.read, changed = self.b.events[self.read :], len(self.b.events), False
        for event in events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent" and params["request"]["url"].startswith("http"):
                self.in_flight[params["requestId"]] = params["request"]["url"]
                changed = True
            elif method in ("Network.loadingFinished", "Network.loadingFailed"):
                changed |= self.in_flight.pop(params.get("requestId"), None) is not None
        return changed

    def __call__(self) -> None:
        """Wait until no request is in flight, none has started or ended for QUIET_S, and two
        screenshots in a row are the same (every arrived tile drawn); fail at the deadline."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        quiet_since, shot = time.monotonic(), None
        while True:
            if self._update() or self.in_flight:
                quiet_since, shot = time.monotonic(), None
            elif time.monotonic() - quiet_since >= QUIET_S:
                now = screenshot(self.b)
                if shot is not None and np.array_equal(now, shot):
                    return
                shot = now
            if time.monotonic() > deadline:
                raise AssertionError(f"the page did not settle in {SETTLE_TIMEOUT_S:g} s; requests in flight: "
                                     f"{sorted(self.in_flight.values())[:10]}")
            time.sleep(0.1)


def first(run: np.ndarray) -> int:
    hits = np.flatnonzero(run)
    return int(hits[0]) if hits.size else -1


def test_the_viewer_in_a_real_browser(viewer, viewer_result, browser):
    b = browser
    b.open(viewer, "document.body.dataset.ready === '1'")  # the list, filtered by review state
    visible = "document.querySelectorAll('#rows tr:not([hidden])').length"
    assert b.evaluate(visible) == 1
    b.evaluate("(() => { const s = document.getElementById('state'); s.value = 'accept';"
               "s.dispatchEvent(new Event('change')); })()")
    assert b.evaluate(visible) == 0
    settle = Settled(b)
    b.open(viewer + "slides/a/", "document.body.dataset.ready === '1'")
    settle()
    assert b.console_errors() == []
    assert any("/slides/a/view/slide/" in u for u in b.requests()) and not any(
        "cdn" in u or not u.startswith(viewer) for u in b.requests() if u.startswith("http"))

    # Full resolution (1 screen px = 1 level-0 px), the square's left edge in the middle of the plot.
    mpp = viewer_result["mpp"]
    sx, sy, sw, sh = viewer_result["square_level0"]
    frame = b.evaluate("(() => { const v = Object.values(Bokeh.index).find(v => v.frame); const r = v.el.getBoundingClientRect();"
                       "const f = v.frame.bbox; return [r.left + f.x0, r.top + f.y0, f.x1 - f.x0, f.y1 - f.y0]; })()")
    left, top, fw, fh = frame
    x0, y0 = sx - fw // 2, sy + sh // 2 - fh // 2  # level-0 px at the frame's top-left corner
    b.evaluate(f"""(() => {{ const d = Bokeh.documents[0]; const x = d.get_model_by_name("x"), y = d.get_model_by_name("y");
        x.setv({{start: {x0 * mpp}, end: {(x0 + fw) * mpp}}}); y.setv({{start: {-(y0 + fh) * mpp}, end: {-y0 * mpp}}}); }})()""")
    settle()
    row = int(top + fh // 2)  # a screen row through the middle of the square
    cols = slice(int(left), int(left + fw))
    shot = screenshot(b)
    edge_screen = int(left) + first(np.abs(shot[row, cols].astype(int) - ORANGE).max(axis=1) <= 40)
    # Where the result puts the edge: mask.png (5 µm/px) in level-0 px.
    mask = cv2.imread(str(viewer_result["out"] / "a" / "mask.png"), cv2.IMREAD_GRAYSCALE)
    scale = 5.0 / mpp
    edge_result = first(mask[int((sy + sh // 2) / scale)] > 0) * scale
    assert abs(edge_screen - (left + edge_result - x0)) <= 2, (edge_screen, left + edge_result - x0)
    # The cursor's position, in level-0 px, where the mouse is.
    b.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": left + 100, "y": row}, session=True)
    b.wait_for("document.getElementById('cursor').textContent.includes(' px, y ')")
    said = b.evaluate("document.getElementById('cursor').textContent")
    px, py = (int(v) for v in re.findall(r"[xy] (\d+) px", said))
    assert abs(px - (x0 + 100)) <= 1 and abs(py - (y0 + row - top)) <= 1, said

    # The slide under it: the dark square's edge, with the tumour layer hidden.
    b.evaluate("document.querySelector('input[data-layer=mask]').click()")
    settle()
    shot = screenshot(b)
    dark_screen = int(left) + first(shot[row, cols].max(axis=1) < 140)
    assert abs(dark_screen - (left + sx - x0)) <= 2, (dark_screen, left + sx - x0)
    assert abs(edge_result - sx) <= scale  # the model found the square (within one mask pixel)
    assert not (np.abs(shot[row, cols].astype(int) - ORANGE).max(axis=1) <= 40).any()  # nothing orange left
    # The heat map: shown on request, cividis inside the square, transparent on the pink tissue.
    b.evaluate("document.querySelector('input[data-layer=probability]').click()")
    b.evaluate("(() => { const s = document.querySelector('input[data-opacity=probability]'); s.value = 1;"
               "s.dispatchEvent(new Event('input')); })()")
    settle()
    shot = screenshot(b)
    inside, outside = shot[row, int(left + sx - x0) + 40], shot[row, int(left + sx - x0) - 40]
    assert b.evaluate("Bokeh.documents[0].get_model_by_name('layer-probability').visible") is True
    assert any("/view/probability/" in u for u in b.requests())
    assert abs(int(outside[0]) - int(inside[0])) + abs(int(outside[2]) - int(inside[2])) > 60

    # Keys as in slide viewers: + zooms in (half the width), Home shows the whole slide.
    width = "(() => { const x = Bokeh.documents[0].get_model_by_name('x'); return x.end - x.start; })()"
    before = b.evaluate(width)
    for key in ("+", "Home"):
        b.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": key, "text": key if key == "+" else ""},
               session=True)
        b.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key}, session=True)
        if key == "+":
            assert abs(b.evaluate(width) - before / 2) < 1e-6 * before
    assert abs(b.evaluate(width) - viewer_result["size_level0"][0] * mpp) < 1e-6 * before

    # The verdict, saved from the page, reaches cohort.csv.
    b.evaluate("document.querySelector('input[value=needs_correction]').click();"
               "document.querySelector('textarea[name=note]').value = 'border at the top';"
               "document.querySelector('#review button').click()")
    b.wait_for("document.getElementById('review-state').dataset.saved === 'needs_correction'")
    made = write_report(viewer_result["out"], thumbnails=False)
    with open(made.csv, newline="", encoding="utf-8") as fh:
        row_csv = next(csv.DictReader(fh))
    assert (row_csv["verdict"], row_csv["verdict_note"]) == ("needs_correction", "border at the top")
    # The cohort report through the viewer: its rows lead to the slides' viewers.
    b.open(viewer + "report.html", "document.body.dataset.ready === '1'")
    assert b.evaluate("document.querySelector('#rows tr a').href") == viewer + "slides/a/"
    assert b.console_errors() == []
    os.remove(viewer_result["out"] / "a" / "review.json")
