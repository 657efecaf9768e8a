"""c(t) of every parameterisation against independent derivations, and finiteness everywhere."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from ate.steer import DDPM_PARAMETERIZATIONS, FLOW_PARAMETERIZATIONS, PARAMETERIZATIONS, guidance_coefficient

FLOW_TIMES = [0.0, 1e-6, 0.5, 1 - 1e-6, 1.0]


def _ddpm(prediction_type="epsilon", T=100, schedule="squaredcos_cap_v2"):
    return DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule, prediction_type=prediction_type,
                         clip_sample=False)


def _gaussian_posterior_targets(param, t, m, v, x, sched):
    """E[target | x_t = x] and the score ∇ log p_t(x) for 1-D data a0 ~ N(m, v), from the definitions of
    each parameterisation's noising and target (plain Gaussian conditioning, no use of c(t))."""
    if param in DDPM_PARAMETERIZATIONS:
        abar = sched.alphas_cumprod.double()[t]
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    elif param == "flow_paper":  # a_τ = τ a0 + (1−τ) ε
        alpha, sigma = torch.tensor(t, dtype=torch.float64), torch.tensor(1 - t, dtype=torch.float64)
    else:  # openpi: x_t = t ε + (1−t) a0
        alpha, sigma = torch.tensor(1 - t, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)
    var_x = alpha**2 * v + sigma**2
    e_a0 = m + alpha * v / var_x * (x - alpha * m)
    e_eps = sigma / var_x * (x - alpha * m)
    score = -(x - alpha * m) / var_x
    if param == "epsilon":
        target = e_eps
    elif param == "sample":
        target = e_a0
    elif param == "v_prediction":  # diffusers' own definition of the v target (linear in a0, ε)
        tt = torch.full(x.shape, t, dtype=torch.long)
        target = sched.get_velocity(e_a0, e_eps, tt)
    elif param == "flow_paper":
        target = e_a0 - e_eps
    else:
        target = e_eps - e_a0
    return target, score


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
def test_coefficient_matches_gaussian_posterior(param):
    # E[target|x] = A(t)·x + c(t)·score for every data distribution: two Gaussians at the same x give
    # c = ΔE[target] / Δscore.
    sched = _ddpm("epsilon", T=100)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    times = [1, 10, 37, 60, 90] if param in DDPM_PARAMETERIZATIONS else [0.1, 0.3, 0.5, 0.8, 0.95]
    x = torch.linspace(-2, 2, 5, dtype=torch.float64)
    for t in times:
        tgt1, s1 = _gaussian_posterior_targets(param, t, 0.3, 0.5, x, sched)
        tgt2, s2 = _gaussian_posterior_targets(param, t, -0.7, 1.7, x, sched)
        c_indep = (tgt1 - tgt2) / (s1 - s2)
        abar = sched.alphas_cumprod if param in DDPM_PARAMETERIZATIONS else None
        tt = torch.tensor([t], dtype=torch.float64 if isinstance(t, float) else torch.long)
        c = guidance_coefficient(param, tt, abar, dtype=torch.float64)
        torch.testing.assert_close(c_indep, c.expand_as(c_indep), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("param", DDPM_PARAMETERIZATIONS)
def test_ddpm_shift_moves_implied_score_by_g(param):
    # diffusers' step() converts each prediction type to x0; Tweedie turns x0 into the implied score
    # s = (√ᾱ·x0 − x_t)/(1−ᾱ). Shifting the prediction by c·g must shift that score by exactly g.
    sched = _ddpm(param, T=100)
    gen = torch.Generator().manual_seed(0)
    x_t, pred, g = (torch.randn(2, 4, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    for t in [0, 5, 50, 95]:
        abar = sched.alphas_cumprod.double()[t]

        def implied_score(p):
            x0 = sched.step(p, t, x_t, generator=torch.Generator().manual_seed(1)).pred_original_sample
            return (abar.sqrt() * x0 - x_t) / (1 - abar)

        c = guidance_coefficient(param, torch.tensor([t]), sched.alphas_cumprod, dtype=torch.float64)
        # x_t, pred and g are float64, but diffusers' step() evaluates its √ᾱ, √(1−ᾱ) factors in the schedule's
        # float32: each factor carries relative rounding u = 6e-8, i.e. ≲ 1e-7 absolute on these O(1) values
        # (measured ≤ 1.3e-7); atol 1e-6 / rtol 1e-4 leave > 7x margin, a wrong c(t) is off by O(1)
        torch.testing.assert_close(implied_score(pred + c * g) - implied_score(pred), g, rtol=1e-4, atol=1e-6)


def test_epsilon_shift_equals_minus_sqrt_one_minus_abar_times_grad():
    # ε = −√(1−ᾱ)·∇log p_t: the ε-target of the guided score (s + g) differs by −√(1−ᾱ)·g.
    sched = _ddpm("epsilon", T=1000)
    t = torch.tensor([0, 250, 500, 999])
    abar = sched.alphas_cumprod.double()[t]
    c = guidance_coefficient("epsilon", t, sched.alphas_cumprod, dtype=torch.float64)
    torch.testing.assert_close(c, -(1 - abar).sqrt())


def test_flow_conventions_are_mirror_images():
    # Same noise level (σ = t_openpi = 1 − τ_paper), targets a0 − ε vs ε − a0: coefficients are negatives.
    t = torch.tensor([0.01, 0.2, 0.5, 0.9])
    torch.testing.assert_close(guidance_coefficient("flow_paper", 1 - t), -guidance_coefficient("flow_openpi", t))
    torch.testing.assert_close(guidance_coefficient("flow_openpi", t), -t / (1 - t))


@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear"])
@pytest.mark.parametrize("T", [100, 1000])
@pytest.mark.parametrize("param", DDPM_PARAMETERIZATIONS)
def test_finite_at_every_ddpm_timestep(param, T, schedule):
    sched = _ddpm("epsilon", T=T, schedule=schedule)
    c = guidance_coefficient(param, torch.arange(T), sched.alphas_cumprod)
    assert c.dtype == torch.float32 and c.shape == (T,)
    assert torch.isfinite(c).all()
    assert c.abs().max() <= 1e6 + 1
    # sign conventions: epsilon and v negative, sample positive
    assert (c <= 0).all() if param != "sample" else (c >= 0).all()


def test_ddpm_zero_alpha_bar_stays_finite():
    abar = torch.tensor([0.99, 0.5, 0.0])  # a zero-terminal-SNR schedule reaches ᾱ = 0
    for param in DDPM_PARAMETERIZATIONS:
        assert torch.isfinite(guidance_coefficient(param, torch.arange(3), abar)).all()


@pytest.mark.parametrize("param", FLOW_PARAMETERIZATIONS)
def test_finite_at_flow_endpoints(param):
    c = guidance_coefficient(param, torch.tensor(FLOW_TIMES))
    assert torch.isfinite(c).all(), c
    noise_end = 1.0 if param == "flow_openpi" else 0.0
    data_end = 1.0 - noise_end
    assert guidance_coefficient(param, torch.tensor([data_end])).item() == 0.0
    assert abs(guidance_coefficient(param, torch.tensor([noise_end])).item()) == pytest.approx(1e6, rel=1e-3)


def test_t_cap():
    sched = _ddpm("sample", T=100)
    c = guidance_coefficient("sample", torch.tensor([10, 80, 99]), sched.alphas_cumprod, t_cap=80)
    c80 = guidance_coefficient("sample", torch.tensor([80]), sched.alphas_cumprod)
    assert c[1] == c80[0] and c[2] == c80[0] and c[0] < c80[0]
    # flow: cap on the noise level σ (t for openpi, 1 − τ for paper)
    c = guidance_coefficient("flow_openpi", torch.tensor([0.5, 0.95, 1.0]), t_cap=0.9)
    torch.testing.assert_close(c, torch.tensor([-1.0, -9.0, -9.0]))
    c = guidance_coefficient("flow_paper", torch.tensor([0.5, 0.05, 0.0]), t_cap=0.9)
    torch.testing.assert_close(c, torch.tensor([1.0, 9.0, 9.0]))


def test_bad_inputs_raise():
    abar = _ddpm().alphas_cumprod
    with pytest.raises(ValueError, match="unknown parameterization"):
        guidance_coefficient("x0", torch.tensor([1]), abar)
    with pytest.raises(ValueError, match="needs alphas_cumprod"):
        guidance_coefficient("epsilon", torch.tensor([1]))
    with pytest.raises(ValueError, match=r"\[0, 99\]"):
        guidance_coefficient("epsilon", torch.tensor([100]), abar)
    with pytest.raises(ValueError, match="integers"):
        guidance_coefficient("epsilon", torch.tensor([1.5]), abar)
    with pytest.raises(ValueError, match="not scheduler timesteps"):
        guidance_coefficient("flow_openpi", torch.tensor([500.0]))
    with pytest.raises(ValueError, match="noise level"):
        guidance_coefficient("flow_openpi", torch.tensor([0.5]), t_cap=1.0)
    with pytest.raises(ValueError, match="flow"):
        guidance_coefficient("flow_paper", torch.tensor([0.5]), abar)
    assert math.isfinite(guidance_coefficient("epsilon", 3, abar).item())  # scalar t accepted
