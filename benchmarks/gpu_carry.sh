#!/usr/bin/env bash
# Prepare, on a machine with PyPI (this project's dev machine), what benchmarks/gpu_check.sh needs on
# a lent GPU machine that has PyTorch, CuPy, cuda-bindings, timm, onnx, onnxruntime, OpenCV, SciPy,
# tifffile, typer and rich but no internet (Python 3.12, x86-64): the wheels of tseg-rt's other
# dependencies it lacks (OpenSlide and its library, imagecodecs, pydicom, shapely) and of
# segmentation-models-pytorch (the paper's network for the PyTorch rows), at the versions of this
# venv, and the Kather H&E tiles at 1 µm/px as an .npz (about 35 MB in all), in .whl/gpu-carry
# (git-ignored). Then pass `carry: [".whl/gpu-carry"]` to the device tool (benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=${TSEG_CARRY:-.whl/gpu-carry}
PY=${PYTHON:-.venv/bin/python}
TARGET_PY=${TARGET_PYTHON_VERSION:-3.12}
rm -rf "$CARRY"
mkdir -p "$CARRY/wheels" "$CARRY/data"
pins=()
for dist in openslide-python openslide-bin imagecodecs pydicom shapely segmentation-models-pytorch; do
  pins+=("$dist==$($PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$dist")")
done
platforms=()
for p in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1 manylinux_2_5; do
  platforms+=(--platform "${p}_x86_64")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PY" --implementation cp \
  "${platforms[@]}" -d "$CARRY/wheels" "${pins[@]}" 2>&1 | grep -v "^WARNING: Location" || true
$PY - "$CARRY/data" <<'PY'
import sys
from pathlib import Path

import numpy as np

from tseg.export.parity import kather_dir, kather_tiles
from tseg.runtime.bench.torch_network import CARRIED_TILES

directory = kather_dir()
if directory is None:
    sys.exit("gpu_carry: the Kather tiles (../shared/data/tiles/kather2016) are absent; the check will use synthetic texture")
tiles = kather_tiles(directory)
np.savez_compressed(Path(sys.argv[1]) / CARRIED_TILES, **{f"t{i:02d}": t for i, t in enumerate(tiles)})
print(f"{len(tiles)} H&E tiles at 1 µm/px from {directory}")
PY
ls -la "$CARRY/wheels" "$CARRY/data"
du -sh "$CARRY"
