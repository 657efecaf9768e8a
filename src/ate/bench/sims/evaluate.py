"""Closed-loop evaluation of chunk-predicting policies on fixed seeds, in parallel processes.

A policy here is anything with
    predict_chunk({"state": (1, S) float32 tensor, "task": (1,) long tensor}) -> (1, H, D) raw-unit tensor
and optionally `reset()` (called at the start of every episode). When predict_chunk accepts a
`generator` keyword, it gets a torch.Generator seeded with the episode seed, so stochastic samplers
are reproducible and SFT / ATE arms see the same noise on the same seed. It is built inside each worker by a
picklable zero-argument `policy_factory` (e.g. `functools.partial(load_policy, ckpt_dir)`), so no
model is pickled. Receding horizon: the first `action_steps` actions of each chunk are executed.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable

import numpy as np

from ate.bench.sims.runner import Episode, map_seeds, run_episode


def _setup_policy(suite: str, task: str, robot: str | None, max_steps: int | None, policy_factory: Callable,
                  workers_are_processes: bool = False) -> dict:
    import torch

    from ate.bench.sims.factory import make_env

    if workers_are_processes:
        torch.set_num_threads(1)  # one thread per worker process: they already fill the cores
    return {"env": make_env(suite, task, robot, max_steps=max_steps), "policy": policy_factory()}


def _takes_generator(policy) -> bool:
    try:
        return "generator" in inspect.signature(policy.predict_chunk).parameters
    except (TypeError, ValueError):
        return False


def _policy_episode(ctx: dict, seed: int, action_steps: int, task_index: int) -> Episode:
    import torch

    env, policy = ctx["env"], ctx["policy"]
    task_t = torch.tensor([task_index], dtype=torch.long)
    # sampling noise seeded per episode: an episode is a pure function of (policy weights, seed)
    kwargs = {"generator": torch.Generator().manual_seed(seed)} if _takes_generator(policy) else {}

    def chunk_fn(state: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            chunk = policy.predict_chunk({"state": torch.from_numpy(state)[None].float(), "task": task_t}, **kwargs)
        chunk = chunk.detach().cpu().numpy() if isinstance(chunk, torch.Tensor) else np.asarray(chunk)
        if chunk.ndim != 3 or chunk.shape[0] != 1:
            from ate.errors import ShapeMismatchError

            raise ShapeMismatchError(f"{env.suite}/{env.task}: predict_chunk returned {chunk.shape}, expected (1, H, D)")
        return chunk[0]

    reset = getattr(policy, "reset", None)
    return run_episode(env, chunk_fn, seed, action_steps=action_steps, reset_fn=reset if callable(reset) else None)


def evaluate(policy_factory: Callable[[], object], suite: str, task: str, robot: str | None = None,
             seeds: Iterable[int] = range(100_000, 100_050), workers: int = 2, action_steps: int = 8,
             task_index: int = 0, max_steps: int | None = None, progress: bool = True) -> list[dict]:
    """Run one episode per seed; returns [{"seed", "success", "steps", "wall_s"}] sorted by seed.

    task_index: the integer passed as batch["task"] (multi-task policies). Seeds follow Diffusion
    Policy's convention of a separate range for evaluation (default 100000...) so they never overlap
    the demo seeds (0...). `summarize(results)` gives the success rate with a 95 % Wilson interval.
    """
    if action_steps < 1:
        raise ValueError(f"action_steps must be >= 1, got {action_steps}")
    seeds = list(seeds)
    parallel = workers > 1 and len(seeds) > 1
    setup = functools.partial(_setup_policy, suite, task, robot, max_steps, policy_factory, parallel)
    run = functools.partial(_policy_episode, action_steps=action_steps, task_index=task_index)
    episodes = map_seeds(setup, run, seeds, workers, desc=f"eval {task}/{robot or ''}", progress=progress)
    rows = [dict(seed=e.seed, success=e.success, steps=e.steps, wall_s=round(e.wall_s, 4)) for e in episodes]
    return sorted(rows, key=lambda r: r["seed"])


def summarize(results: list[dict], z: float = 1.96) -> dict:
    """Success rate of `evaluate` rows with a Wilson score interval (well-behaved at 0 % and 100 %)."""
    n = len(results)
    if n == 0:
        return {"episodes": 0, "success_rate": float("nan"), "ci95": [float("nan"), float("nan")]}
    k = sum(bool(r["success"]) for r in results)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return {
        "episodes": n,
        "successes": k,
        "success_rate": p,
        "ci95": [max(0.0, centre - half), min(1.0, centre + half)],
        "mean_steps": float(np.mean([r["steps"] for r in results])),
        "wall_s": float(sum(r["wall_s"] for r in results)),
    }


class ExpertPolicy:
    """The scripted expert behind the policy interface (chunk of H = 1), a reference for `evaluate`.

    It reads only the state, like a learned policy; for robosuite it builds a private env once to get
    the arm's MuJoCo model for its Jacobians. Picklable before first use (the expert is built lazily).
    """

    def __init__(self, suite: str, task: str, robot: str | None = None):
        self.suite, self.task, self.robot = suite, task, robot
        self._expert = None

    def _build(self):
        from ate.bench.sims.factory import make_env, make_expert

        if self.suite == "metaworld":
            from ate.bench.sims.metaworld_env import MetaWorldExpert

            return MetaWorldExpert(self.task)
        self._env = make_env(self.suite, self.task, self.robot)  # kept alive: the expert uses its model
        return make_expert(self._env)

    def reset(self) -> None:
        if self._expert is None:
            self._expert = self._build()
        self._expert.reset()

    def predict_chunk(self, batch: dict, generator=None):
        import torch

        if self._expert is None:
            self.reset()
        state = batch["state"]
        if state.shape[0] != 1:
            from ate.errors import ShapeMismatchError

            raise ShapeMismatchError(f"ExpertPolicy acts on one env at a time; got a state batch of {state.shape[0]}")
        action = self._expert.act(state[0].cpu().numpy())
        return torch.from_numpy(np.asarray(action, dtype=np.float32))[None, None]  # (1, 1, D)


class ZeroPolicy:
    """Always the zero action (arm holds still): a lower bound that must never succeed."""

    def __init__(self, action_dim: int, horizon: int = 8):
        self.action_dim, self.horizon = int(action_dim), int(horizon)

    def predict_chunk(self, batch: dict, generator=None):
        import torch

        return torch.zeros(batch["state"].shape[0], self.horizon, self.action_dim)
