"""The cohort report at 10,000 slides: how long ``tseg-rt report`` takes, how large the page is,
and how fast it opens, sorts, filters and pages in a real headless browser (when Chromium is
installed).

    python -m benchmarks.cohort_report [--slides 10000] [--json F]

The results folder is made from one real result (a synthetic slide segmented by the bundled
model): its summary is copied with other names, paths and areas, and its overlay linked (a hard
link per folder, to spare the disk); 1 % of the slides are recorded as failed, as a batch records
them. ``report_cold_s`` includes making every thumbnail; ``report_warm_s`` is a second report over
the same folder (thumbnails already there). Browser times come from the page's own clock
(``performance``): ``dom_content_loaded_ms`` includes parsing the embedded rows and the first
render; the others are one synchronous click or change, including the re-render.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import cached_slide, peak_rss_mb, write_json


def make_cohort(out: Path, count: int) -> None:
    from tseg.runtime.cohort.batch import run_batch
    from tseg.runtime.cohort.outcomes import SlideOutcome
    from tseg.runtime.cohort.report import record_outcome
    from tseg.runtime.execution.segmenter import Segmenter

    slide = cached_slide("cohort", seed=100, width_mm=2.0, height_mm=1.5, mpp=0.5, n_tumours=1)
    template = out.parent / "template"
    outcome = run_batch([slide], template, Segmenter(None, providers="cpu"))[0]
    folder = template / outcome.name
    summary = json.loads((folder / "summary.json").read_text())
    marker = (folder / ".tseg-rt-result").read_text()
    out.mkdir(parents=True)
    tissue = summary["areas"]["tissue_area_mm2"]
    for i in range(count):
        name = f"slide-{i:05d}"
        if i % 100 == 99:  # 1 % failed
            record_outcome(out, SlideOutcome(f"/cohort/{name}.svs", name, "failed",
                                             f"/cohort/{name}.svs: not a slide format tseg-rt can read"))
            continue
        d = out / name
        d.mkdir()
        (d / ".tseg-rt-result").write_text(marker)
        os.link(folder / "overlay.png", d / "overlay.png")
        s = summary
        s["slide"]["path"] = f"/cohort/{name}.svs"
        fraction = ((i * 7919) % 1000) / 1000
        s["areas"] = {"tissue_area_mm2": tissue, "tumour_area_mm2": round(tissue * fraction, 6),
                      "tumour_fraction_of_tissue": fraction, "regions": i % 7}
        (d / "summary.json").write_text(json.dumps(s))


def browser_times(html: Path) -> dict[str, Any] | None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from browser import Browser, chromium_path

    exe = chromium_path()
    if exe is None:
        return None
    with Browser(exe, timeout_s=120) as b:
        t0 = time.perf_counter()
        b.open(html.as_uri(), "document.body.dataset.ready === '1'")
        ready_s = time.perf_counter() - t0

        def timed(js: str) -> float:
            return b.evaluate(f"(() => {{ const t = performance.now(); {js}; return performance.now() - t; }})()")

        return {
            "open_until_rendered_s_wall": ready_s,
            "dom_content_loaded_ms": b.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"),
            "rows_in_document": b.evaluate("document.querySelectorAll('#rows tr').length"),
            "sort_by_tumour_fraction_ms": timed("document.querySelector('th[data-key=tumour_fraction] button').click()"),
            "sort_again_ms": timed("document.querySelector('th[data-key=tumour_fraction] button').click()"),
            "filter_failed_ms": timed("const s = document.getElementById('status'); s.value = 'failed'; "
                                      "s.dispatchEvent(new Event('change'))"),
            "filter_all_ms": timed("const s2 = document.getElementById('status'); s2.value = 'all'; "
                                   "s2.dispatchEvent(new Event('change'))"),
            "next_page_ms": timed("document.getElementById('next').click()"),
            "js_heap_mb": b.evaluate("performance.memory ? performance.memory.usedJSHeapSize / 1e6 : null"),
        }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=10000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from tseg.runtime.cohort.report import write_report

    work = Path(tempfile.mkdtemp(prefix="tseg-report-bench-"))
    try:
        out = work / "results"
        t0 = time.perf_counter()
        make_cohort(out, args.slides)
        made_s = time.perf_counter() - t0
        cold = write_report(out)
        warm = write_report(out)
        html_bytes = cold.html.stat().st_size
        result = {
            "benchmark": "cohort_report", "slides": args.slides, "cpus": os.cpu_count(),
            "make_folders_s": made_s,
            "report_cold_s": cold.seconds, "report_warm_s": warm.seconds, "thumbnails": cold.thumbnails,
            "html_mb": html_bytes / 1e6, "html_bytes_per_slide": html_bytes / args.slides,
            "csv_mb": cold.csv.stat().st_size / 1e6,
            "thumbnails_mb": sum(p.stat().st_size for p in (out / ".tseg-report" / "thumbs").iterdir()) / 1e6,
            "failed": cold.totals["failed"], "browser": browser_times(cold.html),
            "peak_rss_mb": peak_rss_mb(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
