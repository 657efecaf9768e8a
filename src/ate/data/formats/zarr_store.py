"""Diffusion Policy zarr replay buffer: `data/<field>` (N, ...) arrays + `meta/episode_ends` (E,).

Reads a directory store (`*.zarr`) or a zip store (`*.zarr.zip`), zarr format v2 (as DP writes it) or v3,
with zarr-python 2 or 3. Frames stay on disk: `EpisodeSet.actions` is a `LazyArray` that decodes only the
chunks a slice touches.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ate.data.episodes import EpisodeSet
from ate.data.formats._common import check_frames, require
from ate.data.lazy import LazyArray
from ate.errors import DataError


def _open_group(path: str):
    zarr = require("zarr")
    if str(path).endswith(".zip"):
        store = zarr.storage.ZipStore(path, mode="r")
        return zarr.open_group(store, mode="r")
    return zarr.open_group(path, mode="r")


def _open_array(path: str, key: str):
    return _open_group(path)[key]


def _resolve_key(group, key: str | None) -> str:
    key = (key or "data/action").strip("/")
    if key in group:
        return key
    if f"data/{key}" in group:  # key="state" means data/state
        return f"data/{key}"
    try:
        fields = sorted(group["data"].array_keys())
    except Exception:
        fields = []
    tried = f"'{key}'" if key.startswith("data/") else f"'{key}' nor 'data/{key}'"
    raise DataError(f"no array {tried} (data fields: {', '.join(fields) or 'none'})")


def read_zarr(path: Path, key: str | None = None) -> EpisodeSet:
    source = str(path)
    try:
        group = _open_group(source)
        key = _resolve_key(group, key)
        array = group[key]
        ends = np.asarray(group["meta/episode_ends"][:], dtype=np.int64)
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None
    except KeyError as exc:
        raise DataError(f"{source}: not a Diffusion Policy replay buffer, missing {exc}") from exc
    except Exception as exc:
        raise DataError(f"{source}: cannot open zarr store (truncated or corrupt?): {exc}") from exc
    check_frames(array, source, key)
    name = Path(source).name
    return EpisodeSet(
        actions=LazyArray(functools.partial(_open_array, source, key), array.shape, source, key),
        episode_ends=ends,
        episode_names=[f"episode {i} of {name}" for i in range(len(ends))],
        source=source,
        key=key,
    )


def is_zarr_dir(path: Path) -> bool:
    return any((path / marker).exists() for marker in (".zgroup", "zarr.json"))
