"""Normalizer: range, round trip (numpy and torch), constant dims, streaming fit, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ate.data import EpisodeSet, Normalizer
from ate.errors import ShapeMismatchError


def data(n=5000, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * [1.0, 10.0, 0.01, 3.0] + [0.0, -5.0, 2.0, 100.0]
    x[:, 2] = 0.7  # constant dimension (e.g. an unused gripper)
    return x.astype(np.float32)


def test_minmax_range_and_round_trip():
    x = data()
    norm = Normalizer.fit(x, mode="minmax")
    y = norm.normalize(x)
    assert y.dtype == np.float32
    live = [0, 1, 3]
    np.testing.assert_allclose(y[:, live].min(0), -1, atol=1e-6)
    np.testing.assert_allclose(y[:, live].max(0), 1, atol=1e-6)
    np.testing.assert_allclose(y[:, 2], 0.0, atol=1e-6)  # constant dim: shifted to 0, not blown up
    # float32 round trip: ~4 rounded ops on values of magnitude ≤ ~130 (ulp 1.5e-5): ≲ 6e-5 absolute
    np.testing.assert_allclose(norm.unnormalize(y), x, rtol=1e-5, atol=1e-4)


def test_meanstd_matches_numpy_and_round_trips_in_torch():
    x = data()
    norm = Normalizer.fit(x, mode="meanstd")
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(norm.mean, x64.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(norm.std, x64.std(0), rtol=1e-9, atol=1e-9)
    t = torch.from_numpy(x).reshape(50, 100, 4)  # any leading dims
    y = norm.normalize(t)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == t.shape
    live = y.reshape(-1, 4)[:, [0, 1, 3]]
    # float32 statistics of 5000 normalised values: summation error ≲ √n·u·max|y| ≈ 3e-5 (pairwise sums)
    torch.testing.assert_close(live.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(live.std(0, unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm.unnormalize(y), t, rtol=1e-5, atol=1e-4)
    assert norm.normalize(t.double()).dtype == torch.float64


def test_streaming_fit_equals_one_pass():
    x = data(n=10007)
    eps = EpisodeSet(x, [3000, 10007], ["a", "b"], source="mem")
    small_blocks = Normalizer.fit(eps, mode="meanstd", block_elems=4 * 997)  # 11 uneven blocks
    one_block = Normalizer.fit(x, mode="meanstd", block_elems=1 << 30)
    assert small_blocks == one_block
    np.testing.assert_allclose(small_blocks.std, one_block.std, rtol=1e-12)
    assert small_blocks.count == 10007


def test_dict_round_trip_is_json_safe_and_equality_refuses_other_stats():
    norm = Normalizer.fit(data(), mode="minmax")
    d = json.loads(json.dumps(norm.to_dict()))
    back = Normalizer.from_dict(d)
    assert back == norm and back.mode == "minmax" and back.dim == 4
    x = data(seed=1)
    np.testing.assert_array_equal(back.normalize(x), norm.normalize(x))
    assert Normalizer.fit(data(seed=2), mode="minmax") != norm
    assert Normalizer.fit(data(), mode="meanstd") != norm
    f32 = {k: (np.asarray(v, np.float32).tolist() if isinstance(v, list) else v) for k, v in d.items()}
    assert Normalizer.from_dict(f32) == norm  # stats stored as float32 still match


def test_wrong_dim_is_a_shape_error():
    norm = Normalizer.fit(data(), mode="minmax")
    with pytest.raises(ShapeMismatchError, match="fitted on 4 dims, got input with last dim 3"):
        norm.normalize(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="mode must be one of"):
        Normalizer.fit(data(), mode="quantile")
