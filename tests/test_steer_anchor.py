"""The anchor to the frozen pretrained policy (`ate.steer.PolicyAnchor`, `finetune(anchor_weight=β)`): the loss
identity, β = 0 as plain fine-tuning, a frozen reference that sees the trained policy's own noise draw, its effect,
resume. Tiny models on tiny synthetic demos."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_policies_helpers import StandInVAE, as_if_died_after, write_demos  # noqa: E402

import ate.steer  # noqa: E402
from ate.data import Normalizer  # noqa: E402
from ate.errors import ConfigError, ShapeMismatchError  # noqa: E402
from ate.policies import load_policy, make_policy  # noqa: E402
from ate.policies.train import finetune, pretrain  # noqa: E402
from ate.steer import GuidanceConfig, PolicyAnchor, masked_mse  # noqa: E402

TINY = {
    "dp": {"down_dims": (16, 32), "cond_dim": 32},
    "rdt": {"width": 32, "depth": 1, "heads": 2, "cond_dim": 32},
    "pi0": {"width": 32, "depth": 1, "heads": 2, "cond_dim": 32},
}
H, A, S = 8, 8, 10
FAST = {"batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "log_every": 1, "progress": False, "ema_decay": 0.95,
        "device": "cpu"}

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tests/conftest.py


@pytest.fixture
def float64():
    """Every tensor the policy makes in float64 (its time embeddings too), as the exactness tests of
    tests/test_policies_dist.py: a rounding-level tolerance then means what it says."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def tiny_policy(fam: str, seed: int = 0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(0)  # the same robot statistics for every seed: only the weights differ
    p = make_policy(fam, horizon=H, state_dim=16, **TINY[fam])
    p.add_robot("panda", Normalizer.fit(rng.normal(size=(64, A)), mode=p.config.normalization),
                Normalizer.fit(rng.normal(size=(64, S)), mode=p.config.normalization))
    p.add_task("lift")
    return p.double()  # (a no-op under the float64 fixture)


def perturbed(p, seed: int = 1, scale: float = 0.1):
    """A copy of `p` with every weight moved by scale·N(0, 1): a reference whose predictions differ from p's (a
    second random init would not do: rdt's DiT starts with a zero output layer, so two inits predict the same)."""
    ref = copy.deepcopy(p)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for q in ref.parameters():
            q.add_(scale * torch.randn(q.shape, generator=g, dtype=q.dtype))
    return ref


def fake_batch(p, b: int = 6, seed: int = 0):
    """float64 batch with a padded tail in row 0 (the masks matter)."""
    g = torch.Generator().manual_seed(seed)
    mask = p.action_mask("panda")
    state, smask = p.pad_state(torch.randn(b, S, generator=g, dtype=torch.float64), "panda")
    is_pad = torch.zeros(b, H, dtype=torch.bool)
    is_pad[0, -3:] = True
    action = torch.randn(b, H, p.config.action_dim, generator=g, dtype=torch.float64).clamp(-1, 1) * mask
    return {"action": action, "is_pad": is_pad, "action_mask": mask[None].expand(b, -1), "state": state,
            "state_mask": smask, "task": torch.zeros(b, dtype=torch.long)}


def grads(p, loss) -> torch.Tensor:
    p.zero_grad()
    loss.backward()
    return torch.cat([q.grad.flatten() for q in p.parameters() if q.grad is not None])


def f64_noise(p, b: int = 6, seed: int = 0) -> dict:
    return {k: v.double() for k, v in p.draw_noise(b, torch.Generator().manual_seed(seed)).items()}


