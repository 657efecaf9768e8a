"""Small synthetic action datasets (no simulator, no download) for tests, smoke runs and `ate align --toy`.

Episodes are smooth joint-space motions: each dim follows a few random sinusoids around a random offset.
"source" and "target" differ in dimension and in the distribution of amplitudes / frequencies, like two
embodiments performing related motions."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def toy_episodes(num_episodes: int, length: int, dim: int, seed: int = 0, domain: str = "source") -> list[np.ndarray]:
    """Returns a list of (length, dim) float32 arrays (lengths jittered ±25 %)."""
    rng = np.random.default_rng(seed)
    freq_scale, amp_scale = (1.0, 1.0) if domain == "source" else (1.6, 0.6)
    episodes = []
    for _ in range(num_episodes):
        t_len = int(length * rng.uniform(0.75, 1.25))
        t = np.linspace(0.0, 1.0, t_len)[:, None]
        offset = rng.normal(0, 0.5, dim)
        amp = rng.uniform(0.2, 1.0, (3, dim)) * amp_scale
        freq = rng.uniform(0.5, 2.0, (3, dim)) * freq_scale
        phase = rng.uniform(0, 2 * np.pi, (3, dim))
        x = offset + sum(amp[k] * np.sin(2 * np.pi * freq[k] * t + phase[k]) for k in range(3))
        x += rng.normal(0, 0.01, x.shape)
        episodes.append(x.astype(np.float32))
    return episodes


def write_toy_npz(path, num_episodes: int, length: int, dim: int, seed: int = 0, domain: str = "source") -> Path:
    """Write episodes as one .npz with `action` (N, D) and `episode_ends` (E,), readable by load_episodes."""
    eps = toy_episodes(num_episodes, length, dim, seed, domain)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, action=np.concatenate(eps), episode_ends=np.cumsum([len(e) for e in eps]).astype(np.int64))
    return path


def write_policy_demos(root, robot: str, action_dim: int, state_dim: int, n_eps: int = 4, T: int = 20,
                       task: str = "reach", seed: int = 0) -> Path:
    """One HDF5 per episode (/action, /observations/state, attrs task/robot/success), as the bench writes them.
    Actions are a smooth deterministic function of the episode's start state, so a policy can overfit them."""
    import h5py

    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for e in range(n_eps):
        s0 = rng.uniform(-1, 1, state_dim).astype(np.float32)
        t = np.linspace(0, 1, T, dtype=np.float32)[:, None]
        w = np.linspace(0.5, 1.5, action_dim, dtype=np.float32)[None]
        act = np.sin(2 * t * w + s0[:action_dim].sum()).astype(np.float32) * (1 + 0.1 * np.arange(action_dim))
        state = (s0[None] + 0.1 * t).astype(np.float32)
        with h5py.File(root / f"ep_{e:03d}.hdf5", "w") as f:
            f["action"] = act
            f["observations/state"] = state
            f.attrs["task"] = task
            f.attrs["robot"] = robot
            f.attrs["success"] = True
    return root
