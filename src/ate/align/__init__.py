"""Align: action-chunk VAEs, the pretraining prior summary, and two-stage (source → target) training."""

from ate.align.checkpoint import AlignedVAE, load_aligned_vae, save_vae_checkpoint
from ate.align.losses import imq_kernel, kl_diag_gaussians, kl_to_standard_normal, mmd, reconstruction_loss
from ate.align.prior import PriorSummary, fit_prior
from ate.align.vae import PRESETS, ActionVAE, VAEConfig

__all__ = [
    "PRESETS", "ActionVAE", "VAEConfig", "PriorSummary", "fit_prior", "AlignedVAE", "load_aligned_vae",
    "save_vae_checkpoint", "imq_kernel", "kl_diag_gaussians", "kl_to_standard_normal", "mmd", "reconstruction_loss",
]
