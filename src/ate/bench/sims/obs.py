"""Fixed state layouts shared by every robot / task of one suite, so one policy reads them all.

A layout is an ordered list of named fields; `layout_slices(layout)` maps each name to its slice
of the flat float32 state vector.

robosuite (`ROBOSUITE_LAYOUT`, S = 44, identical for Lift and Stack and for every arm):

| slice   | name           | dims | content                                                                  |
|---------|----------------|------|--------------------------------------------------------------------------|
| 0:8     | joint_pos      | 8    | arm joint positions [rad] in slots 0..n-1 (n = 7 Panda/IIWA, 6 UR5e), 0   |
|         |                |      | in unused slots; slot 7 = gripper closure in [0, 1] (0 open, 1 closed)   |
| 8:16    | joint_mask     | 8    | 1 where the joint_pos slot is real, 0 where padded (gripper slot is 1)   |
| 16:19   | eef_pos        | 3    | grip-site position, world frame [m]                                      |
| 19:23   | eef_quat       | 4    | grip-site orientation, quaternion (x, y, z, w), sign fixed so w >= 0     |
| 23:26   | obj0_pos       | 3    | object 0 position (Lift: the cube, Stack: cube A, the one to pick) [m]   |
| 26:29   | obj0_rel       | 3    | obj0_pos - eef_pos [m]                                                   |
| 29:31   | obj0_yaw       | 2    | (cos 4ψ, sin 4ψ) of the cube yaw ψ (a cube is symmetric under 90°)       |
| 31:34   | obj1_pos       | 3    | object 1 position (Stack: cube B, the base; Lift: zeros)                 |
| 34:37   | obj1_rel       | 3    | obj1_pos - eef_pos (Lift: zeros)                                          |
| 37:39   | obj1_yaw       | 2    | (cos 4ψ, sin 4ψ) of cube B (Lift: zeros)                                 |
| 39:42   | obj0_to_obj1   | 3    | obj1_pos - obj0_pos (Lift: zeros)                                        |
| 42:44   | obj_mask       | 2    | 1 where the object slot is real                                          |

MetaWorld (`METAWORLD_LAYOUT`, S = 39): MetaWorld's own goal-observable observation, unchanged —
hand xyz (0:3), gripper distance (3:4), object 1 pos + quat (4:11), object 2 pos + quat (11:18),
the same 18 values of the previous step (18:36), goal xyz (36:39). The single Sawyer arm and the
shared 39-dim format already make it uniform across tasks; no padding is needed.
"""

from __future__ import annotations

import numpy as np

NUM_JOINT_SLOTS = 8  # 7 arm joints + 1 gripper: the widest arm we support (Panda, IIWA, Kinova3, Sawyer, Jaco)
GRIPPER_SLOT = NUM_JOINT_SLOTS - 1

ROBOSUITE_LAYOUT: list[tuple[str, int]] = [
    ("joint_pos", NUM_JOINT_SLOTS),
    ("joint_mask", NUM_JOINT_SLOTS),
    ("eef_pos", 3),
    ("eef_quat", 4),
    ("obj0_pos", 3),
    ("obj0_rel", 3),
    ("obj0_yaw", 2),
    ("obj1_pos", 3),
    ("obj1_rel", 3),
    ("obj1_yaw", 2),
    ("obj0_to_obj1", 3),
    ("obj_mask", 2),
]

METAWORLD_LAYOUT: list[tuple[str, int]] = [
    ("hand_pos", 3),
    ("gripper", 1),
    ("obj0_pose", 7),
    ("obj1_pose", 7),
    ("prev_hand_pos", 3),
    ("prev_gripper", 1),
    ("prev_obj0_pose", 7),
    ("prev_obj1_pose", 7),
    ("goal_pos", 3),
]


def layout_slices(layout: list[tuple[str, int]]) -> dict[str, slice]:
    """Name -> slice of the flat state vector, in layout order."""
    out, start = {}, 0
    for name, size in layout:
        out[name] = slice(start, start + size)
        start += size
    return out


def layout_dim(layout: list[tuple[str, int]]) -> int:
    return sum(size for _, size in layout)


def cube_yaw_features(quat_wxyz: np.ndarray) -> np.ndarray:
    """(cos 4ψ, sin 4ψ) of the yaw ψ of a body given as a MuJoCo (w, x, y, z) quaternion."""
    w, x, y, z = quat_wxyz
    yaw = np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return np.array([np.cos(4.0 * yaw), np.sin(4.0 * yaw)])


def yaw_from_features(features: np.ndarray) -> float:
    """Inverse of `cube_yaw_features`: the cube yaw folded into (-45°, 45°]."""
    return float(np.arctan2(features[1], features[0]) / 4.0)


def build_robosuite_state(
    arm_qpos: np.ndarray,
    gripper_closure: float,
    eef_pos: np.ndarray,
    eef_quat_xyzw: np.ndarray,
    objects: list[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Pack one robosuite observation into the (44,) float32 `ROBOSUITE_LAYOUT` vector.

    arm_qpos: (n,) with n <= 7; objects: up to two (pos (3,), quat_wxyz (4,)) pairs.
    """
    n = len(arm_qpos)
    if n > GRIPPER_SLOT:
        raise ValueError(f"arm has {n} joints, the robosuite layout has {GRIPPER_SLOT} arm slots")
    sl = layout_slices(ROBOSUITE_LAYOUT)
    s = np.zeros(layout_dim(ROBOSUITE_LAYOUT), dtype=np.float64)
    s[sl["joint_pos"]][:n] = arm_qpos
    s[sl["joint_pos"].start + GRIPPER_SLOT] = gripper_closure
    s[sl["joint_mask"]][:n] = 1.0
    s[sl["joint_mask"].start + GRIPPER_SLOT] = 1.0
    s[sl["eef_pos"]] = eef_pos
    q = np.asarray(eef_quat_xyzw, dtype=np.float64)
    s[sl["eef_quat"]] = q if q[3] >= 0 else -q  # q and -q are the same rotation
    for k, (pos, quat) in enumerate(objects[:2]):
        s[sl[f"obj{k}_pos"]] = pos
        s[sl[f"obj{k}_rel"]] = pos - eef_pos
        s[sl[f"obj{k}_yaw"]] = cube_yaw_features(quat)
        s[sl["obj_mask"].start + k] = 1.0
    if len(objects) >= 2:
        s[sl["obj0_to_obj1"]] = objects[1][0] - objects[0][0]
    return s.astype(np.float32)
