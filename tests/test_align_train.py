"""Alignment trainer: checkpoint contents, alignment effect, stage-2 options, bad input through trainer / CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ate.align.checkpoint import load_aligned_vae
from ate.align.train import AlignConfig, train_stage1, train_stage2
from ate.bench.synthetic import write_toy_npz
from ate.checkpoint import load_tensors
from ate.data import ChunkDataset, load_episodes
from ate.errors import CheckpointError, DataError, ShapeMismatchError

BASE = dict(preset="small", latent_dim=16, horizon=8, batch_size=16, progress=False, log_every=10,
            eval_every=1000, save_every=1000)


pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("align_data")
    return {"src": write_toy_npz(d / "src.npz", 20, 40, 4, seed=0),
            "tgt": write_toy_npz(d / "tgt.npz", 12, 40, 3, seed=1, domain="target")}


@pytest.fixture(scope="module")
def stage1(data, tmp_path_factory):
    """Stage 1 with w_mmd=0 and few steps: the aggregate posterior is far from N(0, I)."""
    out = tmp_path_factory.mktemp("s1") / "run"
    return train_stage1(data["src"], out, AlignConfig(steps=30, w_mmd=0.0, **BASE))


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_model_dir_contents(stage1):
    files = {p.name for p in stage1.iterdir()}
    assert files == {"model.safetensors", "config.json", "action_space.json"}
    cfg = json.loads((stage1 / "config.json").read_text())
    space = json.loads((stage1 / "action_space.json").read_text())["spaces"]
    assert [{k: v for k, v in s.items() if k != "normalizer"} for s in space] == [
        {"robot": None, "action_dim": 4, "horizon": 8, "pad": "repeat", "action_index": None}]
    assert space[0]["normalizer"] == cfg["normalizer"]
    assert cfg["format"] == "ate.aligned_vae" and cfg["stage"] == 1
    assert cfg["normalizer"]["dim"] == 4 and cfg["normalizer"]["mode"] == "minmax"
    assert cfg["chunk"] == {"horizon": 8, "pad": "repeat"}
    assert cfg["prior_kind"] == "aggregate"
    assert cfg["vae_config"]["latent_dim"] == 16 and cfg["vae_config"]["action_dim"] == 4
    tensors = load_tensors(stage1 / "model.safetensors")
    assert tensors["prior.mean"].shape == (16,) and tensors["prior.std"].shape == (16,)
    b = load_aligned_vae(stage1.parent)  # a run dir resolves to model/
    assert b.path == stage1 and b.prior.kind == "aggregate" and not b.vae.training
    assert all(not p.requires_grad for p in b.vae.parameters())
    run = stage1.parent
    assert (run / "last" / "training_state" / "state.json").is_file() and (run / "run.json").is_file()
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30] and all(np.isfinite(r["recon"]) for r in rows)


def test_stage2_aligns_target_latents_to_the_stage1_prior(stage1, data, tmp_path):
    prior = load_aligned_vae(stage1).prior
    # the setup is meaningful only if the stage-1 prior is clearly not N(0, I)
    assert prior.mean.norm() > 2.0
    cfg = AlignConfig(steps=60, **BASE)
    aligned = train_stage2(data["tgt"], tmp_path / "s2", stage1, cfg)
    # control: same init (same seed, same D), same steps, stage-1-style loss to N(0, I) on the target alone
    unaligned = train_stage1(data["tgt"], tmp_path / "unaligned", cfg)

    def mean_logp(model_dir):
        b = load_aligned_vae(model_dir)
        ds = ChunkDataset(load_episodes(data["tgt"]), horizon=8, normalizer=b.normalizer)
        mu, _ = b.vae.encode(ds[np.arange(len(ds))]["action"])
        return prior.log_prob(mu).mean().item()

    lp_aligned, lp_unaligned = mean_logp(aligned), mean_logp(unaligned)
    assert lp_aligned > lp_unaligned + 5.0, (lp_aligned, lp_unaligned)
    b = load_aligned_vae(aligned)
    assert b.prior.kind == "aggregate" and torch.equal(b.prior.mean, prior.mean)  # stage 2 stores the target prior
    assert b.meta["stage"] == 2 and b.meta["source_checkpoint"] == str(stage1.resolve())
    assert b.config.action_dim == 3


@pytest.mark.parametrize("opts", [dict(kl_direction="reference", prior_mode="gmm", gmm_components=2),
                                  dict(mmd_target="standard_normal", prior_mode="reference")])
def test_stage_options_run_and_store_their_prior(opts, data, tmp_path):
    cfg = AlignConfig(**{**BASE, "steps": 4, "batch_size": 8, **opts})
    m1 = train_stage1(data["src"], tmp_path / "s1", cfg)
    kind = opts.get("prior_mode", "aggregate")
    assert load_aligned_vae(m1).prior.kind == kind
    m2 = train_stage2(data["tgt"], tmp_path / "s2", m1, cfg)
    b = load_aligned_vae(m2)
    assert b.prior.kind == kind and b.meta["align_config"].items() >= opts.items()
    if kind == "gmm":
        assert b.prior.weights.shape == (2,) and b.prior.mean.shape == (2, 16)
    rows = [json.loads(ln) for ln in (tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(np.isfinite(r["loss"]) for r in rows)


def test_stage2_own_dims_and_latent_mismatch(stage1, data, tmp_path):
    m2 = train_stage2(data["tgt"], tmp_path / "ok", stage1, AlignConfig(**{**BASE, "steps": 2, "horizon": 12}))
    b = load_aligned_vae(m2)
    assert (b.config.action_dim, b.config.horizon, b.chunk["horizon"]) == (3, 12, 12)
    with pytest.raises(ShapeMismatchError, match="Z=16.*Z=32"):
        train_stage2(data["tgt"], tmp_path / "bad", stage1, AlignConfig(**{**BASE, "steps": 2, "latent_dim": 32}))
    assert not (tmp_path / "bad" / "last").exists()


def test_changed_config_or_data_on_resume_raises_and_keeps_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    cfg = AlignConfig(**{**BASE, "steps": 3, "batch_size": 8})
    train_stage1(data["src"], out, cfg)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=r"different configuration: --w-kl 7\.5e-05 \(checkpoint\) vs 0\.001 \(now\)"):
        train_stage1(data["src"], out, AlignConfig(**{**BASE, "steps": 6, "batch_size": 8, "w_kl": 1e-3}))
    with pytest.raises(CheckpointError, match="different"):  # other data (here: other D) on resume
        train_stage1(data["tgt"], out, AlignConfig(**{**BASE, "steps": 6, "batch_size": 8}))
    # steps may change on resume (a longer run); everything on disk was left as it was by the failures
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ate", "align", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def test_bad_input_through_trainer_and_cli(data, tmp_path):
    # a good checkpoint in the out dir, then failing runs into the same dir must leave it untouched
    out = tmp_path / "run"
    train_stage1(data["src"], out, AlignConfig(**{**BASE, "steps": 2, "batch_size": 8}))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    eps = load_episodes(data["src"])
    actions, ends = np.asarray(eps.actions).copy(), eps.episode_ends
    actions[int(ends[2]) + 5, 1] = np.nan  # episode 3
    nan_file = tmp_path / "nan.npz"
    np.savez(nan_file, action=actions, episode_ends=ends)
    with pytest.raises(DataError, match=r"episode.*3.*nan"):
        train_stage1(nan_file, out, AlignConfig(**{**BASE, "steps": 4, "batch_size": 8}))
    r = _cli("stage1", "--data", nan_file, "--out", out, "--steps", 4, "--preset", "small", "--latent-dim", 16,
             "--horizon", 8, "--batch-size", 8, "--no-progress")
    assert r.returncode == 1, r.stderr
    assert "error:" in r.stderr and "nan" in r.stderr and "Traceback" not in r.stderr

    short = tmp_path / "short.npz"  # every episode shorter than the horizon
    np.savez(short, action=np.random.default_rng(0).normal(size=(18 * 6, 4)).astype(np.float32),
             episode_ends=np.arange(6, 18 * 6 + 1, 6))
    with pytest.raises(DataError, match=r"short\.npz: no episode has the 8 frames one chunk needs under --pad drop \(longest: episode 0 of short\.npz, 6 frames\)"):
        train_stage1(short, out, AlignConfig(**{**BASE, "steps": 4, "batch_size": 8, "pad": "drop"}))

    empty = tmp_path / "empty.npz"
    np.savez(empty, action=np.zeros((0, 4), np.float32), episode_ends=np.zeros(0, np.int64))
    r = _cli("stage1", "--data", empty, "--out", out, "--steps", 4, "--no-progress")
    assert r.returncode == 1 and "error:" in r.stderr and "empty" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(DataError, match="no source data"):
        train_stage1(None, out, AlignConfig(**BASE))

    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert load_aligned_vae(out).prior is not None
