"""Tiny synthetic datasets and a stand-in encoder shared by the policy tests (holds no tests itself)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn


def write_demos(root: Path, robot: str, action_dim: int, state_dim: int, n_eps: int = 4, T: int = 20,
                task: str = "reach", seed: int = 0) -> Path:
    """One HDF5 per episode (/action, /observations/state, attrs task/robot), like the bench writes them.
    Actions are a smooth deterministic function of the episode's start state, so a policy can overfit."""
    rng = np.random.default_rng(seed)
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


class StandInVAE:
    """Small random encoder with the ActionVAE encode contract and an AlignedVAE-like bundle shape."""

    def __init__(self, action_dim: int, horizon: int, normalizer, latent: int = 8, seed: int = 0):
        torch.manual_seed(seed)

        class Enc(nn.Module):
            def __init__(self):
                super().__init__()
                self.config = type("C", (), {"action_dim": action_dim, "horizon": horizon})()
                self.net = nn.Sequential(nn.Flatten(), nn.Linear(action_dim * horizon, 32), nn.Tanh(), nn.Linear(32, 2 * latent))

            def encode(self, a):
                mu, logvar = self.net(a).chunk(2, dim=-1)
                return mu, logvar.clamp(-6, 2)

        self.vae = Enc()
        self.config = self.vae.config
        self.normalizer = normalizer
        self.chunk = {"horizon": horizon, "pad": "repeat"}
