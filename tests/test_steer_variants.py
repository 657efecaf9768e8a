"""Steering variants beyond the paper (GuidanceConfig.noise_min/max, strength, latent_target) and the
placement identity: each checked against a closed form or finite differences, in float64."""

import pytest
import torch

from ate.align.prior import PriorSummary
from ate.steer import GuidanceConfig, LatentGuidance, masked_mse, noise_level
from test_steer_guidance import B, D, H, Z, MLPEncoder, _batch


def _guide(param="flow_paper", prior=None, abar=None, **cfg):
    enc = MLPEncoder().double()
    return LatentGuidance(enc, param, GuidanceConfig(**{"clamp": None, **cfg}), alphas_cumprod=abar, prior=prior)


def test_target_side_placement_is_the_opposite_sign_on_the_prediction():
    """g is detached, so MSE(pred + s·λ·g, target) and MSE(pred, target − s·λ·g) are one loss: putting the
    guidance on the target (Model-Guidance style) is no separate mode."""
    guide = _guide(scale=2.0)
    x_t, a0 = _batch(dtype=torch.float64)
    t = torch.full((B,), 0.5, dtype=torch.float64)
    g, _ = guide.gradient(x_t, a0, t, generator=torch.Generator().manual_seed(0))
    target = torch.randn(B, H, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    p1 = torch.randn(B, H, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    p2 = p1.detach().clone().requires_grad_(True)
    l1 = masked_mse(guide.steer(p1, g), target)
    l2 = masked_mse(p2, target - 2.0 * g)
    l1.backward()
    l2.backward()
    # the same float64 operations up to the order of one addition: equal to ~1 ulp
    torch.testing.assert_close(l1, l2, rtol=1e-14, atol=0)
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-14, atol=1e-17)


def test_noise_level_closed_forms():
    abar = torch.linspace(0.999, 0.01, 10, dtype=torch.float64)
    t = torch.tensor([0, 4, 9])
    torch.testing.assert_close(noise_level("epsilon", t, abar), (1 - abar[t]).sqrt())
    tf = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    torch.testing.assert_close(noise_level("flow_openpi", tf), tf)
    torch.testing.assert_close(noise_level("flow_paper", tf), 1 - tf)


@pytest.mark.parametrize("param", ["flow_paper", "flow_openpi"])
def test_noise_window_zeroes_g_outside_and_keeps_it_inside(param):
    x_t, a0 = _batch(dtype=torch.float64)
    t = torch.tensor([0.1, 0.4, 0.6, 0.9], dtype=torch.float64)
    full, _ = _guide(param).gradient(x_t, a0, t)
    win, _ = _guide(param, noise_min=0.3, noise_max=0.7).gradient(x_t, a0, t)
    level = noise_level(param, t)
    inside = (level >= 0.3) & (level <= 0.7)
    assert inside.tolist() == [False, True, True, False]
    assert torch.equal(win[inside], full[inside]) and torch.count_nonzero(win[~inside]) == 0
    assert torch.count_nonzero(full[~inside]) > 0


def test_relative_strength_sets_the_shift_to_a_fraction_of_the_residual():
    guide = _guide(scale=0.25, strength="relative")
    x_t, a0 = _batch(dtype=torch.float64)
    t = torch.full((B,), 0.5, dtype=torch.float64)
    g, _ = guide.gradient(x_t, a0, t)
    g[1] = 0  # a sample without guidance (e.g. outside the noise window) stays unguided
    pred = torch.randn(B, H, D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    target = torch.randn(B, H, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    pad = torch.zeros(B, H, dtype=torch.bool)
    pad[0, -2:] = True
    shift = guide.steer(pred, g, target, pad_mask=pad) - pred
    valid = (~pad).double()[..., None]
    r_norm = ((target - pred) * valid).flatten(1).norm(dim=1)
    # closed form: ‖shift_b‖ = λ·‖r_b‖ and the direction of g_b, for every guided sample
    for b in (0, 2, 3):
        assert shift[b].norm().item() == pytest.approx(0.25 * r_norm[b].item(), rel=1e-12)
        cos = torch.nn.functional.cosine_similarity(shift[b].flatten(), g[b].flatten(), dim=0)
        assert cos.item() == pytest.approx(1.0, abs=1e-12)
    assert torch.count_nonzero(shift[1]) == 0
    # invariant to g's own scale: only its direction matters
    torch.testing.assert_close(guide.steer(pred, 7.0 * g, target, pad_mask=pad) - pred, shift, rtol=1e-12, atol=1e-15)
    assert guide.fraction_of_residual(shift[[0, 2, 3]], pred[[0, 2, 3]], target[[0, 2, 3]],
                                      pad_mask=pad[[0, 2, 3]]) == pytest.approx(0.25, rel=1e-12)
    with pytest.raises(ValueError, match="target"):
        guide.steer(pred, g)
    with pytest.raises(ValueError, match="relative"):
        guide.additive_term(pred, x_t, a0, t)


def test_source_mode_pulls_toward_the_nearest_prior_component_and_matches_finite_differences():
    enc = MLPEncoder().double()
    x_t, a0 = _batch(dtype=torch.float64)
    with torch.no_grad():
        mu0, _ = enc.encode(a0)
    # two components: one at the first two clean latents' mean, one far away
    means = torch.stack([mu0[:2].mean(0), mu0[2:].mean(0) + 3.0]).float()
    prior = PriorSummary("gmm", means, torch.ones(2, Z), torch.tensor([0.5, 0.5]))
    guide = LatentGuidance(enc, "flow_paper", GuidanceConfig(clamp=None, encoder_mode="mean", latent_target="source_mode",
                                                              reduction="per_sample"), prior=prior)
    t = torch.full((B,), 0.5, dtype=torch.float64)
    g, diag = guide.gradient(x_t, a0, t)
    nearest = torch.cdist(mu0, means.double()).argmin(1)
    goal = means.double()[nearest]

    def dist(x):  # the objective written out: Σ_b mean_Z (μ(x_b) − m_{k*(b)})²
        with torch.no_grad():
            return ((enc.encode(x)[0] - goal) ** 2).mean(1).sum()

    h = 1e-6
    gen = torch.Generator().manual_seed(5)
    for _ in range(10):
        i = tuple(torch.randint(0, n, (1,), generator=gen).item() for n in (B, H, D))
        e = torch.zeros_like(x_t)
        e[i] = h
        fd = (dist(x_t - e) - dist(x_t + e)) / (2 * h)  # g = ∂(−D)/∂x; float64 central difference (see FD test)
        assert g[i].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-9)
    with torch.no_grad():
        clean = ((enc.encode(x_t)[0] - mu0) ** 2).mean(1).mean().item()
    assert diag["latent_dist"] != pytest.approx(clean)  # not the paper's distance to E(a0)
    with pytest.raises(ValueError, match="prior"):
        _guide(latent_target="source_mode")


def test_paper_defaults_are_unchanged_and_lambda_zero_is_plain():
    assert GuidanceConfig().windowed is False
    cfg = GuidanceConfig()
    assert (cfg.noise_min, cfg.noise_max, cfg.strength, cfg.latent_target) == (0.0, 1.0, "absolute", "clean")
    guide = _guide(scale=0.0, strength="relative", noise_min=0.2)
    x_t, a0 = _batch(dtype=torch.float64)
    pred = torch.randn(B, H, D, dtype=torch.float64)
    target = torch.randn(B, H, D, dtype=torch.float64)
    loss, diag = guide.guided_loss(pred, target, x_t, a0, torch.full((B,), 0.5, dtype=torch.float64))
    assert torch.equal(loss, masked_mse(pred, target)) and diag["rel_strength"] == 0.0
    for bad in (dict(noise_min=0.6, noise_max=0.5), dict(noise_max=1.5), dict(strength="big"), dict(latent_target="x")):
        with pytest.raises(ValueError):
            GuidanceConfig(**bad)
