"""`ChunkDataset`: windows of H consecutive frames of one episode (stride 1), for VAE and policy training.

Windows are never materialised. With per-episode window counts `c_e` and their cumulative sum `C`,
window i lies in episode `e = searchsorted(C, i, "right")` at start `i - C[e-1]`.

Pad modes at the episode end:
- "repeat" (LeRobot): every frame of an episode starts a window; steps past the last frame repeat the
  last action and are flagged in `is_pad`. An episode of T frames gives T windows.
- "drop" (reference ATE trainer): only full windows, T - H + 1 per episode; episodes shorter than H give
  none and are counted in `num_dropped_episodes` (with a warning).

Policy training can pair the action windows with other per-frame fields (states) of the same episodes:
`extras={"state": state_eps}` adds `item["state"]` = the field at the window's first frame.
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ate.data.episodes import EpisodeSet
from ate.data.lazy import take_rows
from ate.data.normalize import Normalizer
from ate.errors import DataError, ShapeMismatchError

PAD_MODES = ("repeat", "drop")


def check_aligned(reference: EpisodeSet, other: EpisodeSet, name: str = "extra") -> None:
    """Raise DataError unless `other` has exactly the episode boundaries of `reference`."""
    same = np.array_equal(reference.episode_ends, other.episode_ends)
    if same:
        return
    n_ref, n_oth = reference.num_episodes, other.num_episodes
    if n_ref != n_oth:
        detail = f"{n_ref} vs {n_oth} episodes"
    else:
        i = int(np.flatnonzero(reference.episode_ends != other.episode_ends)[0])
        detail = (
            f"first difference at {reference.episode_names[i]}: ends at frame {int(reference.episode_ends[i])} "
            f"in '{reference.key}' but {int(other.episode_ends[i])} in '{other.key}'"
        )
    raise DataError(
        f"'{name}' ({other.source}, field '{other.key}') does not share the episodes of {reference.source} "
        f"(field '{reference.key}'): {detail}"
    )


def split_episodes(num_episodes: int, val_ratio: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random split of episode indices by episode (as DP's `get_val_mask`): (train_idx, val_idx), sorted int64.

    Few-demo rule: val gets floor(E * val_ratio) episodes, never rounded up, so with fewer than
    1 / val_ratio episodes (10 at 0.1) nothing is held out and every demo trains. (DP holds out at least
    one episode, which with 2 demos is half the data.) The training split always keeps >= 1 episode.
    """
    if num_episodes <= 0:
        raise DataError(f"cannot split {num_episodes} episodes")
    if not 0 <= val_ratio < 1:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    n_val = num_val_episodes(num_episodes, val_ratio)
    perm = np.random.default_rng(seed).permutation(num_episodes)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def num_val_episodes(num_episodes: int, val_ratio: float) -> int:
    """floor(E * val_ratio), the number of held-out episodes (`split_episodes`); the epsilon absorbs float
    products such as 0.29 * 100 = 28.999..."""
    return int(math.floor(num_episodes * max(val_ratio, 0.0) + 1e-9)) if num_episodes > 1 else 0


def window_counts(lengths, horizon: int, pad: str) -> np.ndarray:
    """Windows per episode of `lengths` frames (the pad rule of the module docstring): T under "repeat",
    max(T - H + 1, 0) under "drop". (E,) int64."""
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    lengths = np.asarray(lengths, dtype=np.int64)
    return lengths.copy() if pad == "repeat" else np.maximum(lengths - int(horizon) + 1, 0)


