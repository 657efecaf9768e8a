"""LeRobot policy configs with ATE guidance: ``ate_diffusion``, ``ate_pi0``, ``ate_pi05``, ``ate_smolvla``.

Each is LeRobot's own config (every upstream field, default and validation unchanged) plus the ATE fields
below, registered with ``@PreTrainedConfig.register_subclass`` so that ::

    lerobot-train --policy.type=ate_pi0 --policy.vae_path=runs/align/stage2/model --policy.guidance_scale=2 ...

parses them. The policy class lives in the sibling ``modeling_ate`` and the processors in
``processor_ate`` (LeRobot resolves both by module-name convention).

ATE fields (all plain values, so they are saved in the checkpoint's config.json):
    vae_path: adaptation-VAE model dir (``ate lerobot align ... --out OUT`` writes ``OUT/stage2/model``).
        Loaded lazily at the first training step, never saved with the policy. None with
        ``guidance_scale > 0`` is an error at the first training step (use scale 0 for plain fine-tuning).
    guidance_scale (λ), guidance_clamp (κ, null = no clamp), guidance_sign (reference | flipped),
    guidance_encoder_mode (sample | mean), guidance_reduction (reference | per_sample),
    guidance_t_cap (DDPM timestep or flow noise level at which c(t) is capped): see ate.steer.GuidanceConfig.
    guidance_check_stats: refuse a VAE whose normaliser differs from the dataset stats the policy uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Literal, get_args, get_type_hints

from lerobot.configs import PreTrainedConfig
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
from lerobot.policies.pi0.configuration_pi0 import PI0Config
from lerobot.policies.pi05.configuration_pi05 import PI05Config
from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

from ate.errors import ConfigError
from ate.steer import GuidanceConfig

logger = logging.getLogger(__name__)

# Literal, not str: draccus turns these into argparse choices, so `--policy.guidance_sign=flip` is refused
# with the field and the allowed values (a ValueError from __post_init__ reaches the user only as
# "Couldn't instantiate class ..."). They must list what ate.steer.GuidanceConfig accepts.
Sign = Literal["reference", "flipped"]
EncoderMode = Literal["sample", "mean"]
Reduction = Literal["reference", "per_sample"]
Strength = Literal["absolute", "relative"]
LatentTarget = Literal["clean", "source_mode"]


@dataclass
class AteGuidanceFields:
    """The ATE fields shared by every ``ate_*`` policy type (defaults: paper λ = 2, reference κ = 0.1)."""

    vae_path: str | None = None
    guidance_scale: float = 2.0
    guidance_clamp: float | None = 0.1
    guidance_sign: Sign = "reference"
    guidance_encoder_mode: EncoderMode = "sample"
    guidance_reduction: Reduction = "reference"
    guidance_t_cap: float | None = None
    guidance_noise_min: float = 0.0
    guidance_noise_max: float = 1.0
    guidance_strength: Strength = "absolute"
    guidance_latent_target: LatentTarget = "clean"
    guidance_check_stats: bool = True

    def guidance_config(self) -> GuidanceConfig:
        """The :class:`ate.steer.GuidanceConfig` these fields describe (validates them)."""
        return GuidanceConfig(scale=float(self.guidance_scale), clamp=self.guidance_clamp,
                              sign=self.guidance_sign, encoder_mode=self.guidance_encoder_mode,
                              reduction=self.guidance_reduction, t_cap=self.guidance_t_cap,
                              noise_min=self.guidance_noise_min, noise_max=self.guidance_noise_max,
                              strength=self.guidance_strength, latent_target=self.guidance_latent_target)

    def _validate_guidance(self) -> None:
        """Raise a one-line ValueError naming the ``guidance_*`` field (Python callers bypass draccus)."""
        hints = get_type_hints(AteGuidanceFields)
        for f in fields(AteGuidanceFields):
            choices = get_args(hints[f.name]) if getattr(hints[f.name], "__origin__", None) is Literal else ()
            value = getattr(self, f.name)
            if choices and value not in choices:
                self._refuse(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")
        try:
            self.guidance_config()
        except ValueError as exc:
            # GuidanceConfig names its own field (scale, clamp, ...); say which plugin field that is
            self._refuse(str(exc).replace("GuidanceConfig.", "guidance_"))

    def _refuse(self, message: str) -> None:
        message = f"{self.type}: {message}"
        # draccus replaces a ValueError from __post_init__ with "Couldn't instantiate class ...": log it
        # so the command line shows which field is wrong
        logger.error(message)
        raise ConfigError(message)


@PreTrainedConfig.register_subclass("ate_diffusion")
@dataclass
class AteDiffusionConfig(DiffusionConfig, AteGuidanceFields):
    """LeRobot DiffusionConfig + ATE fields. Guidance runs in the ε / sample parameterisation of
    ``prediction_type`` with the policy's own DDPM ``alphas_cumprod``."""

    def __post_init__(self):
        super().__post_init__()
        self._validate_guidance()


@PreTrainedConfig.register_subclass("ate_pi0")
@dataclass
class AtePI0Config(PI0Config, AteGuidanceFields):
    """LeRobot PI0Config + ATE fields (openpi flow convention, actions zero-padded to max_action_dim)."""

    def __post_init__(self):
        super().__post_init__()
        self._validate_guidance()


@PreTrainedConfig.register_subclass("ate_pi05")
@dataclass
class AtePI05Config(PI05Config, AteGuidanceFields):
    """LeRobot PI05Config + ATE fields (openpi flow convention, QUANTILES action normalisation)."""

    def __post_init__(self):
        super().__post_init__()
        self._validate_guidance()


@PreTrainedConfig.register_subclass("ate_smolvla")
@dataclass
class AteSmolVLAConfig(SmolVLAConfig, AteGuidanceFields):
    """LeRobot SmolVLAConfig + ATE fields (openpi flow convention). ``adapt_to_pi_aloha`` is refused: it
    re-encodes the actions inside the forward pass, outside the space the VAE was trained in."""

    def __post_init__(self):
        super().__post_init__()
        if self.adapt_to_pi_aloha:
            raise ValueError("ate_smolvla does not support adapt_to_pi_aloha=True (actions are re-encoded inside "
                             "the forward pass, so the VAE would see another action space)")
        self._validate_guidance()
