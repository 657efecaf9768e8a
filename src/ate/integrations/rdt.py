"""Drop-in ATE guidance for RDT-style runners (x0 / "sample" prediction in a unified 128-slot action space).

RDT's ``RDTRunner.compute_loss`` noises ``action_gt`` (B, H, 128) with a DDPM scheduler, predicts the clean
chunk and returns ``F.mse_loss(pred, target)``. With ATE the last line becomes::

    loss, diag = rdt_guided_loss(self.ate_guidance, pred, target, noisy_action, action_gt, timesteps, action_mask)

where ``self.ate_guidance = make_rdt_guidance(vae_dir, self.noise_scheduler, names)`` was built once
(``names``: the target robot's joint names in the unified layout, e.g. ``dual_arm_names(6)`` for ALOHA).

- The VAE reads only the robot's slots (``action_index`` from :class:`ate.steer.SlotLayout`, never a hand-made
  index list) and g is zero on every other slot (``action_mask`` of the batch, or the layout mask).
- RDT feeds raw unified values; the adaptation VAE was trained on normalised chunks, so the encoder is wrapped
  in its own normaliser (:class:`NormalizedEncoder`), and g is taken through that affine map.
- The loss keeps RDT's reduction (a plain mean over B × H × 128) with ``guided = pred + s·λ·g``;
  ``reduction="masked"`` instead averages over the valid slots (and unpadded steps) only, which is exactly the
  built-in ATE loss of our RDT-style policy ``ate.policies.rdt_dit`` (``Policy.compute_loss(batch, guidance)``),
  see ``tests/test_integrations_rdt_policy.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ate.errors import ShapeMismatchError
from ate.steer import RDT_UNIFIED_128, GuidanceConfig, LatentGuidance, SlotLayout, masked_mse

_REDUCTIONS = ("rdt", "masked")


class NormalizedEncoder(nn.Module):
    """``encode(a) = vae.encode(normalizer.normalize(a))``: a VAE trained on normalised chunks, fed raw values.

    Args:
        vae: module with ``encode(a) -> (mu, logvar)``, a (B, H, D) normalised.
        normalizer: :class:`ate.data.Normalizer` the VAE was trained with (affine, differentiable in torch).
    """

    def __init__(self, vae: nn.Module, normalizer):
        super().__init__()
        self.vae = vae
        self.normalizer = normalizer
        self.config = getattr(vae, "config", None)  # lets LatentGuidance check H and D

    def encode(self, a: torch.Tensor):
        return self.vae.encode(self.normalizer.normalize(a))

    def encode_fast(self, a: torch.Tensor):
        """The VAE's ``encode_fast`` (its encode if it has none) on the normalised chunk."""
        fast = getattr(self.vae, "encode_fast", None)
        return (fast if callable(fast) else self.vae.encode)(self.normalizer.normalize(a))


def make_rdt_guidance(vae_dir, noise_scheduler, names: Sequence[str], config: GuidanceConfig | None = None,
                      layout: SlotLayout = RDT_UNIFIED_128, normalize: bool = True) -> LatentGuidance:
    """Build the guidance for an RDT-style runner.

    Args:
        vae_dir: adaptation VAE (``ate align stage2 --out DIR`` → ``DIR/model``), trained on the robot's ``names``
            dims in that order, with the runner's chunk length.
        noise_scheduler: the runner's training ``DDPMScheduler`` (its ``alphas_cumprod`` and ``prediction_type``).
        names: the target robot's slot names (e.g. ``ate.steer.dual_arm_names(6)``).
        config: λ, κ, sign, ...; default :class:`GuidanceConfig` (λ = 2, κ = 0.1).
        layout: unified layout (default RDT's 128 slots).
        normalize: wrap the encoder in the VAE's stored normaliser (False if RDT's values are already the
            VAE's training space).
    """
    from ate.align import load_aligned_vae

    bundle = load_aligned_vae(vae_dir, require_prior=False)
    index = layout.index_tensor(names)
    if bundle.config.action_dim != index.numel():
        raise ShapeMismatchError(f"{bundle.path}: the VAE expects {bundle.config.action_dim} dims but {len(names)} "
                                 f"slot names were given")
    encoder = bundle.vae
    if normalize and bundle.normalizer is not None:
        encoder = NormalizedEncoder(bundle.vae, bundle.normalizer)
    return LatentGuidance.from_scheduler(encoder, noise_scheduler, config, action_index=index, prior=bundle.prior)


def rdt_guided_loss(guide: LatentGuidance, pred: torch.Tensor, target: torch.Tensor, noisy_action: torch.Tensor,
                    action_gt: torch.Tensor, timesteps: torch.Tensor, action_mask: torch.Tensor | None = None,
                    pad_mask: torch.Tensor | None = None, reduction: str = "rdt",
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """RDT's ``F.mse_loss(pred, target)`` with the ATE guidance added to ``pred``.

    Args:
        pred, target, noisy_action, action_gt: (B, H, 128) as in ``RDTRunner.compute_loss``.
        timesteps: (B,) integer DDPM timesteps.
        action_mask: (B, K, 128) or (B, 128) 0/1 float, valid slots (RDT's batch field; ``compute_loss``
            expands it to K = H + 1 rows, row 0 is used); None = the slots the guidance's ``action_index`` reads.
        pad_mask: (B, H) bool, True on padded steps (g is zeroed there; excluded from a ``masked`` loss).
        reduction: ``rdt`` (default): ``F.mse_loss``, a plain mean over B × H × D as upstream RDT, so invalid
            slots and padded steps count (with g = 0 there). ``masked``: mean over valid elements only
            (:func:`ate.steer.masked_mse`), identical to ``Policy.compute_loss`` of ``ate.policies`` policies.
        generator: RNG of the shared ξ (``encoder_mode="sample"``); None draws from torch's global RNG.

    Returns:
        (scalar loss, diag with ``guidance_norm``, ``frac_clamped``, ``latent_dist``, ``coef_mean``, ``plain_loss``).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"rdt_guided_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    B, H, D = pred.shape
    enc_param = next(iter(guide.encoder.parameters()), None)
    if enc_param is not None and enc_param.device != pred.device:  # first call on this rank's device
        guide.encoder.to(pred.device)
    if action_mask is None:
        if guide.action_index is None:
            raise ShapeMismatchError("rdt_guided_loss needs action_mask when the guidance has no action_index")
        dim_mask = torch.zeros(D, device=pred.device)
        dim_mask[guide.action_index.to(pred.device)] = 1
    else:
        if action_mask.ndim == 3 and action_mask.shape[0] == B and action_mask.shape[2] == D:
            dim_mask = action_mask[:, 0]
        elif action_mask.shape == (B, D):
            dim_mask = action_mask
        else:
            raise ShapeMismatchError(f"action_mask has shape {tuple(action_mask.shape)}; expected (B, K, {D}) or (B, {D})")
    g, diag = guide.gradient(noisy_action, action_gt, timesteps, dim_mask=dim_mask, pad_mask=pad_mask,
                             generator=generator)
    guided = guide.steer(pred, g, target, dim_mask, pad_mask)
    if reduction == "masked":
        loss = masked_mse(guided, target, dim_mask, pad_mask)
    else:
        loss = F.mse_loss(guided, target)
    with torch.no_grad():
        diag["plain_loss"] = float((masked_mse(pred, target, dim_mask, pad_mask) if reduction == "masked"
                                    else F.mse_loss(pred, target)).item())
    return loss, diag
