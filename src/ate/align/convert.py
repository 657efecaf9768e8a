"""Import a VAE state dict saved by the public reference trainer (``torch.save(model.state_dict())``,
keys possibly prefixed ``_orig_mod.`` by torch.compile or ``module.`` by DDP) into an ate checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from ate.align.checkpoint import save_vae_checkpoint
from ate.align.vae import ActionVAE, VAEConfig
from ate.errors import CheckpointError

_PREFIXES = ("_orig_mod.", "module.")


def clean_reference_state_dict(state: dict) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def infer_config(state: dict[str, torch.Tensor], horizon: int, num_heads: int = 4) -> VAEConfig:
    """Read Z, D, layers, FF width and positional-table length off the tensor shapes (heads are not
    visible in shapes: reference value 4)."""
    try:
        z_dim, action_dim = state["skel_embedding.weight"].shape
        k = len({key.split(".")[2] for key in state if key.startswith("encoder.input_blocks.")})
        ff = state["encoder.middle_block.linear1.weight"].shape[0]
        max_len = state["query_pos_encoder.pe"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not a reference ATE VAE state dict: missing {exc}") from exc
    return VAEConfig(action_dim=int(action_dim), horizon=horizon, latent_dim=int(z_dim), num_layers=2 * k + 1,
                     num_heads=num_heads, ff_dim=int(ff), dropout=0.0, max_len=int(max_len), preset_name="reference")


def load_reference_vae(path, horizon: int, num_heads: int = 4) -> ActionVAE:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read reference checkpoint {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = clean_reference_state_dict(state)
    vae = ActionVAE(infer_config(state, horizon, num_heads))
    missing, unexpected = vae.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: keys do not match the reference architecture "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return vae


def convert_reference(path, out_dir, horizon: int, normalizer=None, num_heads: int = 4, prior=None) -> Path:
    """Write ``out_dir`` as an ate checkpoint (safetensors + config.json) from a reference ``.pt``/``.pth``."""
    vae = load_reference_vae(path, horizon, num_heads)
    meta = {"stage": None, "source_checkpoint": str(Path(path).resolve()), "converted_from": "reference",
            "normalizer": normalizer.to_dict() if normalizer is not None else None,
            "chunk": {"horizon": horizon, "pad": "drop"}}
    return save_vae_checkpoint(out_dir, vae, meta, prior=prior)
