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

import contextlib
import copy
import logging
from collections import OrderedDict

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
# compiled MuJoCo models of this process by MJCF text, most recently used last: robosuite.make compiles twice per
# env (the robot alone, then the scene), ~0.3 s each, 95 % of building an env, and the scene's model is ~70 MB
# (meshes, textures); an evaluation worker builds many envs of one setting. Two settings' worth are kept.
_COMPILED: OrderedDict[str, mujoco.MjModel] = OrderedDict()
_COMPILED_MAX = 4


@contextlib.contextmanager
def _share_compiled_models():
    """While open, ``mujoco.MjModel.from_xml_string(xml)`` (no assets) returns the model compiled earlier from the
    same text, shared. MuJoCo reads a model and writes only its data while simulating, and robosuite 1.5 writes
    nothing into it after compiling in this wrapper's settings (``tests/test_sims_robosuite.py`` checks the model
    bytes across builds, resets and steps), so envs that share one behave as if each had compiled its own.
    robosuite calls the class attribute, so patching it is what reaches both of its compiles."""
    compile_xml = mujoco.MjModel.from_xml_string

    def shared(xml, assets=None):
        if assets is not None:
            return compile_xml(xml, assets)
        if xml in _COMPILED:
            _COMPILED.move_to_end(xml)
        else:
            _COMPILED[xml] = compile_xml(xml)
            while len(_COMPILED) > _COMPILED_MAX:
                _COMPILED.popitem(last=False)  # envs built from it keep it alive as long as they live
        return _COMPILED[xml]

    mujoco.MjModel.from_xml_string = staticmethod(shared)
    try:
        yield
    finally:
        mujoco.MjModel.from_xml_string = compile_xml


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


def _quiet_robosuite_info() -> None:
    """robosuite logs one INFO line per env built ("Loading controller configuration from ..."): an evaluation
    worker builds dozens. Raise its logger to WARNING, unless someone already set a level other than robosuite's
    default INFO; its warnings still show."""
    logger = logging.getLogger("robosuite_logs")  # robosuite.utils.log_utils.DefaultLogger's name
    if logger.level == logging.INFO:
        logger.setLevel(logging.WARNING)


def _as_index(indices):
    """A slice for a contiguous ascending index list (views instead of fancy-index copies), else the array."""
    idx = np.asarray(indices, dtype=np.intp).ravel()
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return slice(int(idx[0]), int(idx[0]) + idx.size)
    return idx


def _f_ordered(a: np.ndarray) -> bool:
    return a.ndim == 2 and a.flags.f_contiguous and not a.flags.c_contiguous


