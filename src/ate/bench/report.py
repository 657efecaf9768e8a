"""Statistics and the written record of a benchmark run: results.json, report.md (+ plots).

results.json schema (`"schema": "ate.bench.results/1"`):

    suite, preset, command, created (UTC ISO), machine {platform, python, cpu, cpu_count, load_avg}
    config                the full BenchConfig (every option of the run)
    ci_method             how every interval was computed (text, see below)
    total_wall_s          wall time of this invocation (cached stages cost ~0)
    stages                {stage name: {"wall_s", "cached"}}; wall_s is the time the stage took when it ran
    stage_wall_s          {kind: seconds} summed per stage kind (demos, pretrain, stage1, stage2, train, eval)
    demos                 [{task, robot, n, expert_success_rate, seeds_tried}]  expert success while collecting
    evaluations           one row per evaluated (arm, task, robot, seed, n_demos, step):
                          {arm, task, robot, seed, n_demos, step, episodes, successes, success_rate,
                           wilson95 [lo, hi], episode_results [{seed, success, steps}]}
                          arm "pretrained" = the pretrained policy on a source robot (seed / n_demos null)
    summary               per (arm, n_demos, step, task | "all"): {success_rate, ci95, seeds, per_seed,
                          episodes}; success_rate = mean over training seeds (and tasks for "all")
    comparisons           paired differences per (n_demos, step, task | "all"): {a, b, diff, ci95, p_a_better}
    headline              the main comparison: final step, first n_demos, all tasks, arms and ATE - SFT
    guidance_profiles     one row per guided arm (arm, n_demos, seed): `ate.steer.guidance_profile` of its
                          final weights {levels, noise_level, t, rel_strength, frac_clamped, guidance_norm, rows};
                          absent in runs made before it existed

Intervals (`ci_method`): 95 % percentile bootstrap, 2000 resamples, over training seeds and evaluation episodes
as crossed factors: resample the training seeds with replacement and, per task, the evaluation episodes with
replacement, one draw of episodes shared by every resampled seed (episode j is the same placement for every seed
and arm). This carries the training-seed variance and the placement variance (with one seed it is an episode
bootstrap). Arm differences are paired: both arms use the same resampled seeds and evaluation episodes (every arm
is evaluated on the same evaluation seeds). Per-cell `wilson95` is the Wilson score interval of one cell. Runs
written before 2026-12-07 say "hierarchical ... within each (seed, task)" in their `ci_method`: their episodes were
resampled per (seed, task) cell, which gives narrower intervals (`rescored` recomputes them from the stored
episodes, as `ate bench summarize` does; `ate.bench.ci_recheck` lists old against new).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

CI_METHOD = ("95% percentile bootstrap (2000 resamples, rng seed 0) over training seeds and evaluation episodes as "
             "crossed factors (one draw of episodes per task, shared by every resampled seed); arm differences paired "
             "on seeds and evaluation episodes. Per-cell wilson95: Wilson score interval.")
N_BOOT = 2000


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": threads,
            "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def bootstrap_mean(x: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, list[float]]:
    """Mean of x (S seeds, T tasks, E episodes) and its 95 % bootstrap interval over seeds and episodes.

    Episode j of a task is the same evaluation seed (object and goal placement) for every training seed and arm
    (`_cell_matrix` orders them so): seeds and episodes are crossed, not nested. So each resample draws the
    training seeds (axis 0) and, per task, one set of episode indices (axis 2) that every drawn seed shares.
    Resampling episodes independently within each (seed, task) cell would treat a placement seen by S seeds as
    S independent ones and shrink the interval when the placement itself decides success (measured: the anchor's
    paired difference at 5 demos swung from +15.8 on test episodes 0-19 to -13.3 on 20-49, the same way in every
    seed; benchmarks/results/steer/pi0/anchor). Drawing both factors independently is the usual bootstrap for a
    crossed design, slightly conservative. Works on paired differences too (pass x_a - x_b)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"bootstrap_mean needs a non-empty (seeds, tasks, episodes) array, got shape {x.shape}")
    s, t, e = x.shape
    rng = np.random.default_rng(seed)
    si = rng.integers(s, size=(n_boot, s))
    ei = np.broadcast_to(rng.integers(e, size=(n_boot, 1, t, e)), (n_boot, s, t, e))  # shared by the seeds
    stats = np.take_along_axis(x[si], ei, axis=3).mean(axis=(1, 2, 3))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(x.mean()), [float(lo), float(hi)]


