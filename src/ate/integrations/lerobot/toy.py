"""A small state-only LeRobotDataset written with LeRobot's own ``LeRobotDataset.create`` (offline).

For trying the plugin and for the test tier: smooth joint-space reaching motions, no cameras (so no video
encoding), ``observation.state`` (D), ``observation.environment_state`` (goal, 3) and ``action`` (D). The
motion family differs by ``style`` so a "source" and a "target" dataset can have different action
dimensions *and* behaviour, as in ATE's cross-embodiment setting.

    python -m ate.integrations.lerobot.toy ROOT --episodes 6 --length 40 --action-dim 4 --style target
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def make_toy_dataset(root: str | Path, *, repo_id: str = "local/ate_toy", episodes: int = 6, length: int = 40,
                     action_dim: int = 4, style: str = "target", fps: int = 10, seed: int = 0):
    """Write a LeRobotDataset (v3.0) under ``root`` (must not exist) and return it (finalised).

    Actions are absolute joint targets that ease from a random start toward a random goal along a
    per-episode curved path; the state lags one step behind the action.
    """
    from lerobot.datasets import LeRobotDataset

    rng = np.random.default_rng(seed)
    names = [f"joint_{i}" for i in range(action_dim)]
    features = {
        "observation.state": {"dtype": "float32", "shape": (action_dim,), "names": names},
        "observation.environment_state": {"dtype": "float32", "shape": (3,), "names": ["gx", "gy", "gz"]},
        "action": {"dtype": "float32", "shape": (action_dim,), "names": names},
    }
    ds = LeRobotDataset.create(repo_id=repo_id, fps=fps, features=features, root=root, use_videos=False,
                               robot_type=f"toy_{style}")
    phase = np.linspace(0.0, 1.0, length)[:, None]
    for _ in range(episodes):
        start = rng.uniform(-1, 1, action_dim)
        goal = rng.uniform(-1, 1, action_dim)
        bend = rng.uniform(-0.5, 0.5, action_dim)
        ease = phase**2 * (3 - 2 * phase) if style == "target" else phase
        path = start + (goal - start) * ease + bend * np.sin(np.pi * phase) * (2.0 if style == "source" else 1.0)
        action = (path + rng.normal(0, 0.01, path.shape)).astype(np.float32)
        state = np.vstack([action[:1], action[:-1]]).astype(np.float32)
        env_state = np.resize(goal, 3).astype(np.float32)
        for t in range(length):
            ds.add_frame({"observation.state": state[t], "observation.environment_state": env_state,
                          "action": action[t], "task": f"reach ({style})"})
        ds.save_episode()
    ds.finalize()
    return ds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--repo-id", default="local/ate_toy")
    p.add_argument("--episodes", type=int, default=6)
    p.add_argument("--length", type=int, default=40)
    p.add_argument("--action-dim", type=int, default=4)
    p.add_argument("--style", choices=("source", "target"), default="target")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    ds = make_toy_dataset(a.root, repo_id=a.repo_id, episodes=a.episodes, length=a.length,
                          action_dim=a.action_dim, style=a.style, seed=a.seed)
    print(f"wrote {ds.meta.total_episodes} episodes, {ds.meta.total_frames} frames to {a.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
