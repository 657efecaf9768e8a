"""Anchor to the frozen pretrained policy: a fine-tuning regulariser that carries source knowledge (issue 11).

The paper's latent guidance carries source knowledge only through a VAE's latent space. A more direct carrier is
the pretrained denoiser itself: keep the fine-tuned policy's training prediction close to the frozen initial
policy's prediction on exactly the same noisy input,

    loss = L_task + β · masked_mse(pred, pred_ref),   pred_ref = f_ref(x_t, t, obs), detached,

where ``pred`` is ε, x0 or the flow velocity depending on the family and ``L_task`` is the plain masked MSE or,
with latent guidance on, the guided loss (the two compose). Since ``pred_ref`` carries no gradient,
``masked_mse(pred, target) + β·masked_mse(pred, ref)`` has the gradient of
``(1 + β)·masked_mse(pred, (target + β·ref) / (1 + β))``: a soft target that mixes the demo's regression target
with the pretrained prediction (``tests/test_steer_anchor.py``). β = 0 is plain fine-tuning.

Multi-process training: the term is a masked mean over the same elements (``action_mask`` × unpadded steps) as the
plain loss, so the per-rank weighting of ``ate.policies.train.train_loop`` (``rank_share``: local over global
valid-element count) turns the sum of both terms into the global-batch loss, as for the plain loss alone.

Usage (``ate.policies.train.finetune(..., anchor_weight=β)`` builds it)::

    anchor = PolicyAnchor(copy.deepcopy(pretrained_policy), weight=1.0)
    loss, diag = policy.compute_loss(batch, noise=noise, anchor=anchor)   # diag["anchor_loss"]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ate.errors import ConfigError, ShapeMismatchError
from ate.steer.guidance import masked_mse


def check_anchor_weight(weight) -> float:
    """β as a float; a one-line ConfigError unless it is a finite number >= 0."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ConfigError(f"anchor_weight must be a finite number >= 0, got {weight!r}")
    return float(weight)


class PolicyAnchor:
    """The frozen reference policy and the weight β of its anchor term.

    Args:
        reference: the policy fine-tuning starts from (a copy: it must not share parameters with the trained
            policy), with the trained policy's ``training_view(batch, noise)`` contract (``ate.policies.Policy``).
            It is frozen here (``requires_grad_(False)``, ``eval()``) and must not be part of the trained
            policy's parameters.
        weight: β >= 0.
    """

    def __init__(self, reference: nn.Module, weight: float):
        if not callable(getattr(reference, "training_view", None)):
            raise TypeError(f"reference {type(reference).__name__} has no training_view(batch, noise) method")
        self.weight = check_anchor_weight(weight)
        # frozen: no gradient and no optimiser step may reach it; eval(): the reference is a fixed function
        reference.requires_grad_(False)
        reference.eval()
        self.reference = reference

    def to(self, device=None, dtype: torch.dtype | None = None) -> "PolicyAnchor":
        """Move the reference to the training device (and the trained weights' dtype); returns self."""
        self.reference.to(device=device, dtype=dtype)
        return self

    @torch.no_grad()
    def reference_view(self, batch: dict[str, torch.Tensor], noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The reference's ``training_view`` on the same batch and noise draw: the same x_t, t and observation."""
        return self.reference.training_view(batch, noise)

    def term(self, pred: torch.Tensor, x_t: torch.Tensor, batch: dict[str, torch.Tensor],
             noise: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """``β · masked_mse(pred, pred_ref)`` and its diag ``anchor_loss`` (the unweighted masked MSE).

        pred: the trained policy's prediction (B, H, D) on `batch` with `noise`; x_t: the noisy chunk it saw,
        compared with the reference's (the two must have seen exactly the same input). Masks: ``action_mask`` and
        ``is_pad``, as the plain loss."""
        ref = self.reference_view(batch, noise)
        if not torch.equal(ref["x_t"].to(x_t.dtype), x_t):
            raise ShapeMismatchError("the anchor's reference policy noised the batch differently from the trained "
                                     "policy: both must be the same family with the same noise schedule")
        mse = masked_mse(pred, ref["pred"].detach().to(pred.dtype), batch["action_mask"], batch["is_pad"])
        return self.weight * mse, {"anchor_loss": float(mse.detach())}

    def __repr__(self) -> str:
        return f"PolicyAnchor(reference={type(self.reference).__name__}, weight={self.weight})"
