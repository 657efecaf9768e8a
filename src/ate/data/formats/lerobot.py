"""LeRobotDataset folders read with pyarrow alone (LeRobot itself is never imported).

- v3.0: `meta/info.json`, frames in `data/chunk-XXX/file-XXX.parquet` (many episodes per file, rows sorted
  by `episode_index`), per-episode rows in `meta/episodes/chunk-XXX/file-XXX.parquet` (`episode_index`,
  `tasks`, `length`, `dataset_from_index`, `dataset_to_index`).
- v2.1: `meta/info.json`, one file per episode `data/chunk-000/episode_000000.parquet`,
  `meta/episodes.jsonl` ({"episode_index", "tasks", "length"} per line).

The field (`action` by default, e.g. `observation.state`) is a fixed-size or variable list<float> column,
or a plain numeric column for 1-D features. Files are read one at a time into one preallocated float32
array (N, D): memory is that array, never Python objects. Episode boundaries come from the
`episode_index` column and are cross-checked against the per-episode `length` in the metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ate.data.episodes import EpisodeSet
from ate.data.formats._common import json_safe, natural_sorted, require
from ate.errors import DataError


def _column_to_numpy(column, file: Path, field: str) -> np.ndarray:
    """pyarrow column -> (rows, D) float32 without Python objects."""
    pa = require("pyarrow")
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if column.null_count:
        raise DataError(f"{file}: field '{field}' has {column.null_count} null rows")
    kind = column.type
    if pa.types.is_fixed_size_list(kind):
        values = column.flatten().to_numpy(zero_copy_only=False)
        return values.astype(np.float32, copy=False).reshape(len(column), kind.list_size)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = column.value_lengths().to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise DataError(f"{file}: field '{field}' rows have different lengths ({lengths.min()}..{lengths.max()})")
        values = column.flatten().to_numpy(zero_copy_only=False)
        return values.astype(np.float32, copy=False).reshape(len(column), int(lengths[0]) if len(lengths) else 0)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return column.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 1)
    raise DataError(f"{file}: field '{field}' has type {kind}, expected a list of numbers")


def _read_files(root: Path, files: list[Path], field: str) -> tuple[np.ndarray, np.ndarray]:
    """Read `field` and `episode_index` of every file into (N, D) float32 and (N,) int64."""
    pq = require("pyarrow.parquet")
    rows = []
    for file in files:
        try:
            rows.append(pq.ParquetFile(file).metadata.num_rows)
        except Exception as exc:
            raise DataError(f"{file}: cannot read parquet footer (truncated or corrupt?): {exc}") from exc
    total = int(sum(rows))
    if total == 0:
        raise DataError(f"{root}: empty dataset (0 frames in {len(files)} parquet files)")
    frames = None
    episode_index = np.empty(total, dtype=np.int64)
    at = 0
    for file, n in zip(files, rows):
        try:
            schema = pq.read_schema(file)
            if field not in schema.names:
                fields = [f for f in schema.names if f not in ("timestamp", "frame_index", "index", "task_index")]
                raise DataError(f"{file}: no field '{field}' (fields: {', '.join(fields)})")
            table = pq.read_table(file, columns=[field, "episode_index"])
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{file}: cannot read parquet (truncated or corrupt?): {exc}") from exc
        block = _column_to_numpy(table.column(field), file, field)
        if frames is None:
            frames = np.empty((total, block.shape[1]), dtype=np.float32)
        elif block.shape[1] != frames.shape[1]:
            raise DataError(f"{file}: field '{field}' has {block.shape[1]} dims, {files[0].name} has {frames.shape[1]}")
        frames[at : at + n] = block
        episode_index[at : at + n] = table.column("episode_index").to_numpy()
        at += n
        del table, block
    return frames, episode_index


def _episode_runs(root: Path, episode_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous runs of `episode_index` -> (episode ids (E,), exclusive ends (E,))."""
    change = np.flatnonzero(np.diff(episode_index)) + 1
    ends = np.append(change, len(episode_index)).astype(np.int64)
    ids = episode_index[ends - 1]
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        raise DataError(f"{root}: frames of episode {int(dup)} are not contiguous in the data files")
    return ids, ends


