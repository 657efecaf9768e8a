"""Old vs new evaluation, side by side: `python -m ate.bench.eval_speed --help`.

Replays a benchmark's sequence of evaluation calls (`--evals`, one call per entry, e.g. every arm x
seed x task of a run) with one saved policy on the same seeds, two ways, call by call in turn so both
see the same machine load:
    old: `evaluate_sequential`, a process pool per call, one episode and one policy call at a time;
    new: `evaluate` on one `WorkerPool` kept for all calls (its start-up is counted), batched.
Reports episodes per minute of both, the speedup, and whether every episode's (success, steps) is
identical; plus a one-process profile (env step, policy call at batch 1 and B) that explains where the
time goes. Writes <out>/<name>.json and <name>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _spec(entry: str, default_robot: str | None) -> tuple[str, str | None]:
    task, _, robot = entry.partition(":")
    return task, robot or default_robot


def profile(model: str, suite: str, task: str, robot: str | None, max_steps: int | None, batch: int,
            repeats: int = 20) -> dict:
    """ms per env step (policy-free random actions) and per predict_chunk call at batch 1, `batch` and
    2 x `batch` (1 torch thread, this process): what a worker's batched call costs, against one batched
    call for both workers' episodes made by the main process instead."""
    import torch

    from ate.bench.pipeline import EvalPolicy
    from ate.bench.sims.factory import make_env

    torch.set_num_threads(1)
    out = {}
    for key, reference in (("env_step_ms_reference", True), ("env_step_ms", False)):  # the same on MetaWorld
        env = make_env(suite, task, robot, max_steps=max_steps, reference_step=reference)
        obs = env.reset(0)
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for _ in range(100):
            obs, _ = env.step(rng.uniform(-0.2, 0.2, env.action_dim))
        out[key] = round((time.perf_counter() - t0) * 10, 3)
        if reference:
            env.close()
    policy = EvalPolicy(model, env.robot)()
    for b in (1, batch, 2 * batch):
        state = torch.from_numpy(np.repeat(obs["state"][None], b, 0)).float()
        gens = [torch.Generator().manual_seed(i) for i in range(b)]
        policy.predict_chunk({"state": state, "task": torch.zeros(b, dtype=torch.long)}, generator=gens)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            policy.predict_chunk({"state": state, "task": torch.zeros(b, dtype=torch.long)}, generator=gens)
        out[f"policy_call_ms_b{b}"] = round((time.perf_counter() - t0) / repeats * 1000, 2)
    env.close()
    return out


def compare(model: str, suite: str, evals: list[str], robot: str | None, episodes: int, seed_start: int,
            workers: int, action_steps: int, max_steps: int | None, envs_per_worker: int) -> dict:
    from ate.bench.pipeline import EvalPolicy
    from ate.bench.sims.evaluate import evaluate, evaluate_sequential
    from ate.bench.sims.pool import WorkerPool
    from ate.policies import load_policy

    meta = load_policy(model)
    seeds = list(range(seed_start, seed_start + episodes))
    calls, mismatches = [], []
    wall = {"old": 0.0, "new": 0.0}
    with WorkerPool(workers) as pool:
        for entry in evals:
            task, rob = _spec(entry, robot)
            kw = dict(seeds=seeds, action_steps=action_steps, task_index=meta.task_id(task), max_steps=max_steps,
                      progress=False)
            factory = EvalPolicy(model, rob or meta.config.default_robot)
            t0 = time.perf_counter()
            old = evaluate_sequential(factory, suite, task, rob, workers=workers, **kw)
            t1 = time.perf_counter()
            new = evaluate(factory, suite, task, rob, pool=pool, envs_per_worker=envs_per_worker, **kw)
            t2 = time.perf_counter()
            wall["old"] += t1 - t0
            wall["new"] += t2 - t1
            for a, b in zip(old, new):
                if (a["seed"], a["success"], a["steps"]) != (b["seed"], b["success"], b["steps"]):
                    mismatches.append({"eval": entry, "seed": a["seed"], "old": [a["success"], a["steps"]],
                                       "new": [b["success"], b["steps"]]})
            calls.append({"eval": entry, "old_s": round(t1 - t0, 2), "new_s": round(t2 - t1, 2),
                          "success_old": sum(r["success"] for r in old), "success_new": sum(r["success"] for r in new),
                          "mean_steps": round(float(np.mean([r["steps"] for r in old])), 1)})
            print(f"  {entry:24s} old {t1 - t0:6.1f} s   new {t2 - t1:6.1f} s   success {calls[-1]['success_old']}/"
                  f"{episodes} vs {calls[-1]['success_new']}/{episodes}", flush=True)
    n = episodes * len(evals)
    per_min = {k: round(n / v * 60, 1) for k, v in wall.items()}
    return {"episodes": n, "calls": calls, "wall_s": {k: round(v, 1) for k, v in wall.items()},
            "episodes_per_min": per_min, "speedup": round(per_min["new"] / per_min["old"], 2),
            "identical": not mismatches, "mismatches": mismatches, "steady_state": steady_state(calls, episodes)}


def steady_state(calls: list[dict], episodes: int) -> dict:
    """Episodes per minute over the calls that are not the first of their evaluation: the new path has
    then paid its start-up and built that key's envs, as in most calls of a benchmark run."""
    later = [c for i, c in enumerate(calls) if c["eval"] in {d["eval"] for d in calls[:i]}]
    if not later:
        return {}
    per_min = {k: round(episodes * len(later) / sum(c[f"{k}_s"] for c in later) * 60, 1) for k in ("old", "new")}
    return {"calls": len(later), "episodes_per_min": per_min, "speedup": round(per_min["new"] / per_min["old"], 2)}


