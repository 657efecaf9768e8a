"""pi0-style policy: flow matching in the openpi convention with a transformer action expert.

Convention (openpi / LeRobot): x_t = t·ε + (1−t)·a0, target u = ε − a0, t ~ Beta(1.5, 1)·0.999 + 0.001
(t = 1 is pure noise). Inference: Euler, `num_inference_steps` = 10 steps from t = 1 to 0, via diffusers'
FlowMatchEulerDiscreteScheduler on the uniform sigma grid (x ← x + (t_next − t)·v, exactly openpi's loop).
Actions are zero-padded to `action_dim` (32 by default) with a dim mask; the loss uses real dims only.
The expert: prefix tokens [task, state] attend to each other only; action tokens (action ⊕ time through an
MLP, as pi0's action_time_mlp) attend to the prefix and to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ate.policies._blocks import SinusoidalPosEmb, TransformerBlock
from ate.policies.base import Policy, PolicyConfig, initial_noise


@dataclass
class Pi0Config(PolicyConfig):
    """Args (beyond PolicyConfig):
        width, depth, heads: action-expert transformer size.
        time_beta_alpha, time_beta_beta: Beta distribution of training times (openpi: 1.5, 1.0).
    """

    type: ClassVar[str] = "pi0_flow"

    horizon: int = 16
    action_dim: int = 32
    normalization: str = "meanstd"
    num_inference_steps: int = 10
    width: int = 128
    depth: int = 4
    heads: int = 4
    time_beta_alpha: float = 1.5
    time_beta_beta: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.time_beta_beta != 1.0:
            raise ValueError(f"Pi0Config.time_beta_beta must be 1.0 (inverse-CDF sampling), got {self.time_beta_beta}")


def flow_time(u: torch.Tensor, alpha: float) -> torch.Tensor:
    """t ~ Beta(alpha, 1)·0.999 + 0.001 from u ~ U(0, 1). Beta(α, 1) has CDF x^α, so t = u^(1/α) is exact,
    and unlike torch.distributions.Beta it works from a seeded generator's uniforms."""
    return u ** (1.0 / alpha) * 0.999 + 0.001


class ActionExpert(nn.Module):
    """x (B, H, D), t (B,) float in [0, 1], cond (B, 2, C) -> velocity (B, H, D)."""

    def __init__(self, action_dim: int, horizon: int, cond_dim: int, width: int, depth: int, heads: int):
        super().__init__()
        self.a_in = nn.Linear(action_dim, width)
        self.t_emb = SinusoidalPosEmb(width, min_period=4e-3, max_period=4.0)  # openpi's periods
        self.action_time_mlp = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width))
        self.c_in = nn.Linear(cond_dim, width)
        self.pos = nn.Parameter(torch.zeros(1, horizon + 2, width))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList([TransformerBlock(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.a_out = nn.Linear(width, action_dim)
        n = horizon + 2
        mask = torch.ones(n, n, dtype=torch.bool)
        mask[:2, 2:] = False  # prefix does not see the actions (pi0 block-causal attention)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x, t, cond):
        b, h, _ = x.shape
        te = self.t_emb(t)[:, None].expand(b, h, -1)
        a = self.action_time_mlp(torch.cat([self.a_in(x), te], dim=-1))
        seq = torch.cat([self.c_in(cond), a], dim=1) + self.pos
        for blk in self.blocks:
            seq = blk(seq, mask=self.attn_mask)
        return self.a_out(self.norm(seq[:, 2:]))


class Pi0Policy(Policy):
    """Flow-matching policy (pi0 family). See module docstring."""

    config_class = Pi0Config
    parameterization = "flow_openpi"

    def __init__(self, config: Pi0Config):
        super().__init__(config)
        from diffusers import FlowMatchEulerDiscreteScheduler

        c = config
        self.expert = ActionExpert(c.action_dim, c.horizon, c.cond_dim, c.width, c.depth, c.heads)
        self.inference_scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)

    def u_at(self, t):
        """Inverse of `flow_time`: the u that gives time t in [0.001, 1]."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return ((t - 0.001) / 0.999).clamp(min=0.0).pow(self.config.time_beta_alpha).float()

    def denoise_view(self, batch, noise):
        a0 = batch["action"]
        eps = noise["noise"].to(a0.dtype)
        t = flow_time(noise["u"], self.config.time_beta_alpha).to(a0.dtype)
        tt = t[:, None, None]
        x_t = tt * eps + (1 - tt) * a0
        pred = self.expert(x_t, t, self.encode_obs(batch))
        return {"x_t": x_t, "pred": pred, "target": eps - a0, "a0": a0, "t": t}

    def sample(self, cond, shape, action_mask, generator):
        n = self.config.num_inference_steps
        sched = self.inference_scheduler
        sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / n, n), device=cond.device)  # + terminal 0
        m = action_mask[:, None, :].to(cond.dtype)
        x = initial_noise(shape, generator).to(cond.device) * m
        for i, t in enumerate(sched.timesteps):
            v = self.expert(x, sched.sigmas[i].expand(shape[0]).to(cond.dtype), cond)
            x = sched.step(v, t, x).prev_sample * m
        return x
