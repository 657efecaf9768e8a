"""``ActionVAE.encode_fast``, the encoder path of the guidance, against ``ActionVAE.encode``: the same function
and the same guidance gradient up to float rounding, identical latents for identical chunks, and λ = 0 still
bit-identical to plain SFT.

Rounding budget used below. encode_fast computes the same real-number function as encode with the sums in
another order (batch-first attention, the last layer on the two distribution tokens only), so the two differ by
rounding alone. The longest sums are the feed-forward contractions, K = 256 terms (``ff_dim`` of the small
preset); the worst-case error of such a sum is K·u relative to the sum of |terms| (u = 2^-24 ≈ 6.0e-8 in
float32, 2^-53 ≈ 1.1e-16 in float64), and a value passes through at most ~30 such rounded stages forward plus
as many backward (5 layers of Linear / attention / LayerNorm, activations of order 1 after every LayerNorm). So
|Δ| ≲ 60·K·u·max|value| (the "budget"): ≈ 1.7e-12·max in float64 and ≈ 9e-4·max in float32, the tolerances
below (measured: ~1e-15 and ~1e-6 relative, since worst-case error terms do not add up). A real change of the
function (another token, a wrong head split or scale, a missing bias) moves the values by O(1e-2..1)·max.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ate.align import ActionVAE, VAEConfig
from ate.steer import GuidanceConfig, LatentGuidance

H, D, B = 16, 4, 8
K = 256  # the longest contraction of the small preset (its ff_dim)
BOUND = {torch.float64: 60 * K * 2.0**-53, torch.float32: 60 * K * 2.0**-24}


def _vae(num_layers: int = 3, dtype=torch.float64, seed: int = 0, **over) -> ActionVAE:
    torch.manual_seed(seed)
    vae = ActionVAE(VAEConfig.preset("small", action_dim=D, horizon=H, num_layers=num_layers, **over))
    return vae.to(dtype).eval().requires_grad_(False)


class PlainEncode(nn.Module):
    """The same VAE seen through ``encode`` only: the path LatentGuidance ran before ``encode_fast``."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae
        self.config = vae.config

    def encode(self, a):
        return self.vae.encode(a)


def _chunks(dtype, seed=0, noise=0.5):
    g = torch.Generator().manual_seed(seed)
    a0 = torch.randn(B, H, D, generator=g).to(dtype).clamp(-1, 1)
    return a0 + noise * torch.randn(B, H, D, generator=g).to(dtype), a0


def _close(a: torch.Tensor, b: torch.Tensor, dtype, factor: float = 1.0) -> None:
    scale = max(float(b.abs().max()), 1e-30)
    torch.testing.assert_close(a, b, rtol=0.0, atol=factor * BOUND[dtype] * scale)


