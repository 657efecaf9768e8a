#!/usr/bin/env bash
# Guidance sweep on the `quick` settings, scored on VALIDATION evaluation seeds (200000+), so that the
# setting chosen here for the `full` runs is not picked on the seeds `full` reports (100000+).
#
#   bash benchmarks/sweeps/guidance_sweep.sh robosuite runs/demo2    # base: a finished quick run dir
#   bash benchmarks/sweeps/guidance_sweep.sh metaworld runs/mw-quick
#
# Each variant is a copy of the base run (cp -a keeps mtimes, so the stage cache reuses pretraining,
# both VAEs and the SFT arm) with only the ATE guidance options changed: only the ATE arm re-trains.
# Variants: per-sample reduction x sign {reference, flipped} x lambda {0.1, 0.3, 1}, plus the published
# reduction. With BEST="<guidance options of the chosen variant>" it also runs the alignment ablations at
# that setting (these re-train the stage-2 VAE, so SFT re-runs too and must come out identical):
# KL direction, GMM prior, and no alignment at all (w_kl = w_mmd = 0: a target-only VAE, as SPEC's ablation).
# Results: <out>/<variant>/results.json; table + plot: python -m ate.bench.sweep <out> --out <folder>.
set -euo pipefail
suite=$1; base=$2; out=${3:-runs/sweep-$1}
common=(--suite "$suite" --preset quick --demo-dir runs/demos --eval-seed-start 200000 --source-eval-episodes 0
        --no-progress)
mkdir -p "$out"
# SFT once on the validation seeds; every variant copies it
if [ ! -f "$out/_sft.done" ]; then
  rm -rf "$out/_sft"; cp -a "$base" "$out/_sft"
  ate bench "${common[@]}" --out-dir "$out/_sft" --arms sft > "$out/_sft.log" 2>&1
  touch "$out/_sft.done"
fi
run() {  # name, extra options
  local name=$1; shift
  # a marker, not results.json: the copied base already holds the SFT-only results.json
  [ -f "$out/$name.done" ] && return 0
  rm -rf "$out/$name"; cp -a "$out/_sft" "$out/$name"
  echo "[sweep $suite] $name: $*"
  ate bench "${common[@]}" --out-dir "$out/$name" --arms sft ate "$@" > "$out/$name.log" 2>&1
  touch "$out/$name.done"
}
run published --reduction reference
for sign in reference flipped; do
  for lam in 0.1 0.3 1.0; do
    run "per_sample-${sign}-l${lam}" --reduction per_sample --sign "$sign" --scale "$lam"
  done
done
if [ -n "${BEST:-}" ]; then
  read -r -a best <<< "$BEST"
  run ablate-kl_reference --reduction per_sample "${best[@]}" --kl-direction reference
  run ablate-prior_gmm --reduction per_sample "${best[@]}" --prior-mode gmm
  run ablate-no_alignment --reduction per_sample "${best[@]}" --w-kl 0 --w-mmd 0
fi
