#!/usr/bin/env bash
# Creates ./.venv (once) and installs ate with every extra. Torch is installed first, pinned to the
# local CPU wheel, so that no dependency pulls a CUDA build; constraints.txt keeps mujoco/numpy pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
pip install -q -c constraints.txt -e ".[all]" 2>&1 | grep -v "is ignored" || true
python -c "import ate, torch; print(f'ate {ate.__version__} ready (torch {torch.__version__})')"
