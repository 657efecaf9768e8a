"""robosuite (1.5) Lift / Stack with joint-space delta actions for any single arm.

Action (raw units, what `step` takes and what demos store), D = n + 1:
    a[:n]  joint-position deltas, normalised: 1.0 = `JOINT_DELTA_MAX` rad (0.05) added to the current
           joint position this control step (robosuite JOINT_POSITION controller, input_type "delta",
           input range [-1, 1] clipped by robosuite). n = 7 for Panda / IIWA, 6 for UR5e.
    a[n]   gripper: -1 open, +1 close (robosuite GRIP controller).
State: `ate.bench.sims.obs.ROBOSUITE_LAYOUT` (44 dims, the same for every arm and both tasks).
Control runs at 20 Hz; no camera, no renderer (headless on CPU).
"""

from __future__ import annotations

import copy

import mujoco
import numpy as np

from ate.bench.sims.base import SimEnv, set_headless, sim_error
from ate.bench.sims.obs import ROBOSUITE_LAYOUT, build_robosuite_state, layout_dim, layout_slices
from ate.errors import ATEError

TASKS = ("Lift", "Stack")
DEFAULT_MAX_STEPS = {"Lift": 150, "Stack": 250}
JOINT_DELTA_MAX = 0.05  # rad per control step for a normalised action of 1.0 (robosuite default)
JOINT_KP = 150  # stiffer than robosuite's default 50 so the arm tracks small deltas under load
CONTROL_FREQ = 20


def joint_delta_controller_config(robot: str, kp: float = JOINT_KP) -> dict:
    """robosuite 1.5 composite-controller config: the robot's BASIC composite controller with its
    right arm part replaced by a JOINT_POSITION controller taking normalised deltas, plus the gripper."""
    from robosuite.controllers import load_composite_controller_config, load_part_controller_config

    cfg = load_composite_controller_config(robot=robot)
    arm = load_part_controller_config(default_controller="JOINT_POSITION")
    arm.update(
        input_type="delta",
        input_max=1,
        input_min=-1,
        output_max=JOINT_DELTA_MAX,
        output_min=-JOINT_DELTA_MAX,
        kp=kp,
        gripper={"type": "GRIP"},
    )
    cfg = copy.deepcopy(cfg)
    cfg["type"] = "BASIC"
    cfg["body_parts"] = {"right": arm}
    return cfg


def fingerpad_geoms(model, gripper) -> list[list[str]]:
    """[left, right] finger-pad collision geom names of `gripper` that exist in the compiled `model`.

    Grippers declare them in `important_geoms`, but some declare names their XML does not define
    (robosuite 1.5's XArm7 gripper: "finger1_pad_collision"; its pads are "left_finger_pad_1", ...).
    Per side, the first non-empty of: the declared pads that exist, the declared finger geoms that
    exist, the gripper's collision geoms whose own (unprefixed) name has the side and "pad".
    """
    names = set(model.geom_names)
    declared = gripper.important_geoms
    prefix = gripper.naming_prefix
    collision = {n for n in names if model.geom_contype[model.geom_name2id(n)] or
                 model.geom_conaffinity[model.geom_name2id(n)]}
    pads = []
    for side in ("left", "right"):
        found = [g for g in declared.get(f"{side}_fingerpad", []) if g in names]
        found = found or [g for g in declared.get(f"{side}_finger", []) if g in names]
        found = found or sorted(g for g in collision if g.startswith(prefix) and side in g[len(prefix):]
                                and "pad" in g[len(prefix):])
        pads.append(found)
    return pads


