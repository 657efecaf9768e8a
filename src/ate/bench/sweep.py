"""Collect a sweep of `ate bench` runs (one run folder per variant) into one table and one plot.

    python -m ate.bench.sweep runs/sweep-metaworld --out benchmarks/results/metaworld/sweep

Each variant folder holds a finished run (`results.json`). The table gives, per variant, guided arm it ran
(`ate`, `ate_paper`, `ate_unaligned`) and number of target demos: its guidance options, SFT and guided
success (all target tasks, final step), the paired guided − SFT
difference with its hierarchical-bootstrap 95 % CI (from the run's own `comparisons`), and how strong
the guidance actually was during training: means over the arm's logged steps of the per-sample
‖g‖ (`guidance_norm`, before c(t) and λ), c(t) (`coef_mean`), the fraction of elements clamped at κ,
the shift relative to the policy's own residual (`rel_strength`) and the plain denoising loss, so a variant that "did nothing" can be told apart from one that acted
and hurt. Writes sweep.json, sweep.md and sweep.png (guided − SFT with CIs per row).

With ``--choose FILE --family FAMILY`` (validation seeds only, every variant of that policy family) it also
writes the family's steer choice by CHOICE_RULE, the `ate` arm of the regime preset for that family
(`ate.bench.steer_choice`)::

    python -m ate.bench.sweep runs/steer-sweep-pi0 --out benchmarks/results/steer/pi0/sweep \
        --choose src/ate/bench/steer_choices/pi0.json --family pi0 --chosen-on "validation seeds 200000+ (...)"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ate.bench.report import config_arms

GUIDANCE_KEYS = ("reduction", "sign", "scale", "clamp", "encoder_mode", "strength", "noise_min", "noise_max",
                 "latent_target", "kl_direction", "prior_mode")
GUIDED = ("ate", "ate_paper", "ate_unaligned")
_DIAG_KEYS = ("guidance_norm", "coef_mean", "frac_clamped", "rel_strength", "plain_loss")


def _ate_diagnostics(run_dir: Path, arm: str = "ate", n_demos: int | None = None) -> dict:
    """Mean guidance diagnostics over every logged step of every training seed of one guided arm."""
    pattern = f"{arm}-n{n_demos}-seed*" if n_demos is not None else f"{arm}-*"
    recs = []
    for f in sorted((run_dir / "train").glob(f"{pattern}/metrics.jsonl")):
        recs += [r for r in map(json.loads, f.read_text().splitlines()) if "guidance_norm" in r]
    if not recs:
        return dict.fromkeys(_DIAG_KEYS)
    return {k: float(np.nanmean([r.get(k, np.nan) for r in recs])) for k in _DIAG_KEYS}


def _guidance_of(cfg: dict, arm: str) -> dict:
    from ate.bench.pipeline import PAPER_GUIDANCE

    g = {k: cfg.get(k) for k in GUIDANCE_KEYS}
    if arm == "ate_paper":
        g.update(PAPER_GUIDANCE)
    return g


def collect(sweep_dir: str | Path) -> list[dict]:
    """One row per (finished variant folder, guided arm it ran, number of target demos).

    Folders starting with '_' are shared bases, skipped. A guided arm counts in a folder only if that
    folder's own command ran it (``config.arms``), so an arm copied along with a base is not listed twice.
    """
    rows = []
    for run_dir in sorted(Path(sweep_dir).iterdir()):
        res_file = run_dir / "results.json"
        if run_dir.name.startswith("_") or not res_file.is_file():
            continue
        res = json.loads(res_file.read_text())
        cfg = res["config"]
        final = cfg["finetune_steps"]
        success = {(s["arm"], s["n_demos"]): s for s in res["summary"] if s["task"] == "all" and s["step"] == final}
        for arm in (a for a in GUIDED if a in config_arms(cfg)):
            for n in cfg["n_target_demos"]:
                comp = next((c for c in res["comparisons"] if c["a"] == arm and c["b"] == "sft" and c["task"] == "all"
                             and c["n_demos"] == n and c["step"] == final), None)
                if comp is None or (arm, n) not in success:
                    continue
                rows.append({
                    "variant": run_dir.name if arm == "ate" else f"{run_dir.name}:{arm}",
                    "arm": arm, "policy": cfg.get("policy"), "suite": cfg.get("suite"),
                    "guidance": _guidance_of(cfg, arm),
                    "n_demos": n,
                    "sft": success[("sft", n)]["success_rate"],
                    "ate": success[(arm, n)]["success_rate"],
                    "diff": comp["diff"],
                    "ci95": comp["ci95"],
                    "episodes_per_arm": success[(arm, n)]["episodes"],
                    "seeds": success[(arm, n)]["seeds"],
                    "eval_seed_start": cfg["eval_seed_start"],
                    **_ate_diagnostics(run_dir, arm, n),
                    "command": res.get("command"),
                })
    return rows


def _guidance_label(g: dict) -> str:
    """The options that differ from the paper's guidance, or 'paper'."""
    from ate.bench.pipeline import PAPER_GUIDANCE

    diff = [f"{k}={g[k]:g}" if isinstance(g[k], float) else f"{k}={g[k]}" for k in PAPER_GUIDANCE if g.get(k) != PAPER_GUIDANCE[k]]
    diff += [f"{k}={g[k]}" for k in ("kl_direction", "prior_mode") if g.get(k) not in (None, "paper", "aggregate")]
    return ", ".join(diff) or "paper"


