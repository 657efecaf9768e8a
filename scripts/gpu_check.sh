#!/usr/bin/env bash
# The GPU check, <= 5 min on one GPU: the training-core tests (their CUDA tests run here; the rest are quick CPU
# checks) and the guidance tests, then `python -m ate.bench.gpu_check` (stage 1 at
# the reference preset fp32 vs bf16, a short stage 2, ATE fine-tuning of dp / rdt / pi0 with the guidance
# overhead ratio). Results go to $OUT (default benchmarks/results/gpu/): gpu_check.json, summary.txt, pytest.log.
#
# It uses the machine's own python3 with a CUDA torch (no venv, nothing downloaded). Packages that machine
# lacks travel as wheels in .whl/ (git-ignored), made beforehand on a machine with PyPI:
#   pip download --no-deps -d .whl diffusers==0.42.1
# The LeRobot tier (ate_pi0 forward/backward) needs LeRobot 0.6 and its dependencies as wheels too; it is not
# part of this check yet.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ate_site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/ate_site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch sees no CUDA device')" || exit 1
"$PY" -c "import diffusers" 2>/dev/null || { echo "gpu_check: diffusers missing: put its wheel in .whl/ (see the header)"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/nvidia_smi.txt" 2>&1 || true
rc=0
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" tests/test_training_core.py tests/test_steer_guidance.py \
  2>&1 | tee "$OUT/pytest.log" || rc=1
timeout 240 "$PY" -m ate.bench.gpu_check --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/summary.txt" || rc=1
exit $rc
