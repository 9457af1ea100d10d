#!/usr/bin/env bash
# The one scripted GPU run (one GPU, under 9 minutes): the suite with the plugin on under
# xdist, tests/test_gpu.py, the OOM-residue diagnostic, three runs of the default bench
# modes, the compiled option, and the workload-memory validation. Logs under $OUT, a short
# table last. Every step has its own timeout, and no step may run past the total budget.
#
#   scripts/gpu_run.sh              the whole run (the default)
#   scripts/gpu_run.sh STEP ...     some of it: versions suite gputests oom bench compiled memory
#                                   (and, beyond the default run: audit serial tests2 example sweep sharing)
#
# TOTAL_BUDGET (s, default 520) caps the whole run; each step's cap is its *_TIMEOUT below.
# Expects bitsandbytes installed with `pip install --no-deps --target .site` (carried;
# see docs/gpu-results.md).
set -u
OUT=${OUT:-/tmp/gpuinfer-out}
LOGS=$OUT/logs
mkdir -p "$OUT" "$LOGS"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD/.site:${PYTHONPATH:-}
TOTAL_BUDGET=${TOTAL_BUDGET:-520}
SUITE_TIMEOUT=${SUITE_TIMEOUT:-130}
SUITE_WORKERS=${SUITE_WORKERS:-8}
GPUTESTS_TIMEOUT=${GPUTESTS_TIMEOUT:-60}
OOM_TIMEOUT=${OOM_TIMEOUT:-30}
# A cold machine spends ~106 s before the first round (model write 29 s, three loads 42 s,
# warm-ups 34 s; round 3, call G), then --max-seconds of rounds: 240 s per run, so the three
# runs take two calls (BENCH_RUNS="1 2", then "3").
BENCH_TIMEOUT=${BENCH_TIMEOUT:-240}
BENCH_RUNS=${BENCH_RUNS:-1 2 3}
COMPILED_TIMEOUT=${COMPILED_TIMEOUT:-90}
MEMORY_TIMEOUT=${MEMORY_TIMEOUT:-330}
# The MoE and the quantized modes beyond the five calibrated decoders (27 rows, ~5 min).
MEMORY_ARGS=${MEMORY_ARGS:---suite moe-quantized}
# The bench's decision run: fp16 vs fastpath (same kernels: must read indistinguishable)
# and int8 (its ratio to fp16 must agree within 5 % across the three runs), batch 1.
# --precision: rounds until each ratio's interval is within +-5 %, at most --max-seconds.
# --per-round 3: the record names a slow first repetition per round (the re-entry cost).
BENCH_ARGS=${BENCH_ARGS:---modes fp16,fastpath,int8 --batch-sizes 1 --min-repetitions 6 --min-seconds 3 --per-round 3 --precision 0.05 --max-seconds 90 --skip-overhead --no-split}
COMPILED_ARGS=${COMPILED_ARGS:---modes fp16 --batch-sizes 1 --min-repetitions 5 --min-seconds 2 --skip-overhead --no-split --compiled}
# The 1.1B model is written once (random weights, fixed seed) and reused: not under $OUT,
# which comes back.
MODEL_CACHE=${MODEL_CACHE:-/tmp/gpuinfer-llama-1.1b}
BENCH_ARGS="$BENCH_ARGS --model-cache $MODEL_CACHE"
COMPILED_ARGS="$COMPILED_ARGS --model-cache $MODEL_CACHE"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
: >"$OUT/failures.txt"
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$LOGS/install.log" 2>&1 || {
    cat "$LOGS/install.log"
    exit 1
}

# step NAME TIMEOUT CMD...: run CMD under min(TIMEOUT, budget left), log to $LOGS/NAME.log,
# one summary line (rc, seconds, the log's last verdict line).
step() {
    local name=$1 cap=$2
    shift 2
    local left=$((TOTAL_BUDGET - SECONDS))
    if ((left < 10)); then
        printf '%-18s skipped: total budget of %ss spent\n' "$name" "$TOTAL_BUDGET" >>"$SUMMARY"
        return
    fi
    ((cap > left)) && cap=$left
    local t0=$SECONDS
    timeout -k 10 "$cap" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    local note
    note=$(grep -E 'passed|failed|error|residue|indistinguishable|total [0-9]+ s' "$LOGS/$name.log" | tail -n 1 | cut -c1-90)
    ((rc == 124)) && note="TIMED OUT after ${cap}s; $note"
    printf '%-18s rc=%-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$note" >>"$SUMMARY"
    # Every failing test's id first (the short summary's lines), then a few assertion lines:
    # the ids must come back even when the log itself does not.
    grep -hE "^(FAILED|ERROR) " "$LOGS/$name.log" | cut -c1-300 | sed "s/^/[$name] /" >>"$OUT/failures.txt"
    grep -hE "^E  " "$LOGS/$name.log" | cut -c1-300 | head -30 | sed "s/^/[$name] /" >>"$OUT/failures.txt"
}

