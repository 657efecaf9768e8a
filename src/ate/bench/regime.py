"""The regime summary: finished `ate bench` runs collected per suite × policy family into one record.

    ate bench summarize runs/bench/mw-dp runs/bench/mw-rdt --out benchmarks/results/regime

Reads each run's results.json (`ate.bench.results/1`) and writes into `--out`:

- summary.json (`"schema": "ate.regime.summary/1"`), success in percent rounded to 0.1::

      {"schema", "eval_speedup" (overall speedup of batched evaluation, the lowest over the suites measured, or
       null), "eval_speedup_by_suite" {suite: speedup}, "ci_method" (every interval's),
       "suites": {suite: {} (no run) | {family: {} (no run) | {
           "base_success", "base_by_source" {"robot/task": %}, "base_gate_80" (null without a source evaluation),
           "seeds", "episodes" (the fewest training seeds / episodes per (arm, seed, task) cell present),
           "eval_seed_start", "split" ("validation" from seed 200000, else "test"),
           "sft_by_demos" {demos: %},
           "arms" {arm: {demos: {"mean", "ci", "delta_vs_sft" {"mean", "ci"} (paired; not for sft)}}},
           "guidance_profile" {arm: {"levels", "noise_level", "rel_strength" (mean over (demos, seed)),
                                     "rel_strength_min", "rel_strength_max", "frac_clamped", "profiles"}},
           "runs" [{"dir", "command", "machine", "config" (its guidance fields), "arms", "anchor_weight" (β of its anchor
                    arm, null without one), "steer_choice" (the record of
                    the choice its `ate` arm used, `ate.bench.choice`; null before runs recorded it),
                    "total_wall_s", "n_target_demos", "created"}]}}}}

  Arms are the bench's, with `ate` (the configured variant under test) reported as `ate_best`; every arm of
  REPORT_ARMS is listed, {} when absent; another arm (e.g. `anchor`) follows them, only when a run has it.
  Numbers are the final-step, all-task rows of each run's `summary` and `comparisons` (the
  bootstrap of `ate.bench.report`); a run that recorded an older interval method is re-scored with the current
  one from its stored episodes (`ate.bench.report.rescored`), so every interval in the summary is the same kind.
- report.md: per suite × family a table (arm × demos: mean [CI], Δ vs SFT [CI]), the base gate, the split,
  the commands, machines and wall times.
- success_vs_demos.png, delta_vs_sft.png, guidance_profile.png (`ate.steer.guidance_profile`; runs made
  before the profile existed have none, and their panel says so).

Several runs of one suite × family merge when their numbers of target demos are disjoint (a demos curve
split over runs); overlapping ones, or ones scored on other evaluation seeds, are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ate.errors import ConfigError
from ate.bench.report import BASE_GATE as _REPORT_BASE_GATE
from ate.bench.report import CI_METHOD, config_arms, config_headline, rescored

SCHEMA = "ate.regime.summary/1"
RESULTS_SCHEMA = "ate.bench.results/1"
SUITES = ("metaworld", "robosuite")
FAMILIES = ("dp", "rdt", "pi0")
REPORT_ARMS = ("sft", "ate_paper", "ate_best", "ate_unaligned", "lora", "scratch")
GUIDED = ("ate_paper", "ate_best", "ate_unaligned")
RENAME = {"ate": "ate_best"}  # the bench arm `ate` is the configured (best) variant
FAMILY_OF = {"dp_unet": "dp", "rdt_dit": "rdt", "pi0_flow": "pi0"}
VALIDATION_SEED_START = 200_000  # project convention: validation seeds 200000+, test seeds 100000+
BASE_GATE = 100 * _REPORT_BASE_GATE  # in percent here
EVAL_SPEED_FILE = Path("benchmarks/results/eval-speed/results.json")


def split_of(eval_seed_start: int) -> str:
    """"validation" or "test": the project's convention for evaluation seed ranges."""
    return "validation" if eval_seed_start >= VALIDATION_SEED_START else "test"


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100.0 * float(x), 1)


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """results.json of a finished run, with its folder under "_dir"."""
    path = Path(run_dir) / "results.json"
    try:
        res = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{run_dir}: no results.json (not a finished `ate bench` run)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc})") from None
    if res.get("schema") != RESULTS_SCHEMA:
        raise ConfigError(f"{path}: schema {res.get('schema')!r}, expected {RESULTS_SCHEMA!r}")
    family = FAMILY_OF.get(res["config"]["policy"], res["config"]["policy"])
    if family not in FAMILIES or res["config"]["suite"] not in SUITES:
        raise ConfigError(f"{path}: suite {res['config']['suite']!r} / policy {res['config']['policy']!r} is not one "
                          f"of {SUITES} / {FAMILIES}")
    res["_dir"] = str(run_dir)
    res["_family"] = family
    return res


