"""The RDT drop-in (`ate.integrations.rdt`) on our own RDT-style policy (`ate.policies.rdt_dit`).

A tiny x0-prediction policy in the unified 128-slot space with a dual-arm (ALOHA-like, 14-dim) robot and a tiny
aligned VAE checkpoint. On the same batch, noise and timesteps:

- the drop-in's guidance reads and masks exactly the robot's slots (left arm 50-55 + gripper 60, right arm 0-5 +
  gripper 10), the same as the policy's own `make_guidance`;
- ``rdt_guided_loss(..., reduction="masked")`` applied to the policy's own prediction gives the same loss and
  the same parameter gradient as ``policy.compute_loss(batch, guidance)``;
- the default ``reduction="rdt"`` is upstream RDT's plain ``F.mse_loss`` over all B × H × 128 elements: it differs
  from the policy's masked loss by the averaging set only (g is zero on invalid slots in both).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ate.align import ActionVAE, VAEConfig, save_vae_checkpoint
from ate.data import Normalizer
from ate.integrations.rdt import make_rdt_guidance, rdt_guided_loss
from ate.policies import make_policy
from ate.steer import RDT_UNIFIED_128, GuidanceConfig, dual_arm_names

H, A, S, B = 8, 14, 14, 6
NAMES = dual_arm_names(6)  # left arm 6 + gripper, right arm 6 + gripper
CFG = GuidanceConfig(scale=2.0, clamp=0.1)  # the method defaults, encoder_mode="sample"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    p = make_policy("rdt", horizon=H, state_dim=16, width=32, depth=1, heads=2, cond_dim=32)
    norm = Normalizer.fit(rng.normal(size=(64, A)), mode=p.config.normalization)
    p.add_robot("aloha", norm, Normalizer.fit(rng.normal(size=(64, S)), mode=p.config.normalization),
                action_index=RDT_UNIFIED_128.indices(NAMES))
    p.add_task("fold")
    torch.nn.init.normal_(p.dit.head.weight, std=0.05)  # the head starts at zero: no gradient reaches the body
    vae = ActionVAE(VAEConfig(action_dim=A, horizon=H, latent_dim=16, num_layers=1, num_heads=2, ff_dim=32))
    vae_dir = save_vae_checkpoint(tmp_path_factory.mktemp("vae") / "model", vae,
                                  {"normalizer": norm.to_dict(), "chunk": {"horizon": H, "pad": "repeat"}})
    g = torch.Generator().manual_seed(1)
    mask = p.action_mask("aloha")
    state, smask = p.pad_state(torch.randn(B, S, generator=g), "aloha")
    is_pad = torch.zeros(B, H, dtype=torch.bool)
    batch = {"action": torch.randn(B, H, p.config.action_dim, generator=g).clamp(-1, 1) * mask, "is_pad": is_pad,
             "action_mask": mask[None].expand(B, -1), "state": state, "state_mask": smask,
             "task": torch.zeros(B, dtype=torch.long)}
    noise = p.draw_noise(B, torch.Generator().manual_seed(2))
    # the policy's values are already the VAE's normalised space: no extra normaliser (normalize=False)
    guide = make_rdt_guidance(vae_dir, p.noise_scheduler, NAMES, CFG, normalize=False)
    return p, batch, noise, guide, vae_dir


def _grads(p, loss):
    p.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([q.grad.flatten() for q in p.parameters() if q.grad is not None])


def test_mask_covers_exactly_the_dual_arm_slots(setup):
    p, batch, noise, guide, vae_dir = setup
    slots = sorted(RDT_UNIFIED_128.indices(NAMES))
    assert slots == [0, 1, 2, 3, 4, 5, 10, 50, 51, 52, 53, 54, 55, 60]
    assert torch.nonzero(p.action_mask("aloha")).flatten().tolist() == slots  # policy's mask: slot 50 included
    assert guide.action_index.tolist() == p.config.robots["aloha"].action_index  # VAE reads the same slots
    assert guide.parameterization == p.parameterization == "sample"
    assert torch.equal(guide.alphas_cumprod, p.make_guidance(guide.encoder, CFG, "aloha").alphas_cumprod)
    view = p.training_view(batch, noise)
    for action_mask in (None, batch["action_mask"].float()):  # layout mask or RDT's batch field
        g, _ = guide.gradient(view["x_t"], view["a0"], view["t"], dim_mask=(
            action_mask if action_mask is not None else RDT_UNIFIED_128.mask(NAMES)), generator=torch.Generator())
        nz = torch.nonzero(g.abs().sum(dim=(0, 1))).flatten().tolist()
        assert set(nz) <= set(slots) and 50 in nz and len(nz) >= 12  # g lives on the robot's slots only


def test_masked_reduction_equals_policy_builtin_loss_and_gradient(setup):
    p, batch, noise, guide, vae_dir = setup
    builtin = p.make_guidance(guide.encoder, CFG, "aloha")  # what `ate finetune --guidance ate` builds
    loss_ref, diag_ref = p.compute_loss(batch, builtin, noise=noise, guidance_generator=torch.Generator().manual_seed(7))
    grad_ref = _grads(p, loss_ref)

    view = p.training_view(batch, noise)  # same noise, same timesteps -> same x_t, pred, target
    loss, diag = rdt_guided_loss(guide, view["pred"].float(), view["target"].float(), view["x_t"].float(),
                                 view["a0"].float(), view["t"], batch["action_mask"].float(), pad_mask=batch["is_pad"],
                                 reduction="masked", generator=torch.Generator().manual_seed(7))
    grad = _grads(p, loss)
    assert diag["guidance_norm"] > 0 and diag_ref["guidance_norm"] == pytest.approx(diag["guidance_norm"], rel=1e-6)
    assert torch.equal(loss.detach(), loss_ref.detach())
    assert grad_ref.norm() > 0 and torch.allclose(grad, grad_ref, rtol=1e-6, atol=1e-9)
    assert diag["plain_loss"] == pytest.approx(diag_ref["plain_loss"], rel=1e-6)


def test_default_rdt_reduction_is_the_plain_mean_over_all_slots(setup):
    p, batch, noise, guide, vae_dir = setup
    view = p.training_view(batch, noise)
    pred, target = view["pred"].detach().float(), view["target"].float()
    args = (pred, target, view["x_t"].float(), view["a0"].float(), view["t"], batch["action_mask"].float())
    masked, _ = rdt_guided_loss(guide, *args, reduction="masked", generator=torch.Generator().manual_seed(7))
    rdt, _ = rdt_guided_loss(guide, *args, generator=torch.Generator().manual_seed(7))
    g, _ = guide.gradient(view["x_t"], view["a0"], view["t"], dim_mask=batch["action_mask"].float(),
                          generator=torch.Generator().manual_seed(7))
    assert torch.equal(rdt, F.mse_loss(pred + 2.0 * g, target))
    # target and g are zero off the robot's slots: RDT's mean adds the prediction there and divides by all 128
    valid = p.action_mask("aloha")
    n_valid, n_all = B * H * int(valid.sum()), B * H * 128
    expect = (masked * n_valid + (pred[..., ~valid] ** 2).sum()) / n_all
    # expect recombines two float32 sums in another order than F.mse_loss's one mean: both are within
    # ~log2(n)·u ≈ 1e-6 of the exact value (pairwise summation, n = B·H·128); rtol 1e-5 is 10x that, and the
    # masked mean differs from the RDT mean by O(1)
    assert torch.allclose(rdt, expect, rtol=1e-5) and not torch.isclose(rdt, masked)
    with pytest.raises(ValueError, match="reduction"):
        rdt_guided_loss(guide, *args, reduction="sum")
