"""robosuite wrapper + closed-loop joint-space expert (headless, CPU)."""

import numpy as np
import pytest

from ate.errors import DataError, ShapeMismatchError

pytestmark = pytest.mark.sim
pytest.importorskip("robosuite")

from ate.bench.sims import make_env, make_expert  # noqa: E402


@pytest.fixture(scope="module", params=["Panda", "UR5e"])
def lift_env(request):
    env = make_env("robosuite", "Lift", robot=request.param)
    yield env
    env.close()


def run_expert(env, seed):
    expert = make_expert(env)
    obs = env.reset(seed)
    expert.reset()
    for t in range(env.max_steps):
        obs, success = env.step(expert.act(obs["state"]))
        if success:
            return True, t + 1
    return False, env.max_steps


def test_action_space_mismatch_and_fixed_state(lift_env):
    n = {"Panda": 7, "UR5e": 6}[lift_env.robot]
    assert lift_env.action_dim == n + 1 and lift_env.qpos_dim == n + 1
    obs = lift_env.reset(0)
    s = obs["state"]
    assert s.shape == (44,) and s.dtype == np.float32 and lift_env.state_dim == 44
    mask = s[lift_env.state_layout["joint_mask"]]
    np.testing.assert_array_equal(mask, np.r_[np.ones(n), np.zeros(7 - n), 1.0])
    assert lift_env.qpos().shape == (n + 1,)
    # the cube rests on the table (top at z = 0.8) in front of the robot
    assert 0.81 < s[lift_env.state_layout["obj0_pos"]][2] < 0.84


def test_reset_is_a_function_of_the_seed(lift_env):
    a = lift_env.reset(5)["state"]
    lift_env.step(np.ones(lift_env.action_dim) * 0.5)
    b = lift_env.reset(5)["state"]
    c = lift_env.reset(6)["state"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("seed", [0, 1])
def test_expert_lifts_the_cube(lift_env, seed):
    success, steps = run_expert(lift_env, seed)
    assert success, f"{lift_env.robot} Lift seed {seed} failed"
    assert steps < lift_env.max_steps


def test_bad_inputs_are_named(lift_env):
    lift_env.reset(0)
    with pytest.raises(ShapeMismatchError, match="action has 3 dims"):
        lift_env.step(np.zeros(3))
    with pytest.raises(DataError, match="NaN"):
        lift_env.step(np.full(lift_env.action_dim, np.nan))
    with pytest.raises(DataError, match="not supported"):
        make_env("robosuite", "Door", robot="Panda")
    with pytest.raises(DataError, match="unknown robosuite robot"):
        make_env("robosuite", "Lift", robot="NoSuchArm")


def test_expert_stacks_with_the_six_joint_arm():
    env = make_env("robosuite", "Stack", robot="UR5e")
    try:
        s = env.reset(0)["state"]
        np.testing.assert_array_equal(s[env.state_layout["obj_mask"]], [1, 1])
        success, steps = run_expert(env, 0)
        assert success and steps < env.max_steps
    finally:
        env.close()