def eval_speedup(path: str | Path | None = EVAL_SPEED_FILE) -> float | None:
    """The overall speedup of batched evaluation (`ate.bench.eval_speed`: compare.speedup), or None when the
    file is absent."""
    return _eval_speed_record(path)[1]


def _eval_speed_record(path: str | Path | None) -> tuple[str | None, float | None]:
    """(suite, overall speedup) of an `ate.bench.eval_speed` result; (None, None) when the file is absent."""
    if path is None or not Path(path).is_file():
        return None, None
    try:
        record = json.loads(Path(path).read_text())
        return (record.get("args") or {}).get("suite"), float(record["compare"]["speedup"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise ConfigError(f"{path}: not an `ate.bench.eval_speed` result (no compare.speedup)") from None


def eval_speedups(paths) -> dict[str, float]:
    """{suite: speedup} of `ate.bench.eval_speed` results (one path or several; absent files are skipped; a suite
    measured twice keeps its lower figure). A result without its suite recorded counts as "unknown"."""
    paths = [paths] if paths is None or isinstance(paths, (str, Path)) else list(paths)
    out: dict[str, float] = {}
    for path in paths:
        suite, speed = _eval_speed_record(path)
        if speed is not None:
            suite = suite or "unknown"
            out[suite] = min(speed, out.get(suite, speed))
    return dict(sorted(out.items()))


_SAME_IN_A_CURVE = ("source_robots", "source_tasks", "target_robot", "target_tasks", "n_source_demos", "pretrain_steps",
                    "pretrain_lr", "policy_config", "seeds", "finetune_lr", "lora_lr", "finetune_epochs",
                    "finetune_min_steps", "finetune_max_steps", "max_steps", "action_steps")


def _check_mergeable(runs: list[dict], suite: str, family: str) -> None:
    """Runs of one suite × family merge only when they are disjoint in demos and share evaluation seeds."""
    seen: dict[int, str] = {}
    for r in runs:
        for n in r["config"]["n_target_demos"]:
            if n in seen:
                raise ConfigError(f"{seen[n]} and {r['_dir']} both hold {suite}/{family} at {n} demos per task; "
                                  "pass one run per number of demos (only disjoint runs merge)")
            seen[n] = r["_dir"]
    for key in _SAME_IN_A_CURVE:  # one curve = one instrument: the same base, tasks, seeds and budget rule
        values = {json.dumps(r["config"].get(key), sort_keys=True) for r in runs}
        if len(values) > 1:
            raise ConfigError(f"the {suite}/{family} runs differ in {key} ({' vs '.join(sorted(values))}); only runs of "
                              "one setting merge into a curve")
    weights = {r["config"].get("anchor_weight") for r in runs if "anchor" in config_arms(r["config"])}
    if len(weights) > 1:  # one anchor row = one β (the other arms do not read it)
        raise ConfigError(f"the {suite}/{family} runs' anchor arms use different anchor_weight ({sorted(weights)}); "
                          "only runs of one setting merge into a curve")
    starts = {r["config"]["eval_seed_start"] for r in runs}
    if len(starts) > 1:
        raise ConfigError(f"the {suite}/{family} runs use different evaluation seeds (eval_seed_start {sorted(starts)}); "
                          "a summary holds one split")


def _base(runs: list[dict]) -> dict[str, Any]:
    """The pretrained policy on its source robots × tasks (the `source-eval` rows, arm "pretrained")."""
    pooled: dict[str, list[int]] = {}
    for r in runs:
        for e in r["evaluations"]:
            if e["arm"] == "pretrained":
                k = pooled.setdefault(f"{e['robot']}/{e['task']}", [0, 0])
                k[0] += e["successes"]
                k[1] += e["episodes"]
    by_source = {k: _pct(s / n) for k, (s, n) in sorted(pooled.items())}
    base = round(float(np.mean([s / n for s, n in pooled.values()])) * 100, 1) if pooled else None
    return {"base_success": base, "base_by_source": by_source,
            "base_gate_80": None if base is None else bool(base >= BASE_GATE)}


def _profiles(runs: list[dict]) -> dict[str, Any]:
    """Mean guidance profile of each guided arm over its (demos, seed) rows."""
    rows: dict[str, list[dict]] = {}
    for r in runs:
        for p in r.get("guidance_profiles") or []:  # absent in runs made before the profile existed
            rows.setdefault(RENAME.get(p["arm"], p["arm"]), []).append(p)
    out = {}
    for arm in [a for a in GUIDED if a in rows]:
        ps = rows[arm]
        rel = np.asarray([p["rel_strength"] for p in ps], dtype=np.float64)
        out[arm] = {"levels": ps[0]["levels"], "noise_level": ps[0]["noise_level"],
                    "rel_strength": rel.mean(axis=0).tolist(), "rel_strength_min": rel.min(axis=0).tolist(),
                    "rel_strength_max": rel.max(axis=0).tolist(),
                    "frac_clamped": np.mean([p["frac_clamped"] for p in ps], axis=0).tolist(), "profiles": len(ps)}
    return out


def family_summary(runs: list[dict]) -> dict[str, Any]:
    """The summary.json entry of one suite × family (runs already checked to merge)."""
    arms: dict[str, dict[str, dict]] = {a: {} for a in REPORT_ARMS}
    seeds, episodes = [], []
    for r in runs:
        final = r["config"]["finetune_steps"]  # the final weights are reported at this step
        for s in sorted(r["summary"], key=lambda s: s["n_demos"]):
            if s["task"] == "all" and s["step"] == final:
                arm = RENAME.get(s["arm"], s["arm"])
                arms.setdefault(arm, {})[str(s["n_demos"])] = {"mean": _pct(s["success_rate"]),
                                                               "ci": [_pct(v) for v in s["ci95"]]}
                seeds.append(len(s["seeds"]))
        for c in r["comparisons"]:
            if c["b"] == "sft" and c["task"] == "all" and c["step"] == final:
                cell = arms.get(RENAME.get(c["a"], c["a"]), {}).get(str(c["n_demos"]))
                if cell is not None:
                    cell["delta_vs_sft"] = {"mean": _pct(c["diff"]), "ci": [_pct(v) for v in c["ci95"]]}
        episodes += [e["episodes"] for e in r["evaluations"] if e["arm"] != "pretrained" and e["step"] == final]
    for arm, cells in arms.items():  # demos in numeric order (runs merged in any order)
        arms[arm] = dict(sorted(cells.items(), key=lambda kv: int(kv[0])))
    start = runs[0]["config"]["eval_seed_start"]
    heads = {config_headline(r["config"]) for r in runs}
    head_eps = [e["episodes"] for r in runs for e in r["evaluations"] if e["arm"] != "pretrained"
                and e["n_demos"] in heads and e["step"] == r["config"]["finetune_steps"]]
    return {
        **_base(runs),
        "seeds": min(seeds) if seeds else None, "episodes": min(episodes) if episodes else None,
        "headline_demos": sorted(heads), "headline_episodes": min(head_eps) if head_eps else None,
        "eval_seed_start": start, "split": split_of(start),
        "sft_by_demos": {n: c["mean"] for n, c in arms["sft"].items()},
        "arms": arms,
        "guidance_profile": _profiles(runs),
        "runs": [{"dir": r["_dir"], "command": r.get("command"), "machine": r.get("machine"), "config": {
                      k: r["config"].get(k) for k in ("scale", "sign", "clamp", "reduction", "encoder_mode", "strength",
                                                      "noise_min", "noise_max", "latent_target", "t_cap")},
                  "arms": config_arms(r["config"]),
                  "anchor_weight": r["config"].get("anchor_weight") if "anchor" in config_arms(r["config"]) else None,
                  "steer_choice": r["config"].get("steer_choice"),  # None in runs recorded before the record
                  "total_wall_s": r.get("total_wall_s"), "n_target_demos": r["config"]["n_target_demos"],
                  "created": r.get("created")} for r in runs],
    }


def summarize(run_dirs: list[str | Path], eval_speed_file=EVAL_SPEED_FILE) -> dict[str, Any]:
    """summary.json's dict for these run folders (schema in the module docstring). eval_speed_file: one
    `ate.bench.eval_speed` result or a list of them (one per suite)."""
    if not run_dirs:
        raise ConfigError("give at least one finished run folder")
    groups: dict[tuple[str, str], list[dict]] = {}
    for d in run_dirs:
        r = rescored(load_run(d))
        groups.setdefault((r["config"]["suite"], r["_family"]), []).append(r)
    suites: dict[str, dict] = {s: {} for s in SUITES}
    for suite in SUITES:
        fams = {f: groups[(suite, f)] for f in FAMILIES if (suite, f) in groups}
        if not fams:
            continue
        suites[suite] = {f: {} for f in FAMILIES}
        for family, runs in fams.items():
            _check_mergeable(runs, suite, family)
            suites[suite][family] = family_summary(runs)
    speeds = eval_speedups(eval_speed_file)
    return {"schema": SCHEMA, "eval_speedup": min(speeds.values()) if speeds else None,
            "eval_speedup_by_suite": speeds, "ci_method": CI_METHOD, "suites": suites}


# ------------------------------------------------------------------------------------------------ report
def _ci(ci, signed: bool = False) -> str:
    f = "{:+.1f}" if signed else "{:.1f}"
    return "[" + ", ".join(f.format(v) for v in ci) + "]"


def family_table(entry: dict) -> str:
    """Markdown: rows = arms present, columns = demos; cells = mean [CI] and Δ vs SFT [CI] (paired)."""
    demos = sorted({int(n) for cells in entry["arms"].values() for n in cells})
    lines = ["| arm | " + " | ".join(f"{n} demos" for n in demos) + " |", "|---|" + "---|" * len(demos)]
    for arm, cells in entry["arms"].items():
        if not cells:
            continue
        out = []
        for n in demos:
            c = cells.get(str(n))
            if c is None:
                out.append("–")
                continue
            d = c.get("delta_vs_sft")
            out.append(f"{c['mean']:.1f} {_ci(c['ci'])}" + (f"; Δ {d['mean']:+.1f} {_ci(d['ci'], True)}" if d else ""))
        lines.append(f"| {arm} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def _gate_line(entry: dict) -> str:
    if entry["base_success"] is None:
        return "Base gate: not checked (no source evaluation in these runs: `source_eval_episodes` was 0)."
    per = ", ".join(f"{k} {v:.1f}" for k, v in entry["base_by_source"].items())
    verdict = "passed" if entry["base_gate_80"] else "**FAILED**"
    return f"Base gate (pretrained policy ≥ {BASE_GATE:.0f} % on its sources): {entry['base_success']:.1f} % — {verdict} ({per})."


def write_report(summary: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write summary.json, the three plots and report.md into out_dir; returns their paths."""
    from ate.bench.regime_plots import write_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # not write_json_atomic: it sorts keys, and demos counts read best in numeric order ("1", "5", "25")
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")
    plots = write_plots(summary, out)
    speed, by_suite = summary["eval_speedup"], summary.get("eval_speedup_by_suite") or {}
    if speed is not None and len(by_suite) > 1:
        speed = f"{speed}x, the lowest of " + ", ".join(f"{k} {v}x" for k, v in by_suite.items()) + " (calls alternating "\
            "old / new on the same policy and seeds, every episode identical: benchmarks/results/eval-speed)"
    elif speed is not None:
        speed = f"{speed}x"
    lines = ["# Regime summary: success vs target demos per suite × policy family", "",
             "Final-step success (%) over all target tasks, mean [95 % CI]; Δ = arm − SFT, paired on training seeds "
             "and evaluation episodes. `ate_best` is the bench arm `ate` (the configured variant), `ate_paper` the "
             f"paper's guidance. Intervals: {summary.get('ci_method') or 'as each run recorded them'}",
             "", f"Batched evaluation speedup: {speed if speed is not None else 'not measured (no eval-speed result)'}.", ""]
    for name, path in plots.items():
        lines += [f"![{name}]({path.name})", ""]
    for suite, fams in summary["suites"].items():
        for family, e in fams.items():
            if not e:
                continue
            lines += [f"## {suite} / {family}", "",
                      f"Split: **{e['split']}** (evaluation seeds {e['eval_seed_start']}…); at least {e['seeds']} "
                      f"training seeds and {e['episodes']} episodes per (arm, seed, task)"
                      + (f", {e['headline_episodes']} at {'/'.join(map(str, e['headline_demos']))} demos"
                         if e.get("headline_episodes") and e["headline_episodes"] != e["episodes"] else "") + ".", "",
                      family_table(e), "", _gate_line(e), ""]
            prof = e["guidance_profile"]
            lines += [("Guidance profile (‖λ·c·g‖ / residual, mean over demos × seeds) at noise level "
                       + ", ".join(f"{lv:.2f}" for lv in next(iter(prof.values()))["levels"]) + ": "
                       + "; ".join(f"{a} " + " ".join(f"{v:.2g}" for v in p["rel_strength"]) for a, p in prof.items()))
                      if prof else "Guidance profile: no profile in these runs.", ""]
            for r in e["runs"]:
                m = r.get("machine") or {}
                wall = r.get("total_wall_s")
                lines += [f"Run `{r['dir']}` ({r['n_target_demos']} demos; {f'{wall:.0f} s' if wall is not None else '? s'} "
                          f"wall on {m.get('cpu', '?')}, {m.get('cpu_count', '?')} CPUs):", "",
                          "```", r.get("command") or "(command not recorded)", "```", ""]
    (out / "report.md").write_text("\n".join(lines))
    return {"summary": out / "summary.json", "report": out / "report.md", **plots}


# ------------------------------------------------------------------------------------------- headroom
HEADROOM = (15.0, 85.0)  # SFT success band (percent) at the headline demos where methods can differ


def headroom(run_dir: str | Path, n_demos: int | None = None, band: tuple[float, float] = HEADROOM) -> dict[str, Any]:
    """The written target-task rule of the evidence protocol, applied to one finished run.

    A task has headroom when SFT's success on it at `n_demos` target demos (default: the run's headline)
    lies in `band` (inclusive): away from the floor and the ceiling, where no method can show anything. The
    run must be scored on validation seeds (eval_seed_start >= VALIDATION_SEED_START), so the test seeds never
    choose the tasks. Returns {"n_demos", "band", "per_task" {task: SFT %}, "keep" [tasks], "run"}.
    """
    res = load_run(run_dir)
    cfg = res["config"]
    if cfg["eval_seed_start"] < VALIDATION_SEED_START:
        raise ConfigError(f"{run_dir}: scored on seeds {cfg['eval_seed_start']}..., not validation seeds "
                          f"(>= {VALIDATION_SEED_START}); choose tasks on validation seeds only")
    n = config_headline(cfg) if n_demos is None else n_demos
    final = cfg["finetune_steps"]
    per_task = {s["task"]: _pct(s["success_rate"]) for s in res["summary"]
                if s["arm"] == "sft" and s["n_demos"] == n and s["step"] == final and s["task"] != "all"}
    if not per_task:
        raise ConfigError(f"{run_dir}: no SFT result with {n} target demos")
    keep = [t for t, v in per_task.items() if band[0] <= v <= band[1]]
    head_eps = cfg.get("headline_eval_episodes") if n == config_headline(cfg) else None
    return {"n_demos": n, "band": list(band), "per_task": per_task, "keep": keep, "run": str(run_dir),
            "eval_seed_start": cfg["eval_seed_start"], "seeds": cfg["seeds"],
            "episodes": head_eps or cfg["eval_episodes"]}


# ----------------------------------------------------------------------------------- steer summary
STEER_SCHEMA = "ate.steer.summary/1"


def _run_choice(run: dict, family: str, choices) -> tuple[dict, str]:
    """The steer choice a run's `ate` arm used, and how that is known: "recorded" (the run's own record, checked
    against its guidance fields) or "matched" (a run recorded before the record existed: its guidance fields
    are the family's choice, else dp's, the fallback)."""
    from ate.bench.choice import FALLBACK, choice_record, guidance_differs

    cfg = run.get("config") or {}
    rec = run.get("steer_choice")
    if rec:
        bad = guidance_differs(cfg, rec.get("options") or {})
        if bad:
            raise ConfigError(f"{run['dir']}: its ate arm used {', '.join(f'{k}={cfg[k]}' for k in bad)}, not its "
                              f"recorded steer choice {rec.get('variant')} ({rec.get('options')})")
        return rec, "recorded"
    tried = []
    for ask in dict.fromkeys((family, FALLBACK)):
        c = choices(ask)
        if not guidance_differs(cfg, c["options"]):
            return {**choice_record(c), "policy": family, **({"fallback_from": c["family"]} if c["family"] != family
                                                              else {})}, "matched"
        tried.append(f"{c['family']}'s {c['variant']} {c['options']}")
    shown = {k: cfg[k] for k in cfg if k in guidance_differs(cfg, {})}
    raise ConfigError(f"{run['dir']}: its ate arm used {shown or 'the paper guidance'}, not a committed steer choice "
                      f"({'; '.join(dict.fromkeys(tried))}); it cannot stand for the chosen variant")


def steer_summary(summary: dict, choices=None) -> dict[str, Any]:
    """Issue 11's summary from a regime summary: per suite × family × demos, SFT, the chosen variant (the
    regime's `ate_best` arm), their paired difference and CI, and ATE-paper for reference (percent).

    Each family's entry names its own choice under "chosen" ({"label", "family", "variant", "name", "options",
    "file", "fallback_from" (when another family's choice stood in), "how"}): what its runs recorded, or, for
    runs recorded before that, the committed choice their guidance fields are (the family's own, else dp's).
    Every run of a family must have used one choice for its `ate` arm (else one-line ConfigError), so another
    variant is never reported as the chosen one. The top-level "chosen" lists the labels ("suite/family: ...").
    A family whose runs have the `anchor` arm also gets "anchor" ({"weight": β, demos: {"sft", "anchor", "delta",
    "ci"}}): the anchor to the frozen pretrained policy against the same SFT (a family may have only that).

    choices: family -> its committed choice (default `ate.bench.steer_choice`; read only for runs without a record).
    """
    from ate.bench.choice import choice_label

    if choices is None:
        from ate.bench.choice import steer_choice as choices
    suites: dict[str, dict] = {}
    labels = []
    for suite, fams in summary["suites"].items():
        for family, e in fams.items():
            if not e:
                continue
            common = {"split": e["split"], "seeds": e["seeds"], "episodes": e["episodes"],
                      "headline_episodes": e.get("headline_episodes")}
            anchor = _anchor_cells(e)
            if anchor:  # the anchor arm, a variant beyond the latent guidance, beside the chosen one
                suites.setdefault(suite, {})[family] = {"anchor": anchor, **common}
            if not e["arms"].get("ate_best"):
                continue
            found = [(_run_choice(run, family, choices), run["dir"]) for run in e.get("runs", [])
                     if "ate" in run.get("arms", ["ate"])]  # a run without the arm chose nothing
            ids = {json.dumps([rec["family"], rec["variant"], rec["options"]], sort_keys=True) for (rec, _), _ in found}
            if len(ids) > 1:
                raise ConfigError(f"the {suite}/{family} runs used different steer choices for their ate arm ("
                                  + "; ".join(f"{d}: {rec['family']}'s {rec['variant']}" for (rec, _), d in found)
                                  + "); one summary row stands for one choice")
            cells = {}
            for n, best in e["arms"].get("ate_best", {}).items():
                sft = e["arms"]["sft"].get(n)
                if sft is None or "delta_vs_sft" not in best:
                    continue
                paper = e["arms"].get("ate_paper", {}).get(n)
                cells[n] = {"sft": sft["mean"], "best": best["mean"], "delta": best["delta_vs_sft"]["mean"],
                            "ci": best["delta_vs_sft"]["ci"], "paper": paper["mean"] if paper else None,
                            "paper_delta": (paper.get("delta_vs_sft") or {}).get("mean") if paper else None}
            if cells:
                chosen = None
                if found:
                    rec = found[0][0][0]
                    hows = sorted({how for (_, how), _ in found})
                    chosen = {"label": choice_label(rec), **rec, "how": " and ".join(hows)}
                    labels.append(f"{suite}/{family}: {chosen['label']}")
                suites.setdefault(suite, {}).setdefault(family, {}).update({**cells, **common, "chosen": chosen})
    return {"schema": STEER_SCHEMA, "chosen": "; ".join(labels), "suites": suites}


def _anchor_cells(entry: dict) -> dict[str, Any]:
    """The anchor arm against SFT per demos ({"weight": β, demos: {"sft", "anchor", "delta", "ci"}}), {} without
    one. β is the one weight of the merged runs' anchor arms (`_check_mergeable` refuses two)."""
    cells = {}
    for n, c in entry["arms"].get("anchor", {}).items():
        sft = entry["arms"]["sft"].get(n)
        if sft is not None and "delta_vs_sft" in c:
            cells[n] = {"sft": sft["mean"], "anchor": c["mean"], "delta": c["delta_vs_sft"]["mean"],
                        "ci": c["delta_vs_sft"]["ci"]}
    if not cells:
        return {}
    weights = [r["anchor_weight"] for r in entry.get("runs", []) if "anchor" in r.get("arms", ())]
    return {"weight": weights[0] if weights else None, **cells}
