"""Training data for the policies: (state at the window start, action chunk) pairs from one or more
datasets, each mapped into the policy action space (padding or unified slots) with its own robot's
normalisation statistics.

Episodes are read with `ate.data.load_episodes` (actions from `action_key`, states from `state_key`;
one HDF5 file per episode with `/action`, `/observations/state` and attrs `task`, `robot`, as the bench
writes them). A `PolicySource` is the episodes of one robot in one dataset: the dataset's two
`EpisodeSet`s plus the indices of that robot's episodes.

Windows are `ate.data.ChunkDataset`'s (one per source: stride 1, and at an episode's end either
`pad="repeat"` (repeat the last action, `is_pad` True) or `pad="drop"`), so frames stay in the storage
`load_episodes` gives: memory-mapped for npy folders, uncompressed npz and zarr, in RAM for HDF5 /
LeRobot. `PolicyDataset.get_batch` reads a batch with one vectorised gather per source, normalises it
with the robot's statistics and maps it into the policy space; the training loop needs no DataLoader
workers.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ate.data.chunks import PAD_MODES, ChunkDataset, window_counts, wrap_indices
from ate.data.episodes import EpisodeSet
from ate.data.lazy import take_rows
from ate.errors import DataError, ShapeMismatchError

logger = logging.getLogger(__name__)


class Frames:
    """Read-only (N, D) float32 view of row ranges of one or more arrays, concatenated without copying.

    `segments`: (array, start, stop) triples; the view is array[start:stop] of each, in order. `frames[a:b]`
    reads only the segments it touches, `frames[i]` one row, `frames[rows]` / `take_rows(rows)` a gather,
    `np.asarray(frames)` everything. Streaming readers (`Normalizer.fit`) see the same float32 values as
    they would on the concatenated array.
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, segments):
        self.segments = [(a, int(s), int(e)) for a, s, e in segments if int(e) > int(s)]
        if not self.segments:
            raise DataError("no frames (empty selection of episodes)")
        dims = {int(a.shape[1]) for a, _, _ in self.segments}
        if len(dims) > 1:
            raise ShapeMismatchError(f"cannot concatenate frames of {sorted(dims)} dims")
        self._lengths = np.asarray([e - s for _, s, e in self.segments], dtype=np.int64)
        self._ends = np.cumsum(self._lengths)
        self._firsts = np.asarray([s for _, s, _ in self.segments], dtype=np.int64)
        self.shape = (int(self._ends[-1]), dims.pop())

    @classmethod
    def of_episodes(cls, eps: EpisodeSet, episodes: np.ndarray):
        """Frames of `episodes` (sorted indices) of `eps`: `eps.actions` itself when they are all of it,
        else a view with one segment per run of consecutive episodes."""
        starts, ends = eps.episode_starts[episodes], eps.episode_ends[episodes]
        if len(episodes) == eps.num_episodes and np.array_equal(episodes, np.arange(eps.num_episodes)):
            return eps.actions
        cut = np.flatnonzero(starts[1:] != ends[:-1]) + 1
        first, last = np.concatenate([[0], cut]), np.concatenate([cut - 1, [len(episodes) - 1]])
        return cls((eps.actions, starts[i], ends[j]) for i, j in zip(first, last))

    @classmethod
    def concat(cls, arrays):
        """One view of several (N_i, D) array-likes (or Frames) in order; a single one is returned as is."""
        arrays = list(arrays)
        if len(arrays) == 1:
            return arrays[0]
        return cls(seg for a in arrays for seg in (a.segments if isinstance(a, Frames) else [(a, 0, len(a))]))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Frames(shape={self.shape}, segments={len(self.segments)})"

    def take_rows(self, rows) -> np.ndarray:
        """Gather rows by index (any order, repeats allowed): (K,) -> (K, D) float32."""
        n = len(self)
        rows = wrap_indices(rows, n, lambda: f"row index out of range for {n} frames")
        seg = np.searchsorted(self._ends, rows, side="right")
        src_rows = self._firsts[seg] + rows - (self._ends - self._lengths)[seg]  # row within the segment's array
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        by_array: dict[int, tuple] = {}  # one gather per distinct array
        for i, (a, _, _) in enumerate(self.segments):
            by_array.setdefault(id(a), (a, []))[1].append(i)
        for a, segs in by_array.values():
            sel = np.flatnonzero(np.isin(seg, segs))
            if sel.size:
                out[sel] = take_rows(a, src_rows[sel])
        return out

    def __getitem__(self, index):
        if isinstance(index, slice):
            a, b, step = index.indices(len(self))
            if step != 1:
                return self.take_rows(np.arange(a, b, step))
            parts, begin = [], 0
            for (arr, s, _), end in zip(self.segments, self._ends):
                lo, hi = max(a, begin), min(b, int(end))
                if lo < hi:
                    parts.append(np.asarray(arr[s + lo - begin : s + hi - begin], dtype=np.float32))
                begin = int(end)
            if not parts:
                return np.empty((0, self.shape[1]), dtype=np.float32)
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        if np.ndim(index) == 0:
            return self.take_rows([int(index)])[0]
        return self.take_rows(index)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