def _check_lengths(root: Path, ids: np.ndarray, ends: np.ndarray, lengths: dict[int, int]) -> None:
    got = np.diff(ends, prepend=0)
    for ep, n in zip(ids.tolist(), got.tolist()):
        if ep in lengths and lengths[ep] != n:
            raise DataError(f"{root}: episode {ep} has {n} frames in data/ but meta says length {lengths[ep]}")


def _episodes_meta_v3(root: Path) -> dict[int, dict]:
    pq = require("pyarrow.parquet")
    meta: dict[int, dict] = {}
    for file in natural_sorted((root / "meta" / "episodes").glob("*/*.parquet")):
        try:
            names = pq.read_schema(file).names
            columns = [c for c in ("episode_index", "tasks", "length") if c in names]
            rows = pq.read_table(file, columns=columns).to_pylist()  # one small row per episode
        except Exception as exc:
            raise DataError(f"{file}: cannot read episode metadata (truncated or corrupt?): {exc}") from exc
        for row in rows:
            meta[int(row["episode_index"])] = row
    return meta


def _episodes_meta_v2(root: Path) -> dict[int, dict]:
    meta: dict[int, dict] = {}
    path = root / "meta" / "episodes.jsonl"
    if not path.is_file():
        return meta
    for n, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                row = json.loads(line)
                meta[int(row["episode_index"])] = row
            except (ValueError, KeyError) as exc:
                raise DataError(f"{path}: line {n + 1} is not an episode record: {exc}") from exc
    return meta


def _attrs(row: dict | None, ep: int) -> dict:
    attrs: dict = {"episode_index": ep}
    tasks = (row or {}).get("tasks")
    if tasks:
        tasks = json_safe(list(tasks))
        attrs["tasks"] = tasks
        attrs["task"] = tasks[0]
    return attrs


def _dim_names(info: dict, field: str, dim: int) -> list[str] | None:
    """`features[field]["names"]` of info.json as D strings: a list, or a dict of one list (LeRobot v2
    writes {"motors": [...]}); None when absent, nested otherwise or of the wrong length."""
    names = (info.get("features", {}).get(field) or {}).get("names")
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and len(names) == dim and all(isinstance(n, str) for n in names):
        return names
    return None


def read_lerobot(root: Path, key: str | None = None) -> EpisodeSet:
    field = key or "action"
    info_path = root / "meta" / "info.json"
    try:
        info = json.loads(info_path.read_text())
    except Exception as exc:
        raise DataError(f"{info_path}: cannot read LeRobot info.json: {exc}") from exc
    version = str(info.get("codebase_version", "v3.0"))
    if version.startswith("v3"):
        files = natural_sorted((root / "data").glob("*/*.parquet"))
        meta = _episodes_meta_v3(root)
    elif version.startswith("v2"):
        meta = _episodes_meta_v2(root)
        if meta:
            template = info.get("data_path", "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet")
            size = int(info.get("chunks_size", 1000))
            files = [root / template.format(episode_chunk=ep // size, episode_index=ep) for ep in sorted(meta)]
            missing = [f for f in files if not f.is_file()]
            if missing:
                raise DataError(f"{missing[0]}: listed in meta/episodes.jsonl but missing")
        else:
            files = natural_sorted((root / "data").glob("*/episode_*.parquet"))
    else:
        raise DataError(f"{info_path}: unsupported LeRobot codebase_version {version!r} (v2.1 and v3.0 are read)")
    if not files:
        raise DataError(f"{root}: empty dataset (no parquet files under data/)")
    frames, episode_index = _read_files(root, files, field)
    ids, ends = _episode_runs(root, episode_index)
    _check_lengths(root, ids, ends, {ep: int(r["length"]) for ep, r in meta.items() if "length" in r})
    return EpisodeSet(
        actions=frames,
        episode_ends=ends,
        episode_names=[f"episode {int(ep)} of {root.name}" for ep in ids],
        episode_attrs=[_attrs(meta.get(int(ep)), int(ep)) for ep in ids],
        source=str(root),
        key=field,
        dim_names=_dim_names(info, field, frames.shape[1]),
    )
