"""Unified action spaces: every robot's named joints written into fixed slots of one vector.

RDT-1B trains on a 128-dim "state vector" in which each robot fills only the named slots it has (right
arm joints 0–9, right gripper 10, …, left arm joints 50–59, left gripper 60, …) and a 0/1 mask marks the
valid ones. Masks must be derived from the layout and the robot's joint names, never written by hand: the
reference ATE code's hand-written mask for a dual-arm robot omits slot 50 (left arm joint 0).

A layout is declared as a small JSON-compatible dict: ``{"size": N, "slots": {name: spec}}`` where spec is
an index (``"base_vel_x": 100``) or, for a name holding ``{i}``, a half-open range ``[start, stop]``
expanded to ``name.format(i=k) -> start + k`` (``"left_arm_joint_{i}_pos": [50, 60]``). Several names may
share an index (aliases such as ``gripper_open`` = ``right_gripper_joint_0_pos``).

Usage::

    names = dual_arm_names(6)                   # ALOHA / AgileX: 6 joints + gripper per arm
    u = RDT_UNIFIED_128.to_unified(x, names)    # (..., 14) -> (..., 128), zeros elsewhere
    mask = RDT_UNIFIED_128.mask(names)          # (128,) float 0/1, the guidance's dim_mask
    x = RDT_UNIFIED_128.from_unified(u, names)  # (..., 128) -> (..., 14)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ate.errors import ShapeMismatchError


class SlotLayout:
    """Named slots of a fixed-size unified vector.

    Args:
        size: length of the unified vector.
        slots: name -> index (aliases allowed); every index in [0, size).
        name: label used in error messages.
    """

    def __init__(self, size: int, slots: Mapping[str, int], name: str = "layout"):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ShapeMismatchError(f"{name}: size must be a positive int, got {size!r}")
        clean = {}
        for key, idx in slots.items():
            if not isinstance(key, str) or not key:
                raise ShapeMismatchError(f"{name}: slot names must be non-empty strings, got {key!r}")
            if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or not 0 <= int(idx) < size:
                raise ShapeMismatchError(f"{name}: slot {key!r} has index {idx!r}, outside [0, {size})")
            clean[key] = int(idx)
        self.size = size
        self.slots = dict(clean)
        self.name = name

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, spec: Mapping, name: str | None = None) -> "SlotLayout":
        """Build from ``{"size": N, "slots": {name: index | [start, stop]}, "name": optional}``."""
        if not isinstance(spec, Mapping) or "size" not in spec or "slots" not in spec:
            raise ShapeMismatchError("slot layout spec must be a dict with 'size' and 'slots'")
        label = name or spec.get("name", "layout")
        slots: dict[str, int] = {}

        def add(key: str, idx: int):
            if key in slots and slots[key] != idx:
                raise ShapeMismatchError(f"{label}: slot {key!r} defined twice ({slots[key]} and {idx})")
            slots[key] = idx

        for key, value in spec["slots"].items():
            if isinstance(value, (list, tuple)):
                if "{i}" not in key or len(value) != 2 or not all(isinstance(v, int) for v in value) \
                        or value[1] <= value[0]:
                    raise ShapeMismatchError(f"{label}: range slot {key!r}: {value!r} needs a name with '{{i}}' "
                                             "and [start, stop] with stop > start")
                for k in range(value[1] - value[0]):
                    add(key.format(i=k), value[0] + k)
            else:
                add(key, value)
        return cls(int(spec["size"]), slots, name=label)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "SlotLayout":
        """Read a layout spec (see :meth:`from_dict`) from a JSON file."""
        with open(path) as f:
            try:
                spec = json.load(f)
            except json.JSONDecodeError as e:
                raise ShapeMismatchError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(spec, name=spec.get("name", os.path.basename(str(path))) if isinstance(spec, dict)
                             else None)

    def to_dict(self) -> dict:
        """Flat JSON-compatible spec; ``SlotLayout.from_dict(layout.to_dict()) == layout``."""
        return {"name": self.name, "size": self.size, "slots": dict(self.slots)}

    def __eq__(self, other) -> bool:
        return isinstance(other, SlotLayout) and self.size == other.size and self.slots == other.slots

    def __repr__(self) -> str:
        return f"SlotLayout({self.name!r}, size={self.size}, {len(self.slots)} names, {len(self.used())} slots)"

    # ------------------------------------------------------------------ queries

    def used(self) -> list[int]:
        """Sorted indices that some name refers to (the rest is reserved)."""
        return sorted(set(self.slots.values()))

    def indices(self, names: Sequence[str]) -> list[int]:
        """Slot index of each name, in order. Unknown names and two names on one slot raise."""
        if isinstance(names, str):
            raise ShapeMismatchError(f"{self.name}: names must be a sequence of slot names, got the string {names!r}")
        out, seen = [], {}
        for key in names:
            if key not in self.slots:
                close = [k for k in self.slots if k.split("_")[0] == str(key).split("_")[0]][:6]
                raise ShapeMismatchError(f"{self.name}: unknown slot name {key!r}"
                                         + (f" (similar: {close})" if close else ""))
            idx = self.slots[key]
            if idx in seen:
                raise ShapeMismatchError(f"{self.name}: {key!r} and {seen[idx]!r} both map to slot {idx}")
            seen[idx] = key
            out.append(idx)
        return out

    def index_tensor(self, names: Sequence[str], device=None) -> torch.Tensor:
        """(len(names),) long tensor of slot indices: a guidance ``action_index`` over the unified vector."""
        return torch.tensor(self.indices(names), dtype=torch.long, device=device)

    def mask(self, names: Sequence[str], dtype=torch.float32, device=None) -> torch.Tensor:
        """(size,) 0/1 mask, 1 on the slots ``names`` occupy: the guidance / loss ``dim_mask``."""
        m = torch.zeros(self.size, dtype=dtype, device=device)
        m[self.indices(names)] = 1
        return m

    def to_unified(self, x, names: Sequence[str], fill: float = 0.0):
        """Scatter (..., len(names)) values into (..., size) vectors (numpy in -> numpy out, torch -> torch)."""
        idx = self.indices(names)
        if x.shape[-1] != len(idx):
            raise ShapeMismatchError(f"{self.name}: input has {x.shape[-1]} dims but {len(idx)} names were given")
        if isinstance(x, torch.Tensor):
            u = x.new_full((*x.shape[:-1], self.size), fill)
            u[..., torch.tensor(idx, device=x.device)] = x
            return u
        x = np.asarray(x)
        u = np.full((*x.shape[:-1], self.size), fill, dtype=x.dtype)
        u[..., idx] = x
        return u

    def from_unified(self, u, names: Sequence[str]):
        """Gather (..., size) vectors back into (..., len(names)) in the order of ``names``."""
        idx = self.indices(names)
        if u.shape[-1] != self.size:
            raise ShapeMismatchError(f"{self.name}: unified input has {u.shape[-1]} dims, expected {self.size}")
        if isinstance(u, torch.Tensor):
            return u[..., torch.tensor(idx, device=u.device)]
        return np.asarray(u)[..., idx]


# RDT-1B's configs/state_vec.py (STATE_VEC_IDX_MAPPING, STATE_VEC_LEN = 128), same names and indices.
# Reserved: [45, 50), [95, 100), [103, 128).
RDT_UNIFIED_128_SPEC = {
    "name": "rdt_unified_128",
    "size": 128,
    "slots": {
        # right arm ("arm_*" / "gripper_*" / "eef_*" without a side are aliases of the right arm)
        "arm_joint_{i}_pos": [0, 10], "right_arm_joint_{i}_pos": [0, 10],
        "gripper_joint_{i}_pos": [10, 15], "right_gripper_joint_{i}_pos": [10, 15],
        "gripper_open": 10, "right_gripper_open": 10,
        "arm_joint_{i}_vel": [15, 25], "right_arm_joint_{i}_vel": [15, 25],
        "gripper_joint_{i}_vel": [25, 30], "right_gripper_joint_{i}_vel": [25, 30],
        "gripper_open_vel": 25, "right_gripper_open_vel": 25,
        "eef_pos_x": 30, "right_eef_pos_x": 30, "eef_pos_y": 31, "right_eef_pos_y": 31,
        "eef_pos_z": 32, "right_eef_pos_z": 32,
        "eef_angle_{i}": [33, 39], "right_eef_angle_{i}": [33, 39],
        "eef_vel_x": 39, "right_eef_vel_x": 39, "eef_vel_y": 40, "right_eef_vel_y": 40,
        "eef_vel_z": 41, "right_eef_vel_z": 41,
        "eef_angular_vel_roll": 42, "right_eef_angular_vel_roll": 42,
        "eef_angular_vel_pitch": 43, "right_eef_angular_vel_pitch": 43,
        "eef_angular_vel_yaw": 44, "right_eef_angular_vel_yaw": 44,
        # left arm
        "left_arm_joint_{i}_pos": [50, 60],
        "left_gripper_joint_{i}_pos": [60, 65], "left_gripper_open": 60,
        "left_arm_joint_{i}_vel": [65, 75],
        "left_gripper_joint_{i}_vel": [75, 80], "left_gripper_open_vel": 75,
        "left_eef_pos_x": 80, "left_eef_pos_y": 81, "left_eef_pos_z": 82,
        "left_eef_angle_{i}": [83, 89],
        "left_eef_vel_x": 89, "left_eef_vel_y": 90, "left_eef_vel_z": 91,
        "left_eef_angular_vel_roll": 92, "left_eef_angular_vel_pitch": 93, "left_eef_angular_vel_yaw": 94,
        # mobile base
        "base_vel_x": 100, "base_vel_y": 101, "base_angular_vel": 102,
    },
}
RDT_UNIFIED_128 = SlotLayout.from_dict(RDT_UNIFIED_128_SPEC)


def single_arm_names(num_joints: int, gripper: bool = True, side: str = "right") -> list[str]:
    """Joint-position names of one arm (+ gripper), e.g. a Panda: ``single_arm_names(7)``."""
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    names = [f"{side}_arm_joint_{i}_pos" for i in range(num_joints)]
    return names + [f"{side}_gripper_open"] if gripper else names


def dual_arm_names(num_joints: int = 6, gripper: bool = True) -> list[str]:
    """Left arm (+ gripper) then right arm (+ gripper), the ALOHA / AgileX / RoboTwin order
    (``dual_arm_names(6)`` is RDT's AGILEX_STATE_INDICES: 14 dims)."""
    return single_arm_names(num_joints, gripper, "left") + single_arm_names(num_joints, gripper, "right")
