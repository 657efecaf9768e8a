"""How strong the latent guidance is at each noise level, for a frozen policy (a diagnostic, no update).

Training logs ``rel_strength`` = ‖s·λ·g‖ / ‖target − pred‖ averaged over random times, which hides where
along the noise schedule the guidance acts (c(t) grows without bound toward pure noise). This evaluates it
on a fixed grid of noise levels (:func:`ate.steer.noise_level`: 0 clean, 1 pure noise, one scale for every
family) with the same noise ε and the same ξ at every level, so the levels differ only in t::

    view = lambda t: policy.training_view(batch, {"noise": eps, "u": policy.u_at(t).expand(B)})
    prof = guidance_profile(guide, view, batch_size=64, dim_mask=batch["action_mask"], pad_mask=batch["is_pad"])

``Policy.guidance_profile`` builds the view for the reference policies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ate.steer.coefficients import time_at_noise_level
from ate.steer.guidance import LatentGuidance

# 10 bins of the noise level, evaluated at their centres
DEFAULT_LEVELS = tuple(round(0.05 + 0.1 * i, 2) for i in range(10))


def guidance_profile(guide: LatentGuidance, view: Callable[[torch.Tensor], dict], levels=DEFAULT_LEVELS,
                     batch_size: int | None = None, dim_mask=None, pad_mask=None, seed: int = 0) -> dict:
    """Mean ‖s·λ·g‖ / ‖target − pred‖ and the fraction clamped at each noise level.

    Args:
        guide: the guidance the policy was (or would be) trained with.
        view: t (0-dim tensor: one time for every row) -> {"x_t", "pred", "target", "a0"} (B, H, D) and "t" (B,):
            the policy's forward pass at that time on fixed clean chunks and fixed noise. Called under no_grad,
            once per level.
        levels: noise levels in [0, 1]; each becomes the time of :func:`ate.steer.time_at_noise_level`.
        batch_size: rows per guidance call, the training batch: the reference reduction's 1/B then matches
            training. None: all rows at once.
        dim_mask: (B, D) or (D,); pad_mask: (B, H), as in training.
        seed: seeds the ξ of ``encoder_mode="sample"``; re-seeded at every level, so ξ is the same.

    Returns:
        {"levels", "noise_level" (of the time actually used: DDPM times are integers), "t", "rel_strength",
        "frac_clamped", "guidance_norm"}: lists of floats, one per level; "rows": rows averaged over.
    """
    out = {k: [] for k in ("levels", "noise_level", "t", "rel_strength", "frac_clamped", "guidance_norm")}
    rows = None
    for level in levels:
        t = time_at_noise_level(guide.parameterization, [float(level)], guide.alphas_cumprod)[0]
        with torch.no_grad():  # the residual needs no gradient through the policy; g needs none either
            v = view(t)
        rows = v["pred"].shape[0]
        bs = batch_size or rows
        gen = torch.Generator().manual_seed(seed)
        rel, clamped, norm, n_valid_total = 0.0, 0.0, 0.0, 0.0
        for lo in range(0, rows, bs):
            sl = slice(lo, min(lo + bs, rows))
            dm = dim_mask[sl] if dim_mask is not None and torch.as_tensor(dim_mask).ndim == 2 else dim_mask
            pm = pad_mask[sl] if pad_mask is not None else None
            pred, target = v["pred"][sl], v["target"][sl]
            g, diag = guide.gradient(v["x_t"][sl], v["a0"][sl], v["t"][sl], dm, pm, generator=gen)
            shift = guide.steer(pred, g, target, dm, pm) - pred
            n = sl.stop - sl.start
            rel += n * guide.fraction_of_residual(shift, pred, target, dm, pm)
            norm += n * diag["guidance_norm"]
            valid = _valid_count(pred.shape, dm, pm)
            clamped += diag["frac_clamped"] * valid
            n_valid_total += valid
        out["levels"].append(float(level))
        out["noise_level"].append(float(guide.noise_level(v["t"][:1]).item()))
        out["t"].append(float(v["t"][0].item()))
        out["rel_strength"].append(rel / rows)
        out["frac_clamped"].append(clamped / max(n_valid_total, 1.0))
        out["guidance_norm"].append(norm / rows)
    out["rows"] = rows
    return out


def _valid_count(shape, dim_mask, pad_mask) -> float:
    """Elements the clamp fraction is taken over (as in LatentGuidance.gradient)."""
    from ate.steer.guidance import _weights

    w = _weights(shape, dim_mask, pad_mask, "cpu")
    return float(shape[0] * shape[1] * shape[2]) if w is None else float(w.sum().item())
