"""RDT-style policy: DDPM x0 ("sample") prediction with a DiT-style transformer in the unified
128-slot action space, so robots with different action dims share one model.

Training: DDPMScheduler(1000, squaredcos_cap_v2, prediction_type="sample"), target = a0.
Inference: DPMSolverMultistepScheduler (dpmsolver++) with `num_inference_steps` = 5 (RDT's default).
A robot's action dims are written into named slots of `ate.steer.RDT_UNIFIED_128` (right arm joints,
gripper, ...); the slot mask is fed to the network, masks the loss and re-zeroes unused slots.
The denoiser: tokens [timestep, state, H action tokens] with self-attention, cross-attending to the
condition tokens [state, task, timestep] in every block (RDT alternates; here every block, tiny model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ate.errors import ShapeMismatchError
from ate.policies._blocks import DDPM_PERIODS, SinusoidalPosEmb, TransformerBlock
from ate.policies.base import Policy, PolicyConfig, initial_noise


@dataclass
class RDTConfig(PolicyConfig):
    """Args (beyond PolicyConfig):
        width, depth, heads: transformer size.
        num_train_timesteps, beta_schedule: DDPM training scheduler.
    """

    type: ClassVar[str] = "rdt_dit"

    horizon: int = 16
    action_dim: int = 128
    num_inference_steps: int = 5
    width: int = 128
    depth: int = 4
    heads: int = 4
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"


def unified_action_index(action_dim: int, robot: str = "", slot_names: list[str] | None = None) -> list[int]:
    """Slots of a robot's action dims in `ate.steer.RDT_UNIFIED_128`.

    slot_names: one unified slot name per action dim (e.g. `ate.steer.dual_arm_names(6)` for ALOHA).
    Default: a single arm, joints -> right arm joint slots, last dim -> right gripper
    (`single_arm_names(action_dim - 1)`). Indices always come from the layout, never by hand.
    """
    from ate.steer import RDT_UNIFIED_128, single_arm_names

    if slot_names is None:
        if not 2 <= action_dim <= 11:
            raise ShapeMismatchError(
                f"robot {robot!r}: cannot place {action_dim} action dims as one arm + gripper in the unified layout; "
                "give slot names explicitly"
            )
        slot_names = single_arm_names(action_dim - 1)
    if len(slot_names) != action_dim:
        raise ShapeMismatchError(f"robot {robot!r}: {len(slot_names)} slot names for {action_dim} action dims")
    return RDT_UNIFIED_128.indices(slot_names)


class DiT(nn.Module):
    """x (B, H, D), mask (B, D), t (B,), cond (B, 2, C) -> x̂0 (B, H, D)."""

    def __init__(self, action_dim: int, horizon: int, cond_dim: int, width: int, depth: int, heads: int):
        super().__init__()
        self.x_embed = nn.Linear(2 * action_dim, width)  # action ⊕ slot mask, as RDT's adaptor
        self.t_embed = nn.Sequential(SinusoidalPosEmb(width, *DDPM_PERIODS), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.c_embed = nn.Linear(cond_dim, width)
        self.pos = nn.Parameter(torch.zeros(1, horizon + 2, width))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList([TransformerBlock(width, heads, cross=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, action_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x, mask, t, cond):
        b, h, _ = x.shape
        m = mask[:, None, :].to(x.dtype).expand(b, h, -1)
        t_tok = self.t_embed(t)[:, None]  # (B, 1, W)
        c_tok = self.c_embed(cond)  # (B, 2, W): state, task
        seq = torch.cat([t_tok, c_tok[:, :1], self.x_embed(torch.cat([x, m], dim=-1))], dim=1) + self.pos
        context = torch.cat([c_tok, t_tok], dim=1)
        for blk in self.blocks:
            seq = blk(seq, context)
        return self.head(self.norm(seq[:, 2:]))


class RDTPolicy(Policy):
    """x0-prediction DDPM policy in the unified action space (RDT family). See module docstring."""

    config_class = RDTConfig
    parameterization = "sample"

    def __init__(self, config: RDTConfig):
        super().__init__(config)
        from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

        c = config
        self.dit = DiT(c.action_dim, c.horizon, c.cond_dim, c.width, c.depth, c.heads)
        kw = dict(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule, prediction_type="sample")
        self.noise_scheduler = DDPMScheduler(**kw, clip_sample=False)
        self.inference_scheduler = DPMSolverMultistepScheduler(**kw, algorithm_type="dpmsolver++", solver_order=2)

    def default_action_index(self, robot, action_dim):
        return unified_action_index(action_dim, robot)

    def alphas_cumprod(self):
        return self.noise_scheduler.alphas_cumprod

    def denoise_view(self, batch, noise):
        a0, mask = batch["action"], batch["action_mask"]
        eps = noise["noise"].to(a0.dtype)
        t = (noise["u"] * self.config.num_train_timesteps).long().clamp_max(self.config.num_train_timesteps - 1)
        x_t = self.noise_scheduler.add_noise(a0, eps, t)  # eps is 0 on unused slots (base): they stay 0
        pred = self.dit(x_t, mask, t, self.encode_obs(batch))
        return {"x_t": x_t, "pred": pred, "target": a0, "a0": a0, "t": t}

    def sample(self, cond, shape, action_mask, generator):
        sched = self.inference_scheduler
        sched.set_timesteps(self.config.num_inference_steps)
        m = action_mask[:, None, :].to(cond.dtype)
        x = initial_noise(shape, generator).to(cond.device) * m
        for t in sched.timesteps:
            x0 = self.dit(x, action_mask, t.expand(shape[0]).to(cond.device), cond)
            x = sched.step(x0, t, x).prev_sample * m
        return x