# ------------------------------------------------------------------------------------------------ the loss itself
@pytest.mark.parametrize("fam", list(TINY))
@pytest.mark.usefixtures("float64")
def test_anchor_gradient_is_the_soft_target_gradient(fam):
    """MSE(pred, target) + β·MSE(pred, ref) with ref detached has the gradient of (1+β)·MSE(pred, (target + β·ref)
    / (1+β)): the anchor is a soft target mixing the demo with the pretrained prediction."""
    beta = 0.7
    p = tiny_policy(fam)
    ref = perturbed(p)  # ref != pred, so the term is not zero at this point
    batch, noise = fake_batch(p), f64_noise(p)
    anchor = PolicyAnchor(ref, beta)
    loss, diag = p.compute_loss(batch, noise=noise, anchor=anchor)
    g_anchor = grads(p, loss)

    view = p.training_view(batch, noise)
    with torch.no_grad():
        ref_view = ref.training_view(batch, noise)
    assert torch.equal(ref_view["x_t"], view["x_t"]) and torch.equal(ref_view["t"], view["t"])  # the same input
    m = (batch["action_mask"], batch["is_pad"])
    soft = (view["target"] + beta * ref_view["pred"]) / (1 + beta)
    g_soft = grads(p, (1 + beta) * masked_mse(view["pred"], soft, *m))
    plain, _ = p.compute_loss(batch, noise=noise)
    g_plain = grads(p, plain)
    # float64: the two forms are the same polynomial in pred and differ only in rounding of the upstream gradient
    # (a few ulp, 1e-16 relative, times (1 + β) and the backward's summation depth, well under 1e-12), while the
    # anchor term itself moves the gradient by O(1) relative (asserted below): 1e-10 separates the two by > 1e6
    assert torch.allclose(g_anchor, g_soft, rtol=1e-10, atol=1e-10 * g_soft.abs().max().item())
    assert (g_anchor - g_plain).norm() > 1e-2 * g_plain.norm()  # not vacuous: the anchor changes the gradient
    # the diag is the unweighted masked MSE to the reference, and the loss is plain + β·that (same masks)
    mse = masked_mse(view["pred"].detach(), ref_view["pred"], *m)
    assert diag["anchor_loss"] == pytest.approx(float(mse), rel=1e-12)  # float64, same ops: rounding only
    assert float(loss.detach()) == pytest.approx(float(plain.detach()) + beta * float(mse), rel=1e-12)
    assert all(not q.requires_grad for q in ref.parameters()) and not ref.training


@pytest.mark.usefixtures("float64")
def test_anchor_ignores_invalid_dims_and_padded_steps():
    """The term is a masked mean over exactly the plain loss's elements: a reference that differs only on unused
    dims or padded steps adds nothing."""
    p = tiny_policy("dp")
    batch, noise = fake_batch(p), f64_noise(p)

    class Shifted(torch.nn.Module):  # the policy itself, with garbage where the masks exclude
        def training_view(self, b, n):
            v = dict(p.training_view(b, n))
            pred = v["pred"].detach().clone()
            pred[..., ~p.action_mask("panda")] += 100.0
            pred[0, -3:] += 100.0  # row 0's padded tail
            v["pred"] = pred
            return v

    _, diag = p.compute_loss(batch, noise=noise, anchor=PolicyAnchor(Shifted(), 5.0))
    assert diag["anchor_loss"] == 0.0


@pytest.mark.usefixtures("float64")
def test_anchor_composes_with_latent_guidance():
    """With guidance on, the loss is the guided loss plus the same anchor term (and ξ draws are unchanged)."""
    p = tiny_policy("pi0")
    ref = perturbed(p)
    batch, noise = fake_batch(p), f64_noise(p)
    vae = StandInVAE(A, H, p.normalizers["panda"]["action"])
    vae.vae.double()
    guide = p.make_guidance(vae.vae, GuidanceConfig(scale=2.0, clamp=None, encoder_mode="sample"), "panda")
    guided, d_guided = p.compute_loss(batch, guide, noise=noise, guidance_generator=torch.Generator().manual_seed(3))
    both, d_both = p.compute_loss(batch, guide, noise=noise, guidance_generator=torch.Generator().manual_seed(3),
                                  anchor=PolicyAnchor(ref, 2.0))
    assert d_both["plain_loss"] == d_guided["plain_loss"] and d_both["guidance_norm"] == d_guided["guidance_norm"]
    # float64 and the same ops: the sum differs from the parts only by one rounding
    assert float(both.detach()) == pytest.approx(float(guided.detach()) + 2.0 * d_both["anchor_loss"], rel=1e-12)
    assert d_both["anchor_loss"] > 0 and d_both["loss"] == float(both.detach())


