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


def _model_bytes(env) -> np.ndarray:
    import mujoco

    model = env._env.sim.model._model
    buf = np.empty(mujoco.mj_sizeModel(model), np.uint8)
    mujoco.mj_saveModel(model, None, buf)
    return buf


@pytest.mark.parametrize("task,robot", [("Lift", "Panda"), ("Stack", "UR5e")])
def test_lean_step_is_robosuites_step_bit_for_bit(task, robot):
    """The wrapper's own control loop, in an env sharing its compiled model with another, against robosuite's
    env.step in an env robosuite compiled itself, from the same reset: every array MuJoCo integrates, after every
    action, equal bit for bit, over episodes where the expert grasps (contacts, the gripper closing) and over random
    actions beyond the [-1, 1] input range (robosuite's clip), while the other env steps in between; the shared
    model's bytes stay as compiled through building, resets and steps."""
    from ate.bench.sims.robosuite_env import RobosuiteEnv

    other = RobosuiteEnv(task, robot)
    compiled = _model_bytes(other)
    lean, ref = RobosuiteEnv(task, robot), RobosuiteEnv(task, robot, lean_step=False, share_model=False)
    assert lean.lean_step and not ref.lean_step
    assert lean._env.sim.model._model is other._env.sim.model._model
    assert ref._env.sim.model._model is not other._env.sim.model._model
    expert = make_expert(lean)
    for ep, seed in enumerate((3, 4)):
        obs, _, _ = lean.reset(seed), ref.reset(seed), other.reset(seed + 1)
        expert.reset()
        rng = np.random.default_rng(ep)
        for t in range(60):
            a = expert.act(obs["state"]) if ep == 0 else rng.uniform(-1.5, 1.5, lean.action_dim)
            (obs, ok), (obs_ref, ok_ref) = lean.step(a), ref.step(a)
            other.step(-a)
            for field in ("qpos", "qvel", "qacc", "ctrl", "act", "qfrc_applied"):
                np.testing.assert_array_equal(getattr(lean._env.sim.data, field), getattr(ref._env.sim.data, field),
                                              err_msg=f"{task}/{robot} episode {ep} step {t}: {field}")
            np.testing.assert_array_equal(obs["state"], obs_ref["state"])
            assert ok == ok_ref
    np.testing.assert_array_equal(_model_bytes(lean), compiled)
    for env in (lean, ref, other):
        env.close()