def _cell_matrix(rows: list[dict], seeds: list, tasks: list[str]) -> np.ndarray:
    """(S, T, E) success matrix of evaluation rows, episodes ordered by evaluation seed."""
    by = {(r["seed"], r["task"]): r for r in rows}
    cells = []
    for s in seeds:
        cells.append([[float(ep["success"]) for ep in sorted(by[(s, t)]["episode_results"], key=lambda e: e["seed"])]
                      for t in tasks])
    lengths = {len(c) for per_seed in cells for c in per_seed}
    if len(lengths) != 1:
        raise ValueError(f"evaluation cells have different episode counts {sorted(lengths)}")
    return np.asarray(cells)


def build_results(cfg, evals: list[dict], timings: dict[str, dict], command: str | None = None,
                  total_wall_s: float | None = None, demos: list[dict] | None = None,
                  guidance_profiles: list[dict] | None = None) -> dict[str, Any]:
    """Assemble the results dict (schema in the module docstring) from raw evaluation rows."""
    from ate.bench.sims import summarize

    evaluations = []
    for ev in evals:
        s = summarize(ev["episodes"])
        evaluations.append({k: ev[k] for k in ("arm", "task", "robot", "seed", "n_demos", "step")} | {
            "trained_steps": ev.get("trained_steps", ev["step"]),
            "episodes": s["episodes"], "successes": s["successes"], "success_rate": s["success_rate"],
            "wilson95": s["ci95"],
            "episode_results": [{"seed": r["seed"], "success": bool(r["success"]), "steps": r["steps"]}
                                for r in ev["episodes"]]})
    summary, comparisons = score(evaluations, list(cfg.target_tasks), list(cfg.all_arms))
    kinds: dict[str, float] = {}
    for name, t in timings.items():
        kind = name.split("-", 1)[0]
        kinds[kind] = round(kinds.get(kind, 0.0) + float(t["wall_s"]), 2)
    return {
        "schema": "ate.bench.results/1", "suite": cfg.suite, "preset": cfg.preset, "command": command,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
        "config": cfg.to_dict(), "ci_method": CI_METHOD,
        "total_wall_s": round(total_wall_s, 2) if total_wall_s is not None else None,
        "stages": timings, "stage_wall_s": kinds, "demos": demos or [], "evaluations": evaluations,
        "summary": summary, "comparisons": comparisons,
        "headline": headline(summary, comparisons, cfg.headline, cfg.finetune_steps),
        "guidance_profiles": guidance_profiles or [],
    }


def score(evaluations: list[dict], tasks: list[str], arms: list[str]) -> tuple[list[dict], list[dict]]:
    """results.json's `summary` and `comparisons` from its `evaluations` rows (bootstrap: `bootstrap_mean`)."""
    target = [e for e in evaluations if e["arm"] != "pretrained"]
    summary, comparisons = [], []
    keys = sorted({(e["n_demos"], e["step"]) for e in target})
    for n, step in keys:
        rows_by_arm = {a: [e for e in target if e["arm"] == a and e["n_demos"] == n and e["step"] == step]
                       for a in arms}
        mats = {}
        for arm, rows in rows_by_arm.items():
            seeds = sorted({r["seed"] for r in rows})
            if not rows or any(not any(r["seed"] == s and r["task"] == t for r in rows) for s in seeds for t in tasks):
                continue  # incomplete (e.g. a checkpoint one arm did not save)
            x = _cell_matrix(rows, seeds, tasks)
            mats[arm] = (seeds, x)
            for ti, task in enumerate(["all", *tasks]):
                sub = x if task == "all" else x[:, ti - 1 : ti]
                mean, ci = bootstrap_mean(sub)
                summary.append({"arm": arm, "n_demos": n, "step": step, "task": task, "success_rate": mean, "ci95": ci,
                                "seeds": seeds, "per_seed": [float(v) for v in sub.mean(axis=(1, 2))],
                                "episodes": int(sub.size),
                                "trained_steps": max(r.get("trained_steps", step) for r in rows)})
        # every arm against plain fine-tuning, and the pretrained arms against scratch
        pairs = [(a, "sft") for a in arms if a not in ("sft", "scratch")] + [(a, "scratch") for a in ("ate", "sft")]
        for a, b in pairs:
            if a not in mats or b not in mats:
                continue
            common = sorted(set(mats[a][0]) & set(mats[b][0]))
            xa = mats[a][1][[mats[a][0].index(s) for s in common]]
            xb = mats[b][1][[mats[b][0].index(s) for s in common]]
            for ti, task in enumerate(["all", *tasks]):
                d = xa - xb if task == "all" else (xa - xb)[:, ti - 1 : ti]
                mean, ci = bootstrap_mean(d)
                comparisons.append({"a": a, "b": b, "n_demos": n, "step": step, "task": task, "diff": mean, "ci95": ci,
                                    "seeds": common})
    return summary, comparisons


