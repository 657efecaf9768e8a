"""Policy training loops: overfitting, ATE switch, resume, CLI. Tiny models on tiny synthetic demos."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_policies_helpers import StandInVAE, as_if_died_after, write_demos  # noqa: E402

from ate.data import load_episodes  # noqa: E402
from ate.errors import ShapeMismatchError  # noqa: E402
from ate.policies import load_policy  # noqa: E402
from ate.policies.train import finetune, pretrain  # noqa: E402
from ate.training import cosine_lr_factor  # noqa: E402

TINY = {
    "dp": {"down_dims": (32, 64), "cond_dim": 32},
    "rdt": {"width": 64, "depth": 2, "heads": 4, "cond_dim": 32},
    "pi0": {"width": 64, "depth": 2, "heads": 4, "cond_dim": 32},
}
H = 8
FAST = {"batch_size": 32, "lr": 3e-3, "warmup_steps": 5, "log_every": 10, "progress": False, "ema_decay": 0.95}


pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    return {"src": write_demos(root / "src", "panda", 4, 6, n_eps=3, T=16, task="reach"),
            "tgt": write_demos(root / "tgt", "ur5e", 3, 5, n_eps=2, T=16, task="push", seed=1)}


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("fam", list(TINY))
def test_each_family_overfits_a_tiny_dataset(fam, demos, tmp_path):
    cfg = {"horizon": H, "state_dim": 8, **TINY[fam]}
    # ε-prediction converges slowest: its low-noise steps need a precise ε to reconstruct the chunk
    steps = {"dp": 1500, "rdt": 250, "pi0": 300}[fam]
    policy = pretrain(demos["src"], tmp_path / fam, policy=fam, policy_config=cfg, steps=steps, **{**FAST, "batch_size": 64})
    ls = losses(tmp_path / fam)
    assert ls[-1] < ls[0] / 5, ls
    acts, states = load_episodes(demos["src"]), load_episodes(demos["src"], key="observations/state")
    err, base = [], []
    mean_action = np.asarray(acts.actions).mean(0)
    for e in range(acts.num_episodes):
        truth = acts.episode(e)[:H]
        chunk = policy.predict_chunk({"state": states.episode(e)[0], "task": "reach"},
                                     generator=torch.Generator().manual_seed(e))[0].numpy()
        err.append(np.abs(chunk - truth).mean())
        base.append(np.abs(mean_action - truth).mean())
    assert np.mean(err) < 0.35 * np.mean(base), (err, base)


def test_finetune_arms_differ_only_by_guidance(demos, tmp_path):
    cfg = {"horizon": H, "state_dim": 8, **TINY["dp"]}
    pretrain(demos["src"], tmp_path / "pre", policy="dp", policy_config=cfg, steps=10, **FAST)
    common = dict(init=tmp_path / "pre", steps=12, **FAST)
    sft = finetune(demos["tgt"], tmp_path / "sft", guidance="off", **common)
    norm = sft.normalizers["ur5e"]["action"]  # fitted on the target data: what the VAE must share
    vae = StandInVAE(3, H, norm)
    zero = finetune(demos["tgt"], tmp_path / "ate0", guidance="ate", vae=vae, scale=0.0, **common)
    ate = finetune(demos["tgt"], tmp_path / "ate2", guidance="ate", vae=vae, scale=2.0, clamp=1.0, **common)
    sd_sft, sd_zero, sd_ate = sft.state_dict(), zero.state_dict(), ate.state_dict()
    # same data order and noise draws: λ = 0 reproduces the plain arm exactly, λ > 0 moves the weights
    assert all(torch.equal(sd_sft[k], sd_zero[k]) for k in sd_sft)
    assert any(not torch.allclose(sd_sft[k], sd_ate[k]) for k in sd_sft if sd_sft[k].is_floating_point())
    rec = json.loads((tmp_path / "ate2" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"guidance_norm", "latent_dist", "coef_mean", "frac_clamped", "plain_loss", "grad_norm", "lr"} <= set(rec)
    assert json.loads((tmp_path / "ate2" / "train_config.json").read_text())["guidance_config"]["scale"] == 2.0
    # the fine-tuned policy serves the new robot without any VAE
    out = load_policy(tmp_path / "ate2").predict_chunk({"state": np.zeros(5, np.float32), "task": "push"})
    assert out.shape == (1, H, 3)
    with pytest.raises(ShapeMismatchError, match="action dim mismatch"):
        finetune(demos["tgt"], tmp_path / "bad", guidance="ate", vae=StandInVAE(4, H, norm), **common)
    with pytest.raises(ShapeMismatchError, match="normalisation stats mismatch"):
        finetune(demos["tgt"], tmp_path / "bad", guidance="ate", vae=StandInVAE(3, H, _shifted(norm)), **common)


def _shifted(norm):
    from ate.data import Normalizer

    d = norm.to_dict()
    d["max"] = [m + 0.5 for m in d["max"]]
    return Normalizer.from_dict(d)


def test_resume_equals_uninterrupted(demos, tmp_path):
    cfg = {"horizon": H, "state_dim": 8, **TINY["pi0"]}
    kw = dict(policy="pi0", policy_config=cfg, steps=12, save_every=6, **{**FAST, "log_every": 1})
    full = pretrain(demos["src"], tmp_path / "full", **kw)
    pretrain(demos["src"], tmp_path / "cut", **kw)
    as_if_died_after(tmp_path / "cut", 6, 12)
    resumed = pretrain(demos["src"], tmp_path / "cut", resume=True, **kw)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the LR is a pure function of the step: row s logs the LR step s used (warm-up, cosine to 0 at `steps`).
    # The rows the dead run wrote after its step-6 checkpoint are dropped on resume, so the resumed log has
    # each step once, with the uninterrupted run's LR and loss (same weights, data and noise draws)
    rows = lambda run: [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    lr_full = [r["lr"] for r in rows(tmp_path / "full")]
    assert lr_full == [FAST["lr"] * cosine_lr_factor(s, 12, FAST["warmup_steps"]) for s in range(12)]
    cut = rows(tmp_path / "cut")
    assert [r["step"] for r in cut] == list(range(1, 13))
    assert [(r["lr"], r["loss"]) for r in cut] == [(r["lr"], r["loss"]) for r in rows(tmp_path / "full")]


def test_cli_pretrain_two_robots_predict_normalizer(demos, tmp_path):
    from ate.cli import main

    run = tmp_path / "cli"  # two robots (4 and 3 action dims) in one unified-slot model
    assert main(["policy", "pretrain", "--data", str(demos["src"]), str(demos["tgt"]), "--out", str(run), "--policy", "rdt",
                 "--policy-config", json.dumps({"horizon": H, "state_dim": 8, **TINY["rdt"]}),
                 "--steps", "3", "--batch-size", "8", "--no-progress"]) == 0
    assert main(["policy", "predict", "--policy", str(run), "--data", str(demos["src"]),
                 "--out", str(tmp_path / "c.npz")]) == 0
    assert np.load(tmp_path / "c.npz")["chunks"].shape == (3, H, 4)
    assert main(["policy", "predict", "--policy", str(run), "--data", str(demos["tgt"]),
                 "--out", str(tmp_path / "d.npz")]) == 0
    assert np.load(tmp_path / "d.npz")["chunks"].shape == (2, H, 3)
    pol = load_policy(run)
    assert set(pol.config.robots) == {"panda", "ur5e"} and pol.config.tasks == ["reach", "push"]
    assert main(["policy", "normalizer", "--policy", str(run), "--robot", "ur5e", "--out", str(tmp_path / "n.json")]) == 0
    assert json.loads((tmp_path / "n.json").read_text())["dim"] == 3


def test_resume_with_other_options_is_refused_naming_them(demos, tmp_path):
    from ate.errors import ConfigError

    cfg = {"horizon": H, "state_dim": 8, **TINY["pi0"]}
    kw = dict(policy="pi0", policy_config=cfg, steps=4, save_every=2, **FAST)
    pretrain(demos["src"], tmp_path / "run", **kw)
    # longer, other logging: allowed
    pretrain(demos["src"], tmp_path / "run", resume=True, **{**kw, "steps": 6, "log_every": 1})
    with pytest.raises(ConfigError, match=r"--lr 0.003 \(checkpoint\) vs 0.01 \(now\)"):
        pretrain(demos["src"], tmp_path / "run", resume=True, **{**kw, "steps": 8, "lr": 1e-2})
    with pytest.raises(ConfigError, match="--data"):
        pretrain(demos["tgt"], tmp_path / "run", resume=True, **{**kw, "steps": 8})


def test_finetune_resumes_with_the_same_stats_from_another_file_and_refuses_other_stats(demos, tmp_path):
    """The resume check compares the normalizer's numbers, not the path they were read from."""
    from ate.data import Normalizer
    from ate.errors import ConfigError

    cfg = {"horizon": H, "state_dim": 8, **TINY["dp"]}
    pretrain(demos["src"], tmp_path / "pre", policy="dp", policy_config=cfg, steps=2, **FAST)
    stats = Normalizer.fit(load_episodes(demos["tgt"]), mode="minmax")
    (tmp_path / "a.json").write_text(json.dumps(stats.to_dict()))
    (tmp_path / "b.json").write_text(json.dumps(stats.to_dict()))
    kw = dict(init=tmp_path / "pre" / "pretrained_model", steps=4, save_every=2, **FAST)
    finetune(demos["tgt"], tmp_path / "ft", normalizer=tmp_path / "a.json", **kw)
    finetune(demos["tgt"], tmp_path / "ft", normalizer=tmp_path / "b.json", resume=True, **{**kw, "steps": 6})
    wider = stats.to_dict()
    wider["max"] = [v + 1.0 for v in wider["max"]]
    (tmp_path / "c.json").write_text(json.dumps(wider))
    with pytest.raises(ConfigError, match=r"--normalizer '.*b.json: other statistics' \(checkpoint\) vs '.*c.json' \(now\)"):
        finetune(demos["tgt"], tmp_path / "ft", normalizer=tmp_path / "c.json", resume=True, **{**kw, "steps": 8})
