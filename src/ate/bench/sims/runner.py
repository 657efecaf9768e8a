"""Episode loops: one env at a time (`run_episode`, demos and the reference evaluation) and several
envs in lock step with one chunk call for all live episodes (`run_episodes`, `evaluate`).

`map_seeds` is the per-call process pool of `generate_demos` (and `evaluate_sequential`): each worker
builds its env (and actor) once in the pool initializer, then runs one episode per submitted seed, so
env construction (1-4 s for robosuite) is paid once per worker, not per episode. Workers use the
"spawn" start method (MuJoCo / torch state must not be forked); demo workers never import torch (it
costs seconds of start-up). The persistent pool of `evaluate` is `ate.bench.sims.pool.WorkerPool`.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Episode:
    """One finished episode. Arrays are filled only when recorded (demo generation)."""

    seed: int
    success: bool
    steps: int
    wall_s: float
    actions: np.ndarray | None = None  # (T, D) float32, exactly what env.step received
    states: np.ndarray | None = None  # (T, S) float32, state observed before each action
    qpos: np.ndarray | None = None  # (T, Q) float32
    extra: dict = field(default_factory=dict)


def run_episode(env, chunk_fn: Callable[[np.ndarray], np.ndarray], seed: int, action_steps: int = 1,
                record: bool = False, reset_fn: Callable[[], None] | None = None) -> Episode:
    """Run one episode with receding-horizon chunk execution.

    chunk_fn: state (S,) -> actions (H, D); the first min(action_steps, H) are executed, then it is
    asked again with the new state. Stops on success or after env.max_steps steps.
    """
    t0 = time.perf_counter()
    obs = env.reset(seed)
    if reset_fn is not None:
        reset_fn()
    actions, states, qpos = [], [], []
    steps, success = 0, False
    while steps < env.max_steps and not success:
        chunk = np.asarray(chunk_fn(obs["state"]), dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[1] != env.action_dim or chunk.shape[0] == 0:
            from ate.errors import ShapeMismatchError

            raise ShapeMismatchError(
                f"{env.suite}/{env.task}/{env.robot} seed {seed}: policy chunk has shape {chunk.shape}, "
                f"expected (H >= 1, {env.action_dim})"
            )
        for action in chunk[: max(1, action_steps)]:
            if record:
                states.append(obs["state"])
                qpos.append(env.qpos())
                actions.append(action)
            obs, success = env.step(action)
            steps += 1
            if success or steps >= env.max_steps:
                break
    ep = Episode(seed=int(seed), success=bool(success), steps=steps, wall_s=time.perf_counter() - t0)
    if record:
        ep.actions, ep.states, ep.qpos = np.stack(actions), np.stack(states), np.stack(qpos)
    return ep


@dataclass
class _Live:
    """An episode in progress in one env slot of `run_episodes`."""

    seed: int
    obs: dict
    t0: float
    steps: int = 0
    success: bool = False


def run_episodes(envs: list, chunks_fn: Callable[[list[int], np.ndarray], np.ndarray], seeds: Iterable[int],
                 action_steps: int = 1, start_fn: Callable[[int, int], None] | None = None,
                 on_error: Callable[[Exception, list[int]], Exception] | None = None) -> list[Episode]:
    """`run_episode` for every seed, len(envs) episodes at a time, in lock step.

    chunks_fn(slots, states (B, S)) -> (B, H, D): one call for the B live episodes, slots[i] being the
    index of the env whose state is row i. Each episode executes its own chunk exactly as `run_episode`
    would (first min(action_steps, H) actions, stop on success or env.max_steps), so its result depends
    only on the chunks it receives. A slot whose episode ends takes the next seed at once.
    start_fn(slot, seed): called after env.reset(seed), like run_episode's reset_fn (per-episode state).
    on_error(exc, seeds) -> the exception to raise instead, seeds being the episodes involved.
    Returns episodes in completion order. Episode.wall_s spans reset to end and overlaps other episodes.
    """
    queue = iter(int(s) for s in seeds)
    live: list[_Live | None] = [None] * len(envs)
    done: list[Episode] = []

    def start(slot: int) -> None:
        env = envs[slot]
        for seed in queue:
            t0 = time.perf_counter()
            try:
                obs = env.reset(seed)
                if start_fn is not None:
                    start_fn(slot, seed)
            except Exception as exc:
                raise (on_error(exc, [seed]) if on_error else exc) from None
            if env.max_steps > 0:
                live[slot] = _Live(seed, obs, t0)
                return
            done.append(Episode(seed=seed, success=False, steps=0, wall_s=time.perf_counter() - t0))
        live[slot] = None

    for slot in range(len(envs)):
        start(slot)
    while any(ep is not None for ep in live):
        slots = [i for i, ep in enumerate(live) if ep is not None]
        try:
            chunks = np.asarray(chunks_fn(slots, np.stack([live[i].obs["state"] for i in slots])), dtype=np.float32)
            if chunks.ndim != 3 or chunks.shape[0] != len(slots):
                from ate.errors import ShapeMismatchError

                raise ShapeMismatchError(f"chunks_fn returned {chunks.shape}, expected ({len(slots)}, H, D)")
        except Exception as exc:
            raise (on_error(exc, [live[i].seed for i in slots]) if on_error else exc) from None
        for row, slot in enumerate(slots):
            env, ep = envs[slot], live[slot]
            try:
                if chunks.shape[2] != env.action_dim or chunks.shape[1] == 0:
                    from ate.errors import ShapeMismatchError

                    raise ShapeMismatchError(f"policy chunk has shape {chunks.shape[1:]}, expected (H >= 1, "
                                             f"{env.action_dim})")
                for action in chunks[row, : max(1, action_steps)]:
                    ep.obs, ep.success = env.step(action)
                    ep.steps += 1
                    if ep.success or ep.steps >= env.max_steps:
                        break
            except Exception as exc:
                raise (on_error(exc, [ep.seed]) if on_error else exc) from None
            if ep.success or ep.steps >= env.max_steps:
                done.append(Episode(seed=ep.seed, success=bool(ep.success), steps=ep.steps,
                                    wall_s=time.perf_counter() - ep.t0))
                start(slot)
    return done


# --- process pool -----------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(setup: Callable[[], dict]) -> None:
    _WORKER.clear()
    _WORKER.update(setup())


def _run_in_worker(seed: int, task_fn: Callable[[dict, int], object]) -> object:
    return task_fn(_WORKER, seed)


def map_seeds(setup: Callable[[], dict], task_fn: Callable[[dict, int], object], seeds: Iterable[int],
              workers: int = 2, desc: str = "episodes", progress: bool = True) -> Iterator[object]:
    """Yield task_fn(ctx, seed) for every seed, ctx = setup() built once per worker process.

    setup and task_fn must be picklable (module-level functions / functools.partial). workers <= 1
    runs inline in this process (handy for debugging and tests). Results come in completion order.
    """
    from tqdm.auto import tqdm

    seeds = [int(s) for s in seeds]
    bar = tqdm(total=len(seeds), desc=desc, disable=not progress, leave=False)
    try:
        if workers <= 1 or len(seeds) <= 1:
            ctx = setup()
            for seed in seeds:
                yield task_fn(ctx, seed)
                bar.update(1)
            return
        ctx_mp = mp.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(seeds)), mp_context=ctx_mp, initializer=_init_worker,
                                 initargs=(setup,)) as pool:
            futures = [pool.submit(_run_in_worker, seed, task_fn) for seed in seeds]
            try:
                for fut in as_completed(futures):
                    yield fut.result()
                    bar.update(1)
            except BaseException:  # a failing episode (or Ctrl-C) must not wait for all the others
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        bar.close()
