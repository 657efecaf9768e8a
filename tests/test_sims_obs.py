"""State layouts of the simulator wrappers (no simulator needed)."""

import numpy as np
import pytest

from ate.bench.sims.obs import (
    GRIPPER_SLOT,
    METAWORLD_LAYOUT,
    ROBOSUITE_LAYOUT,
    build_robosuite_state,
    cube_yaw_features,
    layout_dim,
    layout_slices,
    yaw_from_features,
)


def test_layout_slices_are_contiguous_and_sized():
    sl = layout_slices(ROBOSUITE_LAYOUT)
    assert layout_dim(ROBOSUITE_LAYOUT) == 44 and layout_dim(METAWORLD_LAYOUT) == 39
    assert sl["joint_pos"] == slice(0, 8) and sl["joint_mask"] == slice(8, 16) and sl["obj_mask"] == slice(42, 44)
    stops = [s.stop for s in sl.values()]
    starts = [s.start for s in sl.values()]
    assert starts[1:] == stops[:-1]


@pytest.mark.parametrize("n_joints", [6, 7])
def test_robosuite_state_pads_joints_and_masks(n_joints):
    q = np.arange(1, n_joints + 1, dtype=np.float64) * 0.1
    cube = (np.array([0.1, 0.2, 0.83]), np.array([1.0, 0.0, 0.0, 0.0]))
    s = build_robosuite_state(q, 0.5, np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, 0.0, -1.0]), [cube])
    sl = layout_slices(ROBOSUITE_LAYOUT)
    assert s.dtype == np.float32 and s.shape == (44,)
    np.testing.assert_allclose(s[sl["joint_pos"]][:n_joints], q, rtol=1e-6)
    assert np.all(s[sl["joint_pos"]][n_joints:GRIPPER_SLOT] == 0)
    assert s[sl["joint_pos"]][GRIPPER_SLOT] == 0.5
    expected_mask = np.r_[np.ones(n_joints), np.zeros(GRIPPER_SLOT - n_joints), 1.0]
    np.testing.assert_array_equal(s[sl["joint_mask"]], expected_mask)
    np.testing.assert_allclose(s[sl["eef_quat"]], [0, 0, 0, 1])  # sign canonicalised to w >= 0
    np.testing.assert_allclose(s[sl["obj0_rel"]], [0.1, 0.2, -0.17], atol=1e-6)
    np.testing.assert_array_equal(s[sl["obj_mask"]], [1, 0])
    assert np.all(s[sl["obj1_pos"]] == 0) and np.all(s[sl["obj0_to_obj1"]] == 0)


def test_too_many_joints_is_refused():
    with pytest.raises(ValueError, match="8 joints"):
        build_robosuite_state(np.zeros(8), 0.0, np.zeros(3), np.array([0, 0, 0, 1.0]), [])


@pytest.mark.parametrize("yaw", [0.0, 0.3, -0.7, 1.2, 3.0])
def test_cube_yaw_features_fold_to_quarter_turn(yaw):
    quat = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])  # (w, x, y, z) rotation about z
    folded = yaw_from_features(cube_yaw_features(quat))
    assert -np.pi / 4 - 1e-9 <= folded <= np.pi / 4 + 1e-9
    # same cube orientation up to a multiple of 90 degrees
    k = (yaw - folded) / (np.pi / 2)
    assert abs(k - round(k)) < 1e-6