def to_markdown(rows: list[dict]) -> str:
    lines = ["| variant | guidance (differences from the paper's) | demos | SFT | ATE | ATE − SFT [95 % CI] | ‖g‖ | "
             "mean c(t) | clamped | rel. strength | plain loss |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diag = " | ".join("—" if r.get(k) is None else f"{r[k]:.3g}" for k in _DIAG_KEYS)
        lines.append(
            f"| {r['variant']} | {_guidance_label(r['guidance'])} | {r['n_demos']} | {100 * r['sft']:.1f} | "
            f"{100 * r['ate']:.1f} | {100 * r['diff']:+.1f} [{100 * r['ci95'][0]:+.1f}, {100 * r['ci95'][1]:+.1f}] | "
            f"{diag} |")
    return "\n".join(lines) + "\n"


CHOICE_RULE = ("the variant with the largest mean paired guided − SFT difference over the numbers of target demos "
               "it ran (all target tasks, final step, validation seeds); ties go to the one with fewer options "
               "changed from the paper's guidance")


def _changed_options(g: dict) -> dict:
    """BenchConfig guidance / alignment options of a row that differ from the paper's (and the defaults)."""
    from ate.bench.pipeline import PAPER_GUIDANCE

    out = {k: g[k] for k in PAPER_GUIDANCE if k in g and g[k] != PAPER_GUIDANCE[k]}
    out.update({k: g[k] for k in ("kl_direction", "prior_mode") if g.get(k) not in (None, "paper", "aggregate")})
    return out


def choose(rows: list[dict], evidence: str, chosen_on: str, family: str = "dp") -> dict:
    """The steer choice (`ate.steer.choice/1`, the format of ``ate/bench/steer_choices/<family>.json``) of the
    policy family `family` by CHOICE_RULE.

    Only rows of the `ate` and `ate_paper` arms compete (an `ate_unaligned` row is a control, not a
    candidate); every candidate and its score is recorded in the choice.
    """
    by_variant: dict[str, list[dict]] = {}
    for r in rows:
        # an alignment ablation (kl_direction, prior_mode) changes the VAE of every arm: not a guidance choice
        if r["arm"] in ("ate", "ate_paper") and not {"kl_direction", "prior_mode"} & set(_changed_options(r["guidance"])):
            by_variant.setdefault(r["variant"], []).append(r)
    if not by_variant:
        raise ValueError("no ate / ate_paper rows to choose from")
    scored = []
    for name, rs in by_variant.items():
        opts = _changed_options(rs[0]["guidance"])
        scored.append({"variant": name, "options": opts, "score": float(np.mean([r["diff"] for r in rs])),
                       "by_demos": {str(r["n_demos"]): {"diff": r["diff"], "ci95": r["ci95"]} for r in rs}})
    scored.sort(key=lambda c: (-round(c["score"], 9), len(c["options"]), c["variant"]))
    best = scored[0]
    return {"schema": "ate.steer.choice/1", "family": family, "name": _guidance_label(_paper_with(best)),
            "variant": best["variant"], "options": best["options"], "rule": CHOICE_RULE, "chosen_on": chosen_on,
            "evidence": [evidence], "candidates": scored,
            "note": f"the guidance options of the `ate` arm (ATE-best) of the {family} family in the regime preset"
                    f"{' and `ate demo`' if family == 'dp' else ''}; every other GuidanceConfig field keeps the "
                    "paper's value"}


def _paper_with(candidate: dict) -> dict:
    from ate.bench.pipeline import PAPER_GUIDANCE

    return {**PAPER_GUIDANCE, "kl_direction": "paper", "prior_mode": "aggregate", **candidate["options"]}


def plot(rows: list[dict], path: Path, title: str) -> Path:
    from ate.bench.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    d = np.array([100 * r["diff"] for r in rows])
    lo = np.array([100 * r["ci95"][0] for r in rows])
    hi = np.array([100 * r["ci95"][1] for r in rows])
    colors = ["#55A868" if a > 0 else "#C44E52" if b < 0 else "#8C8C8C" for a, b in zip(lo, hi)]
    # lists, not arrays: matplotlib calls math.isfinite on each row, which NumPy deprecates for a 1-element array
    ax.errorbar(d, y, xerr=[(d - lo).tolist(), (hi - d).tolist()], fmt="none", ecolor="black", capsize=3, lw=1)
    ax.scatter(d, y, c=colors, zorder=3)
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_yticks(y, [f"{r['variant']} ({r['n_demos']} demos)" for r in rows])
    ax.set_xlabel("ATE − SFT success (points, paired 95 % CI)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ate.bench.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir")
    p.add_argument("--out", required=True, help="folder for sweep.json, sweep.md, sweep.png")
    p.add_argument("--title", default=None)
    p.add_argument("--choose", default=None, metavar="JSON",
                   help="also write the steer choice by the rule (" + CHOICE_RULE + ") to this file")
    p.add_argument("--chosen-on", default="validation evaluation seeds 200000+",
                   help="what the sweep was scored on, recorded in the choice")
    p.add_argument("--family", default="dp", choices=("dp", "rdt", "pi0"),
                   help="the policy family the sweep ran, recorded in the choice (its file is "
                        "src/ate/bench/steer_choices/FAMILY.json; every variant must be of this family) "
                        "(default: %(default)s)")
    args = p.parse_args(argv)
    rows = collect(args.sweep_dir)
    if not rows:
        raise SystemExit(f"{args.sweep_dir}: no finished variant with an ATE arm (results.json)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"schema": "ate.bench.sweep/1", "rows": rows}, indent=2) + "\n")
    (out / "sweep.md").write_text(to_markdown(rows))
    plot(rows, out / "sweep.png", args.title or Path(args.sweep_dir).name)
    print(to_markdown(rows))
    if args.choose:
        if any(r["eval_seed_start"] < 200_000 for r in rows):
            raise SystemExit(f"{args.sweep_dir}: a variant was scored on test seeds (< 200000); choose on validation only")
        from ate.bench.choice import FAMILY_OF

        other = sorted({str(r["policy"]) for r in rows if FAMILY_OF.get(r["policy"], r["policy"]) != args.family})
        if other:
            raise SystemExit(f"{args.sweep_dir}: variants of policy {', '.join(other)} in a --family {args.family} "
                             "sweep; choose per family")
        choice = choose(rows, str(out), args.chosen_on, args.family)
        Path(args.choose).parent.mkdir(parents=True, exist_ok=True)
        Path(args.choose).write_text(json.dumps(choice, indent=2) + "\n")
        print(f"chosen ({CHOICE_RULE}): {choice['variant']} -> {choice['options']}; written: {args.choose}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
