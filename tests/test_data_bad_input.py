"""Each class of bad input gives a DataError whose message names the file / episode / field."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import zarr

from ate.data import EpisodeSet, load_episodes, validate_episodes
from ate.errors import DataError
from test_data_formats import (
    make_episodes,
    write_hdf5_dir,
    write_hdf5_episode,
    write_lerobot_v2,
    write_lerobot_v3,
    write_npy_dir,
    write_npz,
    write_zarr,
)


def truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_nan_names_episode_field_and_frame(tmp_path):
    episodes = make_episodes()
    episodes[2][1, 3] = np.nan
    write_hdf5_dir(tmp_path / "d", episodes)
    with pytest.raises(DataError, match=r"episode_2\.hdf5: field 'action' has nan at frame 1 \(dim 3\)"):
        load_episodes(tmp_path / "d")


def test_inf_in_lazy_npy_found_blockwise(tmp_path):
    episodes = make_episodes(lengths=[3000, 5000])
    episodes[1][4321, 0] = np.inf
    folder = write_npy_dir(tmp_path / "mm", episodes)
    eps = load_episodes(folder, validate=False)
    with pytest.raises(DataError, match=r"episode 1 of mm: field 'actions' has inf at frame 4321"):
        validate_episodes(eps, block_elems=1000)  # many small blocks


def test_nan_in_zarr(tmp_path):
    episodes = make_episodes()
    episodes[3][7, 0] = np.nan
    with pytest.raises(DataError, match=r"episode 3 of bad\.zarr: field 'data/action' has nan at frame 7"):
        load_episodes(write_zarr(tmp_path / "bad.zarr", episodes))


def test_wrong_ndim(tmp_path):
    with h5py.File(tmp_path / "flat.hdf5", "w") as f:
        f.create_dataset("action", data=np.zeros(10, np.float32))
    with pytest.raises(DataError, match=r"flat\.hdf5: field 'action' must be 2-D .* shape \(10,\)"):
        load_episodes(tmp_path / "flat.hdf5")
    np.savez(tmp_path / "x.npz", action=np.zeros((2, 3, 4)), episode_ends=[2])
    with pytest.raises(DataError, match=r"x\.npz: field 'action' must be 2-D"):
        load_episodes(tmp_path / "x.npz")


def test_missing_field_lists_what_exists(tmp_path):
    write_hdf5_dir(tmp_path / "d", make_episodes())
    with pytest.raises(DataError, match=r"episode_0\.hdf5: no dataset 'observations/state' \(datasets: action"):
        load_episodes(tmp_path / "d", key="observations/state")
    with pytest.raises(DataError, match=r"no field 'obs' \(fields: action"):
        load_episodes(write_lerobot_v3(tmp_path / "lr", make_episodes()), key="obs")
    with pytest.raises(DataError, match=r"r\.zarr: no array 'foo' nor 'data/foo' \(data fields: action\)"):
        load_episodes(write_zarr(tmp_path / "r.zarr", make_episodes()), key="foo")


def test_empty_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="unknown data format"):
        load_episodes(tmp_path / "empty")
    np.savez(tmp_path / "e.npz", action=np.zeros((0, 3), np.float32), episode_ends=np.zeros(0, np.int64))
    with pytest.raises(DataError, match=r"e\.npz: field 'action': empty dataset"):
        load_episodes(tmp_path / "e.npz")


def test_zero_length_episode(tmp_path):
    write_hdf5_episode(tmp_path / "z.hdf5", np.zeros((0, 3), np.float32))
    with pytest.raises(DataError, match=r"z\.hdf5: zero-length episode"):
        load_episodes(tmp_path / "z.hdf5")
    np.savez(tmp_path / "z.npz", action=np.zeros((5, 3), np.float32), episode_ends=[2, 2, 5])
    with pytest.raises(DataError, match=r"episode 1 of z\.npz is zero-length: episode_ends\[1\]=2"):
        load_episodes(tmp_path / "z.npz")


def test_episode_ends_not_increasing_or_not_matching(tmp_path):
    np.savez(tmp_path / "dec.npz", action=np.zeros((5, 3), np.float32), episode_ends=[3, 2, 5])
    with pytest.raises(DataError, match=r"episode 1 of dec\.npz is negative-length \(episode_ends not increasing\)"):
        load_episodes(tmp_path / "dec.npz")
    np.savez(tmp_path / "short.npz", action=np.zeros((5, 3), np.float32), episode_ends=[2, 4])
    with pytest.raises(DataError, match=r"short\.npz: field 'action': episode_ends\[-1\]=4 does not match the frame count"):
        load_episodes(tmp_path / "short.npz")
    group = zarr.open_group(str(tmp_path / "r.zarr"), mode="w", zarr_format=2)
    group.create_array("data/action", shape=(6, 2), dtype="f4")[:] = 1  # not fill value: zarr 3 writes the chunk
    group.create_array("meta/episode_ends", shape=(2,), dtype="i8")[:] = [3, 7]
    with pytest.raises(DataError, match=r"r\.zarr: field 'data/action': episode_ends\[-1\]=7"):
        load_episodes(tmp_path / "r.zarr")


def test_truncated_hdf5_names_file(tmp_path):
    folder = write_hdf5_dir(tmp_path / "d", make_episodes(lengths=[400, 400, 400]))
    truncate(folder / "episode_1.hdf5")
    with pytest.raises(DataError, match=r"episode_1\.hdf5: .*truncated or corrupt"):
        load_episodes(folder)


def test_truncated_parquet_names_file(tmp_path):
    root = write_lerobot_v3(tmp_path / "lr", make_episodes())
    truncate(root / "data/chunk-000/file-001.parquet")
    with pytest.raises(DataError, match=r"file-001\.parquet: .*truncated or corrupt"):
        load_episodes(root)
    root2 = write_lerobot_v2(tmp_path / "lr2", make_episodes())
    truncate(root2 / "data/chunk-000/episode_000002.parquet", 0.8)
    with pytest.raises(DataError, match=r"episode_000002\.parquet"):
        load_episodes(root2)


def test_lerobot_meta_length_mismatch(tmp_path):
    root = write_lerobot_v2(tmp_path / "lr2", make_episodes())
    lines = (root / "meta/episodes.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    row["length"] += 1
    lines[1] = json.dumps(row)
    (root / "meta/episodes.jsonl").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"episode 1 has 12 frames in data/ but meta says length 13"):
        load_episodes(root)


def test_truncated_npz_npy_and_corrupt_zarr_chunk(tmp_path):
    episodes = make_episodes(lengths=[500, 500])
    truncate(write_npz(tmp_path / "a.npz", episodes))
    with pytest.raises(DataError, match=r"a\.npz: cannot"):
        load_episodes(tmp_path / "a.npz")
    folder = write_npy_dir(tmp_path / "mm", episodes)
    truncate(folder / "actions.npy")
    with pytest.raises(DataError, match=r"mm: cannot read actions\.npy"):
        load_episodes(folder)
    path = write_zarr(tmp_path / "c.zarr", episodes)
    (path / "data/action/3.0").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"c\.zarr: cannot read field 'data/action'"):
        load_episodes(path)
    zipped = write_zarr(tmp_path / "c.zarr.zip", episodes)
    truncate(zipped)
    with pytest.raises(DataError, match=r"c\.zarr\.zip"):
        load_episodes(zipped)


def test_unknown_format_and_bad_format_name(tmp_path):
    (tmp_path / "x.csv").write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"x\.csv: unknown data format; readable: HDF5"):
        load_episodes(tmp_path / "x.csv")
    (tmp_path / "y.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="pass its root folder"):
        load_episodes(tmp_path / "y.parquet")
    with pytest.raises(DataError, match="unknown format 'csv'"):
        load_episodes(tmp_path / "x.csv", format="csv")
    with pytest.raises(DataError, match="no such file"):
        load_episodes(tmp_path / "nope.hdf5")


def test_dimension_mismatch_between_files(tmp_path):
    write_hdf5_episode(tmp_path / "a_1.hdf5", np.zeros((4, 3), np.float32))
    write_hdf5_episode(tmp_path / "a_2.hdf5", np.zeros((4, 5), np.float32))
    with pytest.raises(DataError, match=r"a_2\.hdf5: field 'action' has 5 dims but a_1\.hdf5 has 3"):
        load_episodes(tmp_path)


def test_validate_catches_hand_built_sets():
    eps = EpisodeSet(np.zeros((4, 2), np.float32), [2, 4], ["a", "b"], source="mem")
    validate_episodes(eps)
    bad = EpisodeSet(np.zeros((4, 2), np.float32), [2, 4], ["a"], source="mem")
    with pytest.raises(DataError, match="1 episode names for 2 episodes"):
        validate_episodes(bad)


@pytest.mark.parametrize("zarr_format,removed", [(2, "data/action/1.0"), (3, "data/action/c/1/0"),
                                                 (2, "meta/episode_ends/0")])
def test_zarr_missing_chunk_file_is_refused_not_read_as_zeros(tmp_path, zarr_format, removed):
    episodes = make_episodes()
    group = zarr.open_group(str(tmp_path / "z.zarr"), mode="w", zarr_format=zarr_format)
    actions = np.concatenate(episodes)
    group.create_array("data/action", shape=actions.shape, chunks=(7, actions.shape[1]), dtype="f4")[:] = actions
    group.create_array("meta/episode_ends", data=np.cumsum([len(e) for e in episodes]))
    load_episodes(tmp_path / "z.zarr")  # complete: fine
    (tmp_path / "z.zarr" / removed).unlink()
    array = removed.rsplit("/", 2 if zarr_format == 3 and "action" in removed else 1)[0].removesuffix("/c")
    with pytest.raises(DataError, match=rf"z\.zarr: array '{array}' lacks chunk file '{removed}' \(1 of \d+ chunks"):
        load_episodes(tmp_path / "z.zarr")


def test_zarr_all_fill_chunks_left_out_by_zarr3_load_with_the_env_switch(tmp_path, monkeypatch):
    actions = np.concatenate([np.zeros((7, 3)), np.ones((7, 3))]).astype(np.float32)  # chunk 0 all fill value
    group = zarr.open_group(str(tmp_path / "z.zarr"), mode="w", zarr_format=3)
    group.create_array("data/action", shape=actions.shape, chunks=(7, 3), dtype="f4")[:] = actions
    group.create_array("meta/episode_ends", data=np.array([14]))
    with pytest.raises(DataError, match=r"lacks chunk file 'data/action/c/0/0'.*ATE_ZARR_ALLOW_MISSING_CHUNKS=1"):
        load_episodes(tmp_path / "z.zarr")
    monkeypatch.setenv("ATE_ZARR_ALLOW_MISSING_CHUNKS", "1")
    np.testing.assert_array_equal(np.asarray(load_episodes(tmp_path / "z.zarr").actions), actions)


def test_zarr_zip_missing_chunk_file(tmp_path):
    import zipfile

    write_zarr(tmp_path / "full.zarr.zip", make_episodes())
    with zipfile.ZipFile(tmp_path / "full.zarr.zip") as src, zipfile.ZipFile(tmp_path / "cut.zarr.zip", "w") as dst:
        for item in src.infolist():
            if item.filename != "data/action/0.0":
                dst.writestr(item, src.read(item))
    with pytest.raises(DataError, match=r"cut\.zarr\.zip: array 'data/action' lacks chunk file 'data/action/0\.0'"):
        load_episodes(tmp_path / "cut.zarr.zip")
