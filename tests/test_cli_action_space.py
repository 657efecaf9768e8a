"""`ate policy finetune --guidance ate` with a VAE of another action space: exit 1 and one line naming the field
that differs and both values, no traceback, nothing trained. The VAE's record is the action_space.json that
`ate align` wrote; a VAE directory written before that file existed is checked the same way."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import ate, ok  # noqa: E402
from test_policies_helpers import write_demos  # noqa: E402

VAE = ["--preset", "small", "--latent-dim", "8", "--no-progress", "--steps", "2", "--batch-size", "8"]


def error_line(r: subprocess.CompletedProcess) -> str:
    """The one error line (the last; before it only the data-loading log lines)."""
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert ": error: " in lines[-1] and not any(": error: " in ln for ln in lines[:-1]), r.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("aspace_cli")
    d = {"src": write_demos(root / "src", "panda", 4, 6, n_eps=3, T=24),
         "tgt": write_demos(root / "tgt", "panda", 4, 6, n_eps=2, T=20, seed=2),
         "other": write_demos(root / "other", "ur5e", 3, 6, n_eps=2, T=20, seed=3)}
    cfg = json.dumps({"horizon": 8, "state_dim": 8, "down_dims": [16, 32], "cond_dim": 16})
    ok(ate("policy", "pretrain", "--data", d["src"], "--out", root / "pre", "--policy-config", cfg, "--steps", 1,
           "--batch-size", 8, "--no-progress"))
    ok(ate("align", "stage1", "--data", d["src"], "--out", root / "s1", "--horizon", 8, *VAE))
    # stage-2 VAEs: H=4 instead of 8 (policy stats); another robot with 3 dims; the right H with its own stats
    ok(ate("align", "stage2", "--data", d["tgt"], "--source", root / "s1", "--out", root / "h4", "--horizon", 4,
           "--normalizer-from", root / "pre", *VAE))
    ok(ate("align", "stage2", "--data", d["other"], "--source", root / "s1", "--out", root / "ur5e", "--horizon", 8,
           *VAE))
    ok(ate("align", "stage2", "--data", d["tgt"], "--source", root / "s1", "--out", root / "own_stats", "--horizon", 8,
           *VAE))
    return {"root": root, **d}


def finetune(runs, vae, *extra) -> subprocess.CompletedProcess:
    return ate("policy", "finetune", "--data", runs["tgt"], "--init", runs["root"] / "pre", "--out",
               runs["root"] / f"ft-{Path(vae).name}", "--guidance", "ate", "--vae", vae, "--steps", 1, "--batch-size",
               8, "--no-progress", *extra)


@pytest.mark.parametrize("vae,expected", [
    ("h4", "chunk length mismatch (horizon): H=4 (VAE) vs H=8 (policy, robot 'panda')"),
    ("ur5e", "robot mismatch (robot): 'ur5e' (VAE) vs 'panda' (policy, robot 'panda')"),
    ("own_stats", "normalisation stats mismatch (normalizer): minmax normaliser D=4 #"),
])
def test_finetune_with_a_vae_of_another_action_space_is_one_line(runs, vae, expected):
    line = error_line(finetune(runs, runs["root"] / vae))
    assert line.startswith(f"ate policy finetune: error: {runs['root'] / vae}: {expected}"), line
    assert not (runs["root"] / f"ft-{vae}" / "pretrained_model").exists()  # refused before training


def test_the_vae_stats_make_it_fit_and_are_recorded(runs):
    """--normalizer <VAE dir> puts the target robot in the VAE's space: the run trains, and its policy dir records
    the same action space as the VAE's."""
    from ate.data import action_space as aspace

    vae = runs["root"] / "own_stats"
    ok(finetune(runs, vae, "--normalizer", vae))
    pol = aspace.read(runs["root"] / "ft-own_stats" / "pretrained_model", "panda")
    aspace.compare(pol, aspace.read(vae / "model"), what="finetuned policy vs its VAE")
    assert pol.pad == "repeat" and pol.action_index == (0, 1, 2, 3)


def test_a_vae_dir_written_before_the_record_is_checked_too(runs):
    """No action_space.json in the VAE dirs (an older ate): the record comes from config.json (no robot), the
    dims are still compared."""
    old = runs["root"] / "old_ur5e"
    shutil.copytree(runs["root"] / "ur5e", old)
    for f in old.rglob("action_space.json"):
        f.unlink()
    line = error_line(finetune(runs, old))
    assert line.startswith(f"ate policy finetune: error: {old}: action dim mismatch (action_dim): D=3 (VAE) vs D=4 "
                           "(policy, robot 'panda')"), line