def headline(summary: list[dict], comparisons: list[dict], main_n: int, final: int) -> dict[str, Any]:
    """results.json's `headline`: every arm and ATE − SFT at the headline demos, final step, all tasks."""
    head = {"n_demos": main_n, "step": final, "task": "all"}
    for s in summary:
        if s["n_demos"] == main_n and s["step"] == final and s["task"] == "all":
            head[s["arm"]] = {"success_rate": s["success_rate"], "ci95": s["ci95"]}
    for c in comparisons:
        if c["n_demos"] == main_n and c["step"] == final and c["task"] == "all" and (c["a"], c["b"]) == ("ate", "sft"):
            head["ate_minus_sft"] = {"diff": c["diff"], "ci95": c["ci95"]}
    return head


def rescored(results: dict[str, Any]) -> dict[str, Any]:
    """A copy of a results dict whose intervals are the current bootstrap's (`CI_METHOD`), recomputed from its
    stored episode results; the same dict when it already is. The means do not change. The method it recorded
    stays under `ci_method_recorded`."""
    if results.get("ci_method") == CI_METHOD:
        return results
    cfg = results["config"]
    summary, comparisons = score(results["evaluations"], list(cfg["target_tasks"]), config_arms(cfg))
    return {**results, "summary": summary, "comparisons": comparisons, "ci_method": CI_METHOD,
            "ci_method_recorded": results.get("ci_method"),
            "headline": headline(summary, comparisons, config_headline(cfg), cfg["finetune_steps"])}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(ci) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


BASE_GATE = 0.8  # the pretrained policy's mean source success a comparison of adaptation methods needs


def config_arms(cfg: dict) -> list[str]:
    """Every arm of a run's config dict (`BenchConfig.all_arms`; results written before headline_arms too)."""
    return [*cfg["arms"], *(a for a in cfg.get("headline_arms") or [] if a not in cfg["arms"])]


def config_headline(cfg: dict) -> int:
    """The headline number of target demos of a run's config dict (`BenchConfig.headline`)."""
    return cfg.get("headline_demos") or cfg["n_target_demos"][0]


def summary_table(results: dict, n_demos: int | None = None, step: int | None = None) -> str:
    """Markdown table: rows = arms, columns = tasks + all, cells = success % [95 % CI]."""
    cfg = results["config"]
    n_demos = n_demos if n_demos is not None else config_headline(cfg)
    step = step if step is not None else cfg["finetune_steps"]
    tasks = ["all", *cfg["target_tasks"]]
    head = "| arm | " + " | ".join("mean (all tasks)" if t == "all" else t for t in tasks) + " |"
    lines = [head, "|" + "---|" * (len(tasks) + 1)]
    arms = config_arms(cfg) if n_demos == config_headline(cfg) else cfg["arms"]  # headline arms run only there
    for arm in arms:
        cells = []
        for t in tasks:
            s = next((s for s in results["summary"] if s["arm"] == arm and s["n_demos"] == n_demos
                      and s["step"] == step and s["task"] == t), None)
            cells.append(f"{_pct(s['success_rate'])} {_ci(s['ci95'])}" if s else "–")
        lines.append(f"| {arm.upper()} | " + " | ".join(cells) + " |")
    for arm in [a for a in arms if a not in ("sft", "scratch")]:
        diff = [next((c for c in results["comparisons"] if c["n_demos"] == n_demos and c["step"] == step
                      and c["task"] == t and (c["a"], c["b"]) == (arm, "sft")), None) for t in tasks]
        if any(diff):
            lines.append(f"| {arm.upper()} − SFT (paired) | " + " | ".join(
                f"{100 * c['diff']:+.1f} {_ci(c['ci95'])}" if c else "–" for c in diff) + " |")
    return "\n".join(lines)


def _curve_note(cfg: dict) -> str:
    """The other demos counts' episodes and arms when the headline point has its own (headline_*)."""
    eps = cfg.get("headline_eval_episodes")
    extra = [a for a in cfg.get("headline_arms") or [] if a not in cfg["arms"]]
    if (eps is None or eps == cfg["eval_episodes"]) and not extra:
        return ""
    return (f" at {config_headline(cfg)} demos ({cfg['eval_episodes']} at the other numbers of demos, where only "
            f"{', '.join(cfg['arms'])} run)")


def _budget(cfg: dict) -> str:
    if cfg.get("finetune_epochs") is None:
        return f"{cfg['finetune_steps']} fine-tuning steps"
    cap = cfg["finetune_max_steps"] if cfg["finetune_max_steps"] is not None else "no cap"
    return (f"the budget rule {cfg['finetune_epochs']:g} epochs clamped to [{cfg['finetune_min_steps']}, {cap}] "
            "steps (per number of demos below)")


