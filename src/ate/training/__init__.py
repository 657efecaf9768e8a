"""ate.training: what the VAE trainer (`ate.align.train`) and the policy trainer (`ate.policies.train`) share.

- :func:`resolve_device`: the ``--device auto|cpu|cuda`` rule, one place for both trainers.
- :func:`rank_share`: the weight that turns one rank's masked mean into its part of the global mean.
- :func:`cosine_lr_factor`: the one learning-rate schedule (linear warm-up, cosine decay), a pure function of
  the step, so a resumed run needs no scheduler state to continue exactly. It is diffusers'
  ``get_cosine_schedule_with_warmup`` (what the policy trainer's published results used), plus a floor.
"""

from __future__ import annotations

import math
import os

import torch

from ate.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto``: this process's CUDA device when torch sees one (``LOCAL_RANK`` under torchrun), else the CPU."""
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {DEVICES}, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device (use 'auto' or 'cpu')")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def cosine_lr_factor(step: int, total: int, warmup: int = 0, floor: float = 0.0) -> float:
    """The factor of the peak LR for (0-based) optimiser step ``step``: linear warm-up from 0 over ``warmup``
    steps (step/warmup, diffusers' convention), then cosine decay from 1 to ``floor`` at ``total`` steps
    (held there after)."""
    if warmup > 0 and step < warmup:
        return step / warmup
    progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def rank_share(n_local: torch.Tensor, n_global: torch.Tensor, world: int) -> torch.Tensor:
    """Weight for a rank's loss that is a mean over its own ``n_local`` valid elements: (local / global count)
    times ``world``, since DDP averages the gradients. The weighted losses then update like the mean over all
    ``n_global`` elements, however unevenly the valid elements fall across ranks."""
    return n_local * world / n_global.clamp_min(1.0)
