"""Resume semantics of the alignment trainer: in-process k -> N equals an uninterrupted N-step run, and a
SIGKILLed `ate align stage1` re-run with the same command ends with the uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ate.align.checkpoint import load_aligned_vae
from ate.align.train import AlignConfig, train_stage1, train_stage2
from ate.bench.synthetic import write_toy_npz
from ate.checkpoint import load_tensors

OPTS = dict(preset="small", latent_dim=16, horizon=8, batch_size=8, log_every=1, eval_every=5, save_every=5,
            progress=False)


pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return write_toy_npz(tmp_path_factory.mktemp("resume") / "src.npz", 20, 40, 4, seed=0)


def _assert_same_weights(a, b):
    ta, tb = load_tensors(a), load_tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def _rows(run):
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]  # wall-clock varies


# gmm: the prior's KL is a Monte-Carlo estimate, so stage 2 draws prior noise every step (not only MMD targets)
@pytest.mark.parametrize("stage,prior_mode", [(1, "aggregate"), (2, "aggregate"), (2, "gmm")])
def test_resume_in_process_matches_uninterrupted(src, tmp_path, stage, prior_mode):
    n, k = 20, 10
    # the interrupted run is simulated by a shorter `steps`; the cosine LR horizon is pinned so that both
    # follow the same schedule (a longer `steps` on resume otherwise re-times the remaining decay)
    opts = {**OPTS, "lr_decay_steps": n}
    if stage == 1:
        run = lambda out, steps: train_stage1(src, out, AlignConfig(steps=steps, **opts))  # noqa: E731
    else:
        m1 = train_stage1(src, tmp_path / "s1", AlignConfig(steps=4, prior_mode=prior_mode, gmm_components=2, **OPTS))
        tgt = write_toy_npz(tmp_path / "tgt.npz", 10, 40, 3, seed=1, domain="target")
        run = lambda out, steps: train_stage2(tgt, out, m1, AlignConfig(steps=steps, **opts))  # noqa: E731
    run(tmp_path / "full", n)
    run(tmp_path / "resumed", k)
    assert json.loads((tmp_path / "resumed" / "last" / "training_state" / "state.json").read_text())["step"] == k
    with open(tmp_path / "resumed" / "metrics.jsonl", "a") as f:  # a line cut short by a killed process
        f.write('{"step": 11, "loss": 0.3')
    run(tmp_path / "resumed", n)
    for sub in ("last", "best", "model"):
        _assert_same_weights(tmp_path / "full" / sub / "model.safetensors", tmp_path / "resumed" / sub / "model.safetensors")
    full, resumed = _rows(tmp_path / "full"), _rows(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == list(range(1, n + 1))
    assert [r for r in resumed if r["step"] > k] == [r for r in full if r["step"] > k]
    # a finished run re-run with the same command is a no-op on the weights
    run(tmp_path / "resumed", n)
    _assert_same_weights(tmp_path / "full" / "last" / "model.safetensors", tmp_path / "resumed" / "last" / "model.safetensors")


@pytest.mark.parametrize("prior_mode", ["aggregate", "gmm"])
def test_resume_with_other_eval_cadence_matches_uninterrupted(src, tmp_path, prior_mode):
    # eval_every may change on resume, so validation must not touch any random state that training uses
    # (a gmm prior's Monte-Carlo KL draws prior noise in validation as well as in training)
    m1 = train_stage1(src, tmp_path / "s1", AlignConfig(steps=4, prior_mode=prior_mode, gmm_components=2, **OPTS))
    tgt = write_toy_npz(tmp_path / "tgt.npz", 10, 40, 3, seed=1, domain="target")
    run = lambda out, steps, every: train_stage2(tgt, out, m1, AlignConfig(  # noqa: E731
        steps=steps, **{**OPTS, "lr_decay_steps": 20, "eval_every": every}))
    run(tmp_path / "full", 20, 5)
    run(tmp_path / "resumed", 10, 5)
    run(tmp_path / "resumed", 20, 3)
    _assert_same_weights(tmp_path / "full" / "last" / "model.safetensors", tmp_path / "resumed" / "last" / "model.safetensors")


def _state_step(out):
    try:
        return json.loads((out / "last" / "training_state" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def test_sigkill_then_rerun_matches_uninterrupted(src, tmp_path):
    steps = 40
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ate", "align", "stage1", "--data", str(src), "--out", str(out),
           "--steps", str(steps), "--save-every", "5", "--eval-every", "5", "--log-every", "1", "--preset", "small",
           "--latent-dim", "16", "--horizon", "8", "--batch-size", "8", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _state_step(out) < 10 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _state_step(out)
    assert 10 <= killed_at < steps and not (out / "model").exists()

    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    train_stage1(src, tmp_path / "full", AlignConfig(steps=steps, **OPTS))
    for sub in ("last", "best", "model"):
        _assert_same_weights(tmp_path / "full" / sub / "model.safetensors", out / sub / "model.safetensors")
    assert _rows(out) == _rows(tmp_path / "full")

    # only complete checkpoints are visible; leftovers of an interrupted atomic write are hidden temp names
    # that the loader never looks at (it resolves model/, best/, last/ only)
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == ["best", "last", "metrics.jsonl", "model", "run.json"]
    hidden = [p.name for p in out.rglob(".*")]
    assert all(h.endswith((".tmp", ".old")) for h in hidden), hidden
    assert load_aligned_vae(out).path == out / "model"