@pytest.mark.parametrize("num_layers", [1, 3, 5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_encode_fast_is_encode_values_and_input_gradient(num_layers, dtype):
    vae = _vae(num_layers, dtype)
    x, _ = _chunks(dtype)
    with torch.no_grad():
        for fast, ref in zip(vae.encode_fast(x), vae.encode(x)):
            _close(fast, ref, dtype)
    # a random linear probe of (μ, log σ²): sum(μ) and sum(μ²) would be constant after the final LayerNorm
    probe = torch.randn(2, vae.latent_dim, generator=torch.Generator().manual_seed(1)).to(dtype)

    def vjp(fn):
        xi = x.clone().requires_grad_(True)
        mu, logvar = fn(xi)
        (g,) = torch.autograd.grad((mu * probe[0]).sum() + (logvar * probe[1]).sum(), xi)
        return g

    g_fast, g_ref = vjp(vae.encode_fast), vjp(vae.encode)
    assert float(g_ref.abs().max()) > 1e-3  # the probe does depend on the chunk
    _close(g_fast, g_ref, dtype)


@pytest.mark.parametrize("mode", ["sample", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_guidance_gradient_is_the_same_with_encode_fast(mode, dtype):
    vae = _vae(dtype=dtype)
    # flow_paper at τ = 0.5 has c = 1 and no clamp: g is the raw −∂D/∂x_t, where rounding is not hidden
    cfg = GuidanceConfig(clamp=None, encoder_mode=mode)
    fast = LatentGuidance(vae, "flow_paper", cfg)
    plain = LatentGuidance(PlainEncode(copy.deepcopy(vae)), "flow_paper", cfg)
    x_t, a0 = _chunks(dtype, noise=1.0)
    g_fast, d_fast = fast.gradient(x_t, a0, 0.5, generator=torch.Generator().manual_seed(3))
    g_plain, d_plain = plain.gradient(x_t, a0, 0.5, generator=torch.Generator().manual_seed(3))
    assert g_fast.dtype == g_plain.dtype == dtype and float(g_plain.abs().max()) > 0
    # g = (2/(B·Z))·Jᵀ(ẑ − z): the Jacobian J carries the budget relative to itself, ẑ − z carries the
    # latents' absolute rounding (budget·|z|), i.e. budget·|z|/|ẑ − z| relative to itself. So g is within
    # (1 + r)·budget of max|g|, r = rms(z) / rms(ẑ − z) (≈ 5 for this random VAE and x_t = a0 + noise of a0's
    # scale; asserted < 10 so the test keeps its meaning)
    with torch.no_grad():
        z, z_hat = plain.encoder.encode(a0)[0], plain.encoder.encode(x_t)[0]
    r = float(z.pow(2).mean().sqrt() / (z_hat - z).pow(2).mean().sqrt())
    assert r < 10
    _close(g_fast, g_plain, dtype, factor=1 + r)
    assert d_fast["latent_dist"] == pytest.approx(d_plain["latent_dist"], rel=2 * r * BOUND[dtype], abs=0.0)


def test_identical_chunks_give_identical_latents():
    """x_t = a0: both passes run the same operations, so D and g are exactly 0 (before encode_fast the no-grad
    pass of nn.MultiheadAttention took its inference fast path and D came out ~1e-13, g ~1e-9)."""
    vae = _vae(dtype=torch.float32)
    _, a0 = _chunks(torch.float32)
    for mode in ("sample", "mean"):
        g, diag = LatentGuidance(vae, "flow_paper", GuidanceConfig(encoder_mode=mode)).gradient(
            a0.clone(), a0, 0.5, generator=torch.Generator().manual_seed(0))
        assert diag["latent_dist"] == 0.0 and torch.count_nonzero(g) == 0


def test_dropout_in_training_mode_falls_back_to_encode():
    vae = _vae(dtype=torch.float32, dropout=0.3).train()
    x, _ = _chunks(torch.float32)
    torch.manual_seed(5)
    ref = vae.encode(x)
    torch.manual_seed(5)
    fast = vae.encode_fast(x)
    assert all(torch.equal(f, r) for f, r in zip(fast, ref))
    # the guidance puts the VAE in eval mode: no dropout, the fast path
    LatentGuidance(vae, "flow_paper")
    assert not vae.training
    with torch.no_grad():
        for f, r in zip(vae.encode_fast(x), vae.encode(x)):
            _close(f, r, torch.float32)


def test_normalized_encoder_forwards_encode_fast():
    from ate.data import Normalizer
    from ate.integrations.rdt import NormalizedEncoder

    vae = _vae(dtype=torch.float32)
    norm = Normalizer.fit(np.random.default_rng(0).normal(size=(256, D)))
    enc = NormalizedEncoder(vae, norm)
    x, _ = _chunks(torch.float32)
    with torch.no_grad():
        for f, r in zip(enc.encode_fast(x), enc.encode(x)):
            _close(f, r, torch.float32)


def test_lambda_zero_is_bit_identical_to_plain_sft_with_the_action_vae():
    """λ = 0 through the whole guided step (ActionVAE, encode_fast, masks, action_index) gives the plain SFT
    loss and parameter gradients bit for bit: pred + 0·g == pred, and g never reaches the graph."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_policies_core import A, fake_batch, tiny_policy

    p = tiny_policy("dp")
    batch = fake_batch(p)
    noise = p.draw_noise(batch["action"].shape[0], torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    vae = ActionVAE(VAEConfig.preset("small", action_dim=A, horizon=p.config.horizon))

    def step(guide):
        p.zero_grad()
        loss, diag = p.compute_loss(batch, guide, noise=noise, guidance_generator=torch.Generator().manual_seed(1))
        loss.backward()
        return loss.detach(), [q.grad.clone() for q in p.parameters()], diag

    l_plain, g_plain, _ = step(None)
    for cfg in (GuidanceConfig(scale=0.0), GuidanceConfig(scale=0.0, strength="relative", sign="flipped")):
        l0, g0, d0 = step(p.make_guidance(vae, cfg, "panda"))
        assert torch.equal(l0, l_plain)
        assert all(torch.equal(a, b) for a, b in zip(g0, g_plain))
        assert d0["latent_dist"] > 0  # the guidance did run
    assert all(q.grad is None for q in vae.parameters())
