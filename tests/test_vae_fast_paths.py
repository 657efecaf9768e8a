"""``ActionVAE.set_fast_paths``: the training forward with the fast paths on (encoder through ``encode_fast``,
the decoder's cross-attention to its single latent token reduced to ``out_proj(v_proj(z))``) against every layer
through ``nn.MultiheadAttention`` (the public reference trainer's computation): the same reconstruction, latents
and parameter gradients up to float rounding, and the full attention wherever the shortcut would not be exact.

Rounding budget, the argument of ``tests/test_steer_fast_encode.py``: both paths compute the same real-number
function with sums in another order (a softmax over one key is exactly 1, so the attention's ``p @ v`` is ``v``
exactly; what differs is the order of the projections' sums), the longest contraction has K = 256 terms (the
small preset's ``ff_dim``) with worst-case error K·u relative to the sum of |terms|, and a value passes through at
most ~60 rounded stages forward and backward in an encoder + decoder of 3 layers each. So |Δ| ≲ 60·K·u·max|value|:
≈ 1.7e-12·max in float64, ≈ 9e-4·max in float32. Dropping the cross-attention's value (or using the wrong slice
of ``in_proj_weight``) moves the reconstruction by O(1)·max.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ate.align import ActionVAE, VAEConfig

H, D, B = 16, 4, 8
K = 256  # the longest contraction of the small preset (its ff_dim)
BOUND = {torch.float64: 60 * K * 2.0**-53, torch.float32: 60 * K * 2.0**-24}


def _pair(dtype, seed: int = 0, **over) -> tuple[ActionVAE, ActionVAE]:
    torch.manual_seed(seed)
    fast = ActionVAE(VAEConfig.preset("small", action_dim=D, horizon=H, **over)).to(dtype).train()
    return fast, copy.deepcopy(fast).set_fast_paths(False)


def _close(a: torch.Tensor, b: torch.Tensor, dtype) -> None:
    scale = max(float(b.abs().max()), 1e-30)
    torch.testing.assert_close(a, b, rtol=0.0, atol=BOUND[dtype] * scale)


def _step(vae: ActionVAE, a: torch.Tensor, noise: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs of the training forward and the parameter gradients of a loss that uses all of them."""
    vae.zero_grad(set_to_none=True)
    recon, z, mu, logvar = vae(a, noise=noise)
    loss = torch.nn.functional.smooth_l1_loss(recon, a) + 1e-2 * (mu.pow(2) + logvar.exp() - logvar).mean()
    loss.backward()
    return [recon, z, mu, logvar], {n: p.grad for n, p in vae.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_training_forward_matches_the_module_path(dtype):
    fast, ref = _pair(dtype)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(B, H, D, generator=g).to(dtype).clamp(-1, 1)
    noise = torch.randn(B, fast.latent_dim, generator=g).to(dtype)
    out_f, grad_f = _step(fast, a, noise)
    out_r, grad_r = _step(ref, a, noise)
    for f, r in zip(out_f, out_r):
        _close(f.detach(), r.detach(), dtype)
    # the fast path never touches the cross-attention's query / key rows, so they get no gradient at all; the
    # module path's gradient there is exactly what a softmax over one key gives: zero up to rounding
    assert set(grad_f) <= set(grad_r)
    for name, gr in grad_r.items():
        gf = grad_f.get(name, torch.zeros_like(gr))
        if "multihead_attn.in_proj" in name:
            E = fast.latent_dim
            _close(gf[2 * E:], gr[2 * E:], dtype)
            assert float(gr[:2 * E].abs().max()) <= BOUND[dtype] * max(float(gr.abs().max()), 1e-30)
        else:
            _close(gf, gr, dtype)
    assert float(grad_r["decoder.middle_block.multihead_attn.out_proj.weight"].abs().max()) > 1e-4  # it is used


def test_decoder_shortcut_is_not_taken_where_it_would_not_be_exact():
    # attention dropout in training can zero the one weight: the full attention runs (same RNG -> same values)
    fast, ref = _pair(torch.float64, dropout=0.3)
    z = torch.randn(B, fast.latent_dim, dtype=torch.float64)
    torch.manual_seed(5)
    a = fast.decode(z)
    torch.manual_seed(5)
    b = ref.decode(z)
    assert torch.equal(a, b)
    # a memory of two tokens: the layer attends over both
    layer = fast.decoder.middle_block.eval()
    x = torch.randn(B, H, fast.latent_dim, dtype=torch.float64)
    mem = torch.randn(B, 2, fast.latent_dim, dtype=torch.float64)
    assert torch.equal(layer._cross_attention(x, mem), layer.multihead_attn(x, mem, mem, need_weights=False)[0])

