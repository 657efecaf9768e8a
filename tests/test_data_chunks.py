"""Window counts, pad masks at episode ends, episode subsets / splits and paired state fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from ate.data import ChunkDataset, EpisodeSet, Normalizer, check_aligned, load_episodes, split_episodes
from ate.errors import DataError, ShapeMismatchError
from test_data_formats import write_hdf5_dir, write_zarr


def ramp_set(lengths, dim=2) -> EpisodeSet:
    """Frame value = global frame index (all dims): windows are easy to check by eye."""
    n = sum(lengths)
    frames = np.repeat(np.arange(n, dtype=np.float32)[:, None], dim, axis=1)
    return EpisodeSet(frames, np.cumsum(lengths), [f"ep{i}" for i in range(len(lengths))], source="ramp")


def test_repeat_pad_every_start_frame_gives_a_window():
    eps = ramp_set([5, 2, 4])
    ds = ChunkDataset(eps, horizon=3, pad="repeat")
    assert len(ds) == 11 and ds.num_dropped_episodes == 0
    assert ds.window_index(0) == (0, 0) and ds.window_index(4) == (0, 4)
    assert ds.window_index(5) == (1, 0) and ds.window_index(10) == (2, 3)
    last = ds[4]  # episode 0, start 4: frame 4 then two repeats
    np.testing.assert_array_equal(last["action"][:, 0].numpy(), [4, 4, 4])
    np.testing.assert_array_equal(last["is_pad"].numpy(), [False, True, True])
    mid = ds[3]
    np.testing.assert_array_equal(mid["action"][:, 0].numpy(), [3, 4, 4])
    np.testing.assert_array_equal(mid["is_pad"].numpy(), [False, False, True])
    short = ds[5]  # episode 1 has 2 frames: never reads into episode 2
    np.testing.assert_array_equal(short["action"][:, 0].numpy(), [5, 6, 6])
    full = ds[7]
    assert full["action"].dtype == torch.float32 and full["is_pad"].dtype == torch.bool
    np.testing.assert_array_equal(full["action"][:, 1].numpy(), [7, 8, 9])
    assert not full["is_pad"].any()
    assert int(full["episode_index"]) == 2 and int(full["frame_index"]) == 0


def test_drop_keeps_full_windows_and_counts_short_episodes():
    eps = ramp_set([5, 2, 4])
    with pytest.warns(UserWarning, match=r"1 of 3 episodes are shorter than horizon 3 .*ep1"):
        ds = ChunkDataset(eps, horizon=3, pad="drop")
    assert len(ds) == 3 + 0 + 2 and ds.num_dropped_episodes == 1
    assert [ds.window_index(i) for i in range(len(ds))] == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1)]
    for i in range(len(ds)):
        item = ds[i]
        assert not item["is_pad"].any()
        a = item["action"][:, 0].numpy()
        np.testing.assert_array_equal(np.diff(a), [1, 1])  # consecutive frames of one episode
    np.testing.assert_array_equal(ds[2]["action"][:, 0].numpy(), [2, 3, 4])
    np.testing.assert_array_equal(ds[-1]["action"][:, 0].numpy(), [8, 9, 10])
    with pytest.raises(IndexError):
        ds[5]


def test_batched_getitem_matches_single_items():
    eps = ramp_set([7, 1, 9, 3], dim=3)
    norm = Normalizer.fit(eps)
    ds = ChunkDataset(eps, horizon=4, normalizer=norm)
    idx = np.array([0, 6, 7, 19, 3, 7])
    batch = ds[idx]
    assert batch["action"].shape == (6, 4, 3) and batch["is_pad"].shape == (6, 4)
    for row, i in enumerate(idx):
        single = ds[int(i)]
        torch.testing.assert_close(batch["action"][row], single["action"])
        assert torch.equal(batch["is_pad"][row], single["is_pad"])
    ep, start = ds.window_index(idx)
    np.testing.assert_array_equal(ep, [0, 0, 1, 3, 0, 1])
    np.testing.assert_array_equal(start, [0, 6, 0, 2, 3, 0])


def test_dataloader_paths_on_lazy_zarr(tmp_path):
    episodes = [np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * i for i, n in enumerate([9, 4, 12])]
    eps = load_episodes(write_zarr(tmp_path / "r.zarr", episodes))
    ds = ChunkDataset(eps, horizon=5, pad="repeat")
    batches = list(DataLoader(ds, batch_size=8, shuffle=False))
    assert sum(len(b["action"]) for b in batches) == len(ds) == 25
    for j in range(8):  # the batched path (__getitems__) gives exactly the single items
        item = ds[j]
        assert torch.equal(batches[0]["action"][j], item["action"])
        assert torch.equal(batches[0]["is_pad"][j], item["is_pad"])
    sampler = BatchSampler(RandomSampler(ds, generator=torch.Generator().manual_seed(0)), 6, drop_last=False)
    seen = 0
    for batch in DataLoader(ds, sampler=sampler, batch_size=None):
        assert batch["action"].shape[1:] == (5, 2)
        seen += len(batch["action"])
        ep = batch["episode_index"].numpy()
        first = batch["action"][:, 0, 0].numpy()
        assert ((first // 100).astype(int) == ep).all()  # windows never cross episodes
    assert seen == 25


def test_episode_subset_and_split():
    eps = ramp_set([3, 4, 5, 6, 7])
    train, val = split_episodes(eps.num_episodes, val_ratio=0.4, seed=3)
    assert len(val) == 2 and len(train) == 3 and not set(train) & set(val)
    assert set(train) | set(val) == set(range(5))
    np.testing.assert_array_equal(split_episodes(5, 0.4, seed=3)[1], val)  # deterministic
    assert len(split_episodes(5, 0.0)[1]) == 0 and len(split_episodes(1, 0.5)[1]) == 0
    # few-demo rule: floor(E * val_ratio), never rounded up to one held-out demo
    assert [len(split_episodes(e, 0.1)[1]) for e in (2, 9, 10, 19, 20)] == [0, 0, 1, 1, 2]
    assert len(split_episodes(100, 0.29)[1]) == 29 and len(split_episodes(3, 0.5)[1]) == 1
    ds_val = ChunkDataset(eps, horizon=2, episodes=val)
    assert len(ds_val) == int(eps.episode_lengths[val].sum())
    episodes_seen = {ds_val.window_index(i)[0] for i in range(len(ds_val))}
    assert episodes_seen == set(val.tolist())
    with pytest.raises(DataError, match="out of range"):
        ChunkDataset(eps, horizon=2, episodes=[7])


def test_state_extras_and_attrs(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [rng.normal(size=(n, 3)).astype(np.float32) for n in (6, 4, 8)]
    folder = write_hdf5_dir(tmp_path / "bench", episodes, with_state=True)
    actions = load_episodes(folder)
    states = load_episodes(folder, key="observations/state")
    snorm = Normalizer.fit(states, mode="meanstd")
    ds = ChunkDataset(
        actions, horizon=3, extras={"state": states}, extra_normalizers={"state": snorm}, attr_keys=("task", "robot")
    )
    ep, start = ds.window_index(8)
    item = ds[8]
    raw_state = states.episode(ep)[start]
    # float32 normalise → unnormalise: a few ulp of the O(1) states
    np.testing.assert_allclose(snorm.unnormalize(item["state"].numpy()), raw_state, rtol=1e-5, atol=1e-5)
    assert item["task"] == f"task_{ep % 2}" and item["robot"] == "panda"
    assert ds.attrs(8)["success"] == bool(ep % 2)
    batch = ds[[0, 8]]
    assert batch["state"].shape == (2, 2) and batch["task"] == ["task_0", item["task"]]


def test_mismatched_extras_and_dims_are_refused():
    actions = ramp_set([3, 4])
    other = ramp_set([4, 3])
    with pytest.raises(DataError, match=r"'state' .* does not share the episodes .*ep0: ends at frame 3 .* but 4"):
        ChunkDataset(actions, horizon=2, extras={"state": other})
    with pytest.raises(DataError, match="2 vs 3 episodes"):
        check_aligned(actions, ramp_set([3, 2, 2]))
    with pytest.raises(ShapeMismatchError, match="normalizer has 3 dims"):
        ChunkDataset(actions, horizon=2, normalizer=Normalizer.fit(np.zeros((4, 3)) + np.arange(3)))
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"no windows of horizon 9 .*\(longest has 4 frames\)"):
        ChunkDataset(actions, horizon=9, pad="drop")
    with pytest.raises(ValueError, match="pad must be one of"):
        ChunkDataset(actions, horizon=2, pad="zeros")


def test_forked_dataloader_workers_read_a_zarr_zip(tmp_path):
    """Each worker reopens the zip store (LazyArray reopens per process): no shared file offsets."""
    episodes = [np.full((60, 2), i, np.float32) + np.arange(60, dtype=np.float32)[:, None] / 100 for i in range(10)]
    ds = ChunkDataset(load_episodes(write_zarr(tmp_path / "r.zarr.zip", episodes)), horizon=8)
    reference = ds[np.arange(len(ds))]["action"]
    loaded = torch.cat([b["action"] for b in DataLoader(ds, batch_size=50, num_workers=2)])
    assert torch.equal(loaded, reference)
