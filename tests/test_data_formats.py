"""Round trips through every reader on files written by the libraries that define each format, and
auto-detection. The writers here are imported by the other tests/test_data_*.py files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from ate.data import EpisodeSet, LazyArray, detect_format, load_episodes, save_npy

LENGTHS = (5, 12, 3, 20)
D = 4


def make_episodes(lengths=LENGTHS, dim=D, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, dim)).astype(np.float32) for n in lengths]


def ends_of(episodes) -> np.ndarray:
    return np.cumsum([len(e) for e in episodes]).astype(np.int64)


# ------------------------------------------------------------------ writers
def write_hdf5_episode(path: Path, action, qpos=None, state=None, attrs=None) -> Path:
    """RDT / RoboTwin / ALOHA layout; with `state` and `attrs` it is the ate bench layout."""
    with h5py.File(path, "w") as f:
        f.create_dataset("action", data=action)
        f.create_dataset("observations/qpos", data=action * 2 if qpos is None else qpos)
        f.create_dataset("observations/images/cam_high", data=np.zeros((len(action), 2, 2, 3), np.uint8))
        if state is not None:
            f.create_dataset("observations/state", data=state)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return path


def write_hdf5_dir(folder: Path, episodes, with_state=False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, ep in enumerate(episodes):  # names sort wrongly as strings: episode_10 < episode_2
        attrs = {"task": f"task_{i % 2}", "robot": "panda", "success": bool(i % 2)} if with_state else None
        write_hdf5_episode(folder / f"episode_{i}.hdf5", ep, state=ep[:, :2] + 100 if with_state else None, attrs=attrs)
    return folder


def write_ate_vae(root: Path, train, val) -> Path:
    for split, eps in (("train", train), ("val", val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i, ep in enumerate(eps):
            with h5py.File(root / split / f"{i}.hdf5", "w") as f:
                f.create_dataset("qpos", data=ep)
    return root


def write_zarr(path: Path, episodes, state=None, dtype="f4") -> Path:
    """Diffusion Policy ReplayBuffer layout, zarr format v2, directory or ZipStore (`.zarr.zip`)."""
    store = zarr.storage.ZipStore(str(path), mode="w") if str(path).endswith(".zip") else str(path)
    root = zarr.open_group(store, mode="w", zarr_format=2)
    actions = np.concatenate(episodes)
    root.create_array("data/action", shape=actions.shape, chunks=(7, actions.shape[1]), dtype=dtype)[:] = actions
    if state is not None:
        root.create_array("data/state", shape=state.shape, chunks=(7, state.shape[1]), dtype="f4")[:] = state
    root.create_array("meta/episode_ends", shape=(len(episodes),), dtype="i8")[:] = ends_of(episodes)
    if hasattr(store, "close"):
        store.close()
    return path


def _lerobot_table(episodes, first_episode=0, first_index=0, state=True) -> pa.Table:
    actions = np.concatenate(episodes)
    d = actions.shape[1]
    ep_idx = np.concatenate([np.full(len(e), first_episode + i) for i, e in enumerate(episodes)])
    cols = {
        "action": pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1), pa.float32()), d),
        "episode_index": pa.array(ep_idx, pa.int64()),
        "frame_index": pa.array(np.concatenate([np.arange(len(e)) for e in episodes]), pa.int64()),
        "index": pa.array(np.arange(first_index, first_index + len(actions)), pa.int64()),
        "timestamp": pa.array(np.zeros(len(actions)), pa.float32()),
    }
    if state:
        cols["observation.state"] = pa.FixedSizeListArray.from_arrays(pa.array((actions[:, :2] + 7).reshape(-1)), 2)
    return pa.table(cols)


def write_lerobot_v3(root: Path, episodes, split_at=2) -> Path:
    """LeRobotDataset v3.0: two data files (episodes [0, split_at) and the rest) + meta/episodes parquet."""
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": "v3.0",
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "total_episodes": len(episodes),
        "total_frames": int(sum(len(e) for e in episodes)),
        "features": {
            "action": {"dtype": "float32", "shape": [episodes[0].shape[1]],
                       "names": [f"joint_{i}" for i in range(episodes[0].shape[1])]},
            "observation.state": {"dtype": "float32", "shape": [2], "names": {"motors": ["x", "y"]}},
        },
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    parts = [episodes[:split_at], episodes[split_at:]]
    start = 0
    for file_index, part in enumerate(parts):
        table = _lerobot_table(part, file_index * split_at, start)
        pq.write_table(table, root / f"data/chunk-000/file-{file_index:03d}.parquet")
        start += sum(len(e) for e in part)
    ends = ends_of(episodes)
    meta = pa.table({
        "episode_index": pa.array(np.arange(len(episodes)), pa.int64()),
        "tasks": pa.array([[f"task {i % 2}"] for i in range(len(episodes))]),
        "length": pa.array([len(e) for e in episodes], pa.int64()),
        "dataset_from_index": pa.array(ends - [len(e) for e in episodes], pa.int64()),
        "dataset_to_index": pa.array(ends, pa.int64()),
    })  # fmt: skip
    pq.write_table(meta, root / "meta/episodes/chunk-000/file-000.parquet")
    return root


def write_lerobot_v2(root: Path, episodes) -> Path:
    """LeRobotDataset v2.1: one parquet per episode + meta/episodes.jsonl."""
    (root / "meta").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": "v2.1",
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "chunks_size": 1000,
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    lines, start = [], 0
    for i, ep in enumerate(episodes):
        pq.write_table(_lerobot_table([ep], i, start), root / f"data/chunk-000/episode_{i:06d}.parquet")
        lines.append(json.dumps({"episode_index": i, "tasks": [f"task {i}"], "length": len(ep)}))
        start += len(ep)
    (root / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")
    return root


def write_npz(path: Path, episodes, per_episode=False, compressed=False) -> Path:
    save = np.savez_compressed if compressed else np.savez
    if per_episode:
        save(path, **{f"ep_{i}": e for i, e in enumerate(episodes)})
    else:
        save(path, action=np.concatenate(episodes), episode_ends=ends_of(episodes))
    return path


def write_npy_dir(folder: Path, episodes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "actions.npy", np.concatenate(episodes))
    np.save(folder / "episode_ends.npy", ends_of(episodes))
    return folder


def assert_same(eps: EpisodeSet, episodes, dtype_exact=True):
    assert eps.num_episodes == len(episodes)
    assert len(eps) == sum(len(e) for e in episodes)
    assert eps.dim == episodes[0].shape[1]
    np.testing.assert_array_equal(eps.episode_ends, ends_of(episodes))
    for i, ep in enumerate(episodes):
        got = eps.episode(i)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, ep) if dtype_exact else np.testing.assert_allclose(got, ep, rtol=1e-6)
    assert len(eps.episode_names) == len(episodes) and len(eps.episode_attrs) == len(episodes)


# ------------------------------------------------------------------ round trips
def test_hdf5_single_file_and_folder_natural_order(tmp_path):
    episodes = make_episodes(lengths=[3] * 9 + [4, 5, 6])  # episode_10 must come after episode_9
    folder = write_hdf5_dir(tmp_path / "rdt", episodes)
    eps = load_episodes(folder)
    assert detect_format(folder) == "hdf5"
    assert_same(eps, episodes)
    assert eps.episode_names[:3] == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]
    assert eps.episode_names[10] == "episode_10.hdf5"
    one = load_episodes(folder / "episode_11.hdf5")
    assert_same(one, [episodes[11]])
    qpos = load_episodes(folder, key="observations/qpos")
    np.testing.assert_array_equal(qpos.episode(2), episodes[2] * 2)
    assert qpos.key == "observations/qpos"


def test_hdf5_bench_layout_states_and_attrs(tmp_path):
    episodes = make_episodes()
    folder = write_hdf5_dir(tmp_path / "bench", episodes, with_state=True)
    eps = load_episodes(folder)
    states = load_episodes(folder, key="/observations/state")
    assert states.dim == 2 and np.array_equal(states.episode_ends, eps.episode_ends)
    np.testing.assert_array_equal(states.episode(1), episodes[1][:, :2] + 100)
    assert eps.episode_attrs[1] == {"task": "task_1", "robot": "panda", "success": True}
    json.dumps(eps.episode_attrs)  # JSON-safe (numpy bools / bytes converted)


def test_ate_vae_layout_splits(tmp_path):
    train, val = make_episodes(seed=1), make_episodes(lengths=(6, 7), seed=2)
    root = write_ate_vae(tmp_path / "vae", train, val)
    assert detect_format(root) == "ate_vae"
    assert_same(load_episodes(root), train)  # default split: train
    assert_same(load_episodes(root, split="val"), val)
    assert_same(load_episodes(root / "val"), val)
    assert detect_format(root / "val") == "ate_vae"
    assert load_episodes(root / "val").key == "qpos"


@pytest.mark.parametrize("name", ["replay.zarr", "replay.zarr.zip"])
def test_zarr_replay_buffer_is_lazy(tmp_path, name):
    episodes = make_episodes()
    state = np.concatenate(episodes)[:, :3] * 3
    path = write_zarr(tmp_path / name, episodes, state=state)
    assert detect_format(path) == "zarr"
    eps = load_episodes(path)
    assert isinstance(eps.actions, LazyArray) and eps.key == "data/action"
    assert_same(eps, episodes)
    assert eps.episode_names[3] == f"episode 3 of {name}"
    states = load_episodes(path, key="state")
    np.testing.assert_array_equal(states.actions[:], state)
    rows = np.array([30, 2, 2, 39, 0])
    np.testing.assert_array_equal(eps.actions.take_rows(rows), np.concatenate(episodes)[rows])


def test_zarr_float64_comes_back_float32(tmp_path):
    episodes = [e.astype(np.float64) for e in make_episodes()]
    eps = load_episodes(write_zarr(tmp_path / "f64.zarr", episodes, dtype="f8"))
    assert eps.actions[0:3].dtype == np.float32
    assert_same(eps, [e.astype(np.float32) for e in episodes])


def test_lerobot_v3_two_files(tmp_path):
    episodes = make_episodes()
    root = write_lerobot_v3(tmp_path / "lr3", episodes)
    assert detect_format(root) == "lerobot"
    eps = load_episodes(root)
    assert_same(eps, episodes)
    assert eps.episode_attrs[1]["task"] == "task 1" and eps.episode_attrs[1]["episode_index"] == 1
    assert eps.dim_names == [f"joint_{i}" for i in range(episodes[0].shape[1])]  # info.json features names
    state = load_episodes(root, key="observation.state")
    np.testing.assert_allclose(state.episode(3), episodes[3][:, :2] + 7)
    assert state.dim_names == ["x", "y"]  # the {"motors": [...]} form


def test_lerobot_v21_per_episode_files(tmp_path):
    episodes = make_episodes()
    eps = load_episodes(write_lerobot_v2(tmp_path / "lr2", episodes))
    assert_same(eps, episodes)
    assert [a["task"] for a in eps.episode_attrs] == ["task 0", "task 1", "task 2", "task 3"]
    assert eps.dim_names is None  # no names in info.json: none invented


def test_npz_layouts(tmp_path):
    episodes = make_episodes(lengths=[4] * 11)
    flat = load_episodes(write_npz(tmp_path / "flat.npz", episodes))
    assert isinstance(flat.actions, LazyArray)  # uncompressed member is memory-mapped in place
    assert_same(flat, episodes)
    packed = load_episodes(write_npz(tmp_path / "packed.npz", episodes, compressed=True))
    assert isinstance(packed.actions, np.ndarray)
    assert_same(packed, episodes)
    per = load_episodes(write_npz(tmp_path / "per.npz", episodes, per_episode=True))
    assert_same(per, episodes)  # ep_10 after ep_9
    assert per.episode_names[10] == "episode 'ep_10' of per.npz"


def test_npy_folder_and_save_npy_round_trip(tmp_path):
    episodes = make_episodes()
    folder = write_npy_dir(tmp_path / "mm", episodes)
    assert detect_format(folder) == "npy"
    eps = load_episodes(folder)
    assert isinstance(eps.actions, LazyArray) and isinstance(eps.actions.array, np.memmap)
    assert_same(eps, episodes)
    bench = load_episodes(write_hdf5_dir(tmp_path / "bench", episodes, with_state=True))
    out = save_npy(bench, tmp_path / "converted")
    save_npy(load_episodes(tmp_path / "bench", key="observations/state"), out, name="state")
    back = load_episodes(out)
    assert_same(back, episodes)
    assert back.episode_names == bench.episode_names and back.episode_attrs == bench.episode_attrs
    assert load_episodes(out, key="state").dim == 2


def test_lazy_array_pickles_without_data(tmp_path):
    import pickle

    episodes = make_episodes(lengths=[2000])
    eps = load_episodes(write_npy_dir(tmp_path / "mm", episodes))
    blob = pickle.dumps(eps.actions)
    assert len(blob) < 2000  # how to reopen, not 32 kB of frames
    np.testing.assert_array_equal(pickle.loads(blob)[10:12], episodes[0][10:12])
