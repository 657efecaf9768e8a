"""`EpisodeSet`: frames of one per-frame field (actions by default) of many episodes, concatenated along
time, plus exclusive cumulative episode ends (the Diffusion Policy replay-buffer convention)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class EpisodeSet:
    """Episodes of one per-frame field.

    Attributes:
        actions: (N, D) float32 array-like: np.ndarray, np.memmap or `LazyArray`; supports `actions[a:b]`.
            Holds whatever field was read (`key`), actions unless another key was asked for.
        episode_ends: (E,) int64 exclusive cumulative ends; episode i is frames
            `episode_ends[i-1]:episode_ends[i]` (0 for i = 0); `episode_ends[-1] == N`.
        episode_names: E names used in every error message ("ep_3.hdf5", "episode 17 of data.zarr").
        episode_attrs: E dicts of JSON-safe per-episode metadata (task, robot, success), {} when none.
        source: the file or folder read.
        key: the field read ("action", "observations/state", "data/action").
        dim_names: D names of the per-frame dimensions when the dataset stores them (LeRobot `names` in
            `meta/info.json` features), else None; never made up.
    """

    actions: Any
    episode_ends: np.ndarray
    episode_names: list[str]
    episode_attrs: list[dict] = field(default_factory=list)
    source: str = ""
    key: str = "action"
    dim_names: list[str] | None = None

    def __post_init__(self):
        self.episode_ends = np.asarray(self.episode_ends, dtype=np.int64).reshape(-1)
        if self.dim_names is not None:
            self.dim_names = [str(n) for n in self.dim_names]
        if not self.episode_attrs:
            self.episode_attrs = [{} for _ in range(len(self.episode_ends))]

    @property
    def dim(self) -> int:
        """D, the per-frame dimension."""
        return int(self.actions.shape[1])

    @property
    def num_episodes(self) -> int:
        return int(len(self.episode_ends))

    def __len__(self) -> int:
        """Number of frames N."""
        return int(self.actions.shape[0])

    @property
    def episode_starts(self) -> np.ndarray:
        """(E,) int64 first frame of each episode."""
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        """(E,) int64 number of frames of each episode."""
        return np.diff(self.episode_ends, prepend=0).astype(np.int64)

    def episode(self, i: int) -> np.ndarray:
        """Frames of episode i: (T_i, D) float32 (negative i counts from the end)."""
        i = range(self.num_episodes)[i]
        start = 0 if i == 0 else int(self.episode_ends[i - 1])
        return np.asarray(self.actions[start : int(self.episode_ends[i])], dtype=np.float32)

    def episode_of_frame(self, frame: int) -> tuple[int, int]:
        """Global frame index -> (episode, frame within that episode)."""
        ep = int(np.searchsorted(self.episode_ends, frame, side="right"))
        start = 0 if ep == 0 else int(self.episode_ends[ep - 1])
        return ep, int(frame) - start

    def __repr__(self) -> str:
        kind = type(self.actions).__name__
        return (
            f"EpisodeSet(source={self.source!r}, key={self.key!r}, frames={len(self)}, dim={self.dim}, "
            f"episodes={self.num_episodes}, storage={kind})"
        )
