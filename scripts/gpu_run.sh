#!/usr/bin/env bash
# Runs on the GPU machine: the audit, the suite and the example on one GPU and on every
# GPU (with and without -n), and the GPU benchmarks. Logs under $OUT, a table last.
#
#   scripts/gpu_run.sh [PHASE ...]     PHASE: audit tests1 tests2 example memory bench sharing all
#
# Expects bitsandbytes installed with `pip install --no-deps --target .site` (carried;
# see docs/gpu-results.md). tests1 pins CUDA_VISIBLE_DEVICES to one GPU, tests2 sees all.
set -u
OUT=${OUT:-/tmp/gpuinfer-out}
LOGS=$(mktemp -d)
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD/.site:${PYTHONPATH:-}
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$LOGS/install.log" 2>&1 || {
    cat "$LOGS/install.log"
    exit 1
}
GPUS=$(nvidia-smi -L | wc -l)
SUMMARY=$OUT/summary.txt
touch "$SUMMARY"

# step NAME CMD...: run CMD, log to $LOGS/NAME.log, one summary line (rc, seconds, last line).
step() {
    local name=$1
    shift
    local t0=$SECONDS
    timeout "${STEP_TIMEOUT:-900}" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    printf '%-22s rc=%-3s %5ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" \
        "$(grep -E 'passed|failed|error' "$LOGS/$name.log" | tail -n 1 | cut -c1-110)" >>"$SUMMARY"
    # Failures as they happen, so a run cut short still says what failed.
    grep -hE "^(FAILED|ERROR) |^E  " "$LOGS/$name.log" | cut -c1-300 | head -30 | sed "s/^/[$name] /" >>"$OUT/failures.txt"
}

suite() { # suite NAME [pytest args...]: the project's suite with the plugin on
    local name=$1
    shift
    step "$name" python3 -m pytest tests -p no:cacheprovider -q --gpuinfer -rfE --tb=short "$@"
}

versions() {
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv
    python3 -c 'import torch, transformers, accelerate, bitsandbytes; print("torch", torch.__version__, "cuda", torch.version.cuda, "| transformers", transformers.__version__, "| accelerate", accelerate.__version__, "| bitsandbytes", bitsandbytes.__version__)'
}

phase() {
    case $1 in
    audit)
        versions >"$LOGS/versions.txt" 2>&1
        step audit python3 -m pytest_gpuinfer.cli audit
        python3 -m pytest_gpuinfer.cli audit --json >"$OUT/audit.json" 2>>"$LOGS/audit.log"
        step arch_list_check python3 benchmarks/arch_list_check.py
        step audit_time python3 benchmarks/bench_audit.py --runs 7
        ;;
    tests1)
        CUDA_VISIBLE_DEVICES=0 suite suite_1gpu
        CUDA_VISIBLE_DEVICES=0 suite suite_1gpu_n2 -n 2
        ;;
    tests2)
        suite "suite_${GPUS}gpu"
        suite "suite_${GPUS}gpu_n${GPUS}" -n "$GPUS"
        ;;
    tests2n) suite "suite_${GPUS}gpu_n${GPUS}" -n "$GPUS" ;;
    gputests) step "gpu_tests_${GPUS}gpu" python3 -m pytest tests/test_gpu.py -p no:cacheprovider -q -rfEs -s ;;
    example)
        step "example_${GPUS}gpu" bash -c "cd examples/downstream && python3 -m pytest --gpuinfer -p no:cacheprovider -q -rs"
        step "example_${GPUS}gpu_n${GPUS}" bash -c "cd examples/downstream && python3 -m pytest --gpuinfer -p no:cacheprovider -q -rs -n $GPUS"
        ;;
    memory) step memory_validation python3 benchmarks/gpu_memory_validation.py ${MEMORY_ARGS:-} ;;
    bench) step bench python3 benchmarks/gpu_bench.py ${BENCH_ARGS:-} ;;
    sharing) step sharing python3 benchmarks/gpu_sharing.py ${SHARING_ARGS:-} ;;
    all) for p in audit tests1 tests2 example memory bench sharing; do phase "$p"; done ;;
    *) echo "unknown phase $1" >&2 ;;
    esac
}

for p in "${@:-all}"; do phase "$p"; done
echo "== versions"
cat "$LOGS/versions.txt" 2>/dev/null
echo "== failures"
grep -E "^\[[^]]*\] (FAILED|ERROR)" "$OUT/failures.txt" | head -40
echo "== summary"
cat "$SUMMARY"
# $OUT comes back as a few files: the logs travel as one archive.
tar -czf "$OUT/logs-$(date +%H%M%S).tgz" -C "$LOGS" .
