#!/usr/bin/env bash
# Run the example suite as CI does: judged as GPUs this machine lacks, then on this machine.
set -euo pipefail
cd "$(dirname "$0")"
PYTEST="${PYTHON:-python} -m pytest -p no:cacheprovider"

for profile in t4 v100 p100 k80; do
    echo "== simulated $profile =="
    $PYTEST --gpuinfer --gpuinfer-profile "$profile" "$@"
done
echo "== this machine =="
$PYTEST --gpuinfer "$@"
