#!/usr/bin/env bash
# The GPU check on a lent machine: one command, at most about 7 minutes (the steps' limits add up to
# 425 s), from the repository root. Procedure, carry and what comes back: benchmarks/README.md.
#   1. install the carried wheels ($TSEG_CARRY/wheels, benchmarks/gpu_carry.sh) into /tmp/tseg-site,
#      and tseg-rt itself without internet (pip -e, or the source tree on PYTHONPATH)   (limit 60 s)
#   2. the device as tseg-rt sees it (nvidia-smi, `tseg-rt bench` machine info)          (limit 15 s)
#   3. tseg-rt bench --check: the CUDA executor at 7680² (overlap, bit-identity), the paper's
#      network in PyTorch (fp32/fp16/bf16/channels-last/compile), TensorRT or ONNX Runtime CUDA
#      engine rows where installed (not on the lent H200)                                 (limit 260 s)
#   4. tseg-rt bench: the bundled model alone at 7680² and a generated 6 x 5 mm slide end to end,
#      on ONNX Runtime (CPU here: the lent machine has no onnxruntime-gpu): the 16-core host's
#      reading, merging and output rates, stage shares and advice                        (limit 90 s)
# Results in ${OUT:-gpu-check}/: gpu_check.log (everything), summary.txt (each step's exit status and
# time), check.json, bench.json, machine.json. Without a GPU the GPU parts are skipped with the reason.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
CARRY=${TSEG_CARRY:-.whl/gpu-carry}
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

step() {  # step NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

install_carried() {  # run through bash -c: timeout runs programs, not shell functions
  local pipt="$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/tseg-site"
  if ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
    $pipt "$CARRY"/wheels/*.whl || for w in "$CARRY"/wheels/*.whl; do $pipt "$w" || echo "could not install $w"; done
  fi
  if ! $PY -c "import tseg.runtime.bench" 2>/dev/null; then
    $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . || echo "pip -e failed: the source tree is used"
  fi
}
export PY CARRY
export -f install_carried
step install 60 bash -c install_carried
[ -d /tmp/tseg-site ] && export PYTHONPATH="/tmp/tseg-site${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$CARRY/data" ] && export TSEG_SHARED_DATA="$PWD/$CARRY/data"
if ! $PY -c "import tseg.runtime.bench" 2>/dev/null; then
  shim=$(mktemp -d)
  mkdir -p "$shim/tseg"
  for part in runtime export engines training; do ln -s "$PWD/$part" "$shim/tseg/$part"; done
  export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
fi
export TSEG_BENCH_CACHE=${TSEG_BENCH_CACHE:-/tmp/tseg-bench-cache}
TSEG="$PY -m tseg.runtime.cli"

step device 15 bash -c "nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv; \
  $PY -c 'import json; from tseg.runtime.bench.machine import machine_info; print(json.dumps(machine_info(), indent=1))' \
  | tee '$OUT/machine.json'"
step check 260 $TSEG bench --check --check-time-limit 240 --json "$OUT/check.json"
step bench "${TSEG_BENCH_LIMIT:-90}" $TSEG bench --providers auto --tiles 3 --warmup 1 --time-limit 40 --generate 6x5 --generated-mpp 0.5 \
  --json "$OUT/bench.json"
echo "== done in $SECONDS s"
