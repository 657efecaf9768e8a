"""LeRobot policy configs with ATE guidance: ``ate_diffusion``, ``ate_pi0``, ``ate_pi05``, ``ate_smolvla``.

Each is LeRobot's own config (every upstream field, default and validation unchanged) plus the ATE fields
below, registered with ``@PreTrainedConfig.register_subclass`` so that ::

    lerobot-train --policy.discover_packages_path=ate.integrations.lerobot --policy.type=ate_pi0 \\
        --policy.vae_path=runs/align/stage2/model --policy.guidance_scale=2 ...

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

from dataclasses import dataclass

from lerobot.configs import PreTrainedConfig
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
from lerobot.policies.pi0.configuration_pi0 import PI0Config
from lerobot.policies.pi05.configuration_pi05 import PI05Config
from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

from ate.steer import GuidanceConfig


@dataclass
class AteGuidanceFields:
    """The ATE fields shared by every ``ate_*`` policy type (defaults: paper λ = 2, reference κ = 0.1)."""

    vae_path: str | None = None
    guidance_scale: float = 2.0
    guidance_clamp: float | None = 0.1
    guidance_sign: str = "reference"
    guidance_encoder_mode: str = "sample"
    guidance_reduction: str = "reference"
    guidance_t_cap: float | None = None
    guidance_noise_min: float = 0.0
    guidance_noise_max: float = 1.0
    guidance_strength: str = "absolute"
    guidance_latent_target: str = "clean"
    guidance_check_stats: bool = True

    def guidance_config(self) -> GuidanceConfig:
        """The :class:`ate.steer.GuidanceConfig` these fields describe (validates them)."""
        return GuidanceConfig(scale=float(self.guidance_scale), clamp=self.guidance_clamp,
                              sign=self.guidance_sign, encoder_mode=self.guidance_encoder_mode,
                              reduction=self.guidance_reduction, t_cap=self.guidance_t_cap,
                              noise_min=self.guidance_noise_min, noise_max=self.guidance_noise_max,
                              strength=self.guidance_strength, latent_target=self.guidance_latent_target)

    def _validate_guidance(self) -> None:
        self.guidance_config()  # raises ValueError naming the bad field


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
