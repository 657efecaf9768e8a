#!/usr/bin/env bash
# Sets up the environment (scripts/setup.sh) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MUJOCO_GL=${MUJOCO_GL:-egl}
python -m pytest -q --timeout=900 --durations=15 "$@"  # the slowest tests, to keep the suite fast
