"""Two CPU processes (torchrun, gloo) reach the same weights as one process with the doubled batch: plain
pretraining (launched by `accelerate launch` too), and ATE fine-tuning with padded windows (ranks hold
different numbers of valid loss elements), the reference reduction (a batch mean) and sampled-encoder
guidance (a random ξ per sample), and fine-tuning anchored to the frozen pretrained policy (its masked mean is
weighted per rank like the plain loss).

Run as a script by torchrun / accelerate (see `_main`); as a test it launches the runs and compares the
weights. All runs train in float64: see the tolerance argument in `_max_diff`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from cli_helpers import accelerate_launch  # noqa: E402

CFG = {"horizon": 8, "state_dim": 8, "width": 32, "depth": 1, "heads": 2, "cond_dim": 32}
# global batch 16: one process takes all 16, two processes 8 each (same indices, noise and ξ, sliced); the CPU
# (gloo) on any machine: device "auto" would put both ranks on cuda:0 with one GPU
COMMON = dict(batch_size=16, lr=1e-3, warmup_steps=2, log_every=3, progress=False, ema_decay=0.9, save_every=3,
              device="cpu")
WEIGHTS = "pretrained_model/model.safetensors"
TOL = 1e-6


def _main(mode: str, data: str, out: str, init: str | None = None) -> None:
    sys.path.insert(0, str(HERE))
    from test_policies_helpers import StandInVAE

    from ate.policies import load_policy
    from ate.policies.train import finetune, pretrain

    torch.set_default_dtype(torch.float64)  # weights, noise, data and the VAE (train_loop casts to the weights)
    if mode == "pretrain":
        # pad="drop": every window has all 8 steps; the pretraining arm of the test has no padding
        pretrain(data, out, policy="pi0", policy_config=CFG, steps=6, pad="drop", **COMMON)
        return
    norm = load_policy(init).normalizers["panda"]["action"]  # same robot: the pretrained action space
    kw = dict(guidance="ate", vae=StandInVAE(4, CFG["horizon"], norm), scale=20.0, clamp=None,
              encoder_mode="sample", reduction="reference") if mode == "ate" else dict(guidance="off")
    if mode == "anchor":  # a large β: the term, 0 at the first step, moves the weights within 6 steps
        kw["anchor_weight"] = 5.0
    finetune(data, out, init=init, steps=6, pad="repeat", **kw, **COMMON)


def _run(tmp_path: Path, nproc: int, *args, launcher: str = "torchrun") -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    script = [str(Path(__file__)), *map(str, args)]
    if nproc == 1:
        cmd = [sys.executable, *script]
    elif launcher == "accelerate":
        cmd, more = accelerate_launch(nproc, tmp_path / "hf", *script)
        env.update(more)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *script]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def _weights(run: Path, sub: str = WEIGHTS) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    w = load_file(run / sub)
    assert all(v.dtype == torch.float64 for v in w.values())
    return w


def _max_diff(a: dict, b: dict) -> float:
    """Largest weight difference. Tolerance TOL: the runs differ only in float summation order (DDP averages
    two half-batch gradients, one process sums the whole batch; the global valid-element count and guidance
    mean are reassembled from two halves). In float64 a gradient element then differs by <= ~n·u·Σ|terms|,
    u = 1.1e-16, n <= 1e3 terms here: ~1e-13 of the gradient scale. AdamW's step lr·m/(sqrt(v)+eps) has
    sensitivity <= lr/eps = 1e-3/1e-8 = 1e5 to the gradient (worst case |g| ~ eps), so a weight moves by
    <= ~1e-8 differently per step, ~6e-8 after 6 steps: TOL = 1e-6 is > 10x that worst case, while a real
    mismatch (other slice, other noise or ξ, a per-rank mean) changes Adam's steps by O(lr) = 1e-3.
    (In float32, u = 6e-8, the same bound reaches the full step lr: a float32 comparison after Adam has no
    meaningful tolerance, which is why this test once failed at 4.7e-5 against a 2e-5 bound.)"""
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _demos(root: Path) -> tuple[Path, Path]:
    import sys as _sys

    _sys.path.insert(0, str(HERE))
    from test_policies_helpers import write_demos

    src = write_demos(root / "src", "panda", 4, 6, n_eps=3, T=16)
    # target episodes of 11 and 13 frames: windows near the ends are padded, so the two ranks' slices hold
    # different numbers of valid elements
    tgt = write_demos(root / "tgt1", "panda", 4, 6, n_eps=1, T=11, task="push", seed=1)
    write_demos(root / "tgt2", "panda", 4, 6, n_eps=1, T=13, task="push", seed=2)
    (root / "tgt2" / "ep_000.hdf5").rename(tgt / "ep_001.hdf5")
    return src, tgt


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    src, tgt = _demos(root)
    _run(root, 1, "pretrain", src, root / "pre1")
    _run(root, 2, "pretrain", src, root / "pre2")
    _run(root, 2, "pretrain", src, root / "pre2_accelerate", launcher="accelerate")
    pre = root / "pre1"
    for mode in ("off", "ate"):
        _run(root, 1, mode, tgt, root / f"{mode}1", pre)
    _run(root, 2, "ate", tgt, root / "ate2", pre)
    return root


@pytest.mark.dist
@pytest.mark.parametrize("two", ["pre2", "pre2_accelerate"])  # launched by torchrun, by accelerate launch
def test_two_processes_match_one_process_with_doubled_batch(runs, two):
    assert json.loads((runs / two / "train_config.json").read_text())["world_size"] == 2
    diff = _max_diff(_weights(runs / "pre1"), _weights(runs / two))
    assert diff < TOL, diff
    moved = _max_diff(_weights(runs / "pre1"), _weights(runs / "pre1", f"checkpoints/000003/{WEIGHTS}"))
    assert moved > 100 * TOL, moved  # steps 4-6 moved the weights by far more than the tolerance
    logs = [json.loads(x)["loss"] for x in (runs / "pre1" / "metrics.jsonl").read_text().splitlines()]
    assert logs[-1] < logs[0]  # it trained


@pytest.mark.dist
def test_two_processes_match_one_process_with_guidance_and_padding(runs):
    one, two = _weights(runs / "ate1"), _weights(runs / "ate2")
    diff = _max_diff(one, two)
    assert diff < TOL, diff
    # not vacuous: the guidance moved the weights away from plain fine-tuning by far more than the tolerance
    assert _max_diff(one, _weights(runs / "off1")) > 100 * TOL
    rec = json.loads((runs / "ate2" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["guidance_norm"] > 0


@pytest.fixture(scope="module")
def anchor_runs(tmp_path_factory):
    """Its own runs (not `runs`'), so the anchor case can run alone: -k anchor."""
    root = tmp_path_factory.mktemp("dist_anchor")
    src, tgt = _demos(root)
    _run(root, 1, "pretrain", src, root / "pre1")
    for nproc, mode in ((1, "off"), (1, "anchor"), (2, "anchor")):
        _run(root, nproc, mode, tgt, root / f"{mode}{nproc}", root / "pre1")
    return root


@pytest.mark.dist
def test_two_processes_match_one_process_with_the_anchor_and_padding(anchor_runs):
    one, two = _weights(anchor_runs / "anchor1"), _weights(anchor_runs / "anchor2")
    diff = _max_diff(one, two)
    assert diff < TOL, diff  # the tolerance argument of _max_diff: the anchor adds one more masked mean
    assert json.loads((anchor_runs / "anchor2" / "train_config.json").read_text())["world_size"] == 2
    # not vacuous: the anchor moved the weights away from plain fine-tuning by far more than the tolerance
    assert _max_diff(one, _weights(anchor_runs / "off1")) > 100 * TOL
    rec = json.loads((anchor_runs / "anchor2" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["anchor_loss"] > 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    _main(*sys.argv[1:])
