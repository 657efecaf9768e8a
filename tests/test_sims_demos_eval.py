"""Demo cache (HDF5 per episode, resumable) and parallel closed-loop evaluation."""

import functools
import os

import numpy as np
import pytest

from ate.errors import ShapeMismatchError

pytestmark = pytest.mark.sim
pytest.importorskip("metaworld")
h5py = pytest.importorskip("h5py")

from ate.bench.sims import ExpertPolicy, ZeroPolicy, evaluate, generate_demos, summarize  # noqa: E402

MW_TASK = "drawer-open-v3"


def test_metaworld_demos_are_readable_and_cached(tmp_path):
    paths = generate_demos("metaworld", MW_TASK, n=2, seed=10, out_dir=tmp_path, workers=1, progress=False)
    assert [p.name for p in paths] == [f"metaworld-{MW_TASK}-Sawyer-seed{s:06d}.hdf5" for s in (10, 11)]
    with h5py.File(paths[0]) as f:
        T = f["action"].shape[0]
        assert f["action"].shape == (T, 4) and f["observations/state"].shape == (T, 39)
        assert f["observations/qpos"].shape == (T, 4)
        assert f.attrs["task"] == MW_TASK and f.attrs["seed"] == 10 and bool(f.attrs["success"])
        actions, states = f["action"][()], f["observations/state"][()]
    assert 10 < T < 200 and np.all(np.abs(actions) <= 1.0)

    # replaying the stored actions from the same seed reproduces the stored states and the success
    from ate.bench.sims import make_env

    env = make_env("metaworld", MW_TASK)
    obs = env.reset(10)
    np.testing.assert_allclose(obs["state"], states[0], atol=1e-6)
    for a in actions:
        obs, success = env.step(a)
    assert success

    # a re-run reuses the files (no rewrite) and extends to n=3 with the next seed only
    mtime = os.path.getmtime(paths[0])
    again = generate_demos("metaworld", MW_TASK, n=3, seed=10, out_dir=tmp_path, workers=1, progress=False)
    assert again[:2] == paths and again[2].name.endswith("seed000012.hdf5")
    assert os.path.getmtime(paths[0]) == mtime

    from ate.data import load_episodes

    eps = load_episodes(tmp_path, key="observations/state")
    assert eps.num_episodes == 3 and eps.dim == 39 and eps.episode_attrs[0]["robot"] == "Sawyer"


def test_robosuite_demo_matches_step_action_space(tmp_path):
    pytest.importorskip("robosuite")
    (path,) = generate_demos("robosuite", "Lift", "UR5e", n=1, seed=0, out_dir=tmp_path, workers=1, progress=False)
    with h5py.File(path) as f:
        assert f["action"].shape[1] == 7 and f["observations/qpos"].shape[1] == 7
        assert f["observations/state"].shape[1] == 44 and f.attrs["robot"] == "UR5e"
        assert np.abs(f["action"][:, :6]).max() <= 1.0 + 1e-6  # normalised joint deltas


def test_evaluate_expert_succeeds_in_parallel_and_zeros_fail():
    seeds = [100_000, 100_001]
    rows = evaluate(functools.partial(ExpertPolicy, "metaworld", MW_TASK), "metaworld", MW_TASK, seeds=seeds,
                    workers=2, action_steps=1, progress=False)
    assert [r["seed"] for r in rows] == seeds and all(r["success"] for r in rows)
    assert summarize(rows)["success_rate"] == 1.0
    zeros = evaluate(functools.partial(ZeroPolicy, 4, 8), "metaworld", MW_TASK, seeds=seeds, workers=1,
                     action_steps=8, max_steps=60, progress=False)
    assert not any(r["success"] for r in zeros) and all(r["steps"] == 60 for r in zeros)
    s = summarize(zeros)
    assert s["success_rate"] == 0.0 and s["ci95"][0] == 0.0 and 0.5 < s["ci95"][1] < 0.9


def test_evaluate_robosuite_expert_inline():
    pytest.importorskip("robosuite")
    ok = evaluate(functools.partial(ExpertPolicy, "robosuite", "Lift", "Panda"), "robosuite", "Lift", "Panda",
                  seeds=[100_000], workers=1, action_steps=1, progress=False)
    assert ok[0]["success"] and ok[0]["steps"] < 150


def test_evaluate_rejects_a_wrong_action_dim():
    with pytest.raises(ShapeMismatchError, match=r"expected \(H >= 1, 4\)"):
        evaluate(functools.partial(ZeroPolicy, 7), "metaworld", MW_TASK, seeds=[0], workers=1, progress=False)


class NoisyPolicy:
    """Random actions drawn from the generator evaluate() passes; records every first chunk."""

    first_chunks: list = []

    def __init__(self):
        self._first = True

    def reset(self):
        self._first = True

    def predict_chunk(self, batch, generator=None):
        import torch

        chunk = 0.1 * torch.randn(1, 4, 4, generator=generator)
        if self._first:
            NoisyPolicy.first_chunks.append(chunk.clone())
            self._first = False
        return chunk


def test_evaluate_seeds_the_sampling_noise_per_episode():
    NoisyPolicy.first_chunks.clear()
    kw = dict(workers=1, action_steps=4, max_steps=8, progress=False)
    evaluate(NoisyPolicy, "metaworld", MW_TASK, seeds=[3, 4], **kw)
    evaluate(NoisyPolicy, "metaworld", MW_TASK, seeds=[3], **kw)
    a3, a4, b3 = NoisyPolicy.first_chunks
    assert a3.equal(b3) and not a3.equal(a4)
