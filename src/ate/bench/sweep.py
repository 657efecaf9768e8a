"""Collect a sweep of `ate bench` runs (one run folder per variant) into one table and one plot.

    python -m ate.bench.sweep runs/sweep-metaworld --out benchmarks/results/metaworld/sweep

Each variant folder holds a finished run (`results.json`). The table gives, per variant: its guidance
options, SFT and ATE success (all target tasks, final step, first n_demos), the paired ATE − SFT
difference with its hierarchical-bootstrap 95 % CI (from the run's own `comparisons`), and how strong
the guidance actually was during training: means over the ATE arm's logged steps of the per-sample
‖g‖ (`guidance_norm`, before c(t) and λ), c(t) (`coef_mean`), the fraction of elements clamped at κ
and the plain denoising loss, so a variant that "did nothing" can be told apart from one that acted
and hurt. Writes sweep.json, sweep.md and sweep.png (ATE − SFT with CIs per variant).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

GUIDANCE_KEYS = ("reduction", "sign", "scale", "clamp", "encoder_mode", "kl_direction", "prior_mode")


def _ate_diagnostics(run_dir: Path) -> dict:
    """Mean guidance norm / plain loss over every logged step of every ATE training seed."""
    keys = ("guidance_norm", "coef_mean", "frac_clamped", "plain_loss")
    recs = []
    for f in sorted((run_dir / "train").glob("ate-*/metrics.jsonl")):
        recs += [r for r in map(json.loads, f.read_text().splitlines()) if "guidance_norm" in r]
    if not recs:
        return dict.fromkeys(keys)
    return {k: float(np.nanmean([r.get(k, np.nan) for r in recs])) for k in keys}


def collect(sweep_dir: str | Path) -> list[dict]:
    """One row per finished variant folder (folders starting with '_' are shared bases, skipped)."""
    rows = []
    for run_dir in sorted(Path(sweep_dir).iterdir()):
        res_file = run_dir / "results.json"
        if run_dir.name.startswith("_") or not res_file.is_file():
            continue
        res = json.loads(res_file.read_text())
        cfg = res["config"]
        if "ate" not in cfg["arms"]:
            continue
        head = res["headline"]
        rows.append({
            "variant": run_dir.name,
            "guidance": {k: cfg[k] for k in GUIDANCE_KEYS},
            "n_demos": head["n_demos"],
            "sft": head["sft"]["success_rate"],
            "ate": head["ate"]["success_rate"],
            "diff": head["ate_minus_sft"]["diff"],
            "ci95": head["ate_minus_sft"]["ci95"],
            "episodes_per_arm": sum(s["episodes"] for s in res["summary"]
                                    if s["arm"] == "ate" and s["task"] == "all" and s["step"] == head["step"]
                                    and s["n_demos"] == head["n_demos"]),
            "eval_seed_start": cfg["eval_seed_start"],
            **_ate_diagnostics(run_dir),
            "command": res.get("command"),
        })
    return rows


def to_markdown(rows: list[dict]) -> str:
    lines = ["| variant | reduction | sign | λ | KL | prior | SFT | ATE | ATE − SFT [95 % CI] | ‖g‖ | mean c(t) | clamped | plain loss |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diag = " | ".join("—" if r[k] is None else f"{r[k]:.3g}" for k in ("guidance_norm", "coef_mean", "frac_clamped",
                                                                         "plain_loss"))
        lines.append(
            f"| {r['variant']} | {r['guidance']['reduction']} | {r['guidance']['sign']} | {r['guidance']['scale']:g} | "
            f"{r['guidance']['kl_direction']} | {r['guidance']['prior_mode']} | {100 * r['sft']:.1f} | "
            f"{100 * r['ate']:.1f} | {100 * r['diff']:+.1f} [{100 * r['ci95'][0]:+.1f}, {100 * r['ci95'][1]:+.1f}] | "
            f"{diag} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> Path:
    from ate.bench.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    d = np.array([100 * r["diff"] for r in rows])
    lo = np.array([100 * r["ci95"][0] for r in rows])
    hi = np.array([100 * r["ci95"][1] for r in rows])
    colors = ["#55A868" if a > 0 else "#C44E52" if b < 0 else "#8C8C8C" for a, b in zip(lo, hi)]
    ax.errorbar(d, y, xerr=[d - lo, hi - d], fmt="none", ecolor="black", capsize=3, lw=1)
    ax.scatter(d, y, c=colors, zorder=3)
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_yticks(y, [r["variant"] for r in rows])
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
