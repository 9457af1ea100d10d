#!/usr/bin/env bash
# The no-torch part of the suite on Python 3.12 (the GPU machine's Python), so a change in
# how a newer Python words an error is caught on CPU (issue 18: a 3.12 wording once failed
# only there). Run by tox's `wheel` env. torch is not installed: the CPU build of torch on
# the registry is cp311-only here, and cp312 would be the multi-GB CUDA build; the files
# below are the ones that pass or skip without torch (checked 2026-12-03).
# Finds python3.12 on PATH or under pyenv; without one it says so and exits 0.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
py=""
for candidate in python3.12 "$(pyenv root 2>/dev/null)/versions/3.12"*/bin/python3.12; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
        py=$candidate
        break
    fi
done
if [[ -z $py ]]; then
    echo "py312_check: no Python 3.12 on this machine (PATH or pyenv): skipped"
    exit 0
fi
"$py" -m venv "$work/py312"
"$work/py312/bin/pip" install -q "$root[test]"
cd "$root"
files=(
    assertions assertions_inputs bad_outputs bench bench_rounds bnb_binaries builds coverage
    fleet_schedulers floors import_rules memory_class_facts nvml platform plugin_options
    profiles public_cases release_memory requirements_export rules sharing skip_reasons
    verdict_cases visible_devices
)
paths=()
for name in "${files[@]}"; do paths+=("tests/test_$name.py"); done
echo "py312_check: $("$py" --version), ${#paths[@]} test files, no torch"
"$work/py312/bin/python" -m pytest -n 2 -q -p no:cacheprovider "${paths[@]}"
