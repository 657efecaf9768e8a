"""Coefficient c(t) that turns the latent classifier gradient g = ∇_{x_t} log p(y | x_t) into a shift of
the policy's regression target.

Classifier guidance replaces the score s = ∇ log p_t(x_t) with s + g. Every parameterisation a diffusion
or flow policy regresses is, in expectation, an affine function of the score:
``E[target | x_t] = A(t)·x_t + c(t)·s``, so the guided target is the unguided one plus ``c(t)·g``.
Below, ``ᾱ = alphas_cumprod[t]`` and, for DDPM, ``x_t = √ᾱ·a0 + √(1−ᾱ)·ε``; Tweedie's formula gives
``E[a0 | x_t] = (x_t + (1−ᾱ)·s) / √ᾱ`` and ``E[ε | x_t] = −√(1−ᾱ)·s``.

==================  ===========================================================  ===============
parameterisation    derivation of the target shift                               c(t)
==================  ===========================================================  ===============
``epsilon``         ε̂ = −√(1−ᾱ)·s  →  ε̂(s+g) − ε̂(s) = −√(1−ᾱ)·g                 −√(1−ᾱ)
``sample`` (x0)     x̂0 = (x_t + (1−ᾱ)·s)/√ᾱ  →  shift (1−ᾱ)/√ᾱ·g                 (1−ᾱ)/√ᾱ
``v_prediction``    v = √ᾱ·ε − √(1−ᾱ)·a0 (diffusers ``get_velocity``):           −√(1−ᾱ)/√ᾱ
                    √ᾱ·(−√(1−ᾱ)) − √(1−ᾱ)·(1−ᾱ)/√ᾱ = −√(1−ᾱ)/√ᾱ
``flow_paper``      a_τ = τ·a0 + (1−τ)·ε, u = a0 − ε = (a0 − a_τ)/(1−τ),          (1−τ)/τ
                    E[a0|a_τ] = (a_τ + (1−τ)²·s)/τ  →  E[u] = a_τ/τ + (1−τ)/τ·s
``flow_openpi``     x_t = t·ε + (1−t)·a0, u = ε − a0 = (x_t − a0)/t,               −t/(1−t)
                    E[a0|x_t] = (x_t + t²·s)/(1−t)  →  E[u] = −x_t/(1−t) − t/(1−t)·s
==================  ===========================================================  ===============

The coefficients grow without bound toward pure noise (ᾱ → 0, τ → 0, t → 1). They are evaluated in
float64 from ᾱ directly (never by dividing a noisy sample by √ᾱ to build an x0 estimate), with ᾱ floored
at ``ALPHA_BAR_MIN`` and the flow noise level capped at ``1 − FLOW_EPS``, so c(t) is finite everywhere;
the guidance clamp κ then bounds c(t)·g, and ``t_cap`` optionally stops the coefficient from growing
past a chosen noise level.
"""

from __future__ import annotations

import math

import torch

DDPM_PARAMETERIZATIONS = ("epsilon", "sample", "v_prediction")
FLOW_PARAMETERIZATIONS = ("flow_paper", "flow_openpi")
PARAMETERIZATIONS = DDPM_PARAMETERIZATIONS + FLOW_PARAMETERIZATIONS

# Smallest ᾱ used: (1−ᾱ)/√ᾱ ≤ 1e6 stays finite even in float32 (squaredcos_cap_v2 reaches ᾱ ≈ 2.4e-9).
ALPHA_BAR_MIN = 1e-12
# Largest flow noise level is 1 − FLOW_EPS: |c| ≤ 1e6 at t = 1 (openpi) or τ = 0 (paper).
FLOW_EPS = 1e-6