class RobosuiteEnv(SimEnv):
    """Single-arm robosuite manipulation task with joint-space delta control; see the module docstring.

    ``lean_step`` (default on): :meth:`step` runs robosuite 1.5's control loop itself: robosuite sets the goals
    (its own ``set_goal``), then each physics substep computes the joint-position controller's torque with
    robosuite's arithmetic and the gripper's constant command, and skips what this wrapper never reads (the
    observables, the observation dict and reward, the robot's history buffers, end-effector Jacobians). The
    simulation is bit-identical to robosuite's ``env.step`` (``tests/test_sims_robosuite.py`` compares MuJoCo's
    arrays after every action), 2.6–3.6× faster per action (IIWA, Panda Lift: 1.80 / 1.08 ms against 4.70 / 3.86).
    Off, or for a controller setting it does not cover (an interpolator, variable impedance, no gravity
    compensation, full physics), each action goes through ``env.step``.

    ``share_model`` (default on): envs of the same setting in one process share one compiled MuJoCo model (see
    ``_share_compiled_models``): a second env builds in ~0.03 s instead of 0.6 s and adds ~1 MB instead of ~120 MB.
    Off, robosuite compiles the env's own.
    """

    suite = "robosuite"

    def __init__(self, task: str = "Lift", robot: str = "Panda", seed: int = 0, max_steps: int | None = None,
                 lean_step: bool = True, share_model: bool = True):
        if task not in TASKS:
            from ate.errors import DataError

            raise DataError(f"robosuite task {task!r} is not supported; choose one of {TASKS}")
        set_headless()
        import robosuite
        from robosuite.robots import ROBOT_CLASS_MAPPING

        _quiet_robosuite_info()

        if robot not in ROBOT_CLASS_MAPPING:
            from ate.errors import DataError

            raise DataError(f"unknown robosuite robot {robot!r}; available: {sorted(ROBOT_CLASS_MAPPING)}")
        self.task, self.robot = task, robot
        self.max_steps = int(max_steps or DEFAULT_MAX_STEPS[task])
        self._lean_requested = bool(lean_step)
        self.seed: int | None = None  # of the current episode (named in errors)
        try:
            with _share_compiled_models() if share_model else contextlib.nullcontext():
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
        nv = self._env.sim.model._model.nv
        self._full_mass = np.empty((nv, nv), dtype=np.float64)

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
        whose results nothing reads. ``ignore_done`` is set, so there is no ``done``. Per substep it touches
        arrays through slices where robosuite's index lists are contiguous, and keeps the arm's state in locals
        until the action ends (nothing reads the controller between substeps)."""
        env, robot = self._env, self._arm
        comp = robot.composite_controller  # rebuilt by every reset: read it per step
        data, model = env.sim.data._data, env.sim.model._model
        ctrl, ctrlrange = data.ctrl, model.actuator_ctrlrange
        env.timestep += 1
        mujoco.mj_step1(model, data)  # what sim.step1() calls
        comp.update_state()  # the policy step: robosuite parses the action into each part's goal
        comp.set_goal(action)
        arms, held = [], []
        for name, c in comp.part_controllers.items():
            if not robot._enabled_parts.get(name, False):
                continue
            act = _as_index(robot._ref_actuators_indexes_dict[name])
            lo, hi = ctrlrange[act, 0], ctrlrange[act, 1]
            if hasattr(c, "goal_qpos"):  # the arm's JointPositionController
                # its mass matrix in the memory layout robosuite's indexing gives it: np.dot's summation order
                # follows the layout, so the copy must have the same one
                mass = np.empty_like(c.mass_matrix, order="F" if _f_ordered(c.mass_matrix) else "C")
                arms.append((c, _as_index(c.qpos_index), _as_index(c.qvel_index), act, lo, hi,
                             np.array(c.goal_qpos), np.array(c.kp), c.kd, mass))
            else:  # the gripper's command is fixed within an action (no interpolator)
                c.new_update = True
                held.append((act, np.clip(c.run_controller(), lo, hi)))
        full = self._full_mass  # mj_fullM writes every entry
        for i in range(self._substeps):
            if i:
                mujoco.mj_step1(model, data)
            for act, value in held:
                ctrl[act] = value
            for c, qi, vi, act, lo, hi, goal, kp, kd, mass in arms:
                if i:  # its update(): joint state and mass matrix at this substep (at 0, set_goal's)
                    joint_pos, joint_vel = data.qpos[qi], data.qvel[vi]
                    mujoco.mj_fullM(model, full, data.qM)
                    mass[...] = full[vi][:, vi]
                else:
                    joint_pos, joint_vel, mass[...] = c.joint_pos, c.joint_vel, c.mass_matrix
                torque = np.multiply(goal - joint_pos, kp) + np.multiply(-joint_vel, kd)
                # np.clip(x, lo, hi) is max-then-min, elementwise (NaN passes through both alike)
                ctrl[act] = np.minimum(np.maximum(np.dot(mass, torque) + data.qfrc_bias[vi], lo), hi)
            mujoco.mj_step2(model, data)
        if self._substeps > 1:  # leave the controllers as robosuite's update() would at the last substep
            for c, qi, vi, *_, mass in arms:
                c.joint_pos, c.joint_vel, c.mass_matrix = data.qpos[qi].copy(), data.qvel[vi].copy(), mass.copy("K")
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
