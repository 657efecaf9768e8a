"""User errors on the `ate` command line are one line naming the option / file / field, never a traceback;
`--help` describes every option and lists its choices."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import ate, help_text  # noqa: E402


def error_line(r: subprocess.CompletedProcess, code: int) -> str:
    assert r.returncode == code and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert ": error: " in lines[-1] and not any(": error: " in ln for ln in lines[:-1]), r.stderr
    return lines[-1]


@pytest.mark.parametrize("args,expected", [
    (["align", "stage1", "--pad", "zero"], "ate align stage1: error: argument --pad: invalid choice: 'zero' "
                                           "(choose from 'repeat', 'drop')"),
    (["align", "stage1", "--batch-size", "1"], "ate align stage1: error: argument --batch-size: must be >= 2, got 1"),
    (["policy", "finetune", "--scale", "-1"], "ate policy finetune: error: argument --scale: must be >= 0, got -1"),
    (["policy", "finetune", "--anchor-weight", "-1"], "ate policy finetune: error: argument --anchor-weight: must be "
                                                      ">= 0, got -1"),
    (["policy", "finetune", "--anchor-weight", "nan"], "ate policy finetune: error: argument --anchor-weight: must be "
                                                       "a finite number, got nan"),
    (["bench", "--reduction", "mean"], "ate bench: error: argument --reduction: invalid choice: 'mean'"),
])
def test_bad_option_value_is_one_argparse_line(args, expected):
    r = ate(*args)
    line = error_line(r, code=2)
    assert line.startswith(expected), line
    assert len(r.stderr.strip().splitlines()) == 1  # no usage block (a bad value wins over missing --data)


def test_config_validation_error_is_one_line():
    line = error_line(ate("bench", "--suite", "metaworld", "--preset", "smoke", "--target-robot", "UR5e",
                          "--print-config"), code=1)
    assert line.startswith("ate bench: error: MetaWorld has one arm"), line


@pytest.mark.parametrize("args,expected", [
    (["policy", "finetune", "--data", "d", "--out", "o", "--init", "i", "--guidance", "ate"],
     "ate policy finetune: error: --guidance ate needs --vae"),
    (["policy", "pretrain", "--data", "d", "--out", "o", "--policy-config", '{"horizon": 8'],
     "ate policy pretrain: error: --policy-config: neither a JSON object nor a JSON file"),
])
def test_inconsistent_options_are_one_line(args, expected):
    assert error_line(ate(*args), code=1).startswith(expected)


def test_a_real_bug_keeps_its_traceback(monkeypatch):
    """Only ate's own errors become one line; anything else (a bug) propagates with its traceback."""
    import ate.cli as cli

    real = cli.build_parser

    def parser_with_a_buggy_command():
        p = real()
        p.set_defaults(func=lambda args: int("not a number"), command="x")
        return p

    monkeypatch.setattr(cli, "build_parser", parser_with_a_buggy_command)
    with pytest.raises(ValueError, match="invalid literal"):
        cli.main([])


def _walk(parser, name="ate"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _walk(sub, f"{name} {sub_name}")
        elif action.option_strings and action.option_strings[0] != "-h":
            yield name, action


def test_every_option_has_a_description():
    from ate.cli import build_parser
    from ate.cli._tyro import _COMMANDS

    options = [(cmd, a.option_strings[0], a.help) for cmd, a in _walk(build_parser())]
    for prog, command in _COMMANDS.items():  # the commands whose options tyro generates
        options += [(prog, f"--{o.name}", o.spec.help) for o in command([]).options().values()]
    assert len(options) > 250
    assert [(cmd, flag) for cmd, flag, text in options if not text] == []


def test_bench_help_says_what_the_guidance_modes_do():
    out = help_text("bench")
    for text in ("--scale FLOAT λ, guidance weight", "--clamp FLOAT|none κ, element-wise bound",
                 "--sign {reference,flipped} reference = pred + λ·g",
                 "--reduction {reference,per_sample} reference = latent distance averaged over batch × Z as "
                 "published", "too weak to change actions", "--encoder-mode {sample,mean}",
                 "Neither has been shown to beat plain fine-tuning (SFT) significantly"):
        assert text in out, text


def test_zarr_with_a_deleted_chunk_is_refused_on_one_line(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "z.zarr"), mode="w", zarr_format=2)
    actions = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    group.create_array("data/action", shape=actions.shape, chunks=(20, 3), dtype="f4")[:] = actions
    group.create_array("meta/episode_ends", data=np.array([30, 60]))
    (tmp_path / "z.zarr" / "data" / "action" / "0.0").unlink()
    line = error_line(ate("align", "stage1", "--data", tmp_path / "z.zarr", "--out", tmp_path / "run", "--steps", 2,
                          "--no-progress"), code=1)
    assert f"{tmp_path / 'z.zarr'}: array 'data/action' lacks chunk file 'data/action/0.0' (1 of 3 chunks" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backend", ["wandb", "tensorboard"])
