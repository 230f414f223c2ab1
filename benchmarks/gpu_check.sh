#!/usr/bin/env bash
# GPU checks in one script, for a CUDA machine. Writes what ran into ${OUT:-gpu-check}/.
#   1. the CUDA and TensorRT tests (they skip with a reason where something is missing);
#   2. the double-buffered executor with a stand-in compute at 7680 x 7680 (needs CuPy);
#   3. where TensorRT is installed: engine build, parity against ONNX Runtime FP32 on real
#      tiles, and time per 7680 x 7680 tile.
# Works from an installed checkout (pip install -e '.[dev,trt]') or, on a machine without the
# runtime's dependencies, from a source tree via a shim (the executor needs only numpy, CuPy
# and cuda-bindings).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ! $PY -c "import tseg.runtime" 2>/dev/null; then
  shim=$(mktemp -d)
  mkdir -p "$shim/tseg"
  for part in runtime export engines training; do ln -s "$PWD/$part" "$shim/tseg/$part"; done
  export PYTHONPATH="$shim:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
{
  echo "== device"; nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1
  $PY -c "from tseg.runtime.cuda import device_count, device_properties; print(device_count(), device_properties(0))"
} 2>&1 | tee "$OUT/device.txt"
echo "== tests"
$PY -m pytest -q -rs -p no:cacheprovider tests/runtime/test_executor.py tests/engines 2>&1 | tee "$OUT/tests.txt"
echo "== executor at 7680 x 7680"
$PY -m benchmarks.executor --size 7680 --tiles 8 --json "$OUT/executor.json" 2>&1 | tee "$OUT/executor.txt"
if $PY -c "import tensorrt" 2>/dev/null; then
  echo "== TensorRT engine, parity and time per tile"
  $PY -m benchmarks.trt_check ${TSEG_ONNX:+--onnx "$TSEG_ONNX"} --json "$OUT/trt.json" 2>&1 | tee "$OUT/trt.txt"
else
  echo "== TensorRT is not installed here: engine build, parity and timing skipped" | tee "$OUT/trt.txt"
fi
