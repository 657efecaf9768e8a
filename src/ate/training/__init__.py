"""ate.training: what the VAE trainer (`ate.align.train`) and the policy trainer (`ate.policies.train`) share.

- :func:`resolve_device`: the ``--device auto|cpu|cuda`` rule, one place for both trainers.
- :func:`rank_share`: the weight that turns one rank's masked mean into its part of the global mean.
- :func:`cosine_lr_factor`: the one learning-rate schedule (linear warm-up, cosine decay), a pure function of
  the step, so a resumed run needs no scheduler state to continue exactly. It is diffusers'
  ``get_cosine_schedule_with_warmup`` (what the policy trainer's published results used), plus a floor.
- :class:`MetricsLog`: ``metrics.jsonl`` (+ optional wandb / tensorboard); on resume it drops the rows written
  after the checkpoint it resumes from, so a killed and resumed run has the rows of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

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


def _step_of(line: str) -> float:
    """Step of a metrics line; a line cut short by a killed process (or blank) counts as past any checkpoint."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def log_backend(log_to: str):
    """The --log-to package, or one line saying which package and extra to install."""
    from ate._optional import require

    return require({"wandb": "wandb", "tensorboard": "tensorboard"}[log_to], "log", f"--log-to {log_to}")


class MetricsLog:
    """``<out_dir>/metrics.jsonl``, one JSON row per log step (+ wandb / tensorboard with ``log_to``).

    ``resume_step``: the step of the checkpoint the run starts from (0: a fresh start empties the file). Rows
    after it, written before the process was killed, are dropped: they are about to be written again.
    Disabled (``enabled=False``, e.g. on ranks other than 0) it does nothing."""

    def __init__(self, out_dir: Path, resume_step: int = 0, enabled: bool = True, log_to: str = "none",
                 project: str = "ate", config: dict | None = None):
        self.path, self.enabled = Path(out_dir) / "metrics.jsonl", enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            keep = [ln for ln in self.path.read_text().splitlines() if _step_of(ln) <= resume_step] \
                if resume_step and self.path.exists() else []
            self.path.write_text("".join(ln + "\n" for ln in keep))
        self.backend = None
        if enabled and log_to == "wandb":
            wandb = log_backend(log_to)
            self.backend = wandb.init(project=project, config=config or {}, dir=str(out_dir))
        elif enabled and log_to == "tensorboard":
            log_backend(log_to)
            from torch.utils.tensorboard import SummaryWriter

            self.backend = SummaryWriter(str(Path(out_dir) / "tb"))

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.backend is not None and hasattr(self.backend, "log"):
            self.backend.log(row, step=row["step"])
        elif self.backend is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.backend.add_scalar(k, v, row["step"])