def _choice_lines(cfg: dict) -> list[str]:
    """Which committed steer choice the `ate` arm (ATE-best) used, when the run recorded one."""
    rec = cfg.get("steer_choice")
    if not rec or "ate" not in config_arms(cfg):
        return []
    from ate.bench.choice import choice_label

    return [f"ATE-best (the `ate` arm) = the committed steer choice {choice_label(rec)}, `{rec.get('file')}`.", ""]


def _anchor_lines(cfg: dict) -> list[str]:
    """What the `anchor` arm is, when the run has it."""
    if "anchor" not in config_arms(cfg):
        return []
    return [f"ANCHOR = SFT + β·MSE to the frozen pretrained policy's prediction on the same noisy input (β = "
            f"{cfg.get('anchor_weight', 1.0):g}; full fine-tuning, no latent guidance).", ""]


def write_report(results: dict, run_dir: Path) -> dict[str, Path]:
    """Write results.json, the plots and report.md into run_dir; returns their paths."""
    from ate.bench.plots import write_plots
    from ate.checkpoint import write_json_atomic

    run_dir = Path(run_dir)
    write_json_atomic(run_dir / "results.json", results)
    plots = write_plots(results, run_dir)
    cfg = results["config"]
    n_main, final = config_headline(cfg), cfg["finetune_steps"]
    src = " + ".join(cfg["source_robots"]) + " on " + ", ".join(cfg["source_tasks"])
    lines = [
        f"# ATE benchmark: {results['suite']} / {results['preset']}",
        "",
        f"Pretrain a `{cfg['policy']}` policy on {src} ({cfg['n_source_demos']} demos each, "
        f"{cfg['pretrain_steps']} steps); adapt to **{cfg['target_robot']}** on {', '.join(cfg['target_tasks'])} with "
        f"{n_main} demos per task, {_budget(cfg)}, training seeds {cfg['seeds']}; "
        f"{cfg.get('headline_eval_episodes') or cfg['eval_episodes']} evaluation episodes per (arm, seed, task) on "
        f"seeds {cfg['eval_seed_start']}…{_curve_note(cfg)} "
        f"(identical for every arm).",
        "",
        *_choice_lines(cfg),
        *_anchor_lines(cfg),
        "## Success rate (%) at the end of fine-tuning",
        "",
        summary_table(results, n_main, final),
        "",
        f"Intervals: {results['ci_method']}",
        "",
    ]
    for name, path in plots.items():
        lines += [f"![{name}]({path.name})", ""]
    if len(cfg["n_target_demos"]) > 1:
        lines += ["## By number of target demos", ""]
        for n in (n for n in cfg["n_target_demos"] if n != n_main):
            lines += [f"### {n} demos per task", "", summary_table(results, n, final), ""]
    if cfg.get("finetune_epochs") is not None:
        steps_by_n = {s["n_demos"]: s["trained_steps"] for s in results["summary"] if s["task"] == "all"
                      and s["step"] == final}
        lines += ["## Fine-tuning budget (same for every arm)", "", "| target demos per task | optimiser steps |", "|---|---|"]
        lines += [f"| {n} | {steps_by_n[n]} |" for n in sorted(steps_by_n)] + [""]
    src_rows = [e for e in results["evaluations"] if e["arm"] == "pretrained"]
    if src_rows:
        lines += ["## Sanity check: the pretrained policy on its source robots", "", "| robot | task | success % | Wilson 95 % |",
                  "|---|---|---|---|"]
        lines += [f"| {e['robot']} | {e['task']} | {_pct(e['success_rate'])} | {_ci(e['wilson95'])} |" for e in src_rows]
        base = float(np.mean([e["success_rate"] for e in src_rows]))
        lines += ["", f"Mean over the source robots × tasks: **{_pct(base)} %**; the base-quality gate of the evidence "
                  f"protocol (>= {_pct(BASE_GATE)} %) {'passes' if base >= BASE_GATE else 'fails'}.", ""]
    if results.get("demos"):
        lines += ["## Expert demonstrations", "", "| robot | task | kept | expert success while collecting |", "|---|---|---|---|"]
        lines += [f"| {d['robot']} | {d['task']} | {d['n']} | {_pct(d['expert_success_rate'])} % of {d['seeds_tried']} seeds |"
                  for d in results["demos"]]
        lines.append("")
    lines += ["## Wall time", "", "| stage kind | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in results["stage_wall_s"].items()]
    m = results["machine"]
    total = results.get("total_wall_s")
    lines += [f"| **this invocation** | {total:.0f} |" if total is not None else "", "",
              f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}, "
              f"load average at the end {m['load_avg']}.", ""]
    if results.get("command"):
        lines += ["Command:", "", "```", results["command"], "```", ""]
    lines += ["Full per-episode data and the complete configuration: `results.json`.", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    return {"results": run_dir / "results.json", "report": run_dir / "report.md", **plots}