@pytest.mark.usefixtures("float64")
def test_zero_weight_adds_exactly_nothing():
    p = tiny_policy("rdt")
    batch, noise = fake_batch(p), f64_noise(p)
    plain, _ = p.compute_loss(batch, noise=noise)
    g_plain = grads(p, plain)
    zero, diag = p.compute_loss(batch, noise=noise, anchor=PolicyAnchor(perturbed(p), 0.0))
    assert torch.equal(zero, plain) and torch.equal(grads(p, zero), g_plain) and diag["anchor_loss"] > 0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "1", True])
@pytest.mark.usefixtures("float64")
def test_bad_weight_is_a_one_line_config_error(bad):
    with pytest.raises(ConfigError, match="anchor_weight must be a finite number >= 0"):
        PolicyAnchor(tiny_policy("dp"), bad)


@pytest.mark.usefixtures("float64")
def test_reference_of_another_noise_schedule_is_refused():
    p = tiny_policy("dp")
    other = make_policy("dp", horizon=H, state_dim=16, num_train_timesteps=50, **TINY["dp"]).double()
    batch, noise = fake_batch(p), f64_noise(p)
    with pytest.raises(ShapeMismatchError, match="noised the batch differently"):
        p.compute_loss(batch, noise=noise, anchor=PolicyAnchor(other, 1.0))


# ------------------------------------------------------------------------------------------------ fine-tuning runs
CFG = {"horizon": H, "state_dim": 8, **TINY["dp"]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("anchor")
    src = write_demos(root / "src", "panda", 4, 6, n_eps=3, T=16, task="reach")
    tgt = write_demos(root / "tgt", "ur5e", 3, 5, n_eps=2, T=16, task="push", seed=1)
    pretrain(src, root / "pre", policy="dp", policy_config=CFG, steps=20, **FAST)
    return {"root": root, "tgt": tgt, "init": root / "pre" / "pretrained_model"}


def rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_zero_weight_finetune_is_bit_identical_to_plain(setup, tmp_path):
    kw = dict(init=setup["init"], steps=6, **FAST)
    plain = finetune(setup["tgt"], tmp_path / "plain", **kw)  # the call as it was before the option existed
    zero = finetune(setup["tgt"], tmp_path / "zero", anchor_weight=0.0, **kw)
    a, b = plain.state_dict(), zero.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in rows(tmp_path / "plain")] == [r["loss"] for r in rows(tmp_path / "zero")]
    assert all("anchor_loss" not in r for r in rows(tmp_path / "zero"))  # no reference was built
    assert json.loads((tmp_path / "zero" / "train_config.json").read_text())["anchor_weight"] == 0.0


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_reference_stays_frozen_and_sees_the_trained_policy_noise(setup, tmp_path, monkeypatch, adapter):
    made = []

    class Recording(PolicyAnchor):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(ate.steer, "PolicyAnchor", Recording)
    run = tmp_path / adapter
    out = finetune(setup["tgt"], run, init=setup["init"], steps=5, anchor_weight=1.0, adapter=adapter,
                   lora_rank=2, **FAST)
    (anchor,) = made
    init = load_policy(setup["init"]).state_dict()
    ref = anchor.reference.state_dict()
    assert ref.keys() == init.keys() and not any("lora_" in k for k in ref)  # init as loaded, before adapters
    assert all(torch.equal(ref[k], init[k]) for k in init)  # never updated
    assert all(not q.requires_grad for q in anchor.reference.parameters())
    trained = out.state_dict()
    assert any(not torch.equal(trained[k], init[k]) for k in init if init[k].is_floating_point())
    log = rows(run)
    # step 1: the policy still is the reference (LoRA's B starts at 0), so a reference fed the same x_t, t and
    # observation predicts exactly the same: the anchor term is exactly 0 there, and > 0 once the policy moved
    assert log[0]["anchor_loss"] == 0.0 and log[-1]["anchor_loss"] > 0
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["anchor_weight"] == 1.0 and saved["adapter"] == adapter


