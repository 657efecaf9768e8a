"""Scripted-expert coverage: success per robot × task for every robot / task a suite offers.

`ate sims coverage --suite robosuite|metaworld` runs `run_coverage` and writes `coverage.json`,
`coverage.md` and `coverage.png` (`write_coverage`). Every (task, robot) cell runs the expert on
seeds first_seed .. first_seed + n - 1 up to the env's own step limit (robosuite Lift 150 / Stack 250,
MetaWorld 500) and records the steps each success took, so one run also says whether the expert
finishes within the episode budget `ate bench` uses (`bench_budget`: MetaWorld presets cut at 200).

Cells run in one process pool (`runner.map_seeds` over job indices); a worker builds a cell's env
once and keeps one env at a time. A cell whose env or expert cannot be built, or whose episode
raises, is recorded with its one-line error instead of stopping the run. Unknown robot / task names
are refused up front (DataError) before any worker starts.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import time
from pathlib import Path
from typing import Any

SCHEMA = "ate.sims.coverage/1"
# robosuite 1.5 single-arm robots (robosuite.robots.SINGLE_ARM_ROBOTS minus robosuite_models extras)
ROBOSUITE_ROBOTS = ("Panda", "Sawyer", "IIWA", "Jaco", "Kinova3", "UR5e", "XArm7")


def bench_budget(suite: str, task: str) -> int:
    """The episode step budget `ate bench` uses for (suite, task): the `full` preset's max_steps, else
    the env's default (robosuite per task; MetaWorld's own 500)."""
    from ate.bench.pipeline import PRESETS

    budget = PRESETS[(suite, "full")].get("max_steps")
    if budget:
        return int(budget)
    if suite == "robosuite":
        from ate.bench.sims.robosuite_env import DEFAULT_MAX_STEPS

        return DEFAULT_MAX_STEPS[task]
    return 500


def _unknown(kind: str, name: str, known, listed=None) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (available: {', '.join(listed or known)})"


def resolve_grid(suite: str, tasks: list[str] | None = None, robots: list[str] | None = None) -> list[tuple[str, str]]:
    """(task, robot) cells for `suite`, defaults = everything; unknown names -> DataError, one line."""
    from ate.errors import DataError

    if suite == "robosuite":
        from ate.bench.sims.robosuite_env import TASKS

        from robosuite.robots import ROBOT_CLASS_MAPPING  # any robot robosuite knows; defaults: the single arms

        known_tasks, known_robots = list(TASKS), list(ROBOT_CLASS_MAPPING)
    elif suite == "metaworld":
        from ate.bench.sims.metaworld_env import ROBOT, all_tasks

        known_tasks, known_robots = all_tasks(), [ROBOT]
    else:
        raise DataError(_unknown("simulator suite", suite, ["robosuite", "metaworld"]))
    defaults = list(ROBOSUITE_ROBOTS) if suite == "robosuite" else known_robots
    tasks, robots = list(tasks or known_tasks), list(robots or defaults)
    for t in tasks:
        if t not in known_tasks:
            raise DataError(_unknown(f"{suite} task", t, known_tasks))
    for r in robots:
        if r not in known_robots:
            raise DataError(_unknown(f"{suite} robot", r, known_robots, defaults))
    return [(t, r) for r in robots for t in tasks]


# --- worker side ------------------------------------------------------------------------------
def _setup(jobs: list[tuple[str, str, str, int]], max_steps: int | None) -> dict:
    return {"jobs": jobs, "max_steps": max_steps, "cell": None}


def _cell(ctx: dict, suite: str, task: str, robot: str) -> dict:
    """The worker's (env, expert) for one cell, or its one-line error; one cell kept at a time."""
    from ate.bench.sims.base import sim_error
    from ate.bench.sims.factory import make_env, make_expert
    from ate.errors import ATEError

    cell = ctx["cell"]
    if cell is not None and cell["key"] == (task, robot):
        return cell
    if cell is not None and cell["env"] is not None:
        cell["env"].close()
    cell = {"key": (task, robot), "env": None, "expert": None, "error": None}
    try:
        cell["env"] = make_env(suite, task, robot, max_steps=ctx["max_steps"])
        cell["expert"] = make_expert(cell["env"])
    except ATEError as exc:
        cell["error"] = str(exc)
    except Exception as exc:
        cell["error"] = str(sim_error(suite, task, robot, "expert setup", exc))
    ctx["cell"] = cell
    return cell


def _job(ctx: dict, index: int) -> dict:
    from ate.bench.sims.base import sim_error
    from ate.bench.sims.runner import run_episode
    from ate.errors import ATEError

    suite, task, robot, seed = ctx["jobs"][index]
    row = {"task": task, "robot": robot, "seed": seed, "success": False, "steps": 0, "wall_s": 0.0, "error": None}
    cell = _cell(ctx, suite, task, robot)
    if cell["error"]:
        return {**row, "error": cell["error"]}
    env, expert = cell["env"], cell["expert"]
    try:
        ep = run_episode(env, lambda s: expert.act(s)[None], seed, reset_fn=expert.reset)
    except ATEError as exc:
        return {**row, "error": str(exc)}
    except Exception as exc:
        return {**row, "error": str(sim_error(suite, task, robot, "expert episode", exc, seed))}
    return {**row, "success": ep.success, "steps": ep.steps, "wall_s": round(ep.wall_s, 4),
            "max_steps": env.max_steps}


