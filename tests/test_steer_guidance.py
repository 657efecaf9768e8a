"""LatentGuidance: gradient against finite differences, masks, clamp, sign, reductions, losses, shapes."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from torch import nn

from ate.errors import ShapeMismatchError
from ate.steer import BatchShard, GuidanceConfig, LatentGuidance, guidance_coefficient, masked_mse

B, H, D, Z = 4, 6, 3, 5


class MLPEncoder(nn.Module):
    """Tiny VAE encoder: (B, H, D) -> (mu, logvar) each (B, Z)."""

    def __init__(self, horizon=H, action_dim=D, latent_dim=Z, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.config = SimpleNamespace(horizon=horizon, action_dim=action_dim)
        self.net = nn.Sequential(nn.Flatten(1), nn.Linear(horizon * action_dim, 32), nn.Tanh(),
                                 nn.Linear(32, 2 * latent_dim))

    def encode(self, a):
        mu, logvar = self.net(a).chunk(2, dim=-1)
        return mu, logvar


class AttnEncoder(nn.Module):
    """Tiny transformer encoder with a learned token, like the reference skip transformer in miniature."""

    def __init__(self, horizon=H, action_dim=D, latent_dim=Z, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.config = SimpleNamespace(horizon=horizon, action_dim=action_dim)
        self.embed = nn.Linear(action_dim, 16)
        self.tokens = nn.Parameter(torch.randn(1, 2, 16))
        self.pos = nn.Parameter(torch.randn(1, horizon + 2, 16) * 0.1)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.out = nn.Linear(16, latent_dim)

    def encode(self, a):
        x = torch.cat([self.tokens.expand(a.shape[0], -1, -1), self.embed(a)], dim=1) + self.pos
        x = self.layer(x)
        return self.out(x[:, 0]), self.out(x[:, 1]) - 1.0


def _batch(b=B, h=H, d=D, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a0 = torch.randn(b, h, d, generator=gen, dtype=dtype)
    x_t = a0 + 0.5 * torch.randn(b, h, d, generator=gen, dtype=dtype)
    return x_t, a0


def _flow_guide(enc, **cfg):
    # flow_paper at τ = 0.5 has c = 1: g is the raw −∂D/∂x_t (before the clamp).
    return LatentGuidance(enc, "flow_paper", GuidanceConfig(**{"clamp": None, **cfg}))


@pytest.mark.parametrize("encoder_cls", [MLPEncoder, AttnEncoder])
@pytest.mark.parametrize("mode", ["sample", "mean"])
@pytest.mark.parametrize("reduction", ["reference", "per_sample"])
def test_gradient_matches_finite_differences(encoder_cls, mode, reduction):
    enc = encoder_cls().double()
    x_t, a0 = _batch(dtype=torch.float64)
    guide = _flow_guide(enc, encoder_mode=mode, reduction=reduction)
    g, diag = guide.gradient(x_t, a0, torch.full((B,), 0.5, dtype=torch.float64),
                             generator=torch.Generator().manual_seed(3))
    assert g.dtype == torch.float64 and not g.requires_grad
    xi = torch.randn(B, Z, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def dist(x):  # the objective D, written out independently
        with torch.no_grad():
            mu, lv = enc.encode(x)
            mu0, lv0 = enc.encode(a0)
            if mode == "sample":
                mu, mu0 = mu + (0.5 * lv).exp() * xi, mu0 + (0.5 * lv0).exp() * xi
            d = ((mu - mu0) ** 2).mean(1)
        return d.mean() if reduction == "reference" else d.sum()

    gen = torch.Generator().manual_seed(1)
    h = 1e-6
    for _ in range(12):
        i = tuple(torch.randint(0, n, (1,), generator=gen).item() for n in (B, H, D))
        e = torch.zeros_like(x_t)
        e[i] = h
        fd = (-dist(x_t + e) + dist(x_t - e)) / (2 * h)
        # float64 central difference, h = 1e-6: truncation O(h²·|D'''|) ≈ 1e-12 and cancellation ≈ u·|D|/h ≈ 1e-10
        # (u = 1.1e-16), far inside rel 1e-5 / abs 1e-9
        assert g[i].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-9)
    assert diag["latent_dist"] > 0 and diag["coef_mean"] == pytest.approx(1.0)


def test_shared_xi_gives_zero_distance_for_clean_input():
    enc = MLPEncoder()
    _, a0 = _batch()
    g, diag = _flow_guide(enc, encoder_mode="sample").gradient(a0.clone(), a0, 0.5)
    assert diag["latent_dist"] == 0.0 and torch.count_nonzero(g) == 0


def test_masks_zero_invalid_dims_and_padded_steps():
    enc = MLPEncoder()
    x_t, a0 = _batch()
    guide = _flow_guide(enc)
    dim_mask = torch.tensor([1.0, 0.0, 1.0])
    pad_mask = torch.zeros(B, H, dtype=torch.bool)
    pad_mask[1, 4:] = True
    pad_mask[3, 2:] = True
    g_full, _ = guide.gradient(x_t, a0, 0.5, generator=torch.Generator().manual_seed(0))
    g, _ = guide.gradient(x_t, a0, 0.5, dim_mask=dim_mask, pad_mask=pad_mask,
                          generator=torch.Generator().manual_seed(0))
    valid = (dim_mask.bool().view(1, 1, D) & ~pad_mask.view(B, H, 1))
    assert torch.count_nonzero(g[~valid]) == 0
    torch.testing.assert_close(g[valid], g_full[valid])
    assert torch.count_nonzero(g_full[~valid]) == (~valid).sum()  # the mask, not the encoder, made the zeros
    # per-sample (B, D) dim mask
    dm2 = torch.ones(B, D)
    dm2[2, 0] = 0
    g2, _ = guide.gradient(x_t, a0, 0.5, dim_mask=dm2, generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(g2[2, :, 0]) == 0 and torch.count_nonzero(g2[1, :, 0]) == H


def test_clamp_bounds_every_element_and_reports_fraction():
    enc = MLPEncoder()
    x_t, a0 = _batch()
    t = torch.tensor([0.01, 0.2, 0.5, 0.9])  # flow_paper: c = 99, 4, 1, 0.11
    raw, _ = LatentGuidance(enc, "flow_paper", GuidanceConfig(clamp=None)).gradient(
        x_t, a0, t, generator=torch.Generator().manual_seed(0))
    kappa = 0.01
    g, diag = LatentGuidance(enc, "flow_paper", GuidanceConfig(clamp=kappa)).gradient(
        x_t, a0, t, generator=torch.Generator().manual_seed(0))
    assert g.abs().max() <= kappa
    torch.testing.assert_close(g, raw.clamp(-kappa, kappa))
    assert diag["frac_clamped"] == pytest.approx((raw.abs() > kappa).float().mean().item())
    assert 0 < diag["frac_clamped"] < 1
    assert diag["guidance_norm"] == pytest.approx(g.flatten(1).norm(dim=1).mean().item(), rel=1e-6)
    torch.testing.assert_close(torch.tensor(diag["coef_mean"]), guidance_coefficient("flow_paper", t).mean())


def test_coefficient_scales_gradient_per_sample():
    enc = MLPEncoder()
    x_t, a0 = _batch()
    sched = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type="sample")
    guide = LatentGuidance.from_scheduler(enc, sched, GuidanceConfig(clamp=None))
    t = torch.tensor([3, 30, 60, 90])
    g, _ = guide.gradient(x_t, a0, t, generator=torch.Generator().manual_seed(0))
    raw, _ = _flow_guide(enc).gradient(x_t, a0, 0.5, generator=torch.Generator().manual_seed(0))
    abar = sched.alphas_cumprod.double()[t]
    c = ((1 - abar) / abar.sqrt()).float()
    torch.testing.assert_close(g, c.view(B, 1, 1) * raw)


def test_sign_and_lambda_zero():
    enc = MLPEncoder()
    x_t, a0 = _batch()
    pred, target = _batch(seed=5)
    pad = torch.zeros(B, H, dtype=torch.bool)
    pad[0, 3:] = True
    dm = torch.tensor([1, 1, 0])
    loss0, diag0 = LatentGuidance(enc, "flow_openpi", GuidanceConfig(scale=0.0)).guided_loss(
        pred, target, x_t, a0, 0.3, dim_mask=dm, pad_mask=pad)
    assert torch.equal(loss0, masked_mse(pred, target, dm, pad))
    assert diag0["latent_dist"] > 0  # λ = 0 still measures the latent distance
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    g, _ = LatentGuidance(enc, "flow_openpi").gradient(x_t, a0, 0.3, dm, pad, generator=gen())
    for sign, s in [("reference", 1.0), ("flipped", -1.0)]:
        guide = LatentGuidance(enc, "flow_openpi", GuidanceConfig(scale=2.0, sign=sign))
        p = pred.clone().requires_grad_(True)
        loss, _ = guide.guided_loss(p, target, x_t, a0, 0.3, dm, pad, generator=gen())
        torch.testing.assert_close(loss, masked_mse(pred + s * 2.0 * g, target, dm, pad))
        loss.backward()  # gradient w.r.t. pred treats g as a constant
        w = (dm.bool().view(1, 1, D) & ~pad.view(B, H, 1)).float()
        torch.testing.assert_close(p.grad, 2 * (pred + s * 2.0 * g - target) * w / w.sum())


def test_masked_loss_ignores_invalid_entries():
    pred, target = _batch()
    pad = torch.zeros(B, H, dtype=torch.bool)
    pad[:, -2:] = True
    dm = torch.tensor([1, 0, 1])
    noisy = target.clone()
    noisy[:, :, 1] += 100.0
    noisy[:, -2:, :] += 100.0
    assert masked_mse(pred, noisy, dm, pad) == pytest.approx(masked_mse(pred, target, dm, pad).item())
    assert torch.equal(masked_mse(pred, target), ((pred - target) ** 2).mean())


@pytest.mark.parametrize("sign", ["reference", "flipped"])
@pytest.mark.parametrize("masked", [False, True])
def test_additive_term_equals_guided_loss_up_to_constant(sign, masked):
    enc = MLPEncoder()
    x_t, a0 = _batch(dtype=torch.float64)
    enc.double()
    pred, target = _batch(dtype=torch.float64, seed=7)
    dm = torch.tensor([1.0, 0.0, 1.0]) if masked else None
    pad = None
    if masked:
        pad = torch.zeros(B, H, dtype=torch.bool)
        pad[2, 1:] = True
    lam, s = 2.5, (1.0 if sign == "reference" else -1.0)
    guide = LatentGuidance(enc, "flow_paper", GuidanceConfig(scale=lam, sign=sign, clamp=0.05))
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    gen = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    p1 = pred.clone().requires_grad_(True)
    p2 = pred.clone().requires_grad_(True)
    guided, _ = guide.guided_loss(p1, target, x_t, a0, t, dm, pad, generator=gen())
    term, _ = guide.additive_term(p2, x_t, a0, t, dm, pad, generator=gen())
    plain = masked_mse(p2, target, dm, pad)
    g, _ = guide.gradient(x_t, a0, t, dm, pad, generator=gen())
    w = torch.ones_like(g) if not masked else (dm.bool().view(1, 1, D) & ~pad.view(B, H, 1)).double()
    mmean = lambda v: (v * w).sum() / w.sum()  # noqa: E731
    const = lam**2 * mmean(g * g) - 2 * s * lam * mmean(target * g)
    torch.testing.assert_close(plain + term, guided - const, rtol=1e-12, atol=1e-12)
    (plain + term).backward()
    guided.backward()
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-12, atol=1e-12)


def test_reference_reduction_scales_as_one_over_batch():
    enc = MLPEncoder()
    x1, a1 = _batch(b=1)
    for reduction, expect in [("reference", lambda n: 1.0 / n), ("per_sample", lambda n: 1.0)]:
        guide = _flow_guide(enc, reduction=reduction, encoder_mode="mean")
        g1, _ = guide.gradient(x1, a1, 0.5)
        for n in (2, 8):
            gn, _ = guide.gradient(x1.repeat(n, 1, 1), a1.repeat(n, 1, 1), 0.5)
            for row in gn:
                torch.testing.assert_close(row, g1[0] * expect(n))


def test_no_gradient_reaches_encoder_and_runs_under_no_grad():
    enc = MLPEncoder()
    for p in enc.parameters():
        p.requires_grad_(True)  # the guidance freezes it
    policy = nn.Linear(D, D)
    guide = LatentGuidance(enc, "flow_openpi")
    assert all(not p.requires_grad for p in enc.parameters()) and not enc.training
    x_t, a0 = _batch()
    x_t = policy(x_t)  # x_t may even carry a graph: g must be detached from it
    pred = policy(a0)
    t = torch.rand(B)
    loss, diag = guide.guided_loss(pred, torch.zeros_like(pred), x_t, a0, t,
                                   generator=torch.Generator().manual_seed(0))
    (grad_w,) = torch.autograd.grad(loss, policy.weight, retain_graph=True)
    loss.backward(retain_graph=True)
    assert all(p.grad is None for p in enc.parameters())
    # the policy's gradient flows through pred only, never through g (nor x_t)
    g, _ = guide.gradient(x_t, a0, t, generator=torch.Generator().manual_seed(0))
    assert not g.requires_grad
    ref = masked_mse(pred + 2.0 * g, torch.zeros_like(pred))
    (ref_w,) = torch.autograd.grad(ref, policy.weight)
    torch.testing.assert_close(grad_w, ref_w)
    with torch.no_grad():  # the surrounding step may have grad disabled
        g2, _ = guide.gradient(x_t, a0, 0.5, generator=torch.Generator().manual_seed(0))
    g3, _ = guide.gradient(x_t, a0, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(g2) > 0
    torch.testing.assert_close(g2, g3)


def test_autocast_bfloat16_keeps_float32_gradient():
    enc = AttnEncoder()
    x_t, a0 = _batch()
    guide = _flow_guide(enc, encoder_mode="mean")
    g_ref, d_ref = guide.gradient(x_t, a0, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g, diag = guide.gradient(x_t, a0, 0.5)
        pred = nn.Linear(D, D)(x_t)  # bf16 under autocast
        loss, _ = guide.guided_loss(pred, torch.zeros_like(x_t), x_t, a0, 0.5)
    assert g.dtype == torch.float32 and torch.isfinite(g).all() and torch.isfinite(loss)
    # bf16 rounds each latent to 8 bits (≤ 2^-9 ≈ 2e-3 relative, |z| ≈ 0.44 here) but g and d depend on the
    # *difference* ẑ − z (≈ 0.018): its relative error is ≲ 2e-3 · 0.44 / 0.018 ≈ 5 %, so d (a square) is
    # within ~10 % and g keeps its direction (cos > 0.95). Measured: cos 0.9985, d off by 1.8 %.
    cos = torch.nn.functional.cosine_similarity(g.flatten(), g_ref.flatten(), dim=0)
    assert cos > 0.95, cos
    assert diag["latent_dist"] == pytest.approx(d_ref["latent_dist"], rel=0.1)


def test_action_index_gathers_policy_dims():
    enc = MLPEncoder(action_dim=D)
    gen = torch.Generator().manual_seed(0)
    x_pol = torch.randn(B, H, 32, generator=gen)  # policy padded to 32 dims, VAE uses 3 of them
    a_pol = torch.randn(B, H, 32, generator=gen)
    idx = torch.tensor([4, 0, 9])
    g, _ = LatentGuidance(enc, "flow_openpi", action_index=idx).gradient(
        x_pol, a_pol, 0.4, generator=torch.Generator().manual_seed(1))
    g_small, _ = LatentGuidance(enc, "flow_openpi").gradient(
        x_pol[..., idx], a_pol[..., idx], 0.4, generator=torch.Generator().manual_seed(1))
    assert g.shape == (B, H, 32)
    others = torch.ones(32, dtype=torch.bool)
    others[idx] = False
    assert torch.count_nonzero(g[..., others]) == 0
    torch.testing.assert_close(g[..., idx], g_small)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_from_scheduler_ddpm(prediction_type):
    sched = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    guide = LatentGuidance.from_scheduler(MLPEncoder(), sched)
    assert guide.parameterization == prediction_type
    t = torch.tensor([0, 50, 99])
    abar = sched.alphas_cumprod.double()[t]
    expected = {"epsilon": -(1 - abar).sqrt(), "sample": (1 - abar) / abar.sqrt(),
                "v_prediction": -(1 - abar).sqrt() / abar.sqrt()}[prediction_type]
    torch.testing.assert_close(guide.coefficient(t, dtype=torch.float64), expected)


def test_from_scheduler_flow_and_unknown():
    guide = LatentGuidance.from_scheduler(MLPEncoder(), FlowMatchEulerDiscreteScheduler())
    assert guide.parameterization == "flow_openpi"
    with pytest.raises(ValueError, match="cannot read a parameterization"):
        LatentGuidance.from_scheduler(MLPEncoder(), object())


@pytest.mark.parametrize("param", ["epsilon", "sample", "v_prediction", "flow_paper", "flow_openpi"])
def test_gradient_finite_at_extreme_times(param):
    enc = MLPEncoder()
    x_t, a0 = _batch(b=5)
    if param in ("flow_paper", "flow_openpi"):
        guide, t = LatentGuidance(enc, param), torch.tensor([0.0, 1e-6, 0.5, 1 - 1e-6, 1.0])
    else:
        sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=param)
        guide, t = LatentGuidance.from_scheduler(enc, sched), torch.tensor([0, 1, 500, 998, 999])
    dm = torch.tensor([1.0, 0.0, 1.0])
    loss, diag = guide.guided_loss(torch.zeros_like(x_t), a0, x_t, a0, t, dim_mask=dm)
    g, _ = guide.gradient(x_t, a0, t, dim_mask=dm)
    assert torch.isfinite(g).all() and torch.isfinite(loss) and g.abs().max() <= 0.1
    assert torch.count_nonzero(g[..., 1]) == 0  # huge c times a masked zero stays zero
    assert all(isinstance(v, float) for v in diag.values())


def test_shape_mismatches_raise():
    enc = MLPEncoder()
    x_t, a0 = _batch()
    guide = LatentGuidance(enc, "flow_openpi")
    with pytest.raises(ShapeMismatchError, match="H=6"):
        guide.gradient(*_batch(h=8), 0.5)
    with pytest.raises(ShapeMismatchError, match="action_dim=3"):
        guide.gradient(*_batch(d=4), 0.5)
    with pytest.raises(ShapeMismatchError, match="same shape"):
        guide.gradient(x_t, a0[:2], 0.5)
    with pytest.raises(ShapeMismatchError, match="t has 3"):
        guide.gradient(x_t, a0, torch.rand(3))
    with pytest.raises(ShapeMismatchError, match="dim_mask"):
        guide.gradient(x_t, a0, 0.5, dim_mask=torch.ones(5))
    with pytest.raises(ShapeMismatchError, match="pad_mask"):
        guide.gradient(x_t, a0, 0.5, pad_mask=torch.zeros(B, H + 1, dtype=torch.bool))
    with pytest.raises(ShapeMismatchError, match="action_index selects 2"):
        LatentGuidance(enc, "flow_openpi", action_index=torch.tensor([0, 1]))
    with pytest.raises(ShapeMismatchError, match="D=3"):
        LatentGuidance(enc, "flow_openpi", action_index=torch.tensor([0, 1, 7])).gradient(x_t, a0, 0.5)
    with pytest.raises(ShapeMismatchError, match="same"):
        guide.guided_loss(x_t[:, :, :2], a0, x_t, a0, 0.5)


def test_config_validation():
    assert GuidanceConfig() == GuidanceConfig(2.0, 0.1, "reference", "sample", "reference", None)
    assert GuidanceConfig.from_dict(GuidanceConfig(scale=3.0).to_dict()) == GuidanceConfig(scale=3.0)
    bad = [dict(scale=-1.0), dict(scale=float("nan")), dict(clamp=0.0), dict(clamp="0.1"), dict(sign="plus"),
           dict(encoder_mode="mode"), dict(reduction="sum"), dict(t_cap=-1), dict(t_cap=float("inf"))]
    for kw in bad:
        with pytest.raises(ValueError, match=f"GuidanceConfig.{next(iter(kw))}"):
            GuidanceConfig(**kw)
    with pytest.raises(ValueError, match="unknown fields"):
        GuidanceConfig.from_dict({"lam": 2})
    with pytest.raises(ValueError, match="noise level"):
        LatentGuidance(MLPEncoder(), "flow_openpi", GuidanceConfig(t_cap=5))
    with pytest.raises(ValueError, match="needs alphas_cumprod"):
        LatentGuidance(MLPEncoder(), "epsilon")
    with pytest.raises(TypeError, match="encode"):
        LatentGuidance(nn.Linear(2, 2), "flow_openpi")


@pytest.mark.parametrize("reduction", ["reference", "per_sample"])
def test_shards_of_a_global_batch_reassemble_its_gradient(reduction):
    """Two processes holding rows [0, 2) and [2, 4) compute exactly the rows of one process's g: ξ is drawn
    for the global batch and sliced, and the reference mean divides by the global B."""
    enc = MLPEncoder().double()
    x_t, a0 = _batch(dtype=torch.float64)
    guide = _flow_guide(enc, encoder_mode="sample", reduction=reduction, clamp=None)
    t = torch.full((B,), 0.5, dtype=torch.float64)
    full, _ = guide.gradient(x_t, a0, t, generator=torch.Generator().manual_seed(4))
    parts = [guide.gradient(x_t[i:i + 2], a0[i:i + 2], t[i:i + 2], generator=torch.Generator().manual_seed(4),
                            shard=BatchShard(B, i))[0] for i in (0, 2)]
    # per row the same float64 operations on the same inputs: equal to the last bits (MLP rows are independent;
    # the only reassociation is Σ_b d_b / B vs mean, ≤ 1 ulp); 1e-12 leaves room for that rounding alone
    torch.testing.assert_close(torch.cat(parts), full, rtol=1e-12, atol=1e-15)
    alone, _ = guide.gradient(x_t[2:], a0[2:], t[2:], generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(alone, full[2:])  # without the shard: other ξ and (reference) a 2x larger mean
    with pytest.raises(ShapeMismatchError):
        guide.gradient(x_t, a0, t, shard=BatchShard(B, 2))


def test_steer_is_the_guided_prediction():
    guide = _flow_guide(MLPEncoder(), scale=3.0, sign="flipped")
    pred, g = torch.ones(2, H, D, dtype=torch.float64), torch.full((2, H, D), 0.5)
    out = guide.steer(pred, g)
    assert out.dtype == torch.float64 and torch.equal(out, torch.full_like(pred, 1.0 - 1.5))
