#!/usr/bin/env bash
# Sets up the environment (scripts/setup.sh) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# two pytest-xdist workers, one per core, each with one intra-op thread (two threads each would oversubscribe the
# 2-core box); --dist loadfile keeps a module's fixtures in one worker, so the LeRobot tier's environment build
# (minutes of pip on a fresh machine) runs beside the rest of the suite instead of before it
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MUJOCO_GL=${MUJOCO_GL:-egl}
python -m pytest -q -n "${ATE_TEST_WORKERS:-2}" --dist loadfile --timeout=900 --durations=15 "$@"  # the slowest tests, to keep the suite fast
