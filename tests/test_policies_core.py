"""Reference policies: parameterisations, schedulers, masks, guidance hook, checkpoints, VAE checks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_policies_helpers import StandInVAE  # noqa: E402

from ate.data import Normalizer  # noqa: E402
from ate.errors import CheckpointError, ShapeMismatchError  # noqa: E402
from ate.policies import load_policy, make_policy  # noqa: E402
from ate.policies.train import check_vae  # noqa: E402
from ate.steer import RDT_UNIFIED_128, GuidanceConfig, guidance_coefficient, single_arm_names  # noqa: E402

TINY = {
    "dp": {"down_dims": (16, 32), "cond_dim": 32},
    "rdt": {"width": 32, "depth": 1, "heads": 2, "cond_dim": 32},
    "pi0": {"width": 32, "depth": 1, "heads": 2, "cond_dim": 32},
}
FAMILIES = list(TINY)
H, A, S = 8, 8, 10


def tiny_policy(fam: str, seed: int = 0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    p = make_policy(fam, horizon=H, state_dim=16, **TINY[fam])
    p.add_robot("panda", Normalizer.fit(rng.normal(size=(64, A)), mode=p.config.normalization),
                Normalizer.fit(rng.normal(size=(64, S)), mode=p.config.normalization))
    p.add_task("lift")
    return p


def fake_batch(p, b: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = p.action_mask("panda")
    state, smask = p.pad_state(torch.randn(b, S, generator=g), "panda")
    is_pad = torch.zeros(b, H, dtype=torch.bool)
    is_pad[0, -2:] = True
    return {"action": torch.randn(b, H, p.config.action_dim, generator=g).clamp(-1, 1) * mask, "is_pad": is_pad,
            "action_mask": mask[None].expand(b, -1), "state": state, "state_mask": smask,
            "task": torch.zeros(b, dtype=torch.long)}


def guide_for(p, scale: float, clamp=10.0):
    vae = StandInVAE(A, H, p.normalizers["panda"]["action"])
    return p.make_guidance(vae.vae, GuidanceConfig(scale=scale, clamp=clamp, encoder_mode="mean"), "panda")


def test_schedulers_follow_each_family():
    dp, rdt, pi0 = (tiny_policy(f) for f in FAMILIES)
    c = dp.noise_scheduler.config
    assert (c.num_train_timesteps, c.beta_schedule, c.prediction_type) == (100, "squaredcos_cap_v2", "epsilon")
    assert type(dp.inference_scheduler).__name__ == "DDIMScheduler"
    c = rdt.noise_scheduler.config
    assert (c.num_train_timesteps, c.beta_schedule, c.prediction_type) == (1000, "squaredcos_cap_v2", "sample")
    ic = rdt.inference_scheduler.config
    assert type(rdt.inference_scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert ic.algorithm_type == "dpmsolver++" and rdt.config.num_inference_steps == 5
    pi0.inference_scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.1, 10))
    assert torch.allclose(pi0.inference_scheduler.sigmas, torch.linspace(1, 0, 11), atol=1e-6)  # Euler, t = 1 -> 0


@pytest.mark.parametrize("fam,param", [("dp", "epsilon"), ("rdt", "sample"), ("pi0", "flow_openpi")])
def test_guidance_coefficient_matches_family(fam, param):
    p = tiny_policy(fam)
    guide = guide_for(p, 2.0)
    assert guide.parameterization == param
    t = torch.tensor([0, 10, 50, 99]) if fam == "dp" else (torch.tensor([0, 100, 500, 999]) if fam == "rdt" else
                                                           torch.tensor([0.05, 0.3, 0.6, 0.9]))
    abar = p.alphas_cumprod()
    expected = guidance_coefficient(param, t, abar)
    assert torch.allclose(guide.coefficient(t), expected)
    # the closed forms in float32 from the float32 schedule vs guidance_coefficient's float64 evaluation cast to
    # float32: a few float32 ulps (atol 1e-6 on |c| ≤ 1; rtol 1e-5 where c grows to ~1e2 as ᾱ → 0 or t → 1)
    if fam == "dp":  # −√(1−ᾱ)
        assert torch.allclose(expected, -(1 - abar[t]).sqrt().float(), atol=1e-6)
    elif fam == "rdt":  # (1−ᾱ)/√ᾱ
        assert torch.allclose(expected, ((1 - abar[t]) / abar[t].sqrt()).float(), rtol=1e-5)
    else:  # −t/(1−t)
        assert torch.allclose(expected, -t / (1 - t), rtol=1e-5)


def test_pi0_uses_openpi_flow_convention():
    p = tiny_policy("pi0")
    batch = fake_batch(p)
    noise = p.draw_noise(6, torch.Generator().manual_seed(3))
    view = p.training_view(batch, noise)
    t = view["t"][:, None, None]
    eps = noise["noise"] * p.action_mask("panda")  # padded dims carry no noise (they stay 0)
    assert torch.allclose(view["x_t"], t * eps + (1 - t) * batch["action"])
    assert torch.allclose(view["target"], eps - batch["action"])
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    from ate.policies.pi0_flow import flow_time

    tt = (flow_time(u, 1.5) - 0.001) / 0.999  # Beta(1.5, 1): mean 0.6, var 0.0686
    assert abs(tt.mean().item() - 0.6) < 0.01 and abs(tt.var().item() - 1.5 / (2.5**2 * 3.5)) < 0.005


def test_rdt_slots_come_from_unified_layout_and_mask_the_loss():
    p = tiny_policy("rdt")
    assert p.config.robots["panda"].action_index == RDT_UNIFIED_128.indices(single_arm_names(7))
    rng = np.random.default_rng(1)
    p.add_robot("ur5e", Normalizer.fit(rng.normal(size=(32, 7))), Normalizer.fit(rng.normal(size=(32, 9))))
    assert p.config.robots["ur5e"].action_index == RDT_UNIFIED_128.indices(single_arm_names(6))
    assert torch.equal(p.action_mask("ur5e"), RDT_UNIFIED_128.mask(single_arm_names(6)).bool())
    batch = fake_batch(p)
    noise = p.draw_noise(6, torch.Generator().manual_seed(0))
    loss1, _ = p.compute_loss(batch, noise=noise)
    view = p.training_view(batch, noise)
    assert torch.all(view["x_t"][..., ~p.action_mask("panda")] == 0)  # unused slots stay zero
    from ate.steer import masked_mse

    off = view["pred"].detach().clone()
    off[..., ~p.action_mask("panda")] += 100.0  # garbage on invalid slots must not count
    assert torch.isclose(masked_mse(off, view["target"], batch["action_mask"], batch["is_pad"]), loss1)


@pytest.mark.parametrize("fam", FAMILIES)
def test_lambda_zero_equals_plain_and_lambda_positive_changes_gradient(fam):
    p = tiny_policy(fam)
    batch = fake_batch(p)
    noise = p.draw_noise(6, torch.Generator().manual_seed(0))

    def grads(guide):
        p.zero_grad()
        loss, diag = p.compute_loss(batch, guide, noise=noise)
        loss.backward()
        return loss.detach(), torch.cat([q.grad.flatten() for q in p.parameters() if q.grad is not None]), diag

    l_plain, g_plain, _ = grads(None)
    l0, g0, d0 = grads(guide_for(p, 0.0))
    assert torch.equal(l0, l_plain) and torch.allclose(g0, g_plain)
    assert {"guidance_norm", "latent_dist", "coef_mean", "frac_clamped"} <= set(d0)
    l2, g2, d2 = grads(guide_for(p, 2.0))
    assert d2["guidance_norm"] > 0
    assert (g2 - g_plain).norm() > 1e-4 * g_plain.norm()
    # the VAE gets no gradient, the policy's parameters do not include it
    vae = StandInVAE(A, H, p.normalizers["panda"]["action"])
    p.make_guidance(vae.vae, GuidanceConfig(scale=2.0), "panda")
    assert all(not q.requires_grad for q in vae.vae.parameters())


@pytest.mark.parametrize("fam", FAMILIES)
def test_checkpoint_round_trip_gives_identical_actions(fam, tmp_path):
    p = tiny_policy(fam)
    obs = {"state": torch.randn(3, S), "task": "lift"}
    a = p.predict_chunk(obs, generator=torch.Generator().manual_seed(7))
    assert a.shape == (3, H, A) and p.last_predict_s > 0
    p.save_pretrained(tmp_path / "m")
    q = load_policy(tmp_path / "m")
    b = q.predict_chunk(obs, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert q.config.robots == p.config.robots and q.normalizers["panda"]["action"] == p.normalizers["panda"]["action"]


def test_load_refuses_bad_checkpoints(tmp_path):
    p = tiny_policy("dp")
    p.save_pretrained(tmp_path / "m")
    cfg = (tmp_path / "m" / "config.json").read_text()
    (tmp_path / "m" / "config.json").write_text(cfg.replace('"horizon"', '"horizn"'))
    with pytest.raises(CheckpointError, match="did you mean 'horizon'"):
        load_policy(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(cfg.replace('"cond_dim": 32', '"cond_dim": 48'))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_policy(tmp_path / "m")
    with pytest.raises(CheckpointError, match="no policy here"):
        load_policy(tmp_path / "nothing")


def test_mismatched_vae_is_refused():
    p = tiny_policy("pi0")
    norm = p.normalizers["panda"]["action"]
    check_vae(p, "panda", StandInVAE(A, H, norm))  # matches: no error
    with pytest.raises(ShapeMismatchError, match="action dim mismatch.*7.*8"):
        check_vae(p, "panda", StandInVAE(7, H, norm))
    with pytest.raises(ShapeMismatchError, match="chunk length mismatch.*H=16"):
        check_vae(p, "panda", StandInVAE(A, 16, norm))
    other = Normalizer.fit(np.random.default_rng(5).normal(size=(64, A)), mode=norm.mode)
    with pytest.raises(ShapeMismatchError, match="normalisation stats mismatch"):
        check_vae(p, "panda", StandInVAE(A, H, other))


def test_bf16_autocast_loss_is_close_to_float32():
    p = tiny_policy("rdt")
    batch = fake_batch(p)
    noise = p.draw_noise(6, torch.Generator().manual_seed(0))
    l32, _ = p.compute_loss(batch, noise=noise)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        l16, _ = p.compute_loss(batch, noise=noise)
    assert l16.dtype == torch.float32 and abs(l16.item() - l32.item()) < 0.05 * l32.item()
