"""Closed-loop joint-space scripted expert for robosuite Lift / Stack, for any single arm.

Every control step: read the state vector, pick a Cartesian target for the grip site from a small
phase machine (above the cube -> descend -> close -> lift; Stack then carries cube A above cube B,
lowers it and releases), and turn the 6-D pose error into joint deltas with damped least squares
on the grip-site Jacobian (`mujoco.mj_jacSite`), plus a null-space pull toward the initial posture
for redundant (7-joint) arms. Recomputed every step from the current state: replaying recorded
deltas open-loop does not work because the joint controller lags and objects move.

Measured per robot × task with `ate sims coverage --suite robosuite` (table in
benchmarks/results/sims/coverage-robosuite). Not working, so `generate_demos` (and `ate bench`)
refuse them (`UNSUPPORTED`): Sawyer (its first joint does not follow the joint-delta commands, so
the hand never reaches the cube) and Jaco (its three-finger hand drops the cube on lift).

The expert reads only the state vector (`ROBOSUITE_LAYOUT`) and the robot's MuJoCo model, so the
same object drives demo generation and the policy-like wrapper used to test `evaluate`.
"""

from __future__ import annotations

import mujoco
import numpy as np

from ate.bench.sims.obs import GRIPPER_SLOT, ROBOSUITE_LAYOUT, layout_slices, yaw_from_features
from ate.bench.sims.robosuite_env import JOINT_DELTA_MAX, RobosuiteEnv

