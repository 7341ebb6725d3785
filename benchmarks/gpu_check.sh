#!/usr/bin/env bash
# The one command to run on a machine lent with an NVIDIA GPU, from the
# repository root: bash benchmarks/gpu_check.sh [OUT_DIR]
#
# 1. installs droplab with --no-deps into the Python that is there (falling back
#    to PYTHONPATH=src where no build backend is installed), 2. runs the tests
#    marked gpu (bit-exactness against the NumPy reference on CUDA for every
#    sampler, scaling rule, dtype and shared dims, seeds >= 2^63; the family;
#    mc_predict; the bench itself), 3. runs `droplab bench --device cuda`.
# Logs, a JUnit XML and the bench's JSON go to OUT_DIR (default: $OUT, else
# ./gpu-check). Each stage has its own time limit; the whole stays under 9
# minutes. Without a GPU it stops at once with exit code 3.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-./gpu-check}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
start=$SECONDS
log() { echo "gpu_check [$((SECONDS - start)) s]: $*" | tee -a "$out/gpu_check.log"; }

if ! timeout 120 "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  log "no CUDA device is visible to torch here; nothing to check (run this on a GPU machine)"
  exit 3
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  "$py" -c 'import sys, torch, triton, numpy, numba; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, "numpy", numpy.__version__, "numba", numba.__version__)'
} 2>&1 | tee "$out/versions.txt"

if timeout 120 "$py" -m pip install -q --no-deps --no-build-isolation --no-index . >"$out/install.log" 2>&1; then
  log "installed droplab with --no-deps"
else
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  log "pip could not build droplab here (see install.log); using PYTHONPATH=src"
fi

tests=(tests/kernels/test_gpu.py tests/kernels/test_gpu_variants.py tests/variants/test_gpu.py tests/core/test_stream.py tests/core/test_compile.py tests/test_functional.py tests/cli/test_bench_cuda.py)
log "pytest -m gpu ${tests[*]}"
timeout 300 "$py" -m pytest -m gpu -q -ra -p no:cacheprovider --junitxml="$out/pytest-gpu.xml" "${tests[@]}" 2>&1 | tee "$out/pytest-gpu.log"
test_rc=${PIPESTATUS[0]}
log "pytest exit code $test_rc"

log "droplab bench --device cuda"
timeout 200 "$py" -m droplab.cli bench --device cuda --json "$out/bench-cuda.json" 2>&1 | tee "$out/bench-cuda.log"
bench_rc=${PIPESTATUS[0]}
log "bench exit code $bench_rc"

if [ "$test_rc" -ne 0 ] || [ "$bench_rc" -ne 0 ]; then
  exit 1
fi
log "all GPU checks passed"
