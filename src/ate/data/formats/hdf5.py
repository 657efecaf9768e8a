"""HDF5 episodes, one file per episode.

- `hdf5`: RDT / RoboTwin / ALOHA: `/action (T, D)`, `/observations/qpos (T, D)`, images under
  `/observations/images/*` (never read). The ate bench writes the same plus `/observations/state` and root
  attrs `task`, `robot`, `success`, which become `episode_attrs`.
- `ate_vae`: the reference VAE trainer layout `<dir>/{train,val}/*.hdf5` with a top-level `qpos (T, D)`.
  Pass the split folder (`<dir>/train`) or the root plus `split="train" | "val"` (default "train").

Episodes are small, so a folder is read into one float32 array (N, D) in natural file order
("ep_2" before "ep_10").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ate.data.episodes import EpisodeSet
from ate.data.formats._common import check_frames, json_safe, natural_sorted, require
from ate.errors import DataError

HDF5_SUFFIXES = (".hdf5", ".h5", ".he5")


def list_hdf5(folder: Path) -> list[Path]:
    return natural_sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in HDF5_SUFFIXES)


def _datasets(f) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if hasattr(obj, "shape") else None)
    return names


def _read_one(h5py, path: Path, key: str) -> tuple[np.ndarray, dict]:
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise DataError(f"{path}: no dataset '{key}' (datasets: {', '.join(_datasets(f)) or 'none'})")
            dset = f[key]
            if not hasattr(dset, "shape"):
                raise DataError(f"{path}: '{key}' is a group, not a dataset")
            check_frames(dset, str(path), key)
            frames = np.asarray(dset[()], dtype=np.float32)
            attrs = {str(k): json_safe(v) for k, v in f.attrs.items()}
    except DataError:
        raise
    except Exception as exc:  # truncated / corrupt file: h5py raises OSError or KeyError-like errors
        raise DataError(f"{path}: cannot read HDF5 field '{key}' (truncated or corrupt file?): {exc}") from exc
    return frames, attrs


def read_hdf5(path: Path, key: str | None = None, default_key: str = "action") -> EpisodeSet:
    """One `.hdf5` file (one episode) or a folder of them -> EpisodeSet in RAM (float32)."""
    h5py = require("h5py")
    key = (key or default_key).strip("/")
    files = [path] if path.is_file() else list_hdf5(path)
    if not files:
        raise DataError(f"{path}: no *.hdf5 / *.h5 files")
    arrays, attrs = [], []
    for file in files:
        frames, a = _read_one(h5py, file, key)
        if arrays and frames.shape[1] != arrays[0].shape[1]:
            raise DataError(
                f"{file}: field '{key}' has {frames.shape[1]} dims but {files[0].name} has {arrays[0].shape[1]}"
            )
        if frames.shape[0] == 0:
            raise DataError(f"{file}: zero-length episode (field '{key}' has 0 frames)")
        arrays.append(frames)
        attrs.append(a)
    ends = np.cumsum([len(a) for a in arrays], dtype=np.int64)
    return EpisodeSet(
        actions=np.concatenate(arrays, axis=0),
        episode_ends=ends,
        episode_names=[f.name for f in files],
        episode_attrs=attrs,
        source=str(path),
        key=key,
    )


def ate_vae_folder(path: Path, split: str | None) -> Path:
    """Resolve the split folder of the reference VAE trainer layout."""
    if path.is_file() or list_hdf5(path):
        if split is not None and path.is_dir() and (path / split).is_dir():
            return path / split
        return path
    split = split or "train"
    folder = path / split
    if not folder.is_dir():
        present = sorted(p.name for p in path.iterdir() if p.is_dir())
        raise DataError(f"{path}: no split folder '{split}' (has: {', '.join(present) or 'none'})")
    return folder


def read_ate_vae(path: Path, key: str | None = None, split: str | None = None) -> EpisodeSet:
    """Reference VAE trainer layout: `<dir>/<split>/*.hdf5` with a top-level `qpos`."""
    return read_hdf5(ate_vae_folder(path, split), key=key, default_key="qpos")


def has_top_level(path: Path, name: str) -> bool:
    """Whether an HDF5 file has a root-level dataset `name` (used by auto-detection)."""
    h5py = require("h5py")
    try:
        with h5py.File(path, "r") as f:
            return name in f and hasattr(f[name], "shape")
    except Exception as exc:
        raise DataError(f"{path}: cannot open HDF5 file (truncated or corrupt?): {exc}") from exc