# --- parent side ------------------------------------------------------------------------------
def run_coverage(suite: str, tasks: list[str] | None = None, robots: list[str] | None = None, seeds: int = 20,
                 first_seed: int = 0, workers: int = 2, max_steps: int | None = None, progress: bool = True,
                 command: str | None = None) -> dict[str, Any]:
    """Run the scripted expert on every (task, robot) cell; returns the coverage dict (see `summarize_cell`).

    max_steps: episode limit (default: the env's own, so success within the bench budget is measured too).
    """
    from ate.bench.report import machine_info
    from ate.bench.sims.runner import map_seeds

    grid = resolve_grid(suite, tasks, robots)
    seed_list = list(range(first_seed, first_seed + seeds))
    jobs = [(suite, t, r, s) for t, r in grid for s in seed_list]
    t0 = time.perf_counter()
    rows = list(map_seeds(functools.partial(_setup, jobs, max_steps), _job, range(len(jobs)), workers,
                          desc=f"coverage {suite}", progress=progress))
    wall = time.perf_counter() - t0
    cells = [summarize_cell(suite, t, r, [x for x in rows if (x["task"], x["robot"]) == (t, r)]) for t, r in grid]
    return {
        "schema": SCHEMA, "suite": suite, "command": command, "wall_s": round(wall, 1), "workers": workers,
        "seeds": seed_list, "max_steps": max_steps, "machine": machine_info(), "versions": _versions(suite),
        "cells": cells, "recommended_budget": recommend_budget(cells),
        "episodes": sorted(rows, key=lambda x: (x["task"], x["robot"], x["seed"])),
    }


def summarize_cell(suite: str, task: str, robot: str, rows: list[dict]) -> dict[str, Any]:
    """Success over the cell's episodes (to the env limit and within the bench budget), steps of the
    successes, failed seeds, the first error if any, and whether `ate bench` refuses the robot."""
    import numpy as np

    from ate.bench.sims.factory import check_expert
    from ate.errors import SimError

    budget = bench_budget(suite, task)
    ran = [x for x in rows if not x["error"]]
    wins = [x["steps"] for x in ran if x["success"]]
    refused = None
    try:
        check_expert(suite, task, robot)
    except SimError as exc:
        refused = str(exc)
    n = len(ran)
    return {
        "task": task, "robot": robot, "episodes": n, "successes": len(wins),
        "success_rate": len(wins) / n if n else None,
        "max_steps": max((x.get("max_steps", 0) for x in ran), default=None), "bench_budget": budget,
        "successes_within_budget": sum(s <= budget for s in wins),
        "success_rate_within_budget": sum(s <= budget for s in wins) / n if n else None,
        "mean_steps_success": float(np.mean(wins)) if wins else None,
        "max_steps_success": max(wins) if wins else None,
        "failed_seeds": [x["seed"] for x in ran if not x["success"]],
        "errors": len(rows) - n, "error": next((x["error"] for x in rows if x["error"]), None),
        "refused_by_bench": refused,
    }


def recommend_budget(cells: list[dict], round_to: int = 50) -> int | None:
    """Smallest multiple of `round_to` steps within which every successful expert episode finished."""
    longest = [c["max_steps_success"] for c in cells if c["max_steps_success"]]
    return int(math.ceil(max(longest) / round_to) * round_to) if longest else None


