#!/usr/bin/env bash
# Prepare, on a machine with internet (this project's dev machine), what benchmarks/gpu_check.sh
# needs on a lent GPU machine that has PyTorch, CuPy, cuda-bindings, timm and onnx but no
# internet: the pure-Python wheels it lacks and the H&E tiles, in build/gpu-carry (about 1 MB).
# Then pass `carry: ["build/gpu-carry"]` to the device tool (benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=${TSEG_CARRY:-build/gpu-carry}
PY=${PYTHON:-.venv/bin/python}
rm -rf "$CARRY"
mkdir -p "$CARRY/wheels" "$CARRY/data"
smp=$($PY -c "import importlib.metadata as m; print(m.version('segmentation-models-pytorch'))")
$PY -m pip download -q --no-deps --only-binary :all: -d "$CARRY/wheels" \
  "segmentation-models-pytorch==$smp" pytest pluggy iniconfig pytest-timeout 2>&1 | grep -v "^WARNING: Location" || true
$PY - "$CARRY/data" <<'PY'
import sys
from pathlib import Path

import numpy as np

from benchmarks.network_gpu import CARRIED_TILES
from tseg.export.parity import kather_dir, kather_tiles

directory = kather_dir()
if directory is None:
    sys.exit("gpu_carry: the Kather tiles (../shared/data/tiles/kather2016) are absent; the check will use synthetic texture")
tiles = kather_tiles(directory)
np.savez_compressed(Path(sys.argv[1]) / CARRIED_TILES, **{f"t{i:02d}": t for i, t in enumerate(tiles)})
print(f"{len(tiles)} H&E tiles at 1 µm/px from {directory}")
PY
ls -la "$CARRY/wheels" "$CARRY/data"
du -sh "$CARRY"
