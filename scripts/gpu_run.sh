#!/usr/bin/env bash
# One full run on the GPU machine: audit, GPU-gated tests, the suite, the downstream
# example, and the fp16/int8/nf4/fastpath comparison. Logs under $OUT, a table last.
# Expects bitsandbytes' wheel carried in .whl/ (see docs/gpu-results.md).
# --tests-only: the audit and the test suites, without the mode comparison and benchmarks.
set -u
OUT=${OUT:-/tmp/gpuinfer-out}
LOGS=$(mktemp -d)
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --target .site .whl/*.whl && export PYTHONPATH=$PWD/.site:${PYTHONPATH:-} || exit 1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$LOGS/install.log" 2>&1 || { cat "$LOGS/install.log"; exit 1; }
step() { local name=$1; shift; local t0=$SECONDS; "$@" >"$LOGS/$name.log" 2>&1; local rc=$?; printf '%-14s rc=%-3s %5ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$(tail -n 1 "$LOGS/$name.log")" >>"$OUT/summary.txt"; return 0; }
: >"$OUT/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv; python3 -c 'import torch, transformers, accelerate, bitsandbytes; print("torch", torch.__version__, "cuda", torch.version.cuda, "| transformers", transformers.__version__, "| accelerate", accelerate.__version__, "| bitsandbytes", bitsandbytes.__version__)'; } >"$LOGS/versions.txt" 2>&1
step audit python3 -m pytest_gpuinfer.cli audit
python3 -m pytest_gpuinfer.cli audit --json >"$OUT/audit.json" 2>>"$LOGS/audit.log"
step audit_verify python3 -m pytest_gpuinfer.cli audit --verify
step audit_time python3 benchmarks/bench_audit.py --runs 7
step gpu_tests python3 -m pytest tests/test_gpu.py -p no:cacheprovider -q -rfEs -s
step suite python3 -m pytest tests -p no:cacheprovider -q -n 8 --gpuinfer -rfEs --ignore=tests/test_gpu.py
step example bash -c "cd examples/downstream && python3 -m pytest --gpuinfer -p no:cacheprovider -rs -v"
if [ "${1:-}" != "--tests-only" ]; then
    step modes python3 benchmarks/gpu_modes.py --out "$OUT/gpu_modes.json"
    step bench_memory python3 benchmarks/bench_memory_estimate.py --runs 5
    step bench_collect python3 benchmarks/bench_collect.py --runs 7
    step bench_cache python3 benchmarks/bench_model_cache.py --runs 3
fi
tar -czf "$OUT/logs.tgz" -C "$LOGS" .
echo "== versions"; cat "$LOGS/versions.txt"
echo "== failures"; grep -hE "^(FAILED|ERROR) " "$LOGS"/*.log | cut -c1-240
[ -f "$LOGS/modes.log" ] && { echo "== modes"; tail -n 9 "$LOGS/modes.log"; }
for b in bench_memory bench_collect bench_cache; do [ -f "$LOGS/$b.log" ] && tail -n 8 "$LOGS/$b.log"; done
echo "== summary"; cat "$OUT/summary.txt"
