"""Aligned-VAE checkpoints: weights + VAE config + normalisation stats + chunk definition + prior summary.

``model.safetensors`` holds the VAE weights and, under ``prior.*``, the prior summary tensors;
``config.json`` holds ``vae_config``, ``normalizer``, ``chunk`` (horizon, pad), ``prior_kind``, the
training config and provenance. Everything a policy needs to check that the VAE sees exactly its action
space travels with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ate import __version__
from ate.align.prior import PriorSummary
from ate.align.vae import ActionVAE, VAEConfig
from ate.checkpoint import atomic_directory, load_tensors, read_json, save_training_state, save_tensors, write_json_atomic
from ate.errors import CheckpointError


@dataclass
class AlignedVAE:
    """A loaded VAE checkpoint. ``vae`` is in eval mode with requires_grad False (frozen)."""

    vae: ActionVAE
    normalizer: object  # ate.data.Normalizer
    prior: PriorSummary | None
    config: VAEConfig
    chunk: dict
    meta: dict
    path: Path


def save_vae_checkpoint(directory, vae: ActionVAE, meta: dict, prior: PriorSummary | None = None,
                        training: tuple | None = None) -> Path:
    """Write a checkpoint directory atomically. training = (optimizer, generators, state) for resumable ones."""
    directory = Path(directory)
    tensors = {k: v for k, v in vae.state_dict().items()}
    config = {**meta, "format": "ate.aligned_vae", "ate_version": __version__,
              "vae_config": vae.config.to_dict(), "prior_kind": prior.kind if prior else None}
    if prior is not None:
        tensors.update({f"prior.{k}": v for k, v in prior.to_tensors().items()})
    with atomic_directory(directory) as tmp:
        save_tensors(tmp / "model.safetensors", tensors, metadata={"format": "pt"})
        write_json_atomic(tmp / "config.json", config)
        if training is not None:
            optimizer, generators, state = training
            save_training_state(tmp / "training_state", optimizer, generators, state)
    return directory


def _resolve(path: Path) -> Path:
    """Accept a model dir, or a run dir (uses run/model, else run/best, else run/last)."""
    if (path / "model.safetensors").is_file():
        return path
    for sub in ("model", "best", "last"):
        if (path / sub / "model.safetensors").is_file():
            return path / sub
    raise CheckpointError(f"{path}: no VAE checkpoint (model.safetensors) here or in model/, best/, last/")


def load_aligned_vae(path, require_prior: bool = True, freeze: bool = True) -> AlignedVAE:
    """Load a VAE checkpoint written by ``ate align`` (run dir or model dir)."""
    from ate.data import Normalizer

    path = _resolve(Path(path))
    cfg = read_json(path / "config.json")
    if cfg.get("format") != "ate.aligned_vae":
        raise CheckpointError(f"{path / 'config.json'} is not an ate aligned-VAE checkpoint (format={cfg.get('format')!r})")
    tensors = load_tensors(path / "model.safetensors")
    vae_cfg = VAEConfig.from_dict(cfg["vae_config"])
    vae = ActionVAE(vae_cfg)
    weights = {k: v for k, v in tensors.items() if not k.startswith("prior.")}
    try:
        vae.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored VAE config: {exc}") from exc
    prior = None
    if cfg.get("prior_kind"):
        prior = PriorSummary.from_tensors(cfg["prior_kind"], {k[6:]: v for k, v in tensors.items() if k.startswith("prior.")})
    elif require_prior:
        raise CheckpointError(f"{path}: no prior summary stored (is this a finished stage-1/2 'model' dir?)")
    if freeze:
        vae.eval().requires_grad_(False)
    normalizer = Normalizer.from_dict(cfg["normalizer"]) if cfg.get("normalizer") else None
    return AlignedVAE(vae, normalizer, prior, vae_cfg, cfg.get("chunk", {"horizon": vae_cfg.horizon}), cfg, path)
