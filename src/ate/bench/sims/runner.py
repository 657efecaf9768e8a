"""Episode loop and the process pool shared by `generate_demos` and `evaluate`.

Each worker process builds its env (and actor) once in the pool initializer, then runs one episode
per submitted seed, so env construction (1-4 s for robosuite) is paid once per worker, not per episode.
Workers use the "spawn" start method (MuJoCo / torch state must not be forked); `evaluate` limits
each worker to 1 torch thread (demo workers never import torch: it costs seconds of start-up).
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
