"""Drawing overlay.png for a large slide: time and traced memory of each style, against the
previous renderer (opaque yellow heat map with a blue outline, no legend) in the same run.

    python -m benchmarks.overlay [--width 4000 --height 3000] [--rounds 3]

The maps are a 20 x 15 mm slide at 5 µm/px by default (4000 x 3000 px): random tissue-coloured
pixels, an elliptical tissue mask and a tumour inside it. Rounds alternate the methods; min /
median of the rounds are printed, with tracemalloc's peak (numpy's and OpenCV's buffers through
numpy) of the last round.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Callable

import cv2
import numpy as np

from tseg.runtime.outputs.overlay import OverlayLegend, render_overlay


def previous_renderer(overview: np.ndarray, probability: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The overlay before issue 24: yellow with opacity p/255 over the slide, the mask's outline in blue."""
    alpha = (probability.astype(np.float32) / 255.0)[..., None]
    out = overview.astype(np.float32) * (1.0 - alpha) + np.array([255.0, 255.0, 0.0]) * alpha
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    m = mask.astype(np.uint8)
    edge = m - cv2.erode(m, np.ones((3, 3), np.uint8), iterations=2, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    out[edge > 0] = (0, 90, 255)
    return out


def maps(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    overview = rng.integers(120, 255, (height, width, 3), dtype=np.uint8)
    yy, xx = np.ogrid[0:height, 0:width]
    tissue = ((xx - width / 2) ** 2 / (0.4 * width) ** 2 + (yy - height / 2) ** 2 / (0.4 * height) ** 2) < 1
    tumour = ((xx - width / 2) ** 2 / (0.15 * width) ** 2 + (yy - height / 2) ** 2 / (0.15 * height) ** 2) < 1
    return overview, (tumour * 240 + tissue * 10).astype(np.uint8), tumour, tissue


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    overview, probability, tumour, tissue = maps(args.width, args.height)
    legend = OverlayLegend("slide.svs", 5.0, 85, 229, True, ("Model model.onnx (sha256 0123456789ab) on onnxruntime.",))
    methods: dict[str, Callable[[], np.ndarray]] = {
        "previous (no legend)": lambda: previous_renderer(overview, probability, tumour),
        **{style: (lambda s=style: render_overlay(overview, probability, tumour, tissue, style=s, legend=legend))
           for style in ("fill", "contour", "heatmap")},
    }
    for run in methods.values():  # warm: imports, fonts, colour map
        run()
    times: dict[str, list[float]] = {name: [] for name in methods}
    peaks: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, run in methods.items():
            tracemalloc.start()
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
            peaks[name] = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
    mp = args.width * args.height / 1e6
    print(f"{args.width} x {args.height} px ({mp:.0f} MP), {args.rounds} rounds")
    for name, values in times.items():
        values.sort()
        print(f"{name:22s} {values[0]:.2f} / {values[len(values) // 2]:.2f} s, traced peak {peaks[name]:.0f} MB")


if __name__ == "__main__":
    main()
