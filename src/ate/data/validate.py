"""Checks on a freshly read `EpisodeSet`. Every failure is a DataError naming the file / episode / field.

Values are checked block by block (about 16 MB of float32 at a time), so a 10-million-frame memmap or
zarr array is never read into memory whole.
"""

from __future__ import annotations

import numpy as np

from ate.data.episodes import EpisodeSet
from ate.errors import DataError

BLOCK_ELEMS = 1 << 22  # elements per block read during validation / fitting (16 MiB of float32)


def block_rows(dim: int, block_elems: int = BLOCK_ELEMS) -> int:
    """Rows per block so one block holds about `block_elems` values."""
    return max(1, block_elems // max(1, dim))


def check_structure(eps: EpisodeSet) -> None:
    """Shape and episode-boundary checks (cheap, reads no frame values)."""
    where = f"{eps.source}: field '{eps.key}'"
    shape = tuple(getattr(eps.actions, "shape", ()))
    if len(shape) != 2:
        raise DataError(f"{where} must be 2-D (frames, dims), got shape {shape}")
    n, d = shape
    if n == 0 or eps.num_episodes == 0:
        raise DataError(f"{where}: empty dataset (frames={n}, episodes={eps.num_episodes})")
    if d == 0:
        raise DataError(f"{where} has 0 dims per frame (shape {shape})")
    ends = eps.episode_ends
    if len(eps.episode_attrs) != len(ends):
        raise DataError(f"{where}: {len(eps.episode_attrs)} episode attrs for {len(ends)} episodes")
    if len(eps.episode_names) != len(ends):
        raise DataError(f"{where}: {len(eps.episode_names)} episode names for {len(ends)} episodes")
    lengths = np.diff(ends, prepend=0)
    bad = np.flatnonzero(lengths <= 0)
    if bad.size:
        i = int(bad[0])
        kind = "zero-length" if lengths[i] == 0 else "negative-length (episode_ends not increasing)"
        raise DataError(
            f"{eps.source}: {eps.episode_names[i]} is {kind}: episode_ends[{i}]={int(ends[i])}"
            + (f" after episode_ends[{i - 1}]={int(ends[i - 1])}" if i else "")
        )
    if int(ends[-1]) != n:
        raise DataError(f"{where}: episode_ends[-1]={int(ends[-1])} does not match the frame count {n}")


def check_finite(eps: EpisodeSet, block_elems: int = BLOCK_ELEMS) -> None:
    """Raise DataError at the first NaN / Inf, naming the episode, field and frame within the episode."""
    n = len(eps)
    step = block_rows(eps.dim, block_elems)
    for a in range(0, n, step):
        block = np.asarray(eps.actions[a : min(n, a + step)])
        if not np.issubdtype(block.dtype, np.number):
            raise DataError(f"{eps.source}: field '{eps.key}' is not numeric (dtype {block.dtype})")
        finite = np.isfinite(block)
        if finite.all():
            continue
        row, col = np.argwhere(~finite)[0]
        ep, frame = eps.episode_of_frame(a + int(row))
        value = block[row, col]
        raise DataError(
            f"{eps.source}: {eps.episode_names[ep]}: field '{eps.key}' has {value} at frame {frame} "
            f"(dim {int(col)}), the first non-finite value"
        )


def validate_episodes(eps: EpisodeSet, finite: bool = True, block_elems: int = BLOCK_ELEMS) -> EpisodeSet:
    """Run every check; returns `eps` for chaining."""
    check_structure(eps)
    if finite:
        check_finite(eps, block_elems)
    return eps
