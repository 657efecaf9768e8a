#!/usr/bin/env bash
# Steering variants beyond the paper (issue 11), scored on VALIDATION evaluation seeds (200000+) only.
#
#   bash benchmarks/sweeps/steer_sweep.sh BASE OUT -- <the bench options of BASE, e.g. --suite metaworld --preset quick ...>
#
# BASE is a finished `ate bench` run folder whose SFT arm used the same options; each variant is a copy of it
# (cp -a keeps mtimes, so the stage cache reuses pretraining, both VAEs and SFT) with only the guidance
# options changed, so only the guided arm re-trains. The options after `--` are passed to every variant and
# must equal BASE's (otherwise SFT re-trains, which is correct but slow). Variants, each one named mode of
# ate.steer.GuidanceConfig and otherwise the paper's guidance:
#   paper                 the published guidance (arm ate_paper)
#   rel<λ>-<sign>         strength=relative: the shift is λ × the policy's own residual norm, per sample
#   rel0.3-flipped-low    ... guided only at noise level <= 0.5 (limited-interval guidance)
#   rel0.3-flipped-high   ... guided only at noise level >= 0.5
#   rel0.3-flipped-src    ... pulled toward the nearest source-prior mode instead of E(a0)
# With SET=absolute it runs instead the paper's absolute strength around its lambda (abs<λ>-<sign>[-window]:
# λ 1 / 4 / 8, the flipped sign, guidance only at noise >= 0.5 or <= 0.9) and rel1.0-flipped (dp's pick).
# With BEST="<guidance options>" it also runs the alignment control at that setting (arm ate_unaligned: a
# target-only VAE, stage 2 without KL / MMD). Every variant is recorded; the table comes from
#   python -m ate.bench.sweep OUT --out <folder>
set -euo pipefail
base=$1; out=$2; shift 2
[ "${1:-}" = "--" ] && shift
common=("$@" --eval-seed-start 200000 --no-progress)
mkdir -p "$out"
run() {  # name, extra options; a .done marker (not results.json: the copied base already has one)
  local name=$1; shift
  [ -f "$out/$name.done" ] && return 0
  rm -rf "${out:?}/$name"; cp -a "$base" "$out/$name"
  echo "[steer sweep] $name: $*"
  ate bench "${common[@]}" --out-dir "$out/$name" "$@" > "$out/$name.log" 2>&1
  touch "$out/$name.done"
}
run paper --arms sft ate_paper
if [ "${SET:-relative}" = absolute ]; then
  # the paper's absolute strength around its lambda (for families where the paper's guidance already acts,
  # e.g. flow-matching pi0: its shift is 3-30 % of the residual at noise 0.65-0.95), plus dp's pick as anchor
  for lam in 1 4 8; do run "abs${lam}-reference" --arms sft ate --scale "$lam"; done
  run abs2-flipped --arms sft ate --sign flipped
  run abs2-reference-high --arms sft ate --noise-min 0.5
  run abs2-reference-cut90 --arms sft ate --noise-max 0.9
  run abs4-reference-high --arms sft ate --scale 4 --noise-min 0.5
  run rel1.0-flipped --arms sft ate --strength relative --scale 1.0 --sign flipped
  exit 0
fi
for lam in 0.1 0.3; do
  for sign in reference flipped; do
    run "rel${lam}-${sign}" --arms sft ate --strength relative --scale "$lam" --sign "$sign"
  done
done
run rel0.3-flipped-low --arms sft ate --strength relative --scale 0.3 --sign flipped --noise-max 0.5
run rel0.3-flipped-high --arms sft ate --strength relative --scale 0.3 --sign flipped --noise-min 0.5
run rel0.3-flipped-src --arms sft ate --strength relative --scale 0.3 --sign flipped --latent-target source_mode
if [ -n "${BEST:-}" ]; then
  read -r -a best <<< "$BEST"
  run best-unaligned --arms sft ate_unaligned "${best[@]}"
fi
