"""The guidance profile: relative guidance strength per noise level on a frozen policy (ate.steer.profile)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_policies_core import H, fake_batch, tiny_policy  # noqa: E402
from test_policies_helpers import StandInVAE  # noqa: E402

from ate.steer import GuidanceConfig, guidance_coefficient, noise_level, time_at_noise_level  # noqa: E402


def _guide(p, **kw):
    vae = StandInVAE(8, H, p.normalizers["panda"]["action"])
    return p.make_guidance(vae.vae, GuidanceConfig(**kw), "panda")


def test_time_at_noise_level_inverts_noise_level():
    p = tiny_policy("dp")
    abar = p.alphas_cumprod()
    t = time_at_noise_level("epsilon", [0.05, 0.5, 0.95], abar)
    assert t.dtype == torch.long
    table = noise_level("epsilon", torch.arange(abar.numel()), abar)
    for lv, ti in zip([0.05, 0.5, 0.95], t):  # the nearest integer timestep
        assert (table[ti] - lv).abs() == (table - lv).abs().min()
    assert time_at_noise_level("flow_openpi", [0.3]).item() == pytest.approx(0.3)
    assert time_at_noise_level("flow_paper", [0.3]).item() == pytest.approx(0.7)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        time_at_noise_level("flow_openpi", [1.5])


def _direct(p, guide, batch, level, seed):
    """λ·c·g / residual at one level, written out by hand for the DP (ε) and pi0 (openpi flow) conventions."""
    b = batch["action"].shape[0]
    eps = p.draw_noise(b, torch.Generator().manual_seed(seed))["noise"] * batch["action_mask"][:, None, :]
    a0 = batch["action"]
    with torch.no_grad():
        cond = p.encode_obs(batch)
    if p.parameterization == "epsilon":
        t = time_at_noise_level("epsilon", [level], p.alphas_cumprod()).expand(b)
        ab = p.alphas_cumprod()[t].view(b, 1, 1)
        x_t = ab.sqrt() * a0 + (1 - ab).sqrt() * eps
        with torch.no_grad():
            pred, target = p.unet(x_t, t, cond.flatten(1)), eps
    else:
        t = p.u_at(torch.tensor(level)).pow(1 / p.config.time_beta_alpha) * 0.999 + 0.001  # flow_time
        t = t.expand(b)
        tt = t.view(b, 1, 1)
        x_t = tt * eps + (1 - tt) * a0
        with torch.no_grad():
            pred, target = p.expert(x_t, t, cond), eps - a0
    # g = ∂(−mean_b mean_Z (E(x_t) − E(a0))²)/∂x_t on the robot's dims, then c(t), the κ clamp
    idx = guide.action_index
    x = x_t.detach().requires_grad_(True)
    z_hat = guide.encoder.encode(x[..., idx])[0]
    z = guide.encoder.encode(a0[..., idx])[0]
    (grad,) = torch.autograd.grad(-((z_hat - z) ** 2).mean(), x)
    w = batch["action_mask"][:, None, :].float() * (~batch["is_pad"])[..., None].float()
    c = guidance_coefficient(p.parameterization, t, p.alphas_cumprod()).view(b, 1, 1)
    cg = c * grad * w
    shift = guide.config.scale * cg.clamp(-guide.config.clamp, guide.config.clamp)
    resid = ((target - pred) * w).flatten(1).norm(dim=1)
    rel = (shift.flatten(1).norm(dim=1) / resid).mean()
    frac = ((cg.abs() > guide.config.clamp) & (w > 0)).sum() / w.sum()
    return float(rel), float(frac)


@pytest.mark.parametrize("fam", ["dp", "pi0"])
def test_profile_equals_the_direct_computation_and_updates_nothing(fam, single_torch_thread):
    p = tiny_policy(fam)
    batch = fake_batch(p, b=6)
    # clamp chosen so that some elements saturate at high noise (the clamp fraction is then checked too)
    guide = _guide(p, scale=2.0, clamp=1e-3, encoder_mode="mean")
    before = {k: v.clone() for k, v in p.state_dict().items()}
    p.train()
    prof = p.guidance_profile(batch, guide, levels=[0.2, 0.9], seed=3)
    assert p.training  # mode restored
    assert all(torch.equal(before[k], v) for k, v in p.state_dict().items())
    assert all(q.grad is None for q in p.parameters())
    p.eval()  # the profile runs the network in eval mode
    for i, level in enumerate([0.2, 0.9]):
        rel, frac = _direct(p, guide, batch, level, seed=3)
        # same tensors, same ops up to summation order: float32 rounding only
        assert prof["rel_strength"][i] == pytest.approx(rel, rel=1e-4)
        assert prof["frac_clamped"][i] == pytest.approx(frac, abs=1e-6)
        assert prof["noise_level"][i] == pytest.approx(level, abs=0.05 if fam == "dp" else 1e-6)  # DDPM: integer t
    assert prof["rows"] == 6 and prof["levels"] == [0.2, 0.9]
    assert prof["frac_clamped"][1] > 0  # the clamp acts at high noise here


def test_profile_batches_like_training_and_rdt_runs(single_torch_thread):
    """batch_size splits the rows like training batches, so the reference reduction's 1/B is the training B
    (x0-prediction family, unified slots)."""
    p = tiny_policy("rdt")
    batch = fake_batch(p, b=4)
    guide = _guide(p, scale=2.0, clamp=10.0, encoder_mode="mean")
    one = p.guidance_profile(batch, guide, levels=[0.5])
    two = {k: torch.cat([v, v]) for k, v in batch.items()}
    chunked = p.guidance_profile(two, guide, levels=[0.5], batch_size=4)
    whole = p.guidance_profile(two, guide, levels=[0.5])
    assert one["rows"] == 4 and chunked["rows"] == 8
    # reference reduction: g ∝ 1/B, so the whole 8-row batch gives half the strength of 4-row chunks
    # (unclamped: κ = 10 is never reached); float32 rounding only
    assert whole["rel_strength"][0] == pytest.approx(chunked["rel_strength"][0] / 2, rel=1e-4)
