"""Diffusion-Policy-style policy: DDPM ε-prediction with a 1-D conv UNet + FiLM conditioning.

Training: DDPMScheduler(100 steps, squaredcos_cap_v2, ε-prediction); x_t = √ᾱ·a0 + √(1−ᾱ)·ε,
target = ε. Inference: DDIMScheduler with `num_inference_steps` steps (default 10). Both from diffusers.
Unused (padding) dims are zero in data, masked in the loss and re-zeroed while sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ate.policies._blocks import DDPM_PERIODS, ConditionalResidualBlock1D, Conv1dBlock, SinusoidalPosEmb
from ate.policies.base import Policy, PolicyConfig, initial_noise


@dataclass
class DPConfig(PolicyConfig):
    """Args (beyond PolicyConfig):
        down_dims: UNet channel widths per level; horizon must be divisible by 2**(len(down_dims)-1).
        kernel_size, n_groups: conv kernel and GroupNorm groups.
        num_train_timesteps, beta_schedule, clip_sample: DDPM training scheduler.
    """

    type: ClassVar[str] = "dp_unet"

    horizon: int = 16
    action_dim: int = 10
    num_inference_steps: int = 10
    down_dims: tuple[int, ...] = (48, 96)
    kernel_size: int = 5
    n_groups: int = 8
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True

    def __post_init__(self):
        super().__post_init__()
        self.down_dims = tuple(int(d) for d in self.down_dims)
        factor = 2 ** (len(self.down_dims) - 1)
        if self.horizon % factor:
            raise ValueError(f"DPConfig.horizon={self.horizon} must be divisible by 2**(len(down_dims)-1)={factor}")


class ConditionalUnet1D(nn.Module):
    """x (B, H, D), t (B,) int, cond (B, cond) -> ε̂ (B, H, D). Layout of diffusion_policy's ConditionalUnet1D."""

    def __init__(self, input_dim: int, cond_dim: int, down_dims, kernel: int, groups: int, t_dim: int = 64):
        super().__init__()
        self.t_embed = nn.Sequential(SinusoidalPosEmb(t_dim, *DDPM_PERIODS), nn.Linear(t_dim, 4 * t_dim), nn.Mish(), nn.Linear(4 * t_dim, t_dim))
        gdim = t_dim + cond_dim
        dims = [input_dim, *down_dims]
        in_out = list(zip(dims[:-1], dims[1:]))

        def res(a, b):
            return ConditionalResidualBlock1D(a, b, gdim, kernel, groups)

        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.down.append(nn.ModuleList([res(a, b), res(b, b), nn.Conv1d(b, b, 3, 2, 1) if not last else nn.Identity()]))
        mid = down_dims[-1]
        self.mid = nn.ModuleList([res(mid, mid), res(mid, mid)])
        self.up = nn.ModuleList()
        for i, (a, b) in enumerate(reversed(in_out[1:])):
            last = i == len(in_out) - 1
            self.up.append(nn.ModuleList([res(2 * b, a), res(a, a), nn.ConvTranspose1d(a, a, 4, 2, 1) if not last else nn.Identity()]))
        self.final = nn.Sequential(Conv1dBlock(down_dims[0], down_dims[0], kernel, groups), nn.Conv1d(down_dims[0], input_dim, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        g = torch.cat([self.t_embed(t), cond], dim=-1)
        h = x.transpose(1, 2)  # (B, D, H)
        skips = []
        for r1, r2, down in self.down:
            h = r2(r1(h, g), g)
            skips.append(h)
            h = down(h)
        for r in self.mid:
            h = r(h, g)
        for r1, r2, up in self.up:
            h = up(r2(r1(torch.cat([h, skips.pop()], dim=1), g), g))
        return self.final(h).transpose(1, 2)


class DPPolicy(Policy):
    """ε-prediction DDPM policy (Diffusion Policy family). See module docstring."""

    config_class = DPConfig
    parameterization = "epsilon"

    def __init__(self, config: DPConfig):
        super().__init__(config)
        from diffusers import DDIMScheduler, DDPMScheduler

        c = config
        self.unet = ConditionalUnet1D(c.action_dim, 2 * c.cond_dim, c.down_dims, c.kernel_size, c.n_groups)
        kw = dict(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule, clip_sample=c.clip_sample,
                  prediction_type="epsilon")
        self.noise_scheduler = DDPMScheduler(**kw)
        self.inference_scheduler = DDIMScheduler(**kw, set_alpha_to_one=True, steps_offset=0)

    def alphas_cumprod(self) -> torch.Tensor:
        return self.noise_scheduler.alphas_cumprod

    def denoise_view(self, batch, noise):
        a0 = batch["action"]
        eps = noise["noise"].to(a0.dtype)
        t = (noise["u"] * self.config.num_train_timesteps).long().clamp_max(self.config.num_train_timesteps - 1)
        x_t = self.noise_scheduler.add_noise(a0, eps, t)
        pred = self.unet(x_t, t, self.encode_obs(batch).flatten(1))
        return {"x_t": x_t, "pred": pred, "target": eps, "a0": a0, "t": t}

    def sample(self, cond, shape, action_mask, generator):
        sched = self.inference_scheduler
        sched.set_timesteps(self.config.num_inference_steps)
        m = action_mask[:, None, :].to(cond.dtype)
        x = initial_noise(shape, generator).to(cond.device) * m
        g = cond.flatten(1)
        for t in sched.timesteps:
            eps = self.unet(x, t.expand(shape[0]).to(cond.device), g)
            x = sched.step(eps, t, x).prev_sample * m
        return x
