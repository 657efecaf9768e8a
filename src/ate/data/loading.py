"""`load_episodes`: one entry point for every format users bring."""

from __future__ import annotations

import logging
from pathlib import Path

from ate.data.episodes import EpisodeSet
from ate.data.formats import FORMATS, detect_format
from ate.data.validate import validate_episodes
from ate.errors import DataError

logger = logging.getLogger(__name__)


def load_episodes(
    path: str | Path,
    format: str = "auto",
    key: str | None = None,
    split: str | None = None,
    validate: bool = True,
) -> EpisodeSet:
    """Read one per-frame field and the episode boundaries of a dataset.

    Args:
        path: file or folder. See `ate.data.formats` for the layouts.
        format: "auto" | "hdf5" | "ate_vae" | "zarr" | "lerobot" | "npz" | "npy".
        key: the per-frame field; default is the format's action field ("action"; "qpos" for ate_vae;
            "data/action" for zarr, where "state" also means "data/state"). E.g. "observations/state"
            (HDF5) or "observation.state" (LeRobot) reads states.
        split: ate_vae only: which sub-folder of `<dir>/{train,val}` to read (default "train"). Passing
            "<dir>/train" as path does the same.
        validate: run the NaN/Inf check (block-wise on lazy arrays); structure checks always run.

    Returns:
        EpisodeSet; `actions` is in RAM for HDF5 / LeRobot / compressed npz and lazy (on disk) for
        zarr, uncompressed npz and the npy folder.

    Raises:
        DataError naming the file / episode / field for unknown formats, unreadable (truncated,
        corrupt) files, missing fields, wrong ndim, empty data, bad episode boundaries and NaN/Inf.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {format!r}; choose one of auto, {', '.join(FORMATS)}")
    if split is not None and fmt != "ate_vae":
        raise DataError(f"{path}: split={split!r} only applies to the ate_vae layout, not {fmt}")
    if fmt == "hdf5":
        from ate.data.formats.hdf5 import read_hdf5

        eps = read_hdf5(path, key)
    elif fmt == "ate_vae":
        from ate.data.formats.hdf5 import read_ate_vae

        eps = read_ate_vae(path, key, split)
    elif fmt == "zarr":
        from ate.data.formats.zarr_store import read_zarr

        eps = read_zarr(path, key)
    elif fmt == "lerobot":
        from ate.data.formats.lerobot import read_lerobot

        eps = read_lerobot(path, key)
    elif fmt == "npz":
        from ate.data.formats.numpy_files import read_npz

        eps = read_npz(path, key)
    else:
        from ate.data.formats.numpy_files import read_npy_dir

        eps = read_npy_dir(path, key)
    logger.info("loaded %s (%s)", eps, fmt)
    return validate_episodes(eps, finite=validate)
