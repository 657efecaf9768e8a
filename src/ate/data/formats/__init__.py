"""Format readers, one module per format family, and auto-detection. Each reader returns an EpisodeSet."""

from __future__ import annotations

from pathlib import Path

from ate.data.formats.hdf5 import HDF5_SUFFIXES, has_top_level, list_hdf5
from ate.data.formats.zarr_store import is_zarr_dir
from ate.errors import DataError

FORMATS = ("hdf5", "ate_vae", "zarr", "lerobot", "npz", "npy")


def detect_format(path: str | Path) -> str:
    """Guess the format of a file or folder; DataError naming the path when nothing fits."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    name = path.name.lower()
    if path.is_file():
        if path.suffix.lower() in HDF5_SUFFIXES:
            return "ate_vae" if _is_ate_vae_file(path) else "hdf5"
        if name.endswith(".zarr.zip"):
            return "zarr"
        if name.endswith(".npz"):
            return "npz"
        hint = ""
        if name.endswith(".parquet"):
            hint = " (for a LeRobot dataset pass its root folder, the one holding meta/info.json)"
        elif name.endswith(".npy"):
            hint = " (for the npy layout pass the folder holding actions.npy and episode_ends.npy)"
        raise DataError(f"{path}: unknown data format{hint}; readable: {_readable()}")
    if (path / "meta" / "info.json").is_file():
        return "lerobot"
    if is_zarr_dir(path):
        return "zarr"
    if (path / "episode_ends.npy").is_file():
        return "npy"
    files = list_hdf5(path)
    if files:
        return "ate_vae" if _is_ate_vae_file(files[0]) else "hdf5"
    if any((path / split).is_dir() and list_hdf5(path / split) for split in ("train", "val")):
        return "ate_vae"
    raise DataError(f"{path}: unknown data format; readable: {_readable()}")


def _is_ate_vae_file(file: Path) -> bool:
    return not has_top_level(file, "action") and has_top_level(file, "qpos")


def _readable() -> str:
    return (
        "HDF5 episode file(s) (/action), reference VAE folder (<dir>/{train,val}/*.hdf5 with qpos), "
        "Diffusion Policy zarr (.zarr folder or .zarr.zip), LeRobot v2.1 / v3.0 folder (meta/info.json), "
        ".npz, npy folder (actions.npy + episode_ends.npy)"
    )
