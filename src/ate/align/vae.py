"""Action-chunk VAE with a "skip transformer" encoder / decoder (MLD-style), as used by ATE.

Encoder: two learned distribution tokens (μ token, log-variance token) are prepended to the linearly
embedded actions, a learned 1-D positional embedding is added, and the sequence runs through 2k+1 post-LN
GELU layers (k input blocks, 1 middle block, k output blocks; each output block first merges
``concat(x, skip)`` through a Linear) and a final LayerNorm. The two distribution tokens become μ and
log σ². Decoder: zero queries + learned positions cross-attend to the single latent token through the
same skip layout, then a Linear maps back to D.

Attribute names mirror the public reference trainer (``skel_embedding``, ``global_motion_token``,
``query_pos_encoder.pe``, ``encoder.input_blocks.0.self_attn...``, ``final_layer``) so that its state
dicts load directly (see :mod:`ate.align.convert`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ate.errors import ShapeMismatchError

# Presets: "reference" matches the public trainer (~52 M parameters); "small" trains on a CPU in minutes.
PRESETS: dict[str, dict] = {
    "reference": dict(latent_dim=512, num_layers=9, num_heads=4, ff_dim=1024, dropout=0.0, max_len=500),
    "small": dict(latent_dim=64, num_layers=3, num_heads=4, ff_dim=256, dropout=0.0, max_len=500),
}


@dataclass
class VAEConfig:
    """Shape and size of an action-chunk VAE.

    Args:
        action_dim: D, action dimensions of one step (in the policy's normalised space).
        horizon: H, steps per chunk.
        latent_dim: Z, latent size; also the transformer width (as in the reference).
        num_layers: odd number of transformer layers per side (2k+1).
        num_heads: attention heads.
        ff_dim: feed-forward width.
        dropout: dropout in every layer (reference 0).
        max_len: length of the learned positional tables (reference 500; must exceed H + 2).
        preset_name: name of the preset this config came from (informational).
    """

    action_dim: int
    horizon: int
    latent_dim: int = 64
    num_layers: int = 3
    num_heads: int = 4
    ff_dim: int = 256
    dropout: float = 0.0
    max_len: int = 500
    preset_name: str = "small"

    def __post_init__(self) -> None:
        if self.action_dim < 1 or self.horizon < 1:
            raise ShapeMismatchError(f"VAEConfig: action_dim ({self.action_dim}) and horizon ({self.horizon}) must be >= 1")
        if self.num_layers < 1 or self.num_layers % 2 != 1:
            raise ValueError(f"VAEConfig.num_layers must be odd (2k+1 skip layout), got {self.num_layers}")
        if self.latent_dim % self.num_heads:
            raise ValueError(f"VAEConfig.latent_dim ({self.latent_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.horizon + 2 > self.max_len:
            raise ShapeMismatchError(f"VAEConfig: horizon {self.horizon} + 2 tokens exceeds max_len {self.max_len}")

    @classmethod
    def preset(cls, name: str, action_dim: int, horizon: int, **overrides) -> "VAEConfig":
        """``VAEConfig.preset("small", action_dim=7, horizon=16, latent_dim=128)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown VAE preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(action_dim=action_dim, horizon=horizon, preset_name=name, **{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class _LearnedPositions(nn.Module):
    """Learned absolute positions, stored as ``pe`` of shape (max_len, 1, Z) like the reference."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.pe = nn.Parameter(torch.rand(max_len, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L, Z)
        return x + self.pe[: x.shape[1], 0].unsqueeze(0)


class _EncoderLayer(nn.Module):
    """Post-LN self-attention block (GELU feed-forward)."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, ff), nn.Linear(ff, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x, x, x, need_weights=False)[0]))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.gelu(self.linear1(x))))))

    def forward_fast(self, x: torch.Tensor, n_query: int | None = None) -> torch.Tensor:
        """``forward(x)`` without dropout, with the attention written out batch-first (the module path goes
        through sequence-first transposes, and with grad through the CPU flash kernel, slow for short
        sequences). ``n_query``: return only the first n tokens, ``forward(x)[:, :n]``; they still attend to
        all of x, but the query projection, the output projection and the feed-forward then run on n tokens
        only. Same function as forward up to float rounding (sums in another order)."""
        attn = self.self_attn
        E, h = attn.embed_dim, attn.num_heads
        d = E // h
        B, L, _ = x.shape
        w, b = attn.in_proj_weight, attn.in_proj_bias  # rows [W_q; W_k; W_v]
        if n_query is None:
            res = x
            q, k, v = F.linear(x, w, b).view(B, L, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            res = x[:, :n_query]
            q = F.linear(res, w[:E], b[:E]).view(B, n_query, h, d).transpose(1, 2)
            k, v = F.linear(x, w[E:], b[E:]).view(B, L, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        p = (torch.matmul(q, k.transpose(-1, -2)) * d**-0.5).softmax(dim=-1)  # (B, h, Lq, L)
        o = torch.matmul(p, v).transpose(1, 2).reshape(B, res.shape[1], E)
        x = self.norm1(res + attn.out_proj(o))
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class _DecoderLayer(nn.Module):
    """Post-LN self-attention + cross-attention to the latent token (GELU feed-forward)."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, ff), nn.Linear(ff, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.single_token_shortcut = True  # ActionVAE.set_fast_paths

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x, x, x, need_weights=False)[0]))
        x = self.norm2(x + self.dropout(self._cross_attention(x, memory)))
        return self.norm3(x + self.dropout(self.linear2(self.dropout(F.gelu(self.linear1(x))))))

    def _cross_attention(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Attention of x's queries to ``memory``. The VAE's memory is one latent token: a softmax over one key
        is exactly 1, so every query receives that token's value, ``out_proj(v_proj(z))``. That skips the query
        and key projections and runs the output projection once per sample instead of once per step (a fifth
        of the decoder's matmuls, forward and backward). Attention dropout could zero the weight: with it
        active, or with a longer memory, the module computes the full attention."""
        attn = self.multihead_attn
        if not self.single_token_shortcut or memory.shape[1] != 1 or (self.training and attn.dropout > 0):
            return attn(x, memory, memory, need_weights=False)[0]
        E = attn.embed_dim
        bias = None if attn.in_proj_bias is None else attn.in_proj_bias[2 * E:]
        value = attn.out_proj(F.linear(memory, attn.in_proj_weight[2 * E:], bias))  # (B, 1, E)
        return value.expand(-1, x.shape[1], -1)


class _SkipTransformer(nn.Module):
    """k input blocks -> middle block -> k output blocks, each output block fed Linear(concat(x, skip))."""

    def __init__(self, layer: nn.Module, num_layers: int, dim: int):
        super().__init__()
        k = (num_layers - 1) // 2
        self.input_blocks = nn.ModuleList(copy.deepcopy(layer) for _ in range(k))
        self.middle_block = copy.deepcopy(layer)
        self.output_blocks = nn.ModuleList(copy.deepcopy(layer) for _ in range(k))
        self.linear_blocks = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(k))
        self.norm = nn.LayerNorm(dim)
        for p in self.parameters():  # reference init
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        skips = []
        for block in self.input_blocks:
            x = block(x, memory)
            skips.append(x)
        x = self.middle_block(x, memory)
        for block, merge in zip(self.output_blocks, self.linear_blocks):
            x = block(merge(torch.cat([x, skips.pop()], dim=-1)), memory)
        return self.norm(x)

    def forward_fast(self, x: torch.Tensor, n_out: int) -> torch.Tensor:
        """``forward(x)[:, :n_out]`` of an encoder stack without dropout (see ``_EncoderLayer.forward_fast``):
        every layer but the last runs on all tokens, the last one on the first n_out only."""
        skips = []
        for block in self.input_blocks:
            x = block.forward_fast(x)
            skips.append(x)
        last = len(self.output_blocks) - 1
        x = self.middle_block.forward_fast(x, n_out if last < 0 else None)
        for i, (block, merge) in enumerate(zip(self.output_blocks, self.linear_blocks)):
            x = block.forward_fast(merge(torch.cat([x, skips.pop()], dim=-1)), n_out if i == last else None)
        return self.norm(x)


class ActionVAE(nn.Module):
    """Diagonal-Gaussian VAE over action chunks a ∈ R^{H×D} with latent z ∈ R^Z."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        c = config
        self.skel_embedding = nn.Linear(c.action_dim, c.latent_dim)
        self.global_motion_token = nn.Parameter(torch.randn(2, c.latent_dim))  # μ token, log σ² token
        self.query_pos_encoder = _LearnedPositions(c.max_len, c.latent_dim)
        self.query_pos_decoder = _LearnedPositions(c.max_len, c.latent_dim)
        self.encoder = _SkipTransformer(_EncoderLayer(c.latent_dim, c.num_heads, c.ff_dim, c.dropout), c.num_layers, c.latent_dim)
        self.decoder = _SkipTransformer(_DecoderLayer(c.latent_dim, c.num_heads, c.ff_dim, c.dropout), c.num_layers, c.latent_dim)
        self.final_layer = nn.Linear(c.latent_dim, c.action_dim)
        self.fast_paths = True

    def set_fast_paths(self, enabled: bool) -> "ActionVAE":
        """Compute the same function with less work (default on): the training forward and ``encode_fast`` run
        the encoder batch-first with its last layer on the two distribution tokens, and the decoder's
        cross-attention to its one latent token skips the attention it does not need. Off: every layer through
        ``nn.MultiheadAttention``, as the public reference trainer computes it (the baseline of ``ate
        bench-core``). Both agree up to float rounding (``tests/test_vae_fast_paths.py``)."""
        self.fast_paths = bool(enabled)
        for layer in self.decoder.modules():
            if isinstance(layer, _DecoderLayer):
                layer.single_token_shortcut = self.fast_paths
        return self

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def _check_chunk(self, a: torch.Tensor) -> None:
        if a.ndim != 3 or a.shape[1:] != (self.config.horizon, self.config.action_dim):
            raise ShapeMismatchError(
                f"ActionVAE expects chunks of shape (B, H={self.config.horizon}, D={self.config.action_dim}), "
                f"got {tuple(a.shape)}"
            )

    def encode(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a: (B, H, D) normalised actions -> (μ, log σ²), each (B, Z)."""
        self._check_chunk(a)
        x = self.skel_embedding(a)  # (B, H, Z)
        tokens = self.global_motion_token.unsqueeze(0).expand(a.shape[0], -1, -1).to(x.dtype)
        x = self.encoder(self.query_pos_encoder(torch.cat([tokens, x], dim=1)))
        return x[:, 0], x[:, 1]

    def encode_fast(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode(a)`` computed with less work, for a frozen VAE (what ``ate.steer.LatentGuidance`` calls).

        encode keeps only the two distribution tokens of the last layer, so here that layer computes only
        them (they still attend to every token), and attention is written out batch-first (see
        ``_EncoderLayer.forward_fast``): about a third less time for the small preset, forward and backward.
        The same function as encode up to float rounding. Dropout is not applied, so a VAE in training mode
        with dropout > 0 falls back to encode, as does one with ``set_fast_paths(False)``. The training
        forward uses it; the prior fit and ``ate inspect`` keep encode.
        """
        if not self.fast_paths or (self.training and self.config.dropout > 0):
            return self.encode(a)
        self._check_chunk(a)
        x = self.skel_embedding(a)
        tokens = self.global_motion_token.unsqueeze(0).expand(a.shape[0], -1, -1).to(x.dtype)
        x = self.encoder.forward_fast(self.query_pos_encoder(torch.cat([tokens, x], dim=1)), n_out=2)
        return x[:, 0], x[:, 1]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, Z) -> reconstructed chunk (B, H, D)."""
        queries = self.query_pos_decoder(z.new_zeros(z.shape[0], self.config.horizon, self.config.latent_dim))
        return self.final_layer(self.decoder(queries, z.unsqueeze(1)))

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(mu) if noise is None else noise
        return mu + torch.exp(0.5 * logvar) * noise

    def forward(self, a: torch.Tensor, noise: torch.Tensor | None = None):
        """Returns (reconstruction (B,H,D), z (B,Z), μ, log σ²). Encodes through ``encode_fast``: the training
        step then pays for the two distribution tokens of the last encoder layer only."""
        mu, logvar = self.encode_fast(a)
        z = self.reparameterize(mu, logvar, noise)
        return self.decode(z), z, mu, logvar

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
