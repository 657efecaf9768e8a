"""Unified action space: RDT's 128-dim layout, name mapping, derived masks, JSON specs."""

import json

import numpy as np
import pytest
import torch

from ate.errors import ShapeMismatchError
from ate.steer import (
    RDT_UNIFIED_128,
    GuidanceConfig,
    LatentGuidance,
    SlotLayout,
    dual_arm_names,
    single_arm_names,
)


def test_rdt_layout_matches_state_vec():
    L = RDT_UNIFIED_128
    assert L.size == 128
    expected = {"right_arm_joint_0_pos": 0, "arm_joint_9_pos": 9, "right_gripper_open": 10, "gripper_open": 10,
                "right_gripper_joint_4_pos": 14, "right_arm_joint_0_vel": 15, "arm_joint_9_vel": 24,
                "gripper_open_vel": 25, "eef_pos_x": 30, "right_eef_angle_5": 38, "eef_angular_vel_yaw": 44,
                "left_arm_joint_0_pos": 50, "left_arm_joint_9_pos": 59, "left_gripper_open": 60,
                "left_gripper_joint_4_pos": 64, "left_arm_joint_0_vel": 65, "left_gripper_open_vel": 75,
                "left_eef_pos_x": 80, "left_eef_angle_0": 83, "left_eef_vel_z": 91,
                "left_eef_angular_vel_yaw": 94, "base_vel_x": 100, "base_vel_y": 101, "base_angular_vel": 102}
    for name, idx in expected.items():
        assert L.slots[name] == idx, name
    used = set(L.used())
    assert used == set(range(45)) | set(range(50, 95)) | {100, 101, 102}  # reserved slots stay unnamed
    assert len(L.slots) == 144  # RDT's STATE_VEC_IDX_MAPPING has 144 names (with aliases)


def test_dual_arm_mask_includes_slot_50():
    names = dual_arm_names(6)
    mask = RDT_UNIFIED_128.mask(names)
    assert mask[50] == 1  # left_arm_joint_0_pos: the reference's hand-written mask left it out
    assert mask.nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5, 10, 50, 51, 52, 53, 54, 55, 60]
    assert mask.sum() == len(names) == 14
    assert RDT_UNIFIED_128.indices(names)[:7] == [50, 51, 52, 53, 54, 55, 60]  # left arm first (AgileX order)


def test_to_from_unified_roundtrip_numpy_and_torch():
    names = single_arm_names(7)  # Panda: 7 joints + gripper
    x = np.random.default_rng(0).standard_normal((5, 16, 8)).astype(np.float32)
    u = RDT_UNIFIED_128.to_unified(x, names)
    assert isinstance(u, np.ndarray) and u.shape == (5, 16, 128) and u.dtype == np.float32
    assert np.array_equal(u[..., 10], x[..., 7]) and np.array_equal(u[..., :7], x[..., :7])
    assert np.count_nonzero(u[..., 11:]) == 0 and np.count_nonzero(u[..., 7:10]) == 0
    assert np.array_equal(RDT_UNIFIED_128.from_unified(u, names), x)
    xt = torch.from_numpy(x)
    ut = RDT_UNIFIED_128.to_unified(xt, names)
    assert isinstance(ut, torch.Tensor) and torch.equal(ut, torch.from_numpy(u))
    assert torch.equal(RDT_UNIFIED_128.from_unified(ut, names), xt)
    # a different robot reads back its own names only
    assert RDT_UNIFIED_128.from_unified(ut, ["right_gripper_open"]).shape == (5, 16, 1)


def test_bad_names_and_shapes_raise():
    with pytest.raises(ShapeMismatchError, match="unknown slot name 'left_arm_joint_10_pos'"):
        RDT_UNIFIED_128.mask(["left_arm_joint_10_pos"])
    with pytest.raises(ShapeMismatchError, match="both map to slot 10"):
        RDT_UNIFIED_128.indices(["gripper_open", "right_gripper_joint_0_pos"])
    with pytest.raises(ShapeMismatchError, match="3 dims but 2 names"):
        RDT_UNIFIED_128.to_unified(np.zeros((4, 3)), ["eef_pos_x", "eef_pos_y"])
    with pytest.raises(ShapeMismatchError, match="expected 128"):
        RDT_UNIFIED_128.from_unified(np.zeros((4, 64)), ["eef_pos_x"])
    with pytest.raises(ShapeMismatchError, match="sequence of slot names"):
        RDT_UNIFIED_128.indices("eef_pos_x")


def test_layout_from_dict_and_json(tmp_path):
    spec = {"size": 10, "slots": {"arm_{i}": [0, 4], "grip": 4, "hand_{i}": [6, 9], "grip_alias": 4}}
    L = SlotLayout.from_dict(spec, name="toy")
    assert L.slots == {"arm_0": 0, "arm_1": 1, "arm_2": 2, "arm_3": 3, "grip": 4, "hand_0": 6, "hand_1": 7,
                       "hand_2": 8, "grip_alias": 4}
    assert L.mask(["arm_0", "grip", "hand_2"]).tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(L.to_dict()))
    assert SlotLayout.from_json(path) == L
    assert SlotLayout.from_dict(RDT_UNIFIED_128.to_dict()) == RDT_UNIFIED_128
    for bad in [{"size": 4, "slots": {"a": 4}}, {"size": 4, "slots": {"a_{i}": [3, 6]}},
                {"size": 4, "slots": {"a": [0, 2]}}, {"size": 4, "slots": {"a_{i}": [0, 2], "a_1": 3}},
                {"slots": {}}]:
        with pytest.raises(ShapeMismatchError):
            SlotLayout.from_dict(bad)
    path.write_text("{not json")
    with pytest.raises(ShapeMismatchError, match="layout.json: not valid JSON"):
        SlotLayout.from_json(path)


def test_layout_mask_drives_guidance():
    # An RDT-style policy in the 128-dim unified space: guidance only on the robot's slots, either through
    # dim_mask (VAE sees all 128) or action_index (VAE sees the robot's 14 dims).
    names = dual_arm_names(6)

    class Enc(torch.nn.Module):
        def __init__(self, d):
            super().__init__()
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(4 * d, 8)

        def encode(self, a):
            h = self.lin(a.flatten(1))
            return h, torch.zeros_like(h)

    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 4, 128, generator=gen)
    a0 = torch.randn(2, 4, 128, generator=gen)
    mask = RDT_UNIFIED_128.mask(names)
    g, _ = LatentGuidance(Enc(128), "sample", GuidanceConfig(encoder_mode="mean"),
                          alphas_cumprod=torch.linspace(0.99, 0.01, 10)).gradient(x_t, a0, 5, dim_mask=mask)
    assert torch.count_nonzero(g[..., mask == 0]) == 0 and torch.count_nonzero(g[..., 50]) == g.shape[0] * 4
    idx = RDT_UNIFIED_128.index_tensor(names)
    g2, _ = LatentGuidance(Enc(14), "flow_openpi", GuidanceConfig(encoder_mode="mean"),
                           action_index=idx).gradient(x_t, a0, 0.5)
    assert torch.equal((g2.abs().sum((0, 1)) > 0).float(), mask)
