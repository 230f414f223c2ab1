#!/usr/bin/env bash
# The GPU check: one command for a lent CUDA machine, under 8 minutes (each step has a time limit
# that adds up to 480 s). Procedure and what to carry: benchmarks/README.md. Results go to
# ${OUT:-gpu-check}/ (one .txt per step, JSON where a step writes one).
#   1. device, driver, CUDA status as tseg-rt sees it                         (limit  30 s)
#   2. the tests marked `gpu` (CUDA executor at 7680² with a CuPy compute)    (limit  90 s)
#   3. the executor benchmark at 7680² (pipelined vs one tile at a time)      (limit  60 s)
#   4. the paper's network in PyTorch at 7680²: fp32, fp16, bf16, channels-
#      last, torch.compile (bounded): s/tile, TFLOP/s, fp16-vs-fp32 agreement (limit 300 s)
#   5. where TensorRT is installed: engine build, parity, time per tile       (no limit; not on the lent H200)
# Wheels the machine lacks travel in $TSEG_CARRY/wheels (benchmarks/gpu_carry.sh makes them) and
# are installed into $TSEG_CARRY/site with --no-deps; H&E test data in $TSEG_CARRY/data.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
CARRY=${TSEG_CARRY:-build/gpu-carry}
if [ -d "$CARRY/wheels" ] && ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-deps --no-index --target "$CARRY/site" "$CARRY"/wheels/*.whl 2>&1 | tail -3
  export PYTHONPATH="$PWD/$CARRY/site${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -d "$CARRY/data" ] && export TSEG_SHARED_DATA="$PWD/$CARRY/data"
if ! $PY -c "import tseg.runtime" 2>/dev/null; then
  # No install here: import the package from the source tree (the checks need only numpy, torch,
  # timm, segmentation-models-pytorch, CuPy and cuda-bindings).
  shim=$(mktemp -d)
  mkdir -p "$shim/tseg"
  for part in runtime export engines training; do ln -s "$PWD/$part" "$shim/tseg/$part"; done
  export PYTHONPATH="$shim:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1

step() {  # step NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.txt"
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

step device 30 bash -c "nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv; \
  $PY -c 'from tseg.runtime.execution.cuda import cuda_status, device_properties, bindings_version; \
print(cuda_status()); print(device_properties(0)); print(\"cuda-bindings\", bindings_version())'; \
  $PY -c 'import torch, cupy; print(\"torch\", torch.__version__, torch.version.cuda, \"cupy\", cupy.__version__)'"
step tests 90 $PY -m pytest -q -rs -p no:cacheprovider -m gpu tests/runtime/execution/test_executor.py
step executor 60 $PY -m benchmarks.executor --size 7680 --tiles 8 --json "$OUT/executor.json"
step network 300 $PY -m benchmarks.network_gpu --size 7680 --compile-timeout 150 --json "$OUT/network.json"
if $PY -c "import tensorrt" 2>/dev/null; then
  echo "== TensorRT engine, parity and time per tile"
  $PY -m benchmarks.trt_check ${TSEG_ONNX:+--onnx "$TSEG_ONNX"} --json "$OUT/trt.json" 2>&1 | tee "$OUT/trt.txt"
else
  echo "== TensorRT is not installed here: engine build, parity and timing skipped" | tee "$OUT/trt.txt"
fi
