"""Recompute the paired intervals of finished runs with the current bootstrap, next to the ones they recorded.

    python -m ate.bench.ci_recheck benchmarks/results/regime/*-test benchmarks/results/steer/pi0/anchor/test \
        --out benchmarks/results/ci-recheck

Runs written before the bootstrap treated evaluation episodes as placements shared by every training seed
(`ate.bench.report.bootstrap_mean`) resampled episodes within each (seed, task) cell, which gives narrower
intervals. This reads each run's `results.json`, rebuilds every final-step, all-task comparison with SFT from its
stored episode results, and writes ci_recheck.json and ci_recheck.md: the recorded and the recomputed interval,
and whether each excludes 0. Nothing in the runs is changed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ate.bench.regime import load_run, split_of
from ate.bench.report import config_arms, score
from ate.errors import ConfigError


def recheck(run_dir: str | Path) -> list[dict]:
    """One row per final-step, all-task comparison of an arm with SFT in the run."""
    res = load_run(run_dir)
    cfg = res["config"]
    final = cfg["finetune_steps"]
    _, now = score(res["evaluations"], list(cfg["target_tasks"]), config_arms(cfg))
    now_ci = {(c["a"], c["n_demos"]): c["ci95"] for c in now if c["b"] == "sft" and c["task"] == "all"
              and c["step"] == final}
    rows = []
    for c in res["comparisons"]:
        if c["b"] != "sft" or c["task"] != "all" or c["step"] != final:
            continue
        rows.append({"run": str(run_dir), "split": split_of(cfg["eval_seed_start"]),
                     "suite": cfg["suite"], "family": res["_family"], "arm": c["a"], "n_demos": c["n_demos"],
                     "diff": round(100 * c["diff"], 1), "ci_recorded": [round(100 * v, 1) for v in c["ci95"]],
                     "ci_now": [round(100 * v, 1) for v in now_ci[(c["a"], c["n_demos"])]],
                     "ci_method_recorded": res.get("ci_method")})
    return rows


def _excludes_zero(ci) -> str:
    return "above 0" if ci[0] > 0 else "below 0" if ci[1] < 0 else "contains 0"


def write(rows: list[dict], out: str | Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ci_recheck.json").write_text(json.dumps({"schema": "ate.bench.ci_recheck/1", "rows": rows}, indent=1) + "\n")
    lines = ["# Paired intervals (arm − SFT, final step, all tasks): recorded vs the current bootstrap", "",
             "Recorded: episodes resampled within each (training seed, task) cell. Now: training seeds and evaluation "
             "episodes resampled as crossed factors, one episode draw per task shared by every seed "
             "(`ate.bench.report.bootstrap_mean`). Points; the run's own results are unchanged.", "",
             "| run | split | arm | demos | Δ | recorded 95 % CI | now | width ratio | verdict recorded → now |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w_old = r["ci_recorded"][1] - r["ci_recorded"][0]
        w_new = r["ci_now"][1] - r["ci_now"][0]
        old, new = _excludes_zero(r["ci_recorded"]), _excludes_zero(r["ci_now"])
        verdict = old if old == new else f"**{old} → {new}**"
        lines.append(f"| `{r['run']}` | {r['split']} | {r['arm']} | {r['n_demos']} | {r['diff']:+.1f} | "
                     f"[{r['ci_recorded'][0]:+.1f}, {r['ci_recorded'][1]:+.1f}] | [{r['ci_now'][0]:+.1f}, "
                     f"{r['ci_now'][1]:+.1f}] | {w_new / w_old if w_old else float('nan'):.2f} | {verdict} |")
    (out / "ci_recheck.md").write_text("\n".join(lines) + "\n")
    return {"json": out / "ci_recheck.json", "md": out / "ci_recheck.md"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ate.bench.ci_recheck", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders holding results.json")
    p.add_argument("--out", required=True, help="folder for ci_recheck.json and ci_recheck.md")
    args = p.parse_args(argv)
    try:
        rows = [row for run in args.runs for row in recheck(run)]
    except ConfigError as exc:  # a folder that is not a finished run: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
    for k, v in write(rows, args.out).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