# Grip site pointing down with its axes on the world axes (all robosuite grippers start so).
_R_DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
# robot -> why its scripted expert cannot succeed (0 / 20 seeds on Lift and Stack, see the module docstring)
UNSUPPORTED = {
    "Sawyer": "its first joint does not follow the joint-delta commands, so the hand never reaches the cube",
    "Jaco": "its three-finger hand drops the cube on lift",
}
HOVER = 0.10  # m above the cube before descending
CUBE_A_HALF, CUBE_B_HALF = 0.02, 0.025  # robosuite Stack cube half-sizes


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def orientation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector (small-angle) taking `current` (3, 3) to `target` (3, 3)."""
    return 0.5 * sum(np.cross(current[:, i], target[:, i]) for i in range(3))


class JointSpaceExpert:
    """Scripted Lift / Stack expert producing raw joint-delta actions (n + 1,) for one arm.

    Args:
        model: the arm's MuJoCo model (a private MjData is used for kinematics only).
        qpos_addr / dof_addr: (n,) qpos / dof addresses of the arm joints in `model`.
        site_id: id of the grip site whose Jacobian is used.
        task: "Lift" or "Stack".
        damping: DLS damping λ in J^T (J J^T + λ² I)^-1.
    """

    def __init__(self, model, qpos_addr, dof_addr, site_id: int, task: str, damping: float = 0.05,
                 finger_axis=(1.0, 0.0, 0.0)):
        self.model = model
        self.data = mujoco.MjData(model)
        self.qpos_addr = np.asarray(qpos_addr)
        self.dof_addr = np.asarray(dof_addr)
        self.site_id = int(site_id)
        self.task = task
        self.n = len(self.qpos_addr)
        self.damping = damping
        self.finger_axis = np.asarray(finger_axis, dtype=np.float64)  # closing direction, grip-site frame
        self.sl = layout_slices(ROBOSUITE_LAYOUT)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self.reset()

    @classmethod
    def for_env(cls, env: RobosuiteEnv, **kwargs) -> JointSpaceExpert:
        kwargs.setdefault("finger_axis", env.finger_axis)
        return cls(env.model, env.qpos_addr, env.dof_addr, env.site_id, env.task, **kwargs)

    def reset(self) -> None:
        self.phase = "above"
        self.phase_steps = 0
        self.q_home = None
        self.grasp_rot = None
        self.grasp_yaw = None
        self._closure_hist: list[float] = []

    # --- phase machine -------------------------------------------------------------------------
    def _goto(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0
        self._closure_hist = []
        if phase == "above":
            self.grasp_yaw = None  # re-plan the grasp from scratch

    def _grasp_rotation(self, s: np.ndarray) -> np.ndarray:
        """Target grip-site rotation for grasping cube A: pointing down, fingers on two cube faces.

        A parallel gripper fits a cube at yaw θ + k·90°. The first time, pick the k with the smallest
        wrist rotation from the current yaw ψ (Lift) or, for Stack, the one whose finger-closing axis is
        most perpendicular to the A -> B direction (open fingers then never straddle cube B). Yaws are
        relative to `_R_DOWN`; ψ is not 0 for every arm (XArm7 starts at 90°). Later steps keep the
        candidate nearest to that choice, so the target does not flip when the cube turns slightly.
        """
        sl = self.sl
        theta = yaw_from_features(s[sl["obj0_yaw"]])
        cands = [theta + k * np.pi / 2 for k in range(-4, 5)]
        if self.grasp_yaw is None:
            m = self._current_rot @ _R_DOWN.T  # ≈ rot_z(ψ)
            psi = np.arctan2(m[1, 0], m[0, 0])
            turn = [abs((c - psi + np.pi) % (2 * np.pi) - np.pi) for c in cands]
            ab = (s[sl["obj1_pos"]] - s[sl["obj0_pos"]])[:2].astype(np.float64)
            if self.task == "Stack" and np.linalg.norm(ab) > 1e-6:
                u = ab / np.linalg.norm(ab)
                score = [abs((_rot_z(c) @ _R_DOWN @ self.finger_axis)[:2] @ u) + 0.1 * t for c, t in zip(cands, turn)]
            else:
                score = turn
            self.grasp_yaw = cands[int(np.argmin(score))]
        else:
            self.grasp_yaw = min(cands, key=lambda c: abs(c - self.grasp_yaw))
        return _rot_z(self.grasp_yaw) @ _R_DOWN

    def _plan(self, s: np.ndarray, eef: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """-> (target grip-site position (3,), target rotation (3, 3), gripper command)."""
        sl = self.sl
        a_pos = s[sl["obj0_pos"]].astype(np.float64)
        a_rel = s[sl["obj0_rel"]].astype(np.float64)
        closure = float(s[sl["joint_pos"].start + GRIPPER_SLOT])
        open_, close = -1.0, 1.0
        self.phase_steps += 1
        holding = np.linalg.norm(a_rel) < 0.035  # cube still between the fingers

        if self.phase in ("lift", "carry", "lower") and not holding:
            self._goto("above")  # dropped it: start over
        cube_rot = self._grasp_rotation(s)
        rot_err = float(np.linalg.norm(orientation_error(cube_rot, self._current_rot)))
        if self.phase == "above":
            target = a_pos + [0.0, 0.0, HOVER]
            # open first; only descend once above the cube with the right yaw
            if np.linalg.norm(target - eef) < 0.015 and rot_err < 0.08:
                self._goto("descend")
            return target, cube_rot, open_
        if self.phase == "descend":
            target = a_pos.copy()
            if np.linalg.norm(a_rel) < 0.008 or self.phase_steps > 60:
                self._goto("grasp")
            return target, cube_rot, open_
        if self.phase == "grasp":
            self._closure_hist.append(closure)
            settled = len(self._closure_hist) > 6 and abs(self._closure_hist[-1] - self._closure_hist[-4]) < 2e-3
            if settled or self.phase_steps > 30:
                self.grasp_rot = self._current_rot.copy()
                self._goto("lift")
            return a_pos, cube_rot, close
        rot = self.grasp_rot if self.grasp_rot is not None else cube_rot
        if self.task == "Lift":  # lift: straight up; env reports success once the cube is 4 cm up
            return np.array([a_pos[0], a_pos[1], a_pos[2] + 0.25]), rot, close
        # Stack: move cube A (not the hand) relative to cube B; the hand target follows A's offset
        b_pos = s[sl["obj1_pos"]].astype(np.float64)
        offset = eef - a_pos  # grasp offset, re-measured every step
        clear_z = b_pos[2] + CUBE_B_HALF + CUBE_A_HALF + 0.06
        if self.phase == "lift":
            if a_pos[2] > clear_z - 0.01:
                self._goto("carry")
            return np.array([a_pos[0], a_pos[1], clear_z + 0.02]) + offset, rot, close
        if self.phase == "carry":
            want = np.array([b_pos[0], b_pos[1], clear_z])
            if np.linalg.norm(want[:2] - a_pos[:2]) < 0.006:
                self._goto("lower")
            return want + offset, rot, close
        if self.phase == "lower":
            want = np.array([b_pos[0], b_pos[1], b_pos[2] + CUBE_B_HALF + CUBE_A_HALF + 0.004])
            if a_pos[2] - want[2] < 0.006 or self.phase_steps > 60:
                self._goto("release")
            return want + offset, rot, close
        if self.phase == "release":
            if self.phase_steps > 12:
                self._goto("retreat")
            return eef.copy(), rot, open_
        if a_pos[2] < b_pos[2] + CUBE_A_HALF:  # retreat, but cube A fell off B: try again
            self._goto("above")
        return np.array([eef[0], eef[1], b_pos[2] + 0.2]), rot, open_

    # --- inverse kinematics --------------------------------------------------------------------
    def act(self, state: np.ndarray) -> np.ndarray:
        """state (S,) in ROBOSUITE_LAYOUT -> raw action (n + 1,)."""
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        q = s[self.sl["joint_pos"]][: self.n]
        if self.q_home is None:
            self.q_home = q.copy()
        d = self.data
        d.qpos[self.qpos_addr] = q
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_comPos(self.model, d)
        mujoco.mj_jacSite(self.model, d, self._jacp, self._jacr, self.site_id)
        eef = d.site_xpos[self.site_id].copy()
        self._current_rot = d.site_xmat[self.site_id].reshape(3, 3).copy()

        target_pos, target_rot, grip = self._plan(s, eef)

        dp = target_pos - eef
        dp *= min(1.0, 0.03 / (np.linalg.norm(dp) + 1e-9))  # at most 3 cm per step (0.6 m/s)
        dr = orientation_error(target_rot, self._current_rot)
        dr *= min(1.0, 0.15 / (np.linalg.norm(dr) + 1e-9))
        twist = np.concatenate([dp, dr])
        jac = np.vstack([self._jacp[:, self.dof_addr], self._jacr[:, self.dof_addr]])  # (6, n)
        jjt = jac @ jac.T + (self.damping**2) * np.eye(6)
        jac_pinv = jac.T @ np.linalg.solve(jjt, np.eye(6))  # (n, 6), damped least squares
        dq = jac_pinv @ twist
        if self.n > 6:  # redundant arm: drift back toward the start posture in the null space
            dq += (np.eye(self.n) - jac_pinv @ jac) @ (0.1 * (self.q_home - q))
        arm = dq / JOINT_DELTA_MAX
        arm /= max(1.0, float(np.max(np.abs(arm))))  # keep the direction when saturating
        return np.append(arm, grip).astype(np.float32)
