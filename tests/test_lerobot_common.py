"""Main-environment side of the integrations (no LeRobot import): LeRobot-equivalent normalisers, the
`ate lerobot` command line, and the RDT drop-in loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ate.errors import DataError, ShapeMismatchError
from ate.integrations.lerobot_common import chunk_defaults, normalizer_from_stats

STATS = {"action": {"min": [-2.0, 0.0, 1.0], "max": [2.0, 1.0, 3.0], "mean": [0.1, 0.4, 2.0],
                    "std": [1.0, 0.2, 0.5], "q01": [-1.5, 0.05, 1.1], "q99": [1.5, 0.95, 2.9]}}


def lerobot_reference(x: np.ndarray, mode: str) -> np.ndarray:
    """LeRobot 0.6 NormalizerProcessorStep formulas (processor/normalize_processor.py)."""
    s = {k: np.asarray(v) for k, v in STATS["action"].items()}
    if mode == "MEAN_STD":
        return (x - s["mean"]) / (s["std"] + 1e-8)
    lo, hi = (s["min"], s["max"]) if mode == "MIN_MAX" else (s["q01"], s["q99"])
    return (x - lo) / (hi - lo) * 2 - 1


@pytest.mark.parametrize("mode", ["MIN_MAX", "MEAN_STD", "QUANTILES"])
def test_normalizer_matches_lerobot_formula(mode):
    x = np.random.default_rng(0).normal(size=(5, 7, 3)) * 2
    norm = normalizer_from_stats(STATS, mode)
    np.testing.assert_allclose(norm.normalize(x), lerobot_reference(x, mode), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(norm.unnormalize(norm.normalize(x)), x, atol=1e-9)


def test_normalizer_errors_name_the_problem():
    with pytest.raises(DataError, match="q10"):
        normalizer_from_stats(STATS, "QUANTILE10", source="ds/meta/stats.json")
    with pytest.raises(DataError, match="no stats for feature 'act'"):
        normalizer_from_stats(STATS, "MIN_MAX", key="act")
    with pytest.raises(DataError, match="IDENTITY"):
        normalizer_from_stats(STATS, "IDENTITY")
    bad = {"action": {**STATS["action"], "max": [1.0, float("nan"), 2.0]}}
    with pytest.raises(DataError, match="NaN"):
        normalizer_from_stats(bad, "MIN_MAX")


def test_lerobot_action_space_is_what_the_plugin_compares():
    """The record `ate lerobot align` trains the VAEs in and the plugin checks a VAE against: the stats'
    normaliser and the chunk length; float32 stats (LeRobot's tensors) agree, other stats are refused."""
    import dataclasses

    from ate.data.action_space import compare
    from ate.errors import ActionSpaceMismatchError, CheckpointError
    from ate.integrations.lerobot_common import STATS_ATOL, STATS_RTOL, lerobot_action_space

    space = lerobot_action_space(STATS, "MIN_MAX", 16, source="ds/meta/stats.json")
    assert (space.action_dim, space.horizon, space.robot, space.pad) == (3, 16, None, None)
    assert space.normalizer == normalizer_from_stats(STATS, "MIN_MAX")
    f32 = {"action": {k: torch.tensor(v, dtype=torch.float32) for k, v in STATS["action"].items()}}
    policy_side = lerobot_action_space(f32, "MIN_MAX", 16, action_dim=3, source="dataset stats")
    compare(policy_side, space, what="vae", rtol=STATS_RTOL, atol=STATS_ATOL)
    wrong = {"action": {**STATS["action"], "max": [4.0, 1.0, 3.0]}}
    with pytest.raises(CheckpointError, match=r"^vae: normalisation stats mismatch \(normalizer\): minmax normaliser"):
        compare(lerobot_action_space(wrong, "MIN_MAX", 16), space, what="vae", rtol=STATS_RTOL, atol=STATS_ATOL)
    with pytest.raises(ActionSpaceMismatchError, match=r"chunk length mismatch \(horizon\): H=16 \(found\) vs H=50"):
        compare(lerobot_action_space(None, "MIN_MAX", 50, action_dim=3), space, what="vae", ignore=("normalizer",))
    compare(lerobot_action_space(None, "MIN_MAX", 16, action_dim=3), dataclasses.replace(space, pad="repeat"),
            what="vae", ignore=("normalizer",))  # stats unknown: only D and H are checked
    with pytest.raises(DataError, match="no stats, so the action dims must be given"):
        lerobot_action_space(None, "MIN_MAX", 16)


def test_chunk_defaults_follow_lerobot():
    assert chunk_defaults("ate_diffusion")["norm_mode"] == "MIN_MAX"
    assert chunk_defaults("pi0")["horizon"] == 50 and chunk_defaults("pi05")["norm_mode"] == "QUANTILES"
    with pytest.raises(ValueError, match="act"):
        chunk_defaults("act")


def test_cli_registers_lerobot_align():
    from ate.cli import parse_args

    args = parse_args(["lerobot", "align", "--source", "s", "--target", "t", "--policy", "pi0",
                                      "--out", "o", "--steps", "3"])
    assert args.policy == "pi0" and args.steps == 3 and args.horizon is None and callable(args.func)


# ---------------------------------------------------------------------------------------------- RDT drop-in
@pytest.fixture(scope="module")
def rdt_vae(tmp_path_factory):
    from ate.align import ActionVAE, VAEConfig
    from ate.align.checkpoint import save_vae_checkpoint
    from ate.data import Normalizer

    torch.manual_seed(0)
    names_d, horizon = 14, 8
    vae = ActionVAE(VAEConfig.preset("small", action_dim=names_d, horizon=horizon))
    rng = np.random.default_rng(0)
    norm = Normalizer.fit(rng.normal(1.0, 2.0, size=(500, names_d)).astype(np.float32), mode="minmax")
    out = tmp_path_factory.mktemp("rdt") / "vae"
    save_vae_checkpoint(out, vae, {"normalizer": norm.to_dict(), "chunk": {"horizon": horizon, "pad": "repeat"}})
    return out


def test_rdt_dropin_masks_slots_and_keeps_rdt_reduction(rdt_vae):
    from diffusers import DDPMScheduler

    from ate.integrations.rdt import make_rdt_guidance, rdt_guided_loss
    from ate.steer import RDT_UNIFIED_128, GuidanceConfig, dual_arm_names

    names = dual_arm_names(6)  # ALOHA: 2 x (6 joints + gripper) = 14 slots, slot 50 included
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample")
    guide = make_rdt_guidance(rdt_vae, sched, names, GuidanceConfig(scale=2.0, clamp=None, encoder_mode="mean"))
    assert guide.parameterization == "sample"
    g = torch.Generator().manual_seed(0)
    B, H = 4, 8
    mask = RDT_UNIFIED_128.mask(names)
    assert mask[50] == 1 and mask.sum() == 14
    a0 = RDT_UNIFIED_128.to_unified(torch.randn(B, H, 14, generator=g), names)
    noise = torch.randn(B, H, 128, generator=g)
    t = torch.tensor([10, 200, 500, 900])
    x_t = sched.add_noise(a0, noise, t)
    pred = torch.randn(B, H, 128, generator=g, requires_grad=True)
    action_mask = mask.reshape(1, 1, 128).expand(B, 1, 128)

    loss, diag = rdt_guided_loss(guide, pred, a0, x_t, a0, t, action_mask)
    assert diag["plain_loss"] == pytest.approx(F.mse_loss(pred, a0).item())
    loss.backward()
    gvec, _ = guide.gradient(x_t, a0, t, dim_mask=action_mask.reshape(B, 128))
    assert gvec[..., mask == 0].abs().max() == 0 and gvec[..., mask == 1].abs().sum() > 0
    # RDT reduction (mean over B·H·128): d loss / d pred = 2 (pred + λ g − target) / N
    expected = 2 * (pred.detach() + 2.0 * gvec - a0) / pred.numel()
    # autograd's mean backward vs the closed form: two float32 evaluations of 2(pred + λg − a0)/N, a few ulp apart
    torch.testing.assert_close(pred.grad, expected, rtol=1e-5, atol=1e-8)
    # the action_index route gives the same masks without an action_mask
    loss2, _ = rdt_guided_loss(guide, pred, a0, x_t, a0, t, None)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)


def test_rdt_dropin_normalizes_raw_values_for_the_vae(rdt_vae):
    from diffusers import DDPMScheduler

    from ate.align import load_aligned_vae
    from ate.integrations.rdt import NormalizedEncoder, make_rdt_guidance
    from ate.steer import dual_arm_names

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample")
    guide = make_rdt_guidance(rdt_vae, sched, dual_arm_names(6))
    assert isinstance(guide.encoder, NormalizedEncoder)
    bundle = load_aligned_vae(rdt_vae, require_prior=False)
    raw = torch.randn(2, 8, 14) * 2 + 1
    mu, _ = guide.encoder.encode(raw)
    mu_ref, _ = bundle.vae.encode(bundle.normalizer.normalize(raw))
    torch.testing.assert_close(mu, mu_ref)
    with pytest.raises(ShapeMismatchError, match="expects 14 dims"):
        make_rdt_guidance(rdt_vae, sched, dual_arm_names(5))