def _markdown(r: dict) -> str:
    c, p = r["compare"], r["profile"]
    b = r["args"]["envs_per_worker"]
    lines = [f"# Evaluation speed, old vs new: {r['args']['suite']}", "",
             f"**{c['speedup']}x episodes per minute** ({c['episodes_per_min']['old']} -> "
             f"{c['episodes_per_min']['new']}); per-episode (success, steps) identical for the same seeds: "
             f"**{'yes' if c['identical'] else 'NO'}** ({c['episodes']} episodes, {len(c['calls'])} evaluation calls).", ""]
    st = c.get("steady_state")
    if st:
        lines += [f"Once warm (the {st['calls']} calls that repeat an earlier evaluation, so the new path's workers and "
                  f"envs already exist): **{st['speedup']}x** ({st['episodes_per_min']['old']} -> "
                  f"{st['episodes_per_min']['new']} episodes per minute).", ""]
    lines += [
             "| evaluation call | old s | new s | successes old / new | mean steps |", "|---|---|---|---|---|"]
    lines += [f"| {k['eval']} | {k['old_s']} | {k['new_s']} | {k['success_old']} / {k['success_new']} | {k['mean_steps']} |"
              for k in c["calls"]]
    lines += [f"| **total** | **{c['wall_s']['old']}** | **{c['wall_s']['new']}** | | |", ""]
    if c["mismatches"]:
        lines += ["Episodes that differ: " + ", ".join(f"{m['eval']} seed {m['seed']} (old {m['old']}, new {m['new']})"
                                                     for m in c["mismatches"]), ""]
    lines += ["old: `evaluate_sequential` (a spawned pool per call, one env / episode / batch-of-1 policy call at a time "
              "per worker, robosuite stepped by its own `env.step`); new: `evaluate` on one `WorkerPool` for all calls "
              "(start-up counted in the first call; robosuite through the wrapper's bit-identical control loop), "
              f"up to {b} envs per worker and one batched policy call for their live episodes. Calls alternate old / new.", "",
              f"Profile (one process, 1 thread, {p['task']}): env step {p['env_step_ms']} ms"
              + (f" ({p['env_step_ms_reference']} ms through robosuite's own `env.step`, the old path's)"
                 if r["args"]["suite"] == "robosuite" and "env_step_ms_reference" in p else "") + "; policy call "
              f"{p['policy_call_ms_b1']} ms at batch 1, {p[f'policy_call_ms_b{b}']} ms at batch {b} "
              f"({p[f'policy_call_ms_b{b}'] / b:.2f} ms per episode), {p[f'policy_call_ms_b{2 * b}']} ms at batch {2 * b} "
              f"({p[f'policy_call_ms_b{2 * b}'] / (2 * b):.2f} ms per episode).", "",
              f"Command: `{r['command']}`  ", f"Wall time: {r['wall_s']} s. Git: {r['git']}.  ",
              f"Machine: {r['machine']['cpu']}, {r['machine']['cpu_count']} CPUs, load average "
              f"{r['load_start']} at start, {r['machine']['load_avg']} at end; torch {r['torch']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="saved policy dir (config.json + model.safetensors)")
    p.add_argument("--suite", default="metaworld", choices=["robosuite", "metaworld"])
    p.add_argument("--evals", nargs="+", required=True, help="one evaluation call each: TASK or TASK:ROBOT")
    p.add_argument("--robot", help="robot of entries without :ROBOT (default: the policy's default robot)")
    p.add_argument("--episodes", type=int, default=20, help="episodes per call")
    p.add_argument("--seed-start", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--envs-per-worker", type=int, help="default: default_envs_per_worker(suite)")
    p.add_argument("--action-steps", type=int, default=8)
    p.add_argument("--max-steps", type=int, help="episode budget (default: the suite's)")
    p.add_argument("--out", default="benchmarks/results/eval-speed")
    p.add_argument("--name", help="output file stem (default: the suite)")
    args = p.parse_args(argv)
    import torch

    from ate.bench.report import machine_info
    from ate.bench.sims.evaluate import default_envs_per_worker

    args.envs_per_worker = args.envs_per_worker or default_envs_per_worker(args.suite)

    t0 = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    print(f"profile ({args.evals[0]})", flush=True)
    task, rob = _spec(args.evals[0], args.robot)
    prof = {"task": args.evals[0], **profile(args.model, args.suite, task, rob, args.max_steps, args.envs_per_worker)}
    print(f"  {prof}\ncompare: {len(args.evals)} calls x {args.episodes} episodes", flush=True)
    res = compare(args.model, args.suite, args.evals, args.robot, args.episodes, args.seed_start, args.workers,
                  args.action_steps, args.max_steps, args.envs_per_worker)
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        git = None
    out = {"schema": "ate.eval_speed/1", "command": shlex.join(["python", "-m", "ate.bench.eval_speed",
                                                                *(sys.argv[1:] if argv is None else argv)]),
           "args": vars(args), "profile": prof, "compare": res, "wall_s": round(time.perf_counter() - t0, 1),
           "machine": machine_info(), "load_start": load_start, "torch": torch.__version__, "git": git}
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    stem = args.name or args.suite
    (folder / f"{stem}.json").write_text(json.dumps(out, indent=1) + "\n")
    (folder / f"{stem}.md").write_text(_markdown(out))
    print(f"{res['speedup']}x ({res['episodes_per_min']['old']} -> {res['episodes_per_min']['new']} episodes/min), "
          f"identical: {res['identical']}; wrote {folder / stem}.json/.md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
