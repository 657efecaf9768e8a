"""Align-Then-stEer (ATE): align action chunks of source and target data in one latent space, then
steer fine-tuning of a diffusion / flow-matching policy with a latent guidance term in its loss."""

__version__ = "0.1.0"