def test_missing_log_backend_names_package_and_extra(backend, tmp_path):
    if importlib.util.find_spec(backend):
        pytest.skip(f"{backend} is installed")
    np.savez(tmp_path / "d.npz", action=np.zeros((20, 2), np.float32) + np.arange(20)[:, None], episode_ends=[10, 20])
    line = error_line(ate("align", "stage1", "--data", tmp_path / "d.npz", "--out", tmp_path / "run", "--steps", 2,
                          "--log-to", backend, "--wandb-project", "mine"), code=1)
    assert line == f"ate align stage1: error: --log-to {backend} needs '{backend}': pip install 'align-then-steer[log]'"
    assert not (tmp_path / "run").exists()


def _documented_commands():
    """`ate align|policy|bench|lerobot ...` lines of the README and the results' READMEs and reports, complete ones:
    without shell variables, placeholders, elisions or --config (whose run folder is not here)."""
    import shlex

    root = Path(__file__).parent.parent
    files = [root / "README.md", *sorted((root / "benchmarks").rglob("*.md")), *sorted((root / "docs").rglob("*.md"))]
    found = {}
    for f in files:
        text = re.sub(r"\\\n\s*", " ", f.read_text())  # shell line continuations
        for m in re.finditer(r"(?m)(?:^\s*(?:\$ )?|`)(ate (?:align|policy|bench|lerobot) [^`\n|#]*)", text):
            argv = shlex.split(m.group(1))[1:]
            if not any(c in a for a in argv for c in ("$", "<", "...", "β")) and "--config" not in argv:
                found.setdefault(m.group(1).strip(), (f.relative_to(root), argv))
    return sorted(found.values(), key=str)


def test_every_documented_command_still_parses(capsys):
    """The commands the docs and the committed results were made with keep their flags: each parses, or lacks
    only what a fragment in prose leaves out (``ate policy finetune --guidance ate``, ``ate bench summarize
    --steer-out``)."""
    from ate.cli import parse_args

    commands = _documented_commands()
    assert len(commands) > 100
    failed = []
    for where, argv in commands:
        try:
            parse_args(argv)
        except SystemExit as exc:
            err = capsys.readouterr().err.strip()
            fragment = r"error: (missing |Missing value for argument |the following arguments are required)"
            if exc.code and not re.search(fragment, err):
                failed.append((str(where), " ".join(argv), err))
    assert failed == []


def test_tyro_error_box_becomes_its_message():
    """ate.cli._tyro.one_line on what tyro draws, and anything else passed through unchanged."""
    from ate.cli._tyro import one_line

    box = ("╭─ Value error ───────────────────────────────────╮\n"
           "│ Error parsing --batch-size: must be >= 2, got 1 │\n"
           "│ ─────────────────────────────────────────────── │\n"
           "│ Argument helptext:                              │\n"
           "│     --batch-size INT                            │\n"
           "╰─────────────────────────────────────────────────╯\n")
    assert one_line(box) == "argument --batch-size: must be >= 2, got 1"
    unknown = ("╭─ Unrecognized options ───────────────╮\n"
               "│ Unrecognized options: --batchsize, 3 │\n"
               "│ ──────────────────────────────────── │\n"
               "│ Perhaps you meant:                   │\n"
               "│     --batch-size INT                 │\n"
               "│         chunks per step              │\n"
               "╰──────────────────────────────────────╯\n")
    assert one_line(unknown) == "Unrecognized options: --batchsize, 3 (did you mean --batch-size?)"
    # on a terminal tyro colours the box (the message must not keep the escape codes)
    red = "".join(f"\x1b[31m{c}\x1b[0m" if c in "╭╮╰╯│─" else c for c in box)
    assert one_line(red.replace("Error parsing", "\x1b[91;1mError parsing\x1b[0m")) == one_line(box)
    # when stdout is not UTF-8 (as under pytest's capture) tyro draws a title, an ASCII rule and indented lines
    ascii_ = (" Required options                 \n"
              " -------------------------------- \n"
              "  Missing from ate bench headroom:\n"
              "      RUN_DIR                     \n"
              "          run folder (required)   \n"
              "  --------------------------------\n"
              "  For full helptext, run:         \n")
    assert one_line(ascii_) == "missing RUN_DIR"
    assert one_line("some other\ntext\n") == "some other\ntext"


def test_unknown_option_suggests_the_close_one():
    line = error_line(ate("policy", "finetune", "--data", "d", "--out", "o", "--init", "i", "--scal", "3"), code=2)
    assert line == ("ate policy finetune: error: Unrecognized options: --scal, 3 (did you mean --scale?) "
                    "(see ate policy finetune --help)")


def test_bench_help_shows_the_presets_values():
    """--help of ate bench shows the values of the preset (and family) it names, which options override."""
    from ate.bench.pipeline import BenchConfig

    cfg = BenchConfig.from_preset("metaworld", "regime", policy="pi0")
    out = help_text("bench", "--suite", "metaworld", "--preset", "regime", "--policy", "pi0")
    assert f"--pretrain-steps INT pretraining steps (default: {cfg.pretrain_steps})" in out
    assert f"(default: {' '.join(cfg.target_tasks)})" in out
    quick = BenchConfig.from_preset("robosuite", "quick")
    assert f"--pretrain-steps INT pretraining steps (default: {quick.pretrain_steps})" in help_text("bench")