versions() {
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv
    python3 -c 'import sys, torch, transformers, accelerate, bitsandbytes; print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda, "| transformers", transformers.__version__, "| accelerate", accelerate.__version__, "| bitsandbytes", bitsandbytes.__version__)'
}

bench_line() { # the bench's short table, from its log, for the summary's tail
    sed -n '/^mode      batch/,$p' "$LOGS/$1.log" | head -8
}

phase() {
    case $1 in
    versions) versions >"$OUT/versions.txt" 2>&1 ;;
    suite) step "suite_n$SUITE_WORKERS" "$SUITE_TIMEOUT" python3 -m pytest tests -n "$SUITE_WORKERS" --gpuinfer -p no:cacheprovider -q -rfE --tb=short ;;
    gputests) step gpu_tests "$GPUTESTS_TIMEOUT" python3 -m pytest tests/test_gpu.py -p no:cacheprovider -q -rfEs ;;
    oom) step oom_residue "$OOM_TIMEOUT" python3 benchmarks/gpu_oom_residue.py --out "$OUT/oom" ;;
    bench)
        for run in $BENCH_RUNS; do
            # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
            step "bench_run$run" "$BENCH_TIMEOUT" python3 benchmarks/gpu_bench.py --out "$OUT/bench" --tag "run$run" $BENCH_ARGS
        done
        ;;
    # shellcheck disable=SC2086
    compiled) step bench_compiled "$COMPILED_TIMEOUT" python3 benchmarks/gpu_bench.py --out "$OUT/bench" --tag compiled $COMPILED_ARGS ;;
    # shellcheck disable=SC2086
    memory) step memory_validation "$MEMORY_TIMEOUT" python3 benchmarks/gpu_memory_validation.py --out "$OUT/memory" $MEMORY_ARGS ;;
    # Beyond the default run (each as long as it needs; run them in a call of their own).
    audit) step audit 60 python3 -m pytest_gpuinfer.cli audit ;;
    # SERIAL_FILES: a part of the suite (the whole serial run is over one call's 10 minutes).
    # shellcheck disable=SC2086
    serial) step suite_serial "${SERIAL_TIMEOUT:-400}" python3 -m pytest ${SERIAL_FILES:-tests} --gpuinfer -p no:cacheprovider -q -rfE --tb=short ;;
    tests2) step suite_all_gpus 300 python3 -m pytest tests --gpuinfer -p no:cacheprovider -q -rfE --tb=short ;;
    example) step example 300 bash -c "cd examples/downstream && python3 -m pytest --gpuinfer -p no:cacheprovider -q -rs" ;;
    # The defaults sweep (8 settings of fp16 vs fastpath, ~50 s each): a call of its own.
    sweep) step sweep_defaults "${SWEEP_TIMEOUT:-540}" python3 benchmarks/gpu_bench.py --sweep-defaults --min-repetitions 6 --out "$OUT/bench" --model-cache "$MODEL_CACHE" ;;
    sharing) step sharing 300 python3 benchmarks/gpu_sharing.py ${SHARING_ARGS:-} ;;
    *) echo "unknown step $1" >&2 ;;
    esac
}

if (($# == 0)); then
    set -- versions suite gputests oom bench compiled memory
fi
for p in "$@"; do phase "$p"; done
echo "== versions"
cat "$OUT/versions.txt" 2>/dev/null
echo "== failures"
grep -E "^\[[^]]*\] (FAILED|ERROR)" "$OUT/failures.txt" | cut -c1-160 | head -80
for name in bench_run1 bench_run2 bench_run3 bench_compiled; do
    [[ -f $LOGS/$name.log ]] && echo "== $name" && bench_line "$name"
done
[[ -f $LOGS/sweep_defaults.log ]] && echo "== sweep_defaults" && sed -n '/^per round/,$p' "$LOGS/sweep_defaults.log"
echo "== summary (total ${SECONDS}s of a ${TOTAL_BUDGET}s budget)"
cat "$SUMMARY"