def check_parameterization(parameterization: str) -> str:
    """Return ``parameterization`` if known, else raise ValueError listing the valid names."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}")
    return parameterization


def check_t_cap(parameterization: str, t_cap: float | int | None, num_train_timesteps: int | None = None) -> None:
    """Validate ``t_cap`` for ``parameterization`` (see :func:`guidance_coefficient`)."""
    if t_cap is None:
        return
    if isinstance(t_cap, bool) or not isinstance(t_cap, (int, float)) or not math.isfinite(t_cap):
        raise ValueError(f"t_cap must be None or a finite number, got {t_cap!r}")
    if parameterization in DDPM_PARAMETERIZATIONS:
        if t_cap < 0 or float(t_cap) != int(t_cap):
            raise ValueError(f"t_cap for DDPM ({parameterization}) is a timestep index >= 0, got {t_cap!r}")
        if num_train_timesteps is not None and t_cap > num_train_timesteps - 1:
            raise ValueError(f"t_cap {t_cap} exceeds the last DDPM timestep {num_train_timesteps - 1}")
    elif not 0.0 <= t_cap < 1.0:
        raise ValueError(f"t_cap for flow ({parameterization}) is a noise level in [0, 1), got {t_cap!r}")


def _as_time_tensor(t) -> torch.Tensor:
    t = torch.as_tensor(t)
    return t.reshape(-1) if t.ndim != 1 else t


def guidance_coefficient(
    parameterization: str,
    t,
    alphas_cumprod: torch.Tensor | None = None,
    t_cap: float | int | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """c(t) for each sample: ``guided_target = target + c(t)·∇_{x_t} log p(y | x_t)``.

    Args:
        parameterization: ``epsilon`` | ``sample`` | ``v_prediction`` (DDPM, need ``alphas_cumprod``) or
            ``flow_paper`` (τ = 1 is data) | ``flow_openpi`` (t = 1 is noise; pi0 / LeRobot / diffusers
            ``FlowMatchEulerDiscreteScheduler`` sigmas).
        t: DDPM integer timesteps in [0, T−1], or flow times in [0, 1]; scalar or any shape, flattened to (B,).
        alphas_cumprod: (T,) cumulative product of alphas (e.g. ``scheduler.alphas_cumprod``), DDPM only.
        t_cap: the noisiest point at which c is evaluated (noisier times reuse its value). DDPM: a timestep
            index (t ← min(t, t_cap)). Flow: a noise level σ in [0, 1), where σ = t (openpi) and σ = 1 − τ
            (paper), so σ ← min(σ, t_cap). Default: no cap beyond the finite floors described above.
        dtype: dtype of the result (the arithmetic itself runs in float64).

    Returns:
        (B,) tensor of finite coefficients on ``t``'s device.
    """
    check_parameterization(parameterization)
    t = _as_time_tensor(t)
    device = t.device
    if parameterization in DDPM_PARAMETERIZATIONS:
        if alphas_cumprod is None:
            raise ValueError(f"parameterization {parameterization!r} needs alphas_cumprod (DDPM schedule)")
        abar_table = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).reshape(-1)
        num_steps = abar_table.numel()
        check_t_cap(parameterization, t_cap, num_steps)
        if t.is_floating_point():
            if not torch.equal(t, t.round()):
                raise ValueError(f"DDPM timesteps must be integers, got non-integral values {t.tolist()[:8]}")
        tt = t.detach().to("cpu").long()
        if tt.numel() and (tt.min() < 0 or tt.max() >= num_steps):
            raise ValueError(f"DDPM timesteps must lie in [0, {num_steps - 1}], got min {tt.min().item()} "
                             f"max {tt.max().item()}")
        if t_cap is not None:
            tt = tt.clamp(max=int(t_cap))
        abar = abar_table[tt].clamp(min=ALPHA_BAR_MIN, max=1.0)
        if parameterization == "epsilon":
            c = -torch.sqrt(1.0 - abar)
        elif parameterization == "sample":
            c = (1.0 - abar) / torch.sqrt(abar)
        else:  # v_prediction
            c = -torch.sqrt(1.0 - abar) / torch.sqrt(abar)
    else:
        if alphas_cumprod is not None:
            raise ValueError(f"parameterization {parameterization!r} is a flow; alphas_cumprod must be None")
        check_t_cap(parameterization, t_cap)
        tf = t.detach().to("cpu", torch.float64)
        if tf.numel() and not (torch.isfinite(tf).all() and tf.min() >= 0.0 and tf.max() <= 1.0):
            raise ValueError(f"flow times must lie in [0, 1] ({parameterization}), got min {tf.min().item()} "
                             f"max {tf.max().item()}; pass sigmas, not scheduler timesteps (×1000)")
        sigma = tf if parameterization == "flow_openpi" else 1.0 - tf  # noise level, 1 = pure noise
        sigma = sigma.clamp(max=1.0 - FLOW_EPS if t_cap is None else float(t_cap))
        ratio = sigma / (1.0 - sigma)
        c = -ratio if parameterization == "flow_openpi" else ratio
    return c.to(device=device, dtype=dtype)


def noise_level(parameterization: str, t, alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """The share of noise in x_t, one scale for every parameterisation: 0 = clean data, 1 = pure noise.

    DDPM: √(1−ᾱ_t) (the weight of ε in x_t). Flow: σ, the weight of ε (``flow_openpi``: σ = t;
    ``flow_paper``: σ = 1 − τ). Returns (B,) float64 on ``t``'s device; used by the guidance's noise window.
    """
    check_parameterization(parameterization)
    t = _as_time_tensor(t)
    if parameterization in DDPM_PARAMETERIZATIONS:
        if alphas_cumprod is None:
            raise ValueError(f"parameterization {parameterization!r} needs alphas_cumprod (DDPM schedule)")
        abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).reshape(-1)[t.detach().to("cpu").long()]
        level = torch.sqrt((1.0 - abar).clamp(min=0.0))
    else:
        tf = t.detach().to("cpu", torch.float64)
        level = tf if parameterization == "flow_openpi" else 1.0 - tf
    return level.to(t.device)


def time_at_noise_level(parameterization: str, level, alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """The time whose :func:`noise_level` is ``level`` (the inverse map; (B,) for (B,) levels in [0, 1]).

    DDPM: the integer timestep whose √(1−ᾱ_t) is nearest (ties to the earlier step), long. Flow: exact,
    float64 (``flow_openpi``: t = σ; ``flow_paper``: τ = 1 − σ)."""
    check_parameterization(parameterization)
    lv = _as_time_tensor(torch.as_tensor(level, dtype=torch.float64))
    if lv.numel() and not (torch.isfinite(lv).all() and lv.min() >= 0.0 and lv.max() <= 1.0):
        raise ValueError(f"noise levels must lie in [0, 1], got {lv.tolist()[:8]}")
    if parameterization in DDPM_PARAMETERIZATIONS:
        if alphas_cumprod is None:
            raise ValueError(f"parameterization {parameterization!r} needs alphas_cumprod (DDPM schedule)")
        abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).reshape(-1)
        table = torch.sqrt((1.0 - abar).clamp(min=0.0))  # (T,) noise level of every timestep
        return (table[None, :] - lv[:, None]).abs().argmin(dim=1)
    return lv.clone() if parameterization == "flow_openpi" else 1.0 - lv
