"""Reference policy backbones for ATE: Diffusion-Policy-style (`dp_unet`, ε-prediction), RDT-style
(`rdt_dit`, x0-prediction, unified 128 slots) and pi0-style (`pi0_flow`, openpi flow matching).

    from ate.policies import make_policy, load_policy
    policy = load_policy(ckpt_dir)
    chunk = policy.predict_chunk({"state": (B, S), "task": (B,)})   # (B, H, D) raw units

Training lives in `ate.policies.train` (`pretrain`, `finetune`).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from ate.errors import CheckpointError
from ate.policies.base import Policy, PolicyConfig, RobotSpec, load_normalizers, read_config
from ate.policies.dp_unet import DPConfig, DPPolicy
from ate.policies.pi0_flow import Pi0Config, Pi0Policy
from ate.policies.rdt_dit import RDTConfig, RDTPolicy

POLICY_TYPES: dict[str, type[Policy]] = {"dp_unet": DPPolicy, "rdt_dit": RDTPolicy, "pi0_flow": Pi0Policy}
ALIASES = {"dp": "dp_unet", "rdt": "rdt_dit", "pi0": "pi0_flow"}


def policy_class(name: str) -> type[Policy]:
    """Policy class for a family name or alias ("dp", "rdt", "pi0", "dp_unet", ...)."""
    key = ALIASES.get(name, name)
    if key not in POLICY_TYPES:
        names = sorted([*POLICY_TYPES, *ALIASES])
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown policy type {name!r}{hint}; choose from {names}")
    return POLICY_TYPES[key]


def make_policy(name: str, **overrides) -> Policy:
    """Fresh policy of family `name` with config field overrides, e.g. make_policy("dp", horizon=8)."""
    cls = policy_class(name)
    return cls(cls.config_class(**overrides))


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory (has config.json), or a training run dir (uses its `pretrained_model/`)."""
    path = Path(path)
    for cand in (path, path / "pretrained_model", path / "checkpoints" / "last" / "pretrained_model"):
        if (cand / "config.json").is_file():
            return cand
    raise CheckpointError(f"{path}: no policy here (expected config.json, pretrained_model/ or checkpoints/last/)")


def load_policy(path: str | Path, device: str = "cpu") -> Policy:
    """Load a policy saved by `Policy.save_pretrained` or a training run dir (strict: every key must match).

    Args:
        path: model dir (config.json + model.safetensors + normalizer.json) or a run dir from pretrain/finetune.
        device: torch device string.
    """
    import json

    from safetensors.torch import load_model

    path = resolve_model_dir(path)
    d = read_config(path)
    cls = policy_class(d.get("type", "?"))
    policy = cls(cls.config_class.from_dict(d, source=str(path / "config.json")))
    try:
        load_model(policy, str(path / "model.safetensors"), strict=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing model.safetensors") from exc
    except RuntimeError as exc:  # missing / unexpected keys, wrong shapes
        raise CheckpointError(f"{path / 'model.safetensors'}: does not fit {cls.__name__}: {exc}") from exc
    norm_file = path / "normalizer.json"
    if not norm_file.is_file():
        raise CheckpointError(f"{path}: missing normalizer.json")
    policy.normalizers = load_normalizers(json.loads(norm_file.read_text()))
    missing = set(policy.config.robots) - set(policy.normalizers)
    if missing:
        raise CheckpointError(f"{norm_file}: no statistics for robots {sorted(missing)}")
    return policy.to(device)


__all__ = [
    "Policy", "PolicyConfig", "RobotSpec", "DPConfig", "DPPolicy", "RDTConfig", "RDTPolicy", "Pi0Config", "Pi0Policy",
    "POLICY_TYPES", "make_policy", "load_policy", "policy_class", "resolve_model_dir",
]
