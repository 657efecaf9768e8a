"""Tiny synthetic datasets and a stand-in encoder shared by the policy tests (holds no tests itself)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn


def write_demos(root: Path, robot: str, action_dim: int, state_dim: int, n_eps: int = 4, T: int = 20,
                task: str = "reach", seed: int = 0) -> Path:
    """`ate.bench.synthetic.write_policy_demos` (one HDF5 per episode, actions a smooth function of the state)."""
    from ate.bench.synthetic import write_policy_demos

    return write_policy_demos(root, robot, action_dim, state_dim, n_eps, T, task, seed)


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


def as_if_died_after(run: Path, step: int, final: int) -> None:
    """Make a finished training run look as if it died right after its checkpoint at `step`: drop the
    checkpoint of step `final` and point `last` at `step`'s."""
    import shutil

    ck = Path(run) / "checkpoints"
    shutil.rmtree(ck / f"{final:06d}")
    (ck / "last").unlink()
    (ck / "last").symlink_to(f"{step:06d}")
