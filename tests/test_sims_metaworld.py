"""MetaWorld wrapper + shipped scripted experts."""

import numpy as np
import pytest

from ate.errors import DataError

pytestmark = pytest.mark.sim
pytest.importorskip("metaworld")

from ate.bench.sims import make_env, make_expert  # noqa: E402
from ate.bench.sims.metaworld_env import ml10_tasks  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = make_env("metaworld", "drawer-open-v3")
    yield e
    e.close()


def test_ml10_split_names():
    train, test = ml10_tasks("train"), ml10_tasks("test")
    assert len(train) == 10 and len(test) == 5 and not set(train) & set(test)
    assert "drawer-open-v3" in test


def test_shapes_and_seeded_placement(env):
    assert env.action_dim == 4 and env.state_dim == 39 and env.max_steps == 500
    a = env.reset(0)["state"]
    b = env.reset(0)["state"]
    c = env.reset(1)["state"]
    assert a.shape == (39,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)  # a different seed moves the object / goal
    assert env.qpos().shape == (4,)


@pytest.mark.parametrize("seed", [0, 1])
def test_expert_succeeds_and_we_stop_on_success(env, seed):
    expert = make_expert(env)
    obs = env.reset(seed)
    for t in range(env.max_steps):
        obs, success = env.step(expert.act(obs["state"]))
        if success:
            break
    assert success and t + 1 < 200


def test_unknown_task_or_robot():
    with pytest.raises(DataError, match="unknown MetaWorld task"):
        make_env("metaworld", "fly-to-moon-v3")
    with pytest.raises(DataError, match="one robot"):
        make_env("metaworld", "reach-v3", robot="Panda")
    with pytest.raises(DataError, match="unknown simulator suite"):
        make_env("gazebo", "reach-v3")