class RobosuiteEnv(SimEnv):
    """Single-arm robosuite manipulation task with joint-space delta control; see the module docstring.

    ``lean_step`` (default on): :meth:`step` runs robosuite 1.5's control loop itself: robosuite sets the goals
    (its own ``set_goal``), then each physics substep computes the joint-position controller's torque with
    robosuite's arithmetic and the gripper's constant command, and skips what this wrapper never reads (the
    observables, the observation dict and reward, the robot's history buffers, end-effector Jacobians). The
    simulation is bit-identical to robosuite's ``env.step`` (``tests/test_sims_robosuite.py`` compares every
    substep's result), 2.1–2.7× faster per action. Off, or for a controller setting it does not cover (an
    interpolator, variable impedance, no gravity compensation, full physics), each action goes through
    ``env.step``.
    """

    suite = "robosuite"

    def __init__(self, task: str = "Lift", robot: str = "Panda", seed: int = 0, max_steps: int | None = None,
                 lean_step: bool = True):
        if task not in TASKS:
            from ate.errors import DataError

            raise DataError(f"robosuite task {task!r} is not supported; choose one of {TASKS}")
        set_headless()
        import robosuite
        from robosuite.robots import ROBOT_CLASS_MAPPING

        if robot not in ROBOT_CLASS_MAPPING:
            from ate.errors import DataError

            raise DataError(f"unknown robosuite robot {robot!r}; available: {sorted(ROBOT_CLASS_MAPPING)}")
        self.task, self.robot = task, robot
        self.max_steps = int(max_steps or DEFAULT_MAX_STEPS[task])
        self._lean_requested = bool(lean_step)
        self.seed: int | None = None  # of the current episode (named in errors)
        try:
            self._build(robosuite, seed)
        except ATEError:
            raise
        except Exception as exc:  # a robot / gripper model robosuite or this wrapper cannot handle
            raise sim_error(self.suite, task, robot, "environment construction", exc) from exc

    def _build(self, robosuite, seed: int) -> None:
        task, robot = self.task, self.robot
        self._env = robosuite.make(
            task,
            robots=robot,
            controller_configs=joint_delta_controller_config(robot),
            has_renderer=False,
            has_offscreen_renderer=False,
            use_camera_obs=False,
            use_object_obs=True,
            reward_shaping=False,
            control_freq=CONTROL_FREQ,
            horizon=self.max_steps,
            ignore_done=True,  # we count steps ourselves
            hard_reset=False,  # reuse the compiled model: reset takes ms instead of ~1 s
            seed=seed,
        )
        arm = self._env.robots[0]
        if len(arm.arms) != 1:
            from ate.errors import DataError

            raise DataError(f"robosuite robot {robot!r} has arms {arm.arms}; only single-arm robots are supported")
        self._arm = arm
        self.num_arm_joints = len(arm._ref_joint_pos_indexes)
        self.action_dim = self.num_arm_joints + 1
        self.qpos_dim = self.num_arm_joints + 1
        self.state_dim = layout_dim(ROBOSUITE_LAYOUT)
        self.state_layout = layout_slices(ROBOSUITE_LAYOUT)
        self._env.reset()
        self._cache_ids()
        self.lean_step = self._lean_requested and self._lean_step_applies()
        self._substeps = int(self._env.control_timestep / self._env.model_timestep)  # as robosuite's step

    def _cache_ids(self) -> None:
        sim, arm = self._env.sim, self._arm
        self.site_id = arm.eef_site_id["right"]
        self.qpos_addr = np.asarray(arm._ref_joint_pos_indexes)
        self.dof_addr = np.asarray(arm._ref_joint_vel_indexes)
        gripper = arm.gripper["right"]
        g_joint = sim.model.joint_name2id(gripper.joints[0])
        self._grip_addr = sim.model.jnt_qposadr[g_joint]
        lo, hi = sim.model.jnt_range[g_joint]
        self._grip_open = float(gripper.init_qpos[0])
        self._grip_span = float(hi - lo) or 1.0
        pads = fingerpad_geoms(sim.model, gripper)
        if not all(pads):
            from ate.errors import SimError

            raise SimError(f"robosuite/{self.task}/{self.robot}: gripper {type(gripper).__name__} has no finger "
                           f"collision geoms in the compiled model (found left {pads[0]}, right {pads[1]})")
        declared = [gripper.important_geoms.get(k, []) for k in ("left_fingerpad", "right_fingerpad")]
        if pads != declared:  # robosuite's own grasp check (Stack's success) must use the names that exist
            check_grasp = self._env._check_grasp
            self._env._check_grasp = lambda gripper, object_geoms: check_grasp(pads, object_geoms)
        # finger-closing direction in the grip-site frame (x for every robosuite parallel gripper)
        data = sim.data
        left, right = (np.mean([data.geom_xpos[sim.model.geom_name2id(g)] for g in p], axis=0) for p in pads)
        axis = data.site_xmat[self.site_id].reshape(3, 3).T @ (left - right)
        self.finger_axis = axis / np.linalg.norm(axis) if np.linalg.norm(axis) > 1e-6 else np.array([1.0, 0.0, 0.0])
        if self.task == "Lift":
            self._object_ids = [self._env.cube_body_id]
        else:
            self._object_ids = [self._env.cubeA_body_id, self._env.cubeB_body_id]

    @property
    def model(self) -> mujoco.MjModel:
        """The raw MuJoCo model (for the scripted expert's kinematics)."""
        return self._env.sim.model._model

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        # robosuite draws object placement and the arm's initial-joint noise from env.rng
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        self._env.rng = rng
        if self._env.placement_initializer is not None:
            self._env.placement_initializer.rng = rng
        try:
            self._env.reset()
        except Exception as exc:
            raise sim_error(self.suite, self.task, self.robot, "reset", exc, self.seed) from exc
        self.steps = 0
        return {"state": self._state()}

    def step(self, action) -> tuple[dict[str, np.ndarray], bool]:
        a = self._check_action(action)
        try:
            self._lean_control(a) if self.lean_step else self._env.step(a)
            success = bool(self._env._check_success())
        except Exception as exc:  # e.g. MuJoCo instability
            raise sim_error(self.suite, self.task, self.robot, f"step {self.steps}", exc, self.seed) from exc
        self.steps += 1
        return {"state": self._state()}, success

    def _lean_step_applies(self) -> bool:
        """Whether :meth:`_lean_control` reproduces robosuite's step for this controller setting (robosuite
        rebuilds the controllers at every reset from the same config, so checking once holds)."""
        from robosuite.controllers.parts.generic.joint_pos import JointPositionController
        from robosuite.controllers.parts.gripper.simple_grip import SimpleGripController

        env, comp = self._env, self._arm.composite_controller
        if not (env.lite_physics and len(env.robots) == 1 and env.viewer is None):
            return False
        for c in comp.part_controllers.values():
            if isinstance(c, JointPositionController):
                ok = c.interpolator is None and c.lite_physics and c.impedance_mode == "fixed" and \
                    c.use_torque_compensation and c.input_type == "delta"
            else:
                ok = isinstance(c, SimpleGripController) and c.interpolator is None
            if not ok:
                return False
        return True

    def _lean_control(self, action: np.ndarray) -> None:
        """robosuite 1.5's ``MujocoEnv.step`` → ``_pre_action`` → ``FixedBaseRobot.control`` for this wrapper's
        controllers, with the same arithmetic in the same order (``JointPositionController.run_controller`` /
        ``update``, ``SimpleGripController.run_controller``, the clip to the actuator range), without the parts
        whose results nothing reads. ``ignore_done`` is set, so there is no ``done``."""
        env, robot = self._env, self._arm
        comp = robot.composite_controller  # rebuilt by every reset: read it per step
        sim, data, model = env.sim, env.sim.data._data, env.sim.model._model
        env.timestep += 1
        sim.step1()
        comp.update_state()  # the policy step: robosuite parses the action into each part's goal
        comp.set_goal(action)
        arms, held = [], []
        for name, c in comp.part_controllers.items():
            if not robot._enabled_parts.get(name, False):
                continue
            idx = robot._ref_actuators_indexes_dict[name]
            lo, hi = sim.model.actuator_ctrlrange[idx, 0], sim.model.actuator_ctrlrange[idx, 1]
            if hasattr(c, "goal_qpos"):  # the arm's JointPositionController
                arms.append((c, idx, lo, hi, np.array(c.goal_qpos), np.array(c.kp), c.kd))
            else:  # the gripper's command is fixed within an action (no interpolator)
                c.new_update = True
                held.append((idx, np.clip(c.run_controller(), lo, hi)))
        full = np.empty((model.nv, model.nv), dtype=np.float64)  # mj_fullM writes every entry
        for i in range(self._substeps):
            if i:
                sim.step1()
            for idx, ctrl in held:
                data.ctrl[idx] = ctrl
            for c, idx, lo, hi, goal, kp, kd in arms:
                if i:  # its update(): joint state and mass matrix at this substep (at 0, set_goal's)
                    c.joint_pos, c.joint_vel = data.qpos[c.qpos_index], data.qvel[c.qvel_index]
                    mujoco.mj_fullM(model, full, data.qM)
                    # indexed as robosuite does: the block's memory layout decides np.dot's summation order
                    c.mass_matrix = full[c.qvel_index, :][:, c.qvel_index]
                torque = np.multiply(goal - c.joint_pos, kp) + np.multiply(-c.joint_vel, kd)
                data.ctrl[idx] = np.clip(np.dot(c.mass_matrix, torque) + data.qfrc_bias[c.qvel_index], lo, hi)
            sim.step2()
        for c in comp.part_controllers.values():
            c.new_update = True  # as after robosuite's run_controller: the next goal reads fresh joint state
        env.cur_time += env.control_timestep

    def success(self) -> bool:
        return bool(self._env._check_success())

    def _gripper_closure(self) -> float:
        q = self._env.sim.data.qpos[self._grip_addr]
        return float(np.clip(abs(q - self._grip_open) / self._grip_span, 0.0, 1.0))

    def _state(self) -> np.ndarray:
        data = self._env.sim.data._data
        quat_wxyz = np.empty(4)
        mujoco.mju_mat2Quat(quat_wxyz, data.site_xmat[self.site_id])
        objects = [(data.xpos[i].copy(), data.xquat[i].copy()) for i in self._object_ids]
        return build_robosuite_state(
            data.qpos[self.qpos_addr],
            self._gripper_closure(),
            data.site_xpos[self.site_id].copy(),
            np.roll(quat_wxyz, -1),  # (w, x, y, z) -> (x, y, z, w)
            objects,
        )

    def qpos(self) -> np.ndarray:
        data = self._env.sim.data._data
        return np.append(data.qpos[self.qpos_addr], self._gripper_closure()).astype(np.float32)

    def close(self) -> None:
        self._env.close()
