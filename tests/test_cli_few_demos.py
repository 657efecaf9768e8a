"""Few-demo runs through the `ate` command line (ATE's own setting): 1-2 demos of 25 frames train, the
validation rule is printed, resume and progress say what they do, user errors are one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import ate, ok_stderr as ok  # noqa: E402
from test_policies_helpers import write_demos  # noqa: E402

VAE = ["--preset", "small", "--latent-dim", "8", "--horizon", "8", "--no-progress"]


def one_line_error(r: subprocess.CompletedProcess, code: int = 1) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and "Traceback" not in r.stderr, r.stderr
    assert lines[-1].startswith("ate ") and ": error: " in lines[-1], r.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("few")
    return {"src": write_demos(root / "src", "panda", 4, 6, n_eps=4, T=40),
            "one": write_demos(root / "one", "panda", 4, 6, n_eps=1, T=25, seed=1),
            "two": write_demos(root / "two", "panda", 4, 6, n_eps=2, T=25, seed=2)}


@pytest.fixture(scope="module")
def stage1(demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("s1") / "run"
    ok(ate("align", "stage1", "--data", demos["one"], "--out", out, "--steps", 3, *VAE))  # 1 demo, 25 windows < 64
    return out


def test_stage2_on_two_tiny_demos_trains_and_states_the_validation_rule(demos, stage1, tmp_path):
    err = ok(ate("align", "stage2", "--data", demos["two"], "--source", stage1, "--out", tmp_path / "t",
                 "--steps", 4, "--log-every", 2, *VAE))
    assert "validation: none (2 episodes; val_ratio 0.1 holds out floor(E x val_ratio) episodes, none below 10)" in err
    assert "50 training windows < batch_size 64: each batch repeats windows" in err
    assert err.count("align stage 2 step ") == 2  # --no-progress still logs every log_every steps
    assert "val_loss" not in (tmp_path / "t" / "metrics.jsonl").read_text()
    # with a larger val_ratio one of the two demos is held out, and the line says so
    err = ok(ate("align", "stage2", "--data", demos["two"], "--source", stage1, "--out", tmp_path / "v",
                 "--steps", 2, "--val-ratio", 0.5, *VAE))
    assert "validation: 1 of 2 episodes held out (floor(2 x val_ratio 0.5))" in err


def test_pad_drop_skips_a_short_episode_by_name(demos, stage1, tmp_path):
    data = write_demos(tmp_path / "mixed", "panda", 4, 6, n_eps=3, T=25)
    short = write_demos(tmp_path / "short", "panda", 4, 6, n_eps=1, T=5)
    (data / "ep_003.hdf5").write_bytes((short / "ep_000.hdf5").read_bytes())
    err = ok(ate("align", "stage2", "--data", data, "--source", stage1, "--out", tmp_path / "t", "--steps", 2,
                 "--pad", "drop", "--val-ratio", 0.5, *VAE))  # whatever the split, the short one is never in it
    assert "1 of 4 episodes are shorter than horizon 8 and are skipped under --pad drop: ep_003.hdf5" in err
    assert "validation: 1 of 3 episodes held out" in err
    exact = write_demos(tmp_path / "exact", "panda", 4, 6, n_eps=2, T=8)  # one window each: nothing to validate on
    err = ok(ate("align", "stage2", "--data", exact, "--source", stage1, "--out", tmp_path / "e", "--steps", 2,
                 "--pad", "drop", "--val-ratio", 0.5, *VAE))
    assert "validation: none (2 episodes; the 1 held-out episode(s) give 1 window, the MMD needs 2, so they train)" in err
    line = one_line_error(ate("align", "stage2", "--data", tmp_path / "short", "--source", stage1, "--out",
                              tmp_path / "s", "--steps", 2, "--pad", "drop", *VAE))
    assert "no episode has the 8 frames one chunk needs under --pad drop (longest: ep_000.hdf5, 5 frames)" in line


def test_resume_says_so_and_a_changed_option_is_named(demos, stage1, tmp_path):
    out = tmp_path / "t"
    ok(ate("align", "stage2", "--data", demos["two"], "--source", stage1, "--out", out, "--steps", 2, *VAE))
    err = ok(ate("align", "stage2", "--data", demos["two"], "--source", stage1, "--out", out, "--steps", 3, *VAE))
    assert f"resumed from {out}/last at step 2 of 3" in err
    line = one_line_error(ate("align", "stage2", "--data", demos["two"], "--source", stage1, "--out", out,
                              "--steps", 4, "--lr", "1e-3", *VAE))
    assert "different configuration: --lr 0.0001 (checkpoint) vs 0.001 (now)" in line
    line = one_line_error(ate("align", "stage2", "--data", demos["one"], "--source", stage1, "--out", out,
                              "--steps", 4, *VAE))
    assert f"trained on different data than {demos['one']} (normalisation stats differ)" in line


@pytest.mark.parametrize("which", ["one", "two"])
def test_policy_finetune_on_one_or_two_tiny_demos(which, demos, pretrained, tmp_path):
    out = tmp_path / "ft"
    args = ("policy", "finetune", "--data", demos[which], "--out", out, "--init", pretrained, "--log-every", 2,
            "--no-progress")
    err = ok(ate(*args, "--steps", 2, "--save-every", 2))
    n = 25 * (1 if which == "one" else 2)
    assert f"{n} training windows < batch_size 64: batches repeat windows" in err
    assert "train dp_unet step 2/2 loss " in err and " lr " in err and "samples/s" in err
    err = ok(ate(*args, "--steps", 4))
    assert f"resumed from {(out / 'checkpoints' / '000002').resolve()} at step 2 of 4" in err
