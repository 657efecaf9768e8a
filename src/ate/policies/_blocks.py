"""Small network blocks shared by the reference policies: time embeddings, the 1-D conv blocks of
Diffusion Policy's ConditionalUnet1D, and a pre-norm transformer block with optional cross-attention.

Shapes: B batch, H chunk steps, D action dims, C channels / width, L tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# wavelengths 2π … 2π·10⁴ = frequencies 1 … 1e-4 rad/step, the DDPM / Diffusion Policy embedding for integer
# steps (a period of 1 would alias every integer step to the same phase)
DDPM_PERIODS = (2 * math.pi, 2 * math.pi * 1e4)


class SinusoidalPosEmb(nn.Module):
    """Sinusoidal embedding of a scalar per sample (DDPM integer step or flow time).

    `x` (B,) float -> (B, dim). `min_period` / `max_period` give the wavelengths: `DDPM_PERIODS` for
    integer diffusion steps, openpi uses (4e-3, 4.0) for flow times in [0, 1].
    """

    def __init__(self, dim: int, min_period: float = DDPM_PERIODS[0], max_period: float = DDPM_PERIODS[1]):
        super().__init__()
        if dim % 2:
            raise ValueError(f"SinusoidalPosEmb dim must be even, got {dim}")
        self.dim, self.min_period, self.max_period = dim, min_period, max_period

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frac = torch.linspace(0.0, 1.0, self.dim // 2, device=x.device)
        period = self.min_period * (self.max_period / self.min_period) ** frac
        arg = x.to(period.dtype)[:, None] * (2 * math.pi / period)[None]  # default dtype, float64 in exactness tests
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


# ---------------------------------------------------------------- Diffusion Policy 1-D conv UNet parts
# Copied in spirit from diffusion_policy/model/diffusion/conditional_unet1d.py (MIT): same layout, smaller.


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish. (B, C_in, H) -> (B, C_out, H)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out), nn.Mish()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks with FiLM (per-channel scale and bias predicted from the condition) in between.

    x (B, C_in, H), cond (B, cond_dim) -> (B, C_out, H).
    """

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int = 5, groups: int = 8):
        super().__init__()
        self.blocks = nn.ModuleList([Conv1dBlock(c_in, c_out, kernel, groups), Conv1dBlock(c_out, c_out, kernel, groups)])
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.residual_conv = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.c_out = c_out

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)
        scale, bias = self.cond_encoder(cond).unsqueeze(-1).chunk(2, dim=1)  # (B, C_out, 1) each
        out = self.blocks[1](scale * out + bias)
        return out + self.residual_conv(x)


# ---------------------------------------------------------------- transformer parts


class Attention(nn.Module):
    """Multi-head attention on (B, L, C) queries and (B, M, C) keys/values; `mask` (L, M) bool, True = attend."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        context = x if context is None else context
        b, l, c = x.shape
        q = self.q(x).view(b, l, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, l, c))


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to condition tokens, GELU MLP.

    x (B, L, C), context (B, M, C) or None -> (B, L, C).
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, cross: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.cross = Attention(width, heads) if cross else None
        self.norm_c = nn.LayerNorm(width) if cross else None
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x, context=None, mask=None):
        x = x + self.attn(self.norm1(x), mask=mask)
        if self.cross is not None:
            x = x + self.cross(self.norm_c(x), context)
        return x + self.mlp(self.norm2(x))