@dataclass
class PolicySource:
    """Episodes of one robot from one dataset path.

    action_eps / state_eps: the dataset's action and state fields (all its episodes, shared by the sources
    of its robots; storage as `load_episodes` gives it), `episodes`: this robot's episodes, sorted indices
    into them. Derived: `actions` (N, D_robot) and `states` (N, S_robot), this robot's raw frames as lazy
    array-likes (`eps.actions` itself, or a `Frames` view), and `episode_ends` (E,) exclusive cumulative
    ends into them.
    """

    path: str
    robot: str
    action_eps: EpisodeSet
    state_eps: EpisodeSet
    episodes: np.ndarray
    tasks: list[str]  # per episode
    names: list[str]  # per episode, for error messages
    actions: object = field(init=False, repr=False)
    states: object = field(init=False, repr=False)
    episode_ends: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.episodes = np.asarray(self.episodes, dtype=np.int64).reshape(-1)
        self.episode_ends = np.cumsum(self.action_eps.episode_lengths[self.episodes])
        self.actions = Frames.of_episodes(self.action_eps, self.episodes)
        self.states = Frames.of_episodes(self.state_eps, self.episodes)


def load_sources(paths, robot: str | None = None, task: str | None = None, action_key: str = "action",
                 state_key: str = "observations/state", format: str = "auto") -> list[PolicySource]:
    """Open actions and states of every dataset in `paths` and split them by robot (nothing is copied:
    lazy formats stay on disk).

    Args:
        paths: one path or a list (file, directory of per-episode files, zarr, npy folder, LeRobot dir...).
        robot / task: fallbacks when episodes carry no `robot` / `task` attribute (default: the path's name).
        action_key / state_key: per-frame fields to read.
    Returns:
        one PolicySource per (path, robot).
    """
    from ate.data import load_episodes

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise DataError("no dataset paths given")
    out = []
    for path in paths:
        acts = load_episodes(path, format=format, key=action_key)
        states = load_episodes(path, format=format, key=state_key)
        if not np.array_equal(acts.episode_ends, states.episode_ends):
            raise DataError(f"{path}: {action_key!r} and {state_key!r} have different episode lengths")
        attrs = acts.episode_attrs or [{} for _ in range(acts.num_episodes)]
        name = Path(path).stem
        robots = [str(a.get("robot") or robot or name) for a in attrs]
        tasks = [str(a.get("task") or task or name) for a in attrs]
        for r in dict.fromkeys(robots):
            eps = [i for i, x in enumerate(robots) if x == r]
            out.append(PolicySource(str(path), r, acts, states, np.asarray(eps, dtype=np.int64),
                                    [tasks[i] for i in eps], [acts.episode_names[i] for i in eps]))
    return out