def wrap_indices(i, n: int, message) -> np.ndarray:
    """Indices into a sequence of length n as a flat int64 array, negatives counted from the end (as Python
    indexing); otherwise IndexError(message()), `message` called only then (no formatting per batch)."""
    idx = np.asarray(i, dtype=np.int64).reshape(-1)
    idx = np.where(idx < 0, idx + n, idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(message())
    return idx


class ChunkDataset(Dataset):
    """Action chunks of H steps.

    Args:
        eps: the action episodes (N, D).
        horizon: H, steps per window.
        normalizer: applied to the actions (None: raw units).
        pad: "repeat" or "drop" (see module docstring).
        episodes: indices of the episodes to use (a split from `split_episodes`); None: all.
        extras: name -> EpisodeSet with the same episode_ends (e.g. states); item[name] is that field at
            the window's first frame, (S,) float32.
        extra_normalizers: name -> Normalizer for an extra.
        attr_keys: per-episode attrs (e.g. ("task",)) copied into each item as plain Python values.

    Items: `ds[i]` -> {"action": float32 (H, D), "is_pad": bool (H,), "episode_index": long (),
    "frame_index": long () (start frame within the episode), plus extras / attrs}. `ds[list_or_array]`
    returns the same keys batched with a leading B, gathered in one vectorised read. A plain
    `DataLoader(ds, batch_size=B)` uses that read too (through `__getitems__`); fastest of all is
    `DataLoader(ds, sampler=BatchSampler(...), batch_size=None)`, which skips the per-sample collate.
    """

    def __init__(
        self,
        eps: EpisodeSet,
        horizon: int,
        normalizer: Normalizer | None = None,
        pad: str = "repeat",
        episodes: Sequence[int] | np.ndarray | None = None,
        extras: Mapping[str, EpisodeSet] | None = None,
        extra_normalizers: Mapping[str, Normalizer] | None = None,
        attr_keys: Sequence[str] = (),
    ):
        if pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if normalizer is not None and normalizer.dim != eps.dim:
            raise ShapeMismatchError(
                f"normalizer has {normalizer.dim} dims, {eps.source} field '{eps.key}' has {eps.dim}"
            )
        self.eps = eps
        self.horizon = int(horizon)
        self.normalizer = normalizer
        self.pad = pad
        self.extras = dict(extras or {})
        self.extra_normalizers = dict(extra_normalizers or {})
        self.attr_keys = tuple(attr_keys)
        for name, other in self.extras.items():
            check_aligned(eps, other, name)
        for name, norm in self.extra_normalizers.items():
            if name not in self.extras:
                raise ValueError(f"extra_normalizers['{name}'] given but no extra named '{name}'")
            if norm.dim != self.extras[name].dim:
                raise ShapeMismatchError(
                    f"extra_normalizers['{name}'] has {norm.dim} dims, the field has {self.extras[name].dim}"
                )

        all_eps = np.arange(eps.num_episodes)
        chosen = all_eps if episodes is None else np.asarray(episodes, dtype=np.int64).reshape(-1)
        if chosen.size and (chosen.min() < 0 or chosen.max() >= eps.num_episodes):
            raise DataError(f"{eps.source}: episode index out of range 0..{eps.num_episodes - 1} in episodes=")
        lengths = eps.episode_lengths[chosen]
        counts = window_counts(lengths, self.horizon, pad)
        self.num_dropped_episodes = int((counts == 0).sum())
        if self.num_dropped_episodes:
            short = [eps.episode_names[e] for e in chosen[counts == 0][:3]]
            warnings.warn(
                f"{eps.source}: {self.num_dropped_episodes} of {len(chosen)} episodes are shorter than horizon "
                f"{self.horizon} and give no window under pad='drop' (e.g. {', '.join(short)})",
                stacklevel=2,
            )
        if not counts.sum():
            raise DataError(
                f"{eps.source}: no windows of horizon {self.horizon} with pad={pad!r} in {len(chosen)} episodes"
                + (f" (longest has {int(lengths.max())} frames)" if len(chosen) else "")
            )
        self.episode_indices = chosen  # (E',) episodes in use, global indices into eps
        self._counts = counts.astype(np.int64)
        self._cum = np.cumsum(self._counts)  # (E',) exclusive ends of each episode's windows
        self._starts = eps.episode_starts[chosen]  # (E',) first global frame
        self._ends = eps.episode_ends[chosen]  # (E',) exclusive last global frame
        self._steps = np.arange(self.horizon, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._cum[-1]) if len(self._cum) else 0

    def window_index(self, i):
        """Window i -> (episode, start): global episode index into `eps` and start frame within it.

        Accepts an int (returns ints) or an int array (returns two int64 arrays).
        """
        scalar = np.ndim(i) == 0
        n = len(self)
        idx = wrap_indices(i, n, lambda: f"window index {i} out of range for {n} windows")
        local = np.searchsorted(self._cum, idx, side="right")
        start = idx - (self._cum[local] - self._counts[local])
        episode = self.episode_indices[local]
        if scalar:
            return int(episode[0]), int(start[0])
        return episode, start

    def attrs(self, i: int) -> dict:
        """Per-episode attrs (task, robot, ...) of window i."""
        return self.eps.episode_attrs[self.window_index(i)[0]]

    def _rows(self, idx: np.ndarray):
        local = np.searchsorted(self._cum, idx, side="right")
        start = idx - (self._cum[local] - self._counts[local])
        first = self._starts[local] + start  # (B,) global first frame
        rows = first[:, None] + self._steps  # (B, H)
        last = self._ends[local] - 1
        is_pad = rows > last[:, None]
        return local, start, first, np.minimum(rows, last[:, None]), is_pad

    def _gather(self, idx: np.ndarray) -> dict:
        n = len(self)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"window index out of range for {n} windows")
        local, start, first, rows, is_pad = self._rows(idx)
        b = len(idx)
        if b == 1:  # one contiguous read, then repeat the last frame: cheapest path for lazy storage
            valid = int((~is_pad[0]).sum())
            frames = np.asarray(self.eps.actions[int(first[0]) : int(first[0]) + valid], dtype=np.float32)
            action = frames[np.minimum(self._steps, valid - 1)][None]
        else:
            action = take_rows(self.eps.actions, rows.reshape(-1)).reshape(b, self.horizon, -1)
        if self.normalizer is not None:
            action = self.normalizer.normalize(action)
        out = {
            "action": torch.from_numpy(np.ascontiguousarray(action, dtype=np.float32)),
            "is_pad": torch.from_numpy(is_pad),
            "episode_index": torch.from_numpy(self.episode_indices[local]),
            "frame_index": torch.from_numpy(start.astype(np.int64)),
        }
        for name, other in self.extras.items():
            value = take_rows(other.actions, first)
            if name in self.extra_normalizers:
                value = self.extra_normalizers[name].normalize(value)
            out[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        for key in self.attr_keys:
            out[key] = [self.eps.episode_attrs[e].get(key) for e in self.episode_indices[local]]
        return out

    def __getitem__(self, i):
        if np.ndim(i) == 0:
            out = self._gather(np.array([int(i)], dtype=np.int64))
            return {k: v[0] for k, v in out.items()}
        return self._gather(np.asarray(i, dtype=np.int64).reshape(-1))

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Batched fetch used by DataLoader(batch_size=B): one vectorised read, then split per sample."""
        out = self._gather(np.asarray(indices, dtype=np.int64).reshape(-1))
        tensors = {k: v.unbind(0) if isinstance(v, torch.Tensor) else v for k, v in out.items()}
        return [{k: v[j] for k, v in tensors.items()} for j in range(len(indices))]

    def __repr__(self) -> str:
        return (
            f"ChunkDataset(windows={len(self)}, horizon={self.horizon}, pad={self.pad!r}, "
            f"episodes={len(self.episode_indices)}, dropped={self.num_dropped_episodes}, source={self.eps.source!r})"
        )
