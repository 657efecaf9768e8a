"""Training data for the policies: (state at the window start, action chunk) pairs from one or more
datasets, each mapped into the policy action space (padding or unified slots) with its own robot's
normalisation statistics.

Episodes are read with `ate.data.load_episodes` (actions from `action_key`, states from `state_key`;
one HDF5 file per episode with `/action`, `/observations/state` and attrs `task`, `robot`, as the bench
writes them). Windows follow the `ate.data.ChunkDataset` convention: stride 1, and at an episode's end
either `pad="repeat"` (repeat the last action, `is_pad` True) or `pad="drop"`.

All arrays are normalised once and kept in memory in policy space, and a batch is one vectorised
gather (`PolicyDataset.get_batch`), so the training loop needs no DataLoader workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ate.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class PolicySource:
    """Episodes of one robot from one dataset path. actions (N, D_robot), states (N, S_robot) raw."""

    path: str
    robot: str
    actions: np.ndarray
    states: np.ndarray
    episode_ends: np.ndarray  # (E,) exclusive cumulative ends into actions/states
    tasks: list[str]  # per episode
    names: list[str]  # per episode, for error messages


def load_sources(paths, robot: str | None = None, task: str | None = None, action_key: str = "action",
                 state_key: str = "observations/state", format: str = "auto") -> list[PolicySource]:
    """Read actions and states of every dataset in `paths` and split them by robot.

    Args:
        paths: one path or a list (file, directory of per-episode files, zarr, LeRobot dir...).
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
        a_all, s_all = np.asarray(acts.actions, dtype=np.float32), np.asarray(states.actions, dtype=np.float32)
        attrs = acts.episode_attrs or [{} for _ in range(acts.num_episodes)]
        name = Path(path).stem
        robots = [str(a.get("robot") or robot or name) for a in attrs]
        tasks = [str(a.get("task") or task or name) for a in attrs]
        ends, starts = acts.episode_ends, acts.episode_starts
        for r in dict.fromkeys(robots):
            eps = [i for i, x in enumerate(robots) if x == r]
            rows = np.concatenate([np.arange(starts[i], ends[i]) for i in eps])
            out.append(PolicySource(
                str(path), r, a_all[rows], s_all[rows], np.cumsum([ends[i] - starts[i] for i in eps]),
                [tasks[i] for i in eps], [acts.episode_names[i] for i in eps],
            ))  # fmt: skip
    return out


def fit_normalizers(sources: list[PolicySource], mode: str) -> dict[str, tuple]:
    """Per robot (action Normalizer, state Normalizer) fitted on all of that robot's frames."""
    from ate.data import Normalizer

    out = {}
    for r in dict.fromkeys(s.robot for s in sources):
        acts = np.concatenate([s.actions for s in sources if s.robot == r])
        states = np.concatenate([s.states for s in sources if s.robot == r])
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


class PolicyDataset(torch.utils.data.Dataset):
    """Windows of all sources in the policy's space. `ds[i]` / `ds.get_batch(idx)` give the batch keys of
    `ate.policies.base` (action (H, D), is_pad (H,), action_mask (D,), state (S,), state_mask (S,), task)."""

    def __init__(self, policy, sources: list[PolicySource], pad: str = "repeat"):
        if pad not in ("repeat", "drop"):
            raise ValueError(f"pad must be 'repeat' or 'drop', got {pad!r}")
        c = policy.config
        self.horizon, self.pad = c.horizon, pad
        acts, states, amask, smask, tasks, ends, win = [], [], [], [], [], [], []
        self.robots = []
        self.num_dropped_episodes = 0
        offset = 0
        for src in sources:
            nrm = policy.normalizers[src.robot]
            a = torch.as_tensor(nrm["action"].normalize(src.actions), dtype=torch.float32)
            s = torch.as_tensor(nrm["state"].normalize(src.states), dtype=torch.float32)
            acts.append(policy.to_policy_space(a, src.robot))
            padded, m = policy.pad_state(s, src.robot)
            states.append(padded)
            smask.append(m)
            amask.append(policy.action_mask(src.robot)[None].expand(len(a), -1))
            self.robots.append(src.robot)
            start = 0
            for e, end in enumerate(src.episode_ends):
                n = int(end - start)
                tasks.append(torch.full((n,), policy.task_id(src.tasks[e]), dtype=torch.long))
                ends.append(torch.full((n,), offset + int(end), dtype=torch.long))
                n_win = n if pad == "repeat" else n - c.horizon + 1
                if n_win <= 0:
                    self.num_dropped_episodes += 1
                else:
                    win.append(offset + start + torch.arange(n_win))
                start = int(end)
            offset += len(a)
        if self.num_dropped_episodes:
            logger.warning("%d episodes shorter than horizon %d dropped (pad='drop')", self.num_dropped_episodes, c.horizon)
        if not win:
            raise DataError(f"no training windows of horizon {c.horizon} in {[s.path for s in sources]}")
        self.actions, self.states = torch.cat(acts), torch.cat(states)
        self.action_masks, self.state_masks = torch.cat(amask), torch.cat(smask)
        self.tasks, self.ends, self.starts = torch.cat(tasks), torch.cat(ends), torch.cat(win)

    def __len__(self) -> int:
        return len(self.starts)

    def get_batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Vectorised batch of windows `idx` (B,) long."""
        start = self.starts[idx]
        rows = start[:, None] + torch.arange(self.horizon)
        end = self.ends[start][:, None]
        is_pad = rows >= end
        rows = torch.minimum(rows, end - 1)  # repeat the last action of the episode
        return {
            "action": self.actions[rows], "is_pad": is_pad, "action_mask": self.action_masks[start],
            "state": self.states[start], "state_mask": self.state_masks[start], "task": self.tasks[start],
        }  # fmt: skip

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.get_batch(torch.tensor([i])).items()}