def fit_normalizers(sources: list[PolicySource], mode: str) -> dict[str, tuple]:
    """Per robot (action Normalizer, state Normalizer) fitted on all of that robot's frames (one streaming
    pass over the sources' frames, in order)."""
    from ate.data import Normalizer

    out = {}
    for r in dict.fromkeys(s.robot for s in sources):
        acts = Frames.concat(s.actions for s in sources if s.robot == r)
        states = Frames.concat(s.states for s in sources if s.robot == r)
        out[r] = (Normalizer.fit(acts, mode=mode), Normalizer.fit(states, mode=mode))
    return out


def prepare_policy(policy, sources: list[PolicySource], action_normalizers: dict | None = None, refit: bool = False) -> None:
    """Register the sources' robots and tasks with the policy.

    A robot the policy does not know gets normalisers fitted on its data (or the one in
    `action_normalizers[robot]`); a known robot keeps the policy's statistics (the space it was
    trained in) unless `refit` or an explicit normaliser is given.
    """
    action_normalizers = action_normalizers or {}
    fitted = fit_normalizers(sources, policy.config.normalization)
    for r, (a_norm, s_norm) in fitted.items():
        known = r in policy.normalizers
        if r in action_normalizers:
            a_norm = action_normalizers[r]
            s_norm = policy.normalizers[r]["state"] if known and not refit else s_norm
        elif known and not refit:
            a_norm, s_norm = policy.normalizers[r]["action"], policy.normalizers[r]["state"]
        policy.add_robot(r, a_norm, s_norm)
    for s in sources:
        for t in s.tasks:
            policy.add_task(t)


@dataclass
class _Part:
    """One source's windows and where its robot sits in the policy space."""

    chunks: ChunkDataset  # normalised action windows + normalised state at the window start
    action_index: np.ndarray | slice  # (D_robot,) into the policy action space (a slice when contiguous)
    state_dim: int  # S_robot
    task_of_episode: np.ndarray  # (E_dataset,) task id of each episode of chunks.eps


