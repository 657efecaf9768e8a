"""NumPy layouts.

`npz` — one `.npz` file, either
  (a) a frames array (`action`, or `actions`, or the one named by `key`) of shape (N, D) plus
      `episode_ends` (E,) exclusive cumulative ends; or
  (b) no `episode_ends`: every array is one episode (T_i, D), taken in natural name order
      (`ep_2` before `ep_10`), each named after its array.
  Layout (a) saved with `np.savez` (uncompressed) is memory-mapped in place; `np.savez_compressed`
  and layout (b) are read into RAM.

`npy` — a folder with `actions.npy` (N, D) (or `<key>.npy` / `<key>s.npy`, e.g. `state.npy`) and
  `episode_ends.npy` (E,), optional `episodes.json` {"names": [...], "attrs": [...]}. Memory-mapped with
  `np.load(mmap_mode="r")`: the fastest lazy layout for very large datasets (no decoding, page cache).
  `save_npy(eps, folder)` writes it block by block from any EpisodeSet.
"""

from __future__ import annotations

import functools
import json
import zipfile
from pathlib import Path

import numpy as np

from ate.data.episodes import EpisodeSet
from ate.data.formats._common import check_frames, json_safe, natural_key
from ate.data.lazy import LazyArray
from ate.data.validate import block_rows
from ate.errors import DataError

ENDS = "episode_ends"


def _npz_member_memmap(path: str, member: str) -> np.memmap:
    """Memory-map an uncompressed member of a zip (.npz) file: (shape, dtype) come from its .npy header."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"member {member} is compressed")
    with open(path, "rb") as fp:
        fp.seek(info.header_offset)
        local = fp.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError("bad zip local header")
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        fp.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fp)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape, fortran, dtype = read_header[version](fp)
        offset = fp.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _load_npy(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def read_npz(path: Path, key: str | None = None) -> EpisodeSet:
    source = str(path)
    try:
        npz = np.load(source, allow_pickle=False)
        names = list(npz.files)
    except Exception as exc:
        raise DataError(f"{source}: cannot open .npz (truncated or corrupt?): {exc}") from exc
    try:
        if ENDS in names:
            return _read_npz_flat(path, npz, names, key)
        return _read_npz_per_episode(path, npz, names, key)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{source}: cannot read .npz (truncated or corrupt?): {exc}") from exc
    finally:
        npz.close()


def _read_npz_flat(path: Path, npz, names: list[str], key: str | None) -> EpisodeSet:
    source = str(path)
    candidates = [key] if key else ["action", "actions"]
    field = next((c for c in candidates if c in names), None)
    if field is None:
        raise DataError(f"{source}: no array {' / '.join(candidates)} (arrays: {', '.join(names)})")
    ends = np.asarray(npz[ENDS], dtype=np.int64)
    try:  # uncompressed: stay on disk
        mm = _npz_member_memmap(source, field + ".npy")
        check_frames(mm, source, field)
        frames = LazyArray(functools.partial(_npz_member_memmap, source, field + ".npy"), mm.shape, source, field)
        del mm
    except (ValueError, KeyError):  # compressed member: read it
        arr = npz[field]
        check_frames(arr, source, field)
        frames = np.asarray(arr, dtype=np.float32)
    return EpisodeSet(
        actions=frames,
        episode_ends=ends,
        episode_names=[f"episode {i} of {path.name}" for i in range(len(ends))],
        source=source,
        key=field,
    )


def _read_npz_per_episode(path: Path, npz, names: list[str], key: str | None) -> EpisodeSet:
    source = str(path)
    if key is not None:
        raise DataError(
            f"{source}: key={key!r} given but the file has no '{ENDS}' array, so every array is read as one "
            f"episode (arrays: {', '.join(names)})"
        )
    names = sorted(names, key=natural_key)
    arrays = []
    for name in names:
        arr = npz[name]
        check_frames(arr, f"{source}: episode '{name}'", name)
        if arrays and arr.shape[1] != arrays[0].shape[1]:
            raise DataError(
                f"{source}: episode '{name}' has {arr.shape[1]} dims, '{names[0]}' has {arrays[0].shape[1]}"
            )
        if arr.shape[0] == 0:
            raise DataError(f"{source}: episode '{name}' is zero-length")
        arrays.append(np.asarray(arr, dtype=np.float32))
    if not arrays:
        raise DataError(f"{source}: empty dataset (no arrays)")
    return EpisodeSet(
        actions=np.concatenate(arrays),
        episode_ends=np.cumsum([len(a) for a in arrays]),
        episode_names=[f"episode '{n}' of {path.name}" for n in names],
        source=source,
        key="action",
    )


def read_npy_dir(path: Path, key: str | None = None) -> EpisodeSet:
    source = str(path)
    stem = key or "action"
    candidates = [path / f"{stem}.npy", path / f"{stem}s.npy"]
    file = next((c for c in candidates if c.is_file()), None)
    if file is None:
        raise DataError(f"{source}: no {' / '.join(c.name for c in candidates)}")
    try:
        mm = _load_npy(str(file))
        ends = np.asarray(np.load(path / f"{ENDS}.npy"), dtype=np.int64)
    except Exception as exc:
        raise DataError(f"{source}: cannot read {file.name} / {ENDS}.npy (truncated or corrupt?): {exc}") from exc
    check_frames(mm, str(file), file.stem)
    names = [f"episode {i} of {path.name}" for i in range(len(ends))]
    attrs: list[dict] = []
    meta = path / "episodes.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        names = info.get("names", names)
        attrs = info.get("attrs", [])
    return EpisodeSet(
        actions=LazyArray(functools.partial(_load_npy, str(file)), mm.shape, str(file), file.stem),
        episode_ends=ends,
        episode_names=names,
        episode_attrs=attrs,
        source=source,
        key=file.stem,
    )


def save_npy(eps: EpisodeSet, folder: str | Path, name: str = "actions") -> Path:
    """Write `eps` as the `npy` layout (`<name>.npy`, `episode_ends.npy`, `episodes.json`), block by block.

    Writing a second field (e.g. `name="state"`) into the same folder requires equal episode_ends.
    Returns the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ends_file = folder / f"{ENDS}.npy"
    if ends_file.is_file():
        old = np.load(ends_file)
        if not np.array_equal(old, eps.episode_ends):
            raise DataError(f"{folder}: existing {ENDS}.npy differs from the episode_ends of {eps.source}")
    out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float32, shape=(len(eps), eps.dim))
    step = block_rows(eps.dim)
    for a in range(0, len(eps), step):
        b = min(len(eps), a + step)
        out[a:b] = np.asarray(eps.actions[a:b], dtype=np.float32)
    out.flush()
    del out
    np.save(ends_file, eps.episode_ends.astype(np.int64))
    meta = {"names": list(eps.episode_names), "attrs": json_safe(list(eps.episode_attrs)), "source": eps.source}
    (folder / "episodes.json").write_text(json.dumps(meta))
    return folder
