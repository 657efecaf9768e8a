"""Scripted-expert demonstrations, cached as one HDF5 file per successful episode.

File `<out_dir>/<suite>-<task>-<robot>-seed<seed:06d>.hdf5`:
    /action               (T, D) float32  raw action given to env.step at step t
    /observations/state   (T, S) float32  state observed before action t (suite layout, `obs.py`)
    /observations/qpos    (T, Q) float32  robot proprioception before action t (unpadded)
    attrs: suite, task, robot, seed, success (always True), steps, action_dim, state_dim,
           state_layout (JSON {name: [start, stop]})
Readable by `ate.data.load_episodes(out_dir)` (format "hdf5"; key="observations/state" for states).

Seeds are tried in order seed, seed + 1, ...; failed seeds are remembered in
`<out_dir>/.failed-<suite>-<task>-<robot>.json`, so a re-run skips both kept and failed seeds and the
result is always "the first n successful seeds from `seed`" however often it was interrupted.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np

from ate.bench.sims.runner import Episode, map_seeds, run_episode


def _tag(suite: str, task: str, robot: str) -> str:
    return f"{suite}-{task}-{robot}"


def demo_path(out_dir, suite: str, task: str, robot: str, seed: int) -> Path:
    return Path(out_dir) / f"{_tag(suite, task, robot)}-seed{int(seed):06d}.hdf5"


def _default_robot(suite: str, robot: str | None) -> str:
    if robot:
        return robot
    return "Sawyer" if suite == "metaworld" else "Panda"


def _setup_expert(suite: str, task: str, robot: str, max_steps: int | None) -> dict:
    from ate.bench.sims.factory import make_env, make_expert

    try:
        env = make_env(suite, task, robot, max_steps=max_steps)
        return {"env": env, "expert": make_expert(env)}
    except Exception as exc:  # kept for the first episode to raise: an error in a pool initializer
        return {"error": exc, "where": (suite, task, robot)}  # would only break the pool (BrokenProcessPool)


def _expert_episode(ctx: dict, seed: int) -> Episode:
    from ate.bench.sims.base import sim_error
    from ate.errors import ATEError

    if "error" in ctx:
        exc = ctx["error"]
        raise exc if isinstance(exc, ATEError) else sim_error(*ctx["where"], "expert setup", exc, seed) from exc
    env, expert = ctx["env"], ctx["expert"]
    try:
        ep = run_episode(env, lambda s: expert.act(s)[None], seed, action_steps=1, record=True,
                         reset_fn=expert.reset)
    except ATEError:
        raise
    except Exception as exc:
        raise sim_error(env.suite, env.task, env.robot, "expert episode", exc, seed) from exc
    ep.extra["layout"] = {k: [v.start, v.stop] for k, v in env.state_layout.items()}
    return ep


def write_episode(path: Path, ep: Episode, suite: str, task: str, robot: str) -> None:
    """Write one episode atomically (tmp file + rename: an interrupted run leaves no half file)."""
    import h5py

    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("action", data=ep.actions.astype(np.float32))
        obs = f.create_group("observations")
        obs.create_dataset("state", data=ep.states.astype(np.float32))
        obs.create_dataset("qpos", data=ep.qpos.astype(np.float32))
        f.attrs.update(
            suite=suite, task=task, robot=robot, seed=int(ep.seed), success=bool(ep.success), steps=int(ep.steps),
            action_dim=int(ep.actions.shape[1]), state_dim=int(ep.states.shape[1]),
            state_layout=json.dumps(ep.extra.get("layout", {})),
        )
    os.replace(tmp, path)


def generate_demos(suite: str, task: str, robot: str | None = None, n: int = 10, seed: int = 0,
                   out_dir: str | os.PathLike = "demos", workers: int = 2, max_steps: int | None = None,
                   max_attempts: int | None = None, progress: bool = True) -> list[Path]:
    """Make (or reuse) n successful expert episodes; returns their paths, sorted by seed.

    The plain-function entry point for an `ate bench demos` CLI. Parallel over `workers` spawned
    processes with a tqdm bar; cached and resumable (see the module docstring). Raises DataError when
    fewer than n successes are found within `max_attempts` seeds (default 3 n + 10), and SimError
    (one line naming suite / task / robot, and the seed for an episode) when the expert is known not to
    work on the robot or its env / expert fails inside a worker.
    """
    from ate.bench.sims.factory import check_expert
    from ate.errors import DataError

    robot = _default_robot(suite, robot)
    check_expert(suite, task, robot)  # refuse a known-broken expert before starting any worker
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failed_file = out / f".failed-{_tag(suite, task, robot)}.json"
    failed = set(json.loads(failed_file.read_text())) if failed_file.exists() else set()
    max_attempts = max_attempts or 3 * n + 10
    setup = functools.partial(_setup_expert, suite, task, robot, max_steps)

    kept: list[int] = []
    next_seed = seed
    while len(kept) < n:
        # walk seeds in order; cached ones cost nothing, the rest are run exactly as many as still needed
        todo: list[int] = []
        while len(kept) + len(todo) < n and next_seed < seed + max_attempts:
            if demo_path(out, suite, task, robot, next_seed).exists():
                kept.append(next_seed)
            elif next_seed not in failed:
                todo.append(next_seed)
            next_seed += 1
        if not todo:
            break
        for ep in map_seeds(setup, _expert_episode, todo, workers, desc=f"demos {task}/{robot}", progress=progress):
            if ep.success:
                write_episode(demo_path(out, suite, task, robot, ep.seed), ep, suite, task, robot)
                kept.append(ep.seed)
            else:
                failed.add(ep.seed)
        failed_file.write_text(json.dumps(sorted(failed)))
    if len(kept) < n:
        raise DataError(
            f"{out}: only {len(kept)} of {n} {suite}/{task}/{robot} expert episodes succeeded in seeds "
            f"{seed}..{seed + max_attempts - 1} (failed seeds listed in {failed_file.name})"
        )
    return [demo_path(out, suite, task, robot, s) for s in sorted(kept)[:n]]
