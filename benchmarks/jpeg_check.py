"""What the JPEG tile check of the fast TIFF path costs (wsi/jpeg_check.py).

Per tile: the marker check against decoding the same tile with imagecodecs (best of 5 passes
over every level-0 tile), on a generated JPEG slide (256 px tiles) and on the real CMU-1 small
region when ``../shared/data`` is present. Per read: a 2048 px region at 1 µm/px from the
generated slide at 0.25 µm/px, with the check and with it replaced by a no-op, alternating, best
of 5 each.

    python -m benchmarks.jpeg_check [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import cached_slide, shared_slide, write_json


def _tiles(path: str) -> tuple[list[bytes], Any, tuple[Any, Any]]:
    import tifffile
    from tifffile.tifffile import jpeg_decode_colorspace

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        with open(path, "rb") as fh:
            data = []
            for offset, count in zip(page.dataoffsets, page.databytecounts):
                fh.seek(offset)
                data.append(fh.read(count))
        spaces = jpeg_decode_colorspace(page.photometric, page.planarconfig, page.extrasamples, page.is_jfif)
        return data, page.jpegtables, spaces


def per_tile(path: str) -> dict:
    import imagecodecs

    from tseg.runtime.wsi.jpeg_check import defines_restarts, jpeg_problem

    tiles, tables, (colorspace, outcolorspace) = _tiles(path)
    restarts = defines_restarts(tables)  # as the reader calls it
    check = decode = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        problems = [jpeg_problem(t, restarts_in_tables=restarts) for t in tiles]
        t1 = time.perf_counter()
        for t in tiles:
            imagecodecs.jpeg8_decode(t, tables=tables, colorspace=colorspace, outcolorspace=outcolorspace)
        t2 = time.perf_counter()
        check, decode = min(check, t1 - t0), min(decode, t2 - t1)
    n = len(tiles)
    return {"tiles": n, "flagged": sum(p is not None for p in problems), "check_us_per_tile": 1e6 * check / n,
            "decode_us_per_tile": 1e6 * decode / n, "check_over_decode": check / decode}


def per_read(path: str) -> dict:
    from tseg.runtime.wsi import tiff_decode
    from tseg.runtime.wsi.slide import open_slide

    real = tiff_decode.jpeg_problem
    best = {"checked": float("inf"), "unchecked": float("inf")}
    try:
        for _ in range(5):
            for label, check in (("checked", real), ("unchecked", lambda data, **_: None)):
                tiff_decode.jpeg_problem = check
                with open_slide(path, reader_threads=1) as slide:  # a fresh tile cache each time
                    assert slide.decoder == "tifffile"
                    t0 = time.perf_counter()
                    slide.read(1.0, (0, 0, 2048, 2048))
                    best[label] = min(best[label], time.perf_counter() - t0)
    finally:
        tiff_decode.jpeg_problem = real
    return {"region_px_at_1mpp": 2048, "checked_s": best["checked"], "unchecked_s": best["unchecked"],
            "ratio": best["checked"] / best["unchecked"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    generated = str(cached_slide("jpeg-check", seed=4, width_mm=2.2, height_mm=2.2, mpp=0.25, n_tumours=1,
                                 level_factor=8))
    result: dict[str, Any] = {"benchmark": "jpeg_check", "generated": per_tile(generated),
                              "read_generated": per_read(generated)}
    real = shared_slide("cmu-1-small-region.svs")
    if real:
        result["cmu1_small_region"] = per_tile(real)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
