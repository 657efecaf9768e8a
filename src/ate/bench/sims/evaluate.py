"""Closed-loop evaluation of chunk-predicting policies on fixed seeds, in parallel processes.

A policy here is anything with
    predict_chunk({"state": (B, S) float32 tensor, "task": (B,) long tensor}) -> (B, H, D) raw-unit tensor
and optionally `reset()`. It is built inside each worker by a picklable zero-argument `policy_factory`
(e.g. `functools.partial(load_policy, ckpt_dir)`), so no model is pickled. Receding horizon: the first
`action_steps` actions of each chunk are executed, then the policy is asked again.

`evaluate` runs several episodes at once in each worker (`envs_per_worker`) and makes ONE predict_chunk call
for all of a worker's live episodes. When predict_chunk accepts a `generator` keyword it gets a list of
B torch.Generators, one per row, each seeded with its episode's seed (`ate.policies.base.initial_noise`):
an episode's noise, hence its chunks, never depend on which other episodes share the batch, and SFT / ATE
arms see the same noise on the same seed. A policy with `reset()` keeps per-episode state: it gets one
instance per env slot, one call per episode, a single generator and a batch of 1 (the scripted expert).
Workers persist across calls when a `WorkerPool` is passed (a benchmark run keeps one; envs are cached).

`evaluate_sequential` is the reference it is tested against: one env, one episode and one call at a time
per worker, with a pool started per call (the evaluation before batching). Batched calls are equal to
batch-of-1 calls up to float rounding (~1e-6: BLAS / oneDNN pick other kernels for other batch sizes), so
per-episode results match unless an episode sits on a knife edge; `ate.bench.eval_speed` checks it.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ate.bench.sims.pool import WorkerPool
from ate.bench.sims.runner import Episode, map_seeds, run_episode, run_episodes

# estimated memory of cached envs in a worker (measured): a setting's first env (robosuite: its compiled model, which
# the setting's other envs share, ~125 MB) and each env (robosuite ~1 MB beyond that, MetaWorld ~32 MB)
SETTING_MB = {"robosuite": 125, "metaworld": 0}
ENV_MB = {"robosuite": 2, "metaworld": 35}
ENV_BUDGET_MB = 2048  # what one worker may hold in cached envs
# (task, robot) pairs a run cycles through per checkpoint: MetaWorld full's 5 target tasks; robosuite's regime runs
# alternate 2 (the target robot on Lift and Stack; the 4 source pairs are evaluated once, at the start)
CACHED_KEYS = {"metaworld": 5, "robosuite": 2}
MAX_ENVS = 25  # a bigger batch gains little more (robosuite, 50 episodes a worker: 14.7 s at 7 envs, 12.4 at 14,
# 11.4 at 25, 11.2 at 50) and the first call builds every env


def default_envs_per_worker(suite: str) -> int:
    """Episodes a worker runs at once by default: as many as let the suite's CACHED_KEYS keys stay cached
    (MetaWorld 11), at most MAX_ENVS (robosuite, whose envs of one setting share their model). A bigger batch is
    cheaper per episode (dp quick policy, 1 thread: 21 ms per call at batch 1, 46 ms at 7, 64 ms at 14), but when
    the cache thrashes every call rebuilds its envs (MetaWorld 0.18 s each; robosuite 0.6 s for a setting's first,
    0.03 s for each more). robosuite's stepping (1.1 ms per action through ``RobosuiteEnv``'s lean loop on Panda
    Lift; 9 ms per 8-action chunk) costs about what the policy call costs per episode at batch 5, so batching
    more pays there too."""
    keys = CACHED_KEYS.get(suite, 5)
    room = ENV_BUDGET_MB - keys * SETTING_MB.get(suite, 0)
    return max(1, min(MAX_ENVS, room // (keys * ENV_MB.get(suite, 100))))


def _takes_generator(policy) -> bool:
    try:
        return "generator" in inspect.signature(policy.predict_chunk).parameters
    except (TypeError, ValueError):
        return False


def _as_numpy(chunk):
    import torch

    return chunk.detach().cpu().numpy() if isinstance(chunk, torch.Tensor) else np.asarray(chunk)


# --- batched evaluation (persistent workers) ----------------------------------------------------
@dataclass(frozen=True)
class _EvalJob:
    """What one worker needs for its share of an `evaluate` call (picklable)."""

    policy_factory: Callable
    suite: str
    task: str
    robot: str | None
    max_steps: int | None
    action_steps: int
    task_index: int
    envs: int

    @property
    def env_key(self) -> tuple:
        return (self.suite, self.task, self.robot, self.max_steps)

    def where(self, seeds) -> str:
        return f"{self.suite}/{self.task}/{self.robot or 'default robot'} seed{'s' if len(seeds) > 1 else ''} " \
               f"{', '.join(str(s) for s in seeds)}"


class EnvCache:
    """Envs a worker keeps between calls, per (suite, task, robot, max_steps). Least recently used keys
    are closed once the estimated memory (SETTING_MB per key, ENV_MB per env) would pass budget_mb."""

    def __init__(self, budget_mb: float = ENV_BUDGET_MB):
        self.budget_mb = budget_mb
        self._envs: OrderedDict[tuple, list] = OrderedDict()

    def get(self, key: tuple, n: int) -> list:
        from ate.bench.sims.factory import make_env

        envs = self._envs.pop(key, [])
        while len(envs) < n:
            envs.append(make_env(key[0], key[1], key[2], max_steps=key[3]))
        self._envs[key] = envs
        while len(self._envs) > 1 and self.mb() > self.budget_mb:
            for env in self._envs.popitem(last=False)[1]:
                env.close()
        return envs[:n]

    def mb(self) -> float:
        return sum(SETTING_MB.get(k[0], 0) + ENV_MB.get(k[0], 100) * len(v) for k, v in self._envs.items())

    def close(self) -> None:
        for envs in self._envs.values():
            for env in envs:
                env.close()
        self._envs.clear()


def _relabel(exc: Exception, where: str) -> Exception:
    """exc as one line that names where it happened; ATEError subclasses keep their class."""
    from ate.errors import ATEError, EvaluationError

    msg = " ".join(f"{where}: {exc}".split())
    if isinstance(exc, ATEError):
        try:
            return type(exc)(msg)
        except Exception:
            pass
    return EvaluationError(" ".join(f"{where}: {type(exc).__name__}: {exc}".split()))


def _eval_shard(state: dict, job: _EvalJob, seeds: list[int]) -> list[Episode]:
    """Run `seeds` on up to job.envs envs at once (in a WorkerPool worker or inline)."""
    import torch

    if state.get("worker"):
        torch.set_num_threads(1)  # one thread per worker process: they already fill the cores
    k = max(1, min(job.envs, len(seeds)))
    try:
        envs = state.setdefault("envs", EnvCache()).get(job.env_key, k)
        policy = job.policy_factory()
        stateful = callable(getattr(policy, "reset", None))
        policies = [policy] + [job.policy_factory() for _ in range(k - 1)] if stateful else [policy]
    except Exception as exc:
        raise _relabel(exc, job.where(seeds)) from None
    takes_gen = _takes_generator(policy)
    gens: list = [None] * k

    def start(slot: int, seed: int) -> None:
        # sampling noise seeded per episode: an episode is a pure function of (policy weights, seed)
        gens[slot] = torch.Generator().manual_seed(seed) if takes_gen else None
        if stateful:
            policies[slot].reset()

    def call(pol, states: np.ndarray, generator) -> np.ndarray:
        batch = {"state": torch.from_numpy(states).float(),
                 "task": torch.full((len(states),), job.task_index, dtype=torch.long)}
        with torch.no_grad():
            return _as_numpy(pol.predict_chunk(batch, **({"generator": generator} if takes_gen else {})))

    def chunks_fn(slots: list[int], states: np.ndarray) -> np.ndarray:
        if stateful:
            return np.concatenate([call(policies[i], states[r:r + 1], gens[i]) for r, i in enumerate(slots)])
        return call(policy, states, [gens[i] for i in slots])

    return run_episodes(envs, chunks_fn, seeds, action_steps=job.action_steps, start_fn=start,
                        on_error=lambda exc, where: _relabel(exc, job.where(where)))


def evaluate(policy_factory: Callable[[], object], suite: str, task: str, robot: str | None = None,
             seeds: Iterable[int] = range(100_000, 100_050), workers: int = 2, action_steps: int = 8,
             task_index: int = 0, max_steps: int | None = None, progress: bool = True,
             pool: WorkerPool | None = None, envs_per_worker: int | None = None) -> list[dict]:
    """Run one episode per seed; returns [{"seed", "success", "steps", "wall_s"}] sorted by seed.

    task_index: the integer passed as batch["task"] (multi-task policies). Seeds follow Diffusion
    Policy's convention of a separate range for evaluation (default 100000...) so they never overlap
    the demo seeds (0...). `summarize(results)` gives the success rate with a 95 % Wilson interval.
    pool: a WorkerPool kept across calls (its size replaces `workers`); None starts one for this call.
    envs_per_worker: episodes a worker runs at once, one batched policy call for them all (default:
        `default_envs_per_worker(suite)`); a worker's share of the seeds refills its envs as episodes end.
    wall_s of a row spans its episode's reset to end and overlaps the episodes batched with it.
    """
    from tqdm.auto import tqdm

    if action_steps < 1:
        raise ValueError(f"action_steps must be >= 1, got {action_steps}")
    seeds = [int(s) for s in seeds]
    own = pool is None
    if own:
        pool = WorkerPool(workers if len(seeds) > 1 else 1)
    job = _EvalJob(policy_factory, suite, task, robot, max_steps, action_steps, task_index,
                   max(1, envs_per_worker or default_envs_per_worker(suite)))
    shards = [seeds[i::pool.workers] for i in range(pool.workers) if seeds[i::pool.workers]]  # mixed lengths
    bar = tqdm(total=len(seeds), desc=f"eval {task}/{robot or ''}", disable=not progress, leave=False)
    rows = []
    try:
        for episodes in pool.map_unordered(_eval_shard, [(job, s) for s in shards], lambda a: a[0].where(a[1])):
            rows += [dict(seed=e.seed, success=e.success, steps=e.steps, wall_s=round(e.wall_s, 4)) for e in episodes]
            bar.update(len(episodes))
    finally:
        bar.close()
        if own:
            pool.close()
    return sorted(rows, key=lambda r: r["seed"])


# --- the reference: one env, one episode, one policy call at a time -----------------------------
def _setup_policy(suite: str, task: str, robot: str | None, max_steps: int | None, policy_factory: Callable,
                  workers_are_processes: bool = False) -> dict:
    import torch

    from ate.bench.sims.factory import make_env

    if workers_are_processes:
        torch.set_num_threads(1)  # one thread per worker process: they already fill the cores
    # the reference steps robosuite through its own env.step, as evaluation did before the lean control loop
    return {"env": make_env(suite, task, robot, max_steps=max_steps, reference_step=True), "policy": policy_factory()}


def _policy_episode(ctx: dict, seed: int, action_steps: int, task_index: int) -> Episode:
    import torch

    env, policy = ctx["env"], ctx["policy"]
    task_t = torch.tensor([task_index], dtype=torch.long)
    # sampling noise seeded per episode: an episode is a pure function of (policy weights, seed)
    kwargs = {"generator": torch.Generator().manual_seed(seed)} if _takes_generator(policy) else {}

    def chunk_fn(state: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            chunk = _as_numpy(policy.predict_chunk({"state": torch.from_numpy(state)[None].float(), "task": task_t},
                                                   **kwargs))
        if chunk.ndim != 3 or chunk.shape[0] != 1:
            from ate.errors import ShapeMismatchError

            raise ShapeMismatchError(f"{env.suite}/{env.task}: predict_chunk returned {chunk.shape}, expected (1, H, D)")
        return chunk[0]

    reset = getattr(policy, "reset", None)
    return run_episode(env, chunk_fn, seed, action_steps=action_steps, reset_fn=reset if callable(reset) else None)


def evaluate_sequential(policy_factory: Callable[[], object], suite: str, task: str, robot: str | None = None,
                        seeds: Iterable[int] = range(100_000, 100_050), workers: int = 2, action_steps: int = 8,
                        task_index: int = 0, max_steps: int | None = None, progress: bool = True) -> list[dict]:
    """`evaluate` the way it was before batching: a pool per call, one episode and one batch-of-1
    policy call at a time per worker, robosuite stepped by its own ``env.step``. The reference for tests and
    `ate.bench.eval_speed`."""
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
    """Success rate of `evaluate` rows with a Wilson score interval (well-behaved at 0 % and 100 %).
    wall_s sums the episodes' own spans (they overlap in a batched evaluation: not the call's wall time)."""
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