def _drift(policy, ref, tgt) -> float:
    """Masked MSE between the policy's and the reference's predictions on 64 target windows, fixed noise."""
    from ate.policies.data import PolicyDataset, load_sources

    ds = PolicyDataset(policy, load_sources(str(tgt)))
    batch = ds.get_batch(torch.randint(len(ds), (64,), generator=torch.Generator().manual_seed(0)))
    noise = policy.draw_noise(64, torch.Generator().manual_seed(1))
    policy.eval()
    with torch.no_grad():
        a, b = policy.training_view(batch, noise)["pred"], ref.training_view(batch, noise)["pred"]
    return float(masked_mse(a, b, batch["action_mask"], batch["is_pad"]))


def test_a_large_weight_keeps_the_policy_near_the_reference(setup, tmp_path):
    kw = dict(init=setup["init"], steps=15, **FAST)
    free = finetune(setup["tgt"], tmp_path / "free", **kw)
    held = finetune(setup["tgt"], tmp_path / "held", anchor_weight=1e3, **kw)
    ref = load_policy(setup["init"])
    d_free, d_held = _drift(free, ref, setup["tgt"]), _drift(held, ref, setup["tgt"])
    # margin: with β = 1e3 the soft target is 0.999·ref + 0.001·target, so the anchored policy only oscillates
    # around the reference by about Adam's step (lr) per weight, while the free one drifts ~steps·lr toward the new
    # robot. Measured when written: 0.0032 vs 0.107 (ratio 0.03; β = 1 gave 0.28); the bound 0.2 leaves a 6x margin
    # for other platforms' rounding, and fails for an anchor that does nothing (ratio 1)
    assert d_held < 0.2 * d_free, (d_held, d_free)


def test_resume_reloads_the_reference_from_init_and_refuses_another_weight(setup, tmp_path):
    kw = dict(init=setup["init"], steps=8, save_every=4, anchor_weight=1.0, **FAST)
    full = finetune(setup["tgt"], tmp_path / "full", **kw)
    finetune(setup["tgt"], tmp_path / "cut", **kw)
    as_if_died_after(tmp_path / "cut", 4, 8)
    resumed = finetune(setup["tgt"], tmp_path / "cut", resume=True, **kw)
    a, b = full.state_dict(), resumed.state_dict()
    # the resumed run anchors to init again (not to the checkpoint it resumed from): the very same run
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match=r"--anchor-weight 1.0 \(checkpoint\) vs 0.5 \(now\)"):
        finetune(setup["tgt"], tmp_path / "cut", resume=True, **{**kw, "steps": 10, "anchor_weight": 0.5})
    # a run written before the option existed trained without the anchor: resuming it with one is refused too
    cfg_file = tmp_path / "cut" / "train_config.json"
    old = json.loads(cfg_file.read_text())
    old.pop("anchor_weight")
    cfg_file.write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"--anchor-weight 0.0 \(checkpoint\) vs 1.0 \(now\)"):
        finetune(setup["tgt"], tmp_path / "cut", resume=True, **{**kw, "steps": 10})
    finetune(setup["tgt"], tmp_path / "cut", resume=True, **{**kw, "steps": 10, "anchor_weight": 0.0})  # as it ran


def test_finetune_refuses_a_bad_weight_before_loading_anything(tmp_path):
    with pytest.raises(ConfigError, match="anchor_weight must be a finite number >= 0, got nan"):
        finetune(tmp_path / "no-data", tmp_path / "out", init=tmp_path / "no-init", anchor_weight=float("nan"))
    assert not (tmp_path / "out").exists()
