"""Diffusion Policy zarr replay buffer: `data/<field>` (N, ...) arrays + `meta/episode_ends` (E,).

Reads a directory store (`*.zarr`) or a zip store (`*.zarr.zip`), zarr format v2 (as DP writes it) or v3,
with zarr-python 2 or 3. Frames stay on disk: `EpisodeSet.actions` is a `LazyArray` that decodes only the
chunks a slice touches.

Zarr reads an absent chunk file as the fill value, so a half-copied store would train on zeros: every
array read is first checked for missing chunk files (`_check_chunks`), straight from its metadata, so the
check does not depend on the zarr-python version. zarr-python 3 also leaves out chunks that are all
fill value unless ``write_empty_chunks=True``; such a store loads with ATE_ZARR_ALLOW_MISSING_CHUNKS=1.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from ate.data.episodes import EpisodeSet
from ate.data.formats._common import check_frames, require
from ate.data.lazy import LazyArray
from ate.errors import DataError

logger = logging.getLogger(__name__)
# set to 1 to accept stores whose all-fill-value chunks were never written (zarr-python 3's default)
ALLOW_MISSING_ENV = "ATE_ZARR_ALLOW_MISSING_CHUNKS"


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


def _store_files(source: str, prefix: str) -> tuple[dict[str, bytes] | None, set[str]]:
    """(metadata files of the array at `prefix`, names of all files under it, relative to it)."""
    prefix = prefix.strip("/") + "/"
    if source.endswith(".zip"):
        with zipfile.ZipFile(source) as z:
            names = {n[len(prefix):] for n in z.namelist() if n.startswith(prefix)}
            meta = {m: z.read(prefix + m) for m in (".zarray", "zarr.json") if m in names}
    else:
        root = Path(source) / prefix
        names = {str(p.relative_to(root)).replace("\\", "/") for p in root.rglob("*") if p.is_file()}
        meta = {m: (root / m).read_bytes() for m in (".zarray", "zarr.json") if m in names}
    return meta, names


def _chunk_keys(meta: dict[str, bytes]):
    """(shape, chunk shape, fill value, chunk index -> file name) from v2 `.zarray` or v3 `zarr.json`."""
    if ".zarray" in meta:
        m = json.loads(meta[".zarray"])
        sep = m.get("dimension_separator") or "."
        return m["shape"], m["chunks"], m.get("fill_value"), lambda idx: sep.join(map(str, idx)) or "0"
    m = json.loads(meta["zarr.json"])
    enc = m.get("chunk_key_encoding", {"name": "default"})
    if enc.get("name") == "v2":
        sep = enc.get("configuration", {}).get("separator", ".")
        return m["shape"], m["chunk_grid"]["configuration"]["chunk_shape"], m.get("fill_value"), \
            lambda idx: sep.join(map(str, idx)) or "0"
    sep = enc.get("configuration", {}).get("separator", "/")
    return m["shape"], m["chunk_grid"]["configuration"]["chunk_shape"], m.get("fill_value"), \
        lambda idx: sep.join(["c", *map(str, idx)])


def _check_chunks(source: str, key: str) -> None:
    """Raise DataError naming the first chunk file of array `key` that the store lacks."""
    try:
        meta, names = _store_files(source, key)
        shape, chunks, fill, name = _chunk_keys(meta)
    except (OSError, KeyError, ValueError, TypeError):  # unusual layout: leave the verdict to zarr itself
        return
    grid = [math.ceil(n / c) for n, c in zip(shape, chunks)]
    expected = math.prod(grid)
    present = len(names) - len(meta) - (".zattrs" in names)
    if present >= expected:  # cheap common case: enumerate the grid only when files are missing
        return
    missing = [name(idx) for idx in itertools.product(*map(range, grid)) if name(idx) not in names]
    if not missing:
        return
    if os.environ.get(ALLOW_MISSING_ENV) == "1":
        logger.warning("%s: array '%s' lacks %d of %d chunk files, read as fill value %s (%s=1)", source, key,
                       len(missing), expected, fill, ALLOW_MISSING_ENV)
        return
    raise DataError(
        f"array '{key}' lacks chunk file '{key}/{missing[0]}' ({len(missing)} of {expected} chunks missing: a "
        f"partly copied store?), which zarr would read as fill value {fill}; copy the store again, or if those "
        f"chunks are all {fill} on purpose (zarr-python 3 skips such chunks by default) set {ALLOW_MISSING_ENV}=1")


def read_zarr(path: Path, key: str | None = None) -> EpisodeSet:
    source = str(path)
    try:
        group = _open_group(source)
        key = _resolve_key(group, key)
        array = group[key]
        for name in (key, "meta/episode_ends"):
            if name in group:
                _check_chunks(source, name)
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
