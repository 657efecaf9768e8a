"""ate.steer: latent classifier guidance inside a policy's fine-tuning loss (ATE "Steer").

- :func:`guidance_coefficient`: c(t) mapping ∇ log p(y | x_t) into each parameterisation's target;
  :func:`noise_level`: the share of noise in x_t on one 0..1 scale for every parameterisation
  (:func:`time_at_noise_level` inverts it).
- :class:`GuidanceConfig`, :class:`LatentGuidance`: the guided loss / additive term / raw gradient;
  :class:`BatchShard` places a process's rows in a multi-process global batch.
- :class:`PolicyAnchor`: a steering term that is not latent guidance: β·MSE between the fine-tuned policy's
  training prediction and the frozen pretrained policy's on the same x_t, t and observation (issue 11: a
  signal that carries source knowledge; it composes with the guided loss).
- :func:`guidance_profile`: the guidance strength relative to the policy's residual per noise level, for a
  frozen policy (a diagnostic; ``Policy.guidance_profile`` runs it on a reference policy).
- :class:`SlotLayout`, :data:`RDT_UNIFIED_128`: unified action spaces with masks derived from names.
"""

from ate.steer.coefficients import (
    DDPM_PARAMETERIZATIONS,
    FLOW_PARAMETERIZATIONS,
    PARAMETERIZATIONS,
    guidance_coefficient,
    noise_level,
    time_at_noise_level,
)
from ate.steer.anchor import PolicyAnchor, check_anchor_weight
from ate.steer.guidance import BatchShard, GuidanceConfig, LatentGuidance, masked_mse
from ate.steer.profile import guidance_profile
from ate.steer.unified import (
    RDT_UNIFIED_128,
    RDT_UNIFIED_128_SPEC,
    SlotLayout,
    dual_arm_names,
    single_arm_names,
)

__all__ = [
    "DDPM_PARAMETERIZATIONS",
    "FLOW_PARAMETERIZATIONS",
    "PARAMETERIZATIONS",
    "guidance_coefficient",
    "noise_level",
    "time_at_noise_level",
    "guidance_profile",
    "BatchShard",
    "GuidanceConfig",
    "LatentGuidance",
    "masked_mse",
    "PolicyAnchor",
    "check_anchor_weight",
    "SlotLayout",
    "RDT_UNIFIED_128",
    "RDT_UNIFIED_128_SPEC",
    "dual_arm_names",
    "single_arm_names",
]
