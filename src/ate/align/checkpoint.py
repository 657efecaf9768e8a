"""Aligned-VAE checkpoints: weights + VAE config + normalisation stats + chunk definition + prior summary.

``model.safetensors`` holds the VAE weights and, under ``prior.*``, the prior summary tensors;
``config.json`` holds ``vae_config``, ``normalizer``, ``chunk`` (horizon, pad), ``prior_kind``, the
training config and provenance; ``action_space.json`` (`ate.data.action_space`) holds the record a policy
compares with its own before the VAE guides it (robot, D, H, pad rule, normaliser). Everything a policy
needs to check that the VAE sees exactly its action space travels with the weights. A directory written
before action_space.json existed gets its record derived from config.json (`vae_dir_action_space`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ate import __version__
from ate.align.prior import PriorSummary
from ate.align.vae import ActionVAE, VAEConfig
from ate.checkpoint import atomic_directory, load_tensors, read_json, save_training_state, save_tensors, write_json_atomic
from ate.data.action_space import FILE_NAME as ACTION_SPACE_FILE
from ate.data.action_space import ActionSpace, compare, read, write
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
    action_space: ActionSpace | None = None  # the directory's action_space.json (or derived from config.json)


def action_space_from_config(cfg: dict, source: str = "config.json") -> ActionSpace:
    """The action-space record that a VAE checkpoint's config.json implies (no robot: config.json names none)."""
    from ate.data import Normalizer

    try:
        vae_cfg, chunk = cfg["vae_config"], cfg.get("chunk") or {}
        norm = Normalizer.from_dict(cfg["normalizer"]) if cfg.get("normalizer") else None
        return ActionSpace(action_dim=vae_cfg["action_dim"], horizon=vae_cfg["horizon"], pad=chunk.get("pad"),
                           normalizer=norm)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: cannot read the VAE's action space: {exc!r}") from None


def vae_dir_action_space(path) -> ActionSpace:
    """The action space of a VAE directory (model dir or run dir): its action_space.json, checked against its
    config.json, or for a directory written before that file existed the record config.json implies."""
    path = _resolve(Path(path))
    return _dir_action_space(path, read_json(path / "config.json"))


def _dir_action_space(path: Path, cfg: dict) -> ActionSpace:
    derived = action_space_from_config(cfg, str(path / "config.json"))
    if not (path / ACTION_SPACE_FILE).is_file():
        return derived
    recorded = read(path)
    compare(derived, recorded, what=str(path / ACTION_SPACE_FILE), expected_name="config.json",
            found_name=ACTION_SPACE_FILE, hint="the directory was edited by hand or only partly copied")
    return recorded


def action_space_of(bundle) -> ActionSpace:
    """The action-space record of a loaded VAE: an `AlignedVAE`'s, or for any AlignedVAE-like object (``config``
    with action_dim / horizon, ``normalizer``, optional ``chunk``) the record those imply."""
    space = getattr(bundle, "action_space", None)
    if space is not None:
        return space
    chunk = getattr(bundle, "chunk", None) or {}
    return ActionSpace(action_dim=bundle.config.action_dim, horizon=bundle.config.horizon, pad=chunk.get("pad"),
                       normalizer=getattr(bundle, "normalizer", None))


def save_vae_checkpoint(directory, vae: ActionVAE, meta: dict, prior: PriorSummary | None = None,
                        training: tuple | None = None, action_space: ActionSpace | None = None) -> Path:
    """Write a checkpoint directory atomically. training = (optimizer, generators, state) for resumable ones.
    action_space: the record for action_space.json (default: the one config.json implies, without a robot);
    it must agree with config.json."""
    directory = Path(directory)
    tensors = {k: v for k, v in vae.state_dict().items()}
    config = {**meta, "format": "ate.aligned_vae", "ate_version": __version__,
              "vae_config": vae.config.to_dict(), "prior_kind": prior.kind if prior else None}
    derived = action_space_from_config(config, f"{directory}/config.json")
    if action_space is None:
        action_space = derived
    else:
        compare(derived, action_space, what=f"{directory}: VAE checkpoint", expected_name="its config",
                found_name="the action_space given")
    if prior is not None:
        tensors.update({f"prior.{k}": v for k, v in prior.to_tensors().items()})
    with atomic_directory(directory) as tmp:
        save_tensors(tmp / "model.safetensors", tensors, metadata={"format": "pt"})
        write_json_atomic(tmp / "config.json", config)
        write(tmp, action_space)
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
    return AlignedVAE(vae, normalizer, prior, vae_cfg, cfg.get("chunk", {"horizon": vae_cfg.horizon}), cfg, path,
                      action_space=_dir_action_space(path, cfg))
