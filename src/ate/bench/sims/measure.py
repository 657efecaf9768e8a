"""Measure expert success rates and simulator speed: `python -m ate.bench.sims.measure --help`.

Per (task, robot): expert success over fixed seeds, mean episode length, env steps/s (expert + env,
single process) and env-only steps/s (zero actions), plus env construction time. One process, so
numbers are per core. Wall-clock rates depend on the machine's load (printed alongside); the CPU-time
rates (time.process_time) do not, and are what one free core would deliver.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from ate.bench.sims.factory import make_env, make_expert
from ate.bench.sims.runner import run_episode


def measure(suite: str, task: str, robot: str | None, seeds: list[int]) -> dict:
    t0 = time.perf_counter()
    env = make_env(suite, task, robot)
    build_s = time.perf_counter() - t0
    expert = make_expert(env)
    cpu0 = time.process_time()
    eps = [run_episode(env, lambda s: expert.act(s)[None], seed, reset_fn=expert.reset) for seed in seeds]
    cpu = time.process_time() - cpu0  # CPU seconds: independent of how loaded a shared machine is
    steps = sum(e.steps for e in eps)
    wall = sum(e.wall_s for e in eps)
    zero = np.zeros((1, env.action_dim), np.float32)
    env.reset(seeds[0])
    n_zero = min(200, env.max_steps)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n_zero):
        env.step(zero[0])
    env_only = n_zero / (time.perf_counter() - t0)
    env_only_cpu = n_zero / (time.process_time() - c0)
    env.close()
    return {
        "suite": suite, "task": task, "robot": env.robot, "episodes": len(eps),
        "success_rate": float(np.mean([e.success for e in eps])),
        "failed_seeds": [e.seed for e in eps if not e.success],
        "mean_steps": float(np.mean([e.steps for e in eps])),
        "expert_steps_per_s": steps / wall, "env_steps_per_s": env_only,
        "expert_steps_per_cpu_s": steps / cpu, "env_steps_per_cpu_s": env_only_cpu,
        "episode_s": wall / len(eps), "episode_cpu_s": cpu / len(eps), "env_build_s": build_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="robosuite", choices=["robosuite", "metaworld"])
    p.add_argument("--tasks", nargs="+", default=["Lift", "Stack"])
    p.add_argument("--robots", nargs="+", default=["Panda", "IIWA", "UR5e"])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    robots = args.robots if args.suite == "robosuite" else [None]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    rows = []
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("| suite | task | robot | expert success | mean steps | expert+env steps/s (wall / CPU) "
          "| env-only steps/s (wall / CPU) | s/episode (wall / CPU) | env build s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task in args.tasks:
        for robot in robots:
            r = measure(args.suite, task, robot, seeds)
            rows.append(r)
            print(f"| {r['suite']} | {task} | {r['robot']} | {r['success_rate'] * 100:.0f} % ({r['episodes']}) "
                  f"| {r['mean_steps']:.0f} | {r['expert_steps_per_s']:.0f} / {r['expert_steps_per_cpu_s']:.0f} "
                  f"| {r['env_steps_per_s']:.0f} / {r['env_steps_per_cpu_s']:.0f} "
                  f"| {r['episode_s']:.2f} / {r['episode_cpu_s']:.2f} | {r['env_build_s']:.1f} |", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
