"""Batched evaluation (`run_episodes`, `evaluate`, `WorkerPool`) against the one-episode-at-a-time reference."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch

from ate.bench.sims.pool import WorkerPool
from ate.bench.sims.runner import run_episode, run_episodes
from ate.errors import DataError, EvaluationError, ShapeMismatchError
from ate.policies.base import initial_noise


class FakeEnv:
    """A 2-D point pushed by the actions toward the origin; success within 0.05. Scene = f(seed)."""

    suite, task, robot, action_dim, state_dim = "fake", "reach", "dot", 2, 2

    def __init__(self, max_steps: int = 12):
        self.max_steps = max_steps

    def reset(self, seed):
        self.x = np.random.default_rng(seed).uniform(-1, 1, 2).astype(np.float32)
        return {"state": self.x.copy()}

    def step(self, action):
        self.x = (self.x + np.asarray(action, np.float32)).astype(np.float32)
        return {"state": self.x.copy()}, bool(np.linalg.norm(self.x) < 0.05)


def noisy_chunks(states: np.ndarray, generators: list, horizon: int = 3) -> np.ndarray:
    """Batch-invariant policy: row i is a function of state i and generator i only (exact in any batch)."""
    eps = initial_noise((len(states), horizon, 2), generators).numpy()
    return -0.3 * states[:, None, :] + 0.05 * eps


@pytest.mark.parametrize("envs,action_steps", [(1, 2), (3, 2), (4, 5)])
def test_run_episodes_matches_run_episode_per_seed(envs, action_steps):
    seeds = list(range(20, 29))
    ref = {}
    for seed in seeds:  # the reference: one env, one generator, one batch-of-1 call at a time
        g = torch.Generator().manual_seed(seed)
        ep = run_episode(FakeEnv(), lambda s: noisy_chunks(s[None], [g])[0], seed, action_steps=action_steps)
        ref[seed] = (ep.success, ep.steps)
    assert 0 < sum(s for s, _ in ref.values()) < len(seeds)  # some succeed early, some run out of steps

    gens = {}

    def start(slot, seed):
        gens[slot] = torch.Generator().manual_seed(seed)

    batches = []

    def chunks_fn(slots, states):
        batches.append(len(slots))
        return noisy_chunks(states, [gens[i] for i in slots])

    eps = run_episodes([FakeEnv() for _ in range(envs)], chunks_fn, seeds, action_steps=action_steps, start_fn=start)
    assert sorted(e.seed for e in eps) == seeds
    assert {e.seed: (e.success, e.steps) for e in eps} == ref
    assert max(batches) == min(envs, len(seeds))  # one call for all live episodes


def test_run_episodes_names_the_seed_of_a_bad_chunk():
    def on_error(exc, seeds):
        return type(exc)(f"seeds {seeds}: {exc}")

    with pytest.raises(ShapeMismatchError, match=r"seeds \[5\]: policy chunk has shape \(3, 4\), expected \(H >= 1, 2\)"):
        run_episodes([FakeEnv()], lambda slots, s: np.zeros((len(slots), 3, 4)), [5], on_error=on_error)


def test_initial_noise_per_row_generators_ignore_the_batch():
    alone = [initial_noise((1, 4, 3), torch.Generator().manual_seed(s)) for s in (7, 8, 9)]
    batch = initial_noise((3, 4, 3), [torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    assert torch.equal(batch, torch.cat(alone))
    with pytest.raises(ShapeMismatchError, match="2 generators for a batch of 3"):
        initial_noise((3, 4, 3), [torch.Generator(), torch.Generator()])


def test_policy_batched_chunks_equal_single_calls_up_to_rounding(single_torch_thread):
    from ate.data import Normalizer
    from ate.policies import make_policy

    policy = make_policy("dp", horizon=8, down_dims=[16, 32], cond_dim=32)
    ones = np.ones(4)
    policy.add_robot("Sawyer", Normalizer("minmax", min=-ones, max=ones, mean=0 * ones, std=ones, count=1),
                     Normalizer("minmax", min=-np.ones(6), max=np.ones(6), mean=np.zeros(6), std=np.ones(6), count=1))
    states = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    seeds = [3, 1, 4, 1, 5]
    batch = policy.predict_chunk({"state": states, "task": 0}, robot="Sawyer",
                                 generator=[torch.Generator().manual_seed(s) for s in seeds])
    single = torch.cat([policy.predict_chunk({"state": states[i:i + 1], "task": 0}, robot="Sawyer",
                                             generator=torch.Generator().manual_seed(s)) for i, s in enumerate(seeds)])
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-5)


# --- the pool -----------------------------------------------------------------------------------
def _pid_job(state, x):
    state["calls"] = state.get("calls", 0) + 1
    return os.getpid(), state["calls"], x * x


def _failing_job(state, x):
    if x == 2:
        raise DataError(f"bad item {x}\nsecond line")
    return x


def _dying_job(state, x):
    os._exit(3)


def test_pool_workers_persist_across_calls_and_close():
    with WorkerPool(2) as pool:
        first = list(pool.map_unordered(_pid_job, [(i,) for i in range(6)]))
        second = list(pool.map_unordered(_pid_job, [(i,) for i in range(6)]))
        procs = list(pool._procs)
        assert sorted(r[2] for r in first) == [i * i for i in range(6)]
        assert {r[0] for r in second} <= {r[0] for r in first}  # the same processes serve the next call
        assert max(r[1] for r in second) > 3  # ... and keep their state
    assert not any(p.is_alive() for p in procs)


def test_pool_reraises_worker_errors_and_recovers():
    pool = WorkerPool(2)
    try:
        assert sorted(pool.map_unordered(_failing_job, [(0,), (1,)])) == [0, 1]
        procs = list(pool._procs)
        with pytest.raises(DataError, match="bad item 2"):  # re-raised here with its class
            list(pool.map_unordered(_failing_job, [(i,) for i in range(4)]))
        # stopped, so no stale result of this call reaches the next one, and no process is left behind
        assert not pool._procs and not any(p.is_alive() for p in procs)
        assert sorted(pool.map_unordered(_failing_job, [(0,), (1,)])) == [0, 1]
        with pytest.raises(EvaluationError, match=r"died \(exit code 3\) with jobs unfinished: job 7"):
            list(pool.map_unordered(_dying_job, [(7,)], describe=lambda a: f"job {a[0]}"))
    finally:
        pool.close()


# --- evaluate: batched == sequential on a real simulator ------------------------------------------
class _StateNoisePolicy:
    """No reset (so evaluate batches it); chunk row i depends only on state i and generator i."""

    def predict_chunk(self, batch, generator=None):
        state = batch["state"]
        gens = generator if isinstance(generator, list) else [generator]
        eps = initial_noise((state.shape[0], 4, 4), gens)
        return 0.5 * torch.tanh(state[:, None, :4] * 3.0) + 0.5 * eps


@pytest.mark.sim
def test_evaluate_batched_equals_sequential_on_metaworld():
    pytest.importorskip("metaworld")
    from ate.bench.sims.evaluate import evaluate, evaluate_sequential

    seeds = [100_000, 100_001, 100_002, 100_003, 100_004]
    kw = dict(action_steps=3, max_steps=30, progress=False)
    ref = evaluate_sequential(_StateNoisePolicy, "metaworld", "reach-v3", seeds=seeds, workers=1, **kw)
    with WorkerPool(2) as pool:
        rows = evaluate(_StateNoisePolicy, "metaworld", "reach-v3", seeds=seeds, pool=pool, envs_per_worker=2, **kw)
        again = evaluate(_StateNoisePolicy, "metaworld", "reach-v3", seeds=seeds[::-1], pool=pool, **kw)
    strip = lambda rs: [(r["seed"], r["success"], r["steps"]) for r in rs]  # noqa: E731
    assert strip(rows) == strip(ref) == strip(again)


class _BrokenPolicy:
    def predict_chunk(self, batch, generator=None):
        raise RuntimeError("boom\nsecond line")


@pytest.mark.sim
def test_evaluate_worker_errors_are_one_line_naming_task_robot_seed():
    pytest.importorskip("metaworld")
    from ate.bench.sims import ZeroPolicy
    from ate.bench.sims.evaluate import evaluate

    with WorkerPool(2) as pool:
        with pytest.raises(ShapeMismatchError, match=r"^metaworld/reach-v3/Sawyer seed 100001: policy chunk has shape "
                                                     r"\(8, 7\), expected \(H >= 1, 4\)$"):
            evaluate(functools.partial(ZeroPolicy, 7), "metaworld", "reach-v3", "Sawyer", seeds=[100_001], pool=pool,
                     progress=False)
        with pytest.raises(EvaluationError, match=r"^metaworld/reach-v3/Sawyer seeds (100000, 100002|100001, 100003): "
                                                  r"RuntimeError: boom second line$"):
            evaluate(_BrokenPolicy, "metaworld", "reach-v3", "Sawyer", seeds=[100_000, 100_001, 100_002, 100_003],
                     pool=pool, progress=False)
