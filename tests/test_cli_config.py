"""`--config PATH`: a training command's written config JSON read back as its option defaults. A run started
from the first run's config (and a new --out) writes the same config; options on the command line win; a bad
file is one line naming the file and key (exit 2, like a bad option); the config's own run folder is only
written into as a resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import ate, help_text, ok  # noqa: E402
from test_policies_helpers import write_demos  # noqa: E402

VAE = ["--preset", "small", "--latent-dim", "8", "--horizon", "8", "--no-progress"]


def error_line(r: subprocess.CompletedProcess, code: int) -> str:
    assert r.returncode == code and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr.strip()


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def without(d: dict, *keys) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    return {"src": write_demos(root / "src", "panda", 4, 6, n_eps=4, T=40),
            "tgt": write_demos(root / "tgt", "panda", 4, 6, n_eps=2, T=25, seed=2)}


@pytest.fixture(scope="module")
def stage1(demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("s1") / "run"
    ok(ate("align", "stage1", "--data", demos["src"], "--out", out, "--steps", 3, "--lr", 3e-4, "--w-kl", 1e-3,
           "--pad", "drop", "--key", "action", *VAE))
    return out


def test_align_round_trip_from_the_run_folder(demos, stage1, tmp_path):
    ok(ate("align", "stage1", "--config", stage1, "--out", tmp_path / "again"))
    first, again = read(stage1 / "run.json"), read(tmp_path / "again" / "run.json")
    assert first["align_config"]["lr"] == 3e-4 and first["align_config"]["pad"] == "drop"  # the options were kept
    assert first["data_key"] == "action" and first["out"] == str(stage1)
    assert without(again, "out") == without(first, "out") and again["out"] == str(tmp_path / "again")
    # stage 2: its --source comes back too; an option on the command line overrides the file
    s2 = tmp_path / "s2"
    ok(ate("align", "stage2", "--data", demos["tgt"], "--source", stage1, "--out", s2, "--steps", 2, "--w-mmd", 0.5,
           *VAE))
    ok(ate("align", "stage2", "--config", s2 / "run.json", "--out", tmp_path / "s2b", "--steps", 3))
    first, again = read(s2 / "run.json"), read(tmp_path / "s2b" / "run.json")
    assert again["align_config"]["steps"] == 3 and again["source_checkpoint"] == first["source_checkpoint"]
    assert without(again["align_config"], "steps") == without(first["align_config"], "steps")


def test_align_config_folder_without_out_only_resumes(stage1, tmp_path):
    r = ate("align", "stage1", "--config", stage1, "--steps", 4)  # the config's own folder: a resume
    ok(r)
    assert f"resumed from {stage1}/last at step 3 of 4" in r.stderr
    assert read(stage1 / "run.json")["align_config"]["steps"] == 4  # the file follows the latest start
    (tmp_path / "crashed").mkdir()  # a run folder with no checkpoint: writing there would start it over
    (tmp_path / "crashed" / "run.json").write_text(json.dumps({**read(stage1 / "run.json"),
                                                               "out": str(tmp_path / "crashed")}))
    line = error_line(ate("align", "stage1", "--config", tmp_path / "crashed"), code=1)
    assert line == (f"ate align stage1: error: --config: the out dir {tmp_path / 'crashed'} named by the config holds "
                    "a run that this would overwrite, not resume; give --out <new dir>")


def test_policy_pretrain_round_trip_keeps_the_policy_config(pretrained, tmp_path):
    ok(ate("policy", "pretrain", "--config", pretrained / "train_config.json", "--out", tmp_path / "again"))
    first, again = read(pretrained / "train_config.json"), read(tmp_path / "again" / "train_config.json")
    assert first["policy_config"]["down_dims"] == [16, 32] and first["train"]["batch_size"] == 8
    assert without(again, "out") == without(first, "out")


def test_policy_finetune_round_trip_with_guidance_lora_and_anchor(demos, stage1, pretrained, tmp_path):
    vae = tmp_path / "vae"
    ok(ate("align", "stage2", "--data", demos["tgt"], "--source", stage1, "--out", vae, "--steps", 2, *VAE))
    ft = tmp_path / "ft"
    ok(ate("policy", "finetune", "--data", demos["tgt"], "--init", pretrained, "--out", ft, "--guidance", "ate",
           "--vae", vae, "--normalizer", vae, "--scale", 0.5, "--clamp", "none", "--sign", "flipped", "--adapter", "lora", "--lora-rank", 2,
           "--anchor-weight", 0.5, "--steps", 2, "--batch-size", 4, "--lr", 3e-4, "--seed", 7, "--no-progress"))
    ok(ate("policy", "finetune", "--config", ft, "--out", tmp_path / "again"))
    first, again = read(ft / "train_config.json"), read(tmp_path / "again" / "train_config.json")
    assert first["guidance_config"]["scale"] == 0.5 and first["guidance_config"]["clamp"] is None
    assert first["lora"]["rank"] == 2 and first["train"]["seed"] == 7 and first["anchor_weight"] == 0.5
    assert without(again, "out") == without(first, "out")


def test_policy_config_folder_without_out_only_resumes(pretrained):
    r = ate("policy", "pretrain", "--config", pretrained, "--steps", 3)
    ok(r)
    assert "at step 2 of 3" in r.stderr and read(pretrained / "train_config.json")["train"]["steps"] == 3
    line = error_line(ate("policy", "pretrain", "--config", pretrained, "--no-resume"), code=1)
    assert line.startswith(f"ate policy pretrain: error: --config: the out dir {pretrained} named by the config holds "
                           "a run that this would overwrite, not resume; give --out <new dir> (or --resume")


def test_bench_config_round_trip(tmp_path):
    args = ["--suite", "metaworld", "--preset", "smoke", "--seeds", 3, 4, "--sign", "flipped", "--clamp", "none",
            "--policy-config", '{"horizon": 8, "down_dims": [16]}', "--out-dir", tmp_path / "b"]
    first = ok(ate("bench", *args, "--print-config"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text(first)  # what a run writes: BenchConfig.to_dict()
    assert ok(ate("bench", "--config", tmp_path / "b", "--print-config")) == first
    # results.json holds the config under "config"; options on the command line still win
    (tmp_path / "results.json").write_text(json.dumps({"schema": "ate.bench.results/1", "config": json.loads(first),
                                                        "summary": []}))
    again = json.loads(ok(ate("bench", "--config", tmp_path / "results.json", "--seeds", 5, "--out-dir", tmp_path / "c",
                              "--print-config")))
    assert again == {**json.loads(first), "seeds": [5], "out_dir": str(tmp_path / "c")}
    # other settings into the folder the config names would replace its finished stages: refused in one line
    r = ate("bench", "--config", tmp_path / "results.json", "--seeds", 5, "--print-config")
    assert r.returncode == 1 and "seeds differ" in r.stderr and "--out-dir" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bench_config_parses_to_the_same_bench_config(tmp_path):
    """In process: the parsed --config gives the BenchConfig the file was written from."""
    from ate.bench.pipeline import BenchConfig
    from ate.cli import parse_args
    from ate.cli.bench import config_from_args

    cfg = BenchConfig.from_preset("robosuite", "smoke", n_target_demos=[1, 2], policy_config={"horizon": 8},
                                  lora_lr=None, arms=["sft", "lora"], out_dir=str(tmp_path / "r"))
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    assert config_from_args(parse_args(["bench", "--config", tmp_path / "c.json"])) == cfg


@pytest.mark.parametrize("content,expected", [
    ({"align_config": {"lrr": 1e-3}}, "unknown key 'align_config.lrr' (did you mean 'align_config.lr'?)"),
    ({"dataa": "x"}, "unknown key 'dataa' (did you mean 'data'?)"),
    ({"align_config": {"lr": "fast"}}, "align_config.lr: expected a number, got \"fast\""),
    ({"align_config": {"steps": 2.5}}, "align_config.steps: expected an integer, got 2.5"),
    ({"align_config": {"bf16": "yes"}}, "align_config.bf16: expected true or false, got \"yes\""),
    ({"align_config": {"batch_size": 1}}, "align_config.batch_size: must be >= 2, got 1"),
    ({"align_config": {"pad": "zero"}}, "align_config.pad: invalid choice: 'zero' (choose from 'repeat', 'drop')"),
    ({"align_config": []}, "align_config: expected a JSON object, got []"),
    ({"stage": 2}, "written by ate align stage2, not stage1"),
])
def test_bad_config_file_is_one_line(content, expected, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(content))
    line = error_line(ate("align", "stage1", "--config", path), code=2)
    assert line == f"ate align stage1: error: --config {path}: {expected} (see ate align stage1 --help)"


@pytest.mark.parametrize("command,content,expected", [
    (["policy", "finetune"], {"train": {"stepz": 3}}, "unknown key 'train.stepz' (did you mean 'train.steps'?)"),
    (["policy", "finetune"], {"guidance_config": {"scale": "big"}}, "guidance_config.scale: expected a number"),
    (["policy", "finetune"], {"mode": "pretrain"}, "written by ate policy pretrain, not finetune"),
    (["policy", "pretrain"], {"policy_config": [8]}, "policy_config: expected a JSON object, got [8]"),
    (["bench"], {"seeds": 1}, "seeds: expected a non-empty list of integers, got 1"),
    (["bench"], {"torch_threads": None, "demo_dir": 3}, "demo_dir: expected a string, got 3"),
])
def test_bad_config_of_other_commands(command, content, expected, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(content))
    line = error_line(ate(*command, "--config", path), code=2)
    assert line.startswith(f"ate {' '.join(command)}: error: --config {path}: {expected}"), line


def test_missing_or_unreadable_config_is_one_line(tmp_path):
    prog = "ate policy finetune"
    assert error_line(ate("policy", "finetune", "--config", tmp_path / "nope.json"), code=2) == \
        f"{prog}: error: --config {tmp_path / 'nope.json'}: no such file (see {prog} --help)"
    assert error_line(ate("policy", "finetune", "--config", tmp_path), code=2) == \
        f"{prog}: error: --config {tmp_path}: a folder without train_config.json (not a run folder of {prog}) " \
        f"(see {prog} --help)"
    (tmp_path / "bad.json").write_text("{'steps': 3}")
    assert error_line(ate("policy", "finetune", "--config", tmp_path / "bad.json"), code=2).startswith(
        f"{prog}: error: --config {tmp_path / 'bad.json'}: not valid JSON (")


def test_required_options_may_come_from_the_config_but_not_from_nowhere(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data": str(tmp_path / "d.npz")}))  # no out
    line = error_line(ate("align", "stage1", "--config", path), code=2)
    assert line.startswith("ate align stage1: error: missing --out"), line
    np.savez(tmp_path / "d.npz", action=np.zeros((20, 2), np.float32) + np.arange(20)[:, None], episode_ends=[10, 20])
    ok(ate("align", "stage1", "--config", path, "--out", tmp_path / "run", "--steps", 2, *VAE))


@pytest.mark.parametrize("command", [["align", "stage2"], ["policy", "pretrain"], ["bench"]])
def test_help_describes_config(command):
    out = help_text(*command)
    assert "--config PATH JSON config of an earlier run" in out and "(default: " in out