class PolicyDataset(torch.utils.data.Dataset):
    """Windows of all sources in the policy's space. `ds[i]` / `ds.get_batch(idx)` give the batch keys of
    `ate.policies.base` (action (H, D), is_pad (H,), action_mask (D,), state (S,), state_mask (S,), task).

    Window i: the sources' windows in order, each source's in `ChunkDataset` order (episode, then start).
    The robots' statistics, action index and task ids are those the policy holds at construction.
    """

    def __init__(self, policy, sources: list[PolicySource], pad: str = "repeat"):
        if pad not in PAD_MODES:
            raise ValueError(f"pad must be 'repeat' or 'drop', got {pad!r}")
        c = policy.config
        self.horizon, self.pad = c.horizon, pad
        self.action_dim, self.state_dim = c.action_dim, c.state_dim
        self.robots = []
        self.num_dropped_episodes = 0
        self._parts: list[_Part] = []
        action_masks, state_masks = [], []
        for src in sources:
            _, spec = policy.robot_spec(src.robot)
            nrm = policy.normalizers[src.robot]
            for what, eps, dim in (("action", src.action_eps, spec.action_dim), ("state", src.state_eps, spec.state_dim)):
                if eps.dim != dim:
                    raise ShapeMismatchError(f"{src.path}: field '{eps.key}' has {eps.dim} dims but the policy "
                                             f"registered robot {src.robot!r} with {what}_dim={dim}")
            self.robots.append(src.robot)
            counts = window_counts(src.action_eps.episode_lengths[src.episodes], c.horizon, pad)
            self.num_dropped_episodes += int((counts == 0).sum())
            if not counts.sum():
                continue
            with warnings.catch_warnings():  # short episodes are reported once for all sources, below
                warnings.filterwarnings("ignore", message=".*shorter than horizon", category=UserWarning)
                chunks = ChunkDataset(src.action_eps, c.horizon, normalizer=nrm["action"], pad=pad,
                                      episodes=src.episodes, extras={"state": src.state_eps},
                                      extra_normalizers={"state": nrm["state"]})
            task_of = np.zeros(src.action_eps.num_episodes, dtype=np.int64)
            task_of[src.episodes] = [policy.task_id(t) for t in src.tasks]
            index = list(spec.action_index)
            contiguous = index == list(range(index[0], index[0] + len(index)))  # padding families: the first dims
            index = slice(index[0], index[0] + len(index)) if contiguous else np.asarray(index, dtype=np.intp)
            self._parts.append(_Part(chunks, index, spec.state_dim, task_of))
            action_masks.append(policy.action_mask(src.robot).numpy())
            state_masks.append(np.arange(c.state_dim) < spec.state_dim)
        if self.num_dropped_episodes:
            logger.warning("%d episodes shorter than horizon %d dropped (pad='drop')", self.num_dropped_episodes, c.horizon)
        if not self._parts:
            raise DataError(f"no training windows of horizon {c.horizon} (pad={pad!r}) in {[s.path for s in sources]}")
        self._action_masks, self._state_masks = np.stack(action_masks), np.stack(state_masks)  # (P, D), (P, S) bool
        self._sizes = np.array([len(p.chunks) for p in self._parts], dtype=np.int64)
        self._cum = np.cumsum(self._sizes)  # exclusive ends of each part's windows
        self._steps = np.arange(self.horizon, dtype=np.intp)

    def __len__(self) -> int:
        return int(self._cum[-1])

    def get_batch(self, idx) -> dict[str, torch.Tensor]:
        """Vectorised batch of windows `idx` (B,) long (tensor, array or list; negative counts from the end):
        one `ChunkDataset` read per source in the batch (normalised frames), written into policy space."""
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64).reshape(-1)
        n, b, h = len(self), len(idx), self.horizon
        idx = np.where(idx < 0, idx + n, idx)
        if b and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"window index out of range for {n} windows")
        action = np.zeros((b, h, self.action_dim), dtype=np.float32)
        state = np.zeros((b, self.state_dim), dtype=np.float32)
        is_pad = np.empty((b, h), dtype=bool)
        task = np.empty(b, dtype=np.int64)
        if len(self._parts) == 1:
            which, groups = np.zeros(b, dtype=np.intp), [(0, slice(None), idx)]
        else:  # a loop over the sources in the batch, not over its windows
            which = np.searchsorted(self._cum, idx, side="right")
            offset = self._cum - self._sizes
            groups = [(p, sel, idx[sel] - offset[p]) for p in np.unique(which) for sel in [np.flatnonzero(which == p)]]
        for p, sel, local in groups:
            part = self._parts[p]
            item = part.chunks[local]  # normalised (B_p, H, D_robot) actions, (B_p, S_robot) states, is_pad
            if isinstance(part.action_index, slice) or isinstance(sel, slice):
                action[sel, :, part.action_index] = item["action"].numpy()
            else:  # unified slots of a batch's share: broadcast (B_p, 1, 1), (1, H, 1), (1, 1, D_robot)
                action[sel[:, None, None], self._steps[None, :, None], part.action_index[None, None]] = item["action"].numpy()
            state[sel, : part.state_dim] = item["state"].numpy()
            is_pad[sel] = item["is_pad"].numpy()
            task[sel] = part.task_of_episode[item["episode_index"].numpy()]
        return {
            "action": torch.from_numpy(action), "is_pad": torch.from_numpy(is_pad),
            "action_mask": torch.from_numpy(self._action_masks[which]), "state": torch.from_numpy(state),
            "state_mask": torch.from_numpy(self._state_masks[which]), "task": torch.from_numpy(task),
        }  # fmt: skip

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.get_batch(np.array([int(i)])).items()}
