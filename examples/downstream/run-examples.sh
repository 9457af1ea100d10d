#!/usr/bin/env bash
# Run the example suite as CI does: on this machine, then judged as three GPUs it lacks.
set -euo pipefail
cd "$(dirname "$0")"
PYTEST="${PYTHON:-python} -m pytest -p no:cacheprovider"

echo "== this machine =="
$PYTEST --gpuinfer "$@"
for profile in t4 v100 p100 k80; do
    echo "== simulated $profile =="
    $PYTEST --gpuinfer --gpuinfer-profile "$profile" "$@"
done