def _versions(suite: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("align-then-steer", suite, "mujoco"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# --- outputs ----------------------------------------------------------------------------------
def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.0f} % ({k}/{n})" if n else "–"


def coverage_markdown(cov: dict) -> str:
    suite, cells = cov["suite"], cov["cells"]
    m = cov["machine"]
    n_seeds = len(cov["seeds"])
    lines = [
        f"# Scripted-expert coverage: {suite}",
        "",
        f"Command: `{cov['command']}`  ",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}, "
        f"load average at the end {m['load_avg']}; {cov['workers']} worker processes  ",
        f"Versions: {', '.join(f'{k} {v}' for k, v in cov['versions'].items())}  ",
        f"Wall time: {cov['wall_s']:.0f} s for {sum(c['episodes'] + c['errors'] for c in cells)} episodes "
        f"({len(cells)} cells × {n_seeds} seeds {cov['seeds'][0]}..{cov['seeds'][-1]})",
        "",
        "Success = the env's own success check within the episode limit (the env's default unless the command "
        "set --max-steps). `ate bench` budget (`ate.bench.sims.coverage.bench_budget`): "
        + ("the env default (Lift 150, Stack 250 steps), so the two are the same here." if suite == "robosuite" else
           f"{cells[0]['bench_budget'] if cells else '?'} steps (the MetaWorld presets' max_steps), reported "
           "separately as `within bench budget`."),
        "",
    ]
    if suite == "robosuite":
        tasks = list(dict.fromkeys(c["task"] for c in cells))
        robots = list(dict.fromkeys(c["robot"] for c in cells))
        lines += ["| robot | " + " | ".join(f"{t}: success, mean / max steps of successes" for t in tasks) + " | `ate bench` |",
                  "|---|" + "---|" * len(tasks) + "---|"]
        for r in robots:
            row = [c for c in cells if c["robot"] == r]
            shown = []
            for c in row:
                if c["error"] and not c["episodes"]:
                    shown.append(f"error: {c['error']}")
                else:
                    steps = (f", {c['mean_steps_success']:.0f} / {c['max_steps_success']} steps"
                             if c["mean_steps_success"] else "")
                    shown.append(_pct(c["successes"], c["episodes"]) + steps)
            refused = next((c["refused_by_bench"] for c in row if c["refused_by_bench"]), None)
            lines.append(f"| {r} | " + " | ".join(shown) + f" | {'refused' if refused else 'ok'} |")
        refusals = {c["robot"]: c["refused_by_bench"] for c in cells if c["refused_by_bench"]}
        if refusals:
            lines += ["", "Refused by `ate bench` / `generate_demos`, with this one-line error (SimError):"]
            lines += [f"- `{why}`" for why in refusals.values()]
    else:
        budget = cells[0]["bench_budget"] if cells else None
        lines += [f"| task | success (limit {cells[0]['max_steps'] if cells else ''}) | within bench budget {budget} "
                  "| mean / max steps of successes | failed seeds |", "|---|---|---|---|---|"]
        for c in cells:
            if c["error"] and not c["episodes"]:
                lines.append(f"| {c['task']} | error: {c['error']} | | | |")
                continue
            steps = (f"{c['mean_steps_success']:.0f} / {c['max_steps_success']}" if c["max_steps_success"] else "–")
            failed = ", ".join(map(str, c["failed_seeds"][:10])) + (" ..." if len(c["failed_seeds"]) > 10 else "")
            lines.append(f"| {c['task']} | {_pct(c['successes'], c['episodes'])} | "
                         f"{_pct(c['successes_within_budget'], c['episodes'])} | {steps} | {failed} |")
        lost = [c["task"] for c in cells if c["successes_within_budget"] < c["successes"]]
        total = sum(c["episodes"] for c in cells)
        lines += [
            "",
            f"All tasks: {_pct(sum(c['successes'] for c in cells), total)} within the limit, "
            f"{_pct(sum(c['successes_within_budget'] for c in cells), total)} within the bench budget of {budget} steps.",
            f"Tasks whose expert needs more than {budget} steps on some seed: {', '.join(lost) or 'none'}.",
            f"Every successful expert episode finished within {cov['recommended_budget']} steps "
            "(longest success, rounded up to 50).",
        ]
    errors = [c for c in cells if c["error"]]
    if errors:
        lines += ["", "Errors:"] + [f"- {c['task']} / {c['robot']}: {c['error']}" for c in errors]
    return "\n".join(lines) + "\n"


def plot_coverage(cov: dict, path: Path) -> Path:
    """Heatmap of success (%): robosuite robots × tasks; MetaWorld tasks × (limit, bench budget)."""
    import numpy as np

    from ate.bench.plots import pyplot

    plt = pyplot()
    cells = cov["cells"]

    def rate(c, key):
        return np.nan if c[key] is None else 100 * c[key]

    if cov["suite"] == "robosuite":
        rows = list(dict.fromkeys(c["robot"] for c in cells))
        cols = list(dict.fromkeys(c["task"] for c in cells))
        grid = np.array([[next(rate(c, "success_rate") for c in cells if (c["robot"], c["task"]) == (r, t))
                          for t in cols] for r in rows])
        size = (1.6 + 1.3 * len(cols), 0.9 + 0.42 * len(rows))
        refused = {c["robot"] for c in cells if c["refused_by_bench"]}
        rows = [f"{r} (refused)" if r in refused else r for r in rows]
    else:
        rows = [c["task"] for c in cells]
        cols = [f"limit {cells[0]['max_steps']}", f"budget {cells[0]['bench_budget']}"]
        grid = np.array([[rate(c, "success_rate"), rate(c, "success_rate_within_budget")] for c in cells])
        size = (4.6, 0.9 + 0.2 * len(rows))
    fig, ax = plt.subplots(figsize=size)
    im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows, fontsize=8 if len(rows) > 20 else 10)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, "err" if np.isnan(grid[i, j]) else f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7)
    ax.set_title(f"{cov['suite']} expert success % ({len(cov['seeds'])} seeds)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_coverage(cov: dict, out_dir) -> dict[str, Path]:
    """coverage.json (everything, per episode), coverage.md (tables), coverage.png (heatmap)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "coverage.json", "md": out / "coverage.md", "png": out / "coverage.png"}
    paths["json"].write_text(json.dumps(cov, indent=1) + "\n")
    paths["md"].write_text(coverage_markdown(cov))
    plot_coverage(cov, paths["png"])
    return paths
