"""`ate bench --suite robosuite|metaworld --preset smoke|quick|full [options]`: the evidence pipeline.

Every `BenchConfig` field is an option (`--target-robot UR5e`, `--seeds 0 1 2`, `--sign flipped`, ...);
options left out keep the preset's value. Re-running the same command resumes: finished stages are
skipped (see `ate.bench.pipeline`).

`ate bench summarize RUN_DIR [RUN_DIR ...] --out DIR`: the regime summary of finished runs per suite ×
policy family (`ate.bench.regime`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

# not options: suite and preset have their own; steer_choice is a record the preset sets (BenchConfig)
SKIP = {"suite", "preset", "steer_choice"}


def _preset_defaults(argv: list[str]) -> dict:
    """The values of the preset that `argv` names (its --suite, --preset, --policy), shown and used as the
    defaults; an unknown name falls back to BenchConfig's own defaults (tyro then names the bad choice)."""
    from ate.bench.pipeline import BenchConfig
    from ate.cli._tyro import option_value
    from ate.errors import ATEError

    policy = option_value(argv, "--policy")
    try:
        cfg = BenchConfig.from_preset(option_value(argv, "--suite") or "robosuite",
                                      option_value(argv, "--preset") or "quick",
                                      **({"policy": policy} if policy in ("dp", "rdt", "pi0") else {}))
    except (ATEError, TypeError, ValueError):
        return {}
    return cfg.to_dict()


def _command(argv: list[str]):
    from ate.bench.pipeline import BenchConfig
    from ate.cli._fields import BENCH_GUIDANCE_NOTE
    from ate.cli._tyro import Group, TyroCommand, config_options, option

    own = [option("suite", str, "simulator suite", "robosuite", choices=("robosuite", "metaworld")),
           option("preset", str, PRESET_HELP, "quick", choices=("smoke", "quick", "full", "regime")),
           option("print_config", bool, "print the resolved configuration and exit", False)]
    run = config_options(BenchConfig, skip=SKIP, defaults=_preset_defaults(argv))
    return TyroCommand("ate bench", DESCRIPTION + " " + BENCH_GUIDANCE_NOTE,
                       [Group("options", own), Group("run", run)], func=_run,
                       config_file=_config_file(), config_help=CONFIG_HELP)


PRESET_HELP = ("budget: smoke = plumbing check (minutes, success rates meaningless); quick = smallest comparison of the "
               "arms; full = the first published results; regime = the evidence-v2 instrument (MetaWorld: gated base, "
               "headroom tasks, demos curve, every arm at 5 demos, test seeds; combine with --policy dp|rdt|pi0)")
DESCRIPTION = ("Demos -> pretrain on source -> stage-1 VAE -> stage-2 VAE -> fine-tune SFT and ATE from the same "
               "checkpoint -> evaluate on fixed seeds -> results.json, report.md, plots. Cached and resumable: re-run "
               "the same command to continue. Run options default to the preset's values (shown for the --suite / "
               "--preset / --policy given). After runs: `ate bench summarize RUN_DIR ...` (the regime summary) and "
               "`ate bench headroom RUN_DIR` (the target-task rule); see their --help.")


def config_from_args(args: argparse.Namespace):
    from ate.bench.pipeline import PRESETS, BenchConfig

    given = set(args.given) | set(args.from_config)  # the rest keeps the preset's value
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig)
                 if f.name not in SKIP and f.name in given}
    # a regime run per policy family (the families do not share a folder)
    family = f"-{overrides.get('policy', PRESETS.get((args.suite, args.preset), {}).get('policy', 'dp'))}" \
        if args.preset == "regime" else ""
    overrides.setdefault("out_dir", f"runs/bench/{args.suite}-{args.preset}{family}")
    cfg = BenchConfig.from_preset(args.suite, args.preset, **overrides)
    if "out_dir" in getattr(args, "from_config", ()):
        _check_continues(cfg)
    return cfg


# options that do not change any stage's result: a run continued from its config may change them (steer_choice
# is a record of where the guidance fields came from; the fields themselves are compared)
_RUNTIME_ONLY = ("progress", "workers", "torch_threads", "preset", "steer_choice")


def _check_continues(cfg) -> None:
    """An out dir taken from --config (not given) may only continue that run: with other settings the
    stage cache would replace its finished stages, so that is refused in one line naming the first field."""
    from pathlib import Path

    from ate.errors import ConfigError

    stored = Path(cfg.out_dir) / "config.json"
    if not stored.is_file():
        return
    old, new = json.loads(stored.read_text()), cfg.to_dict()
    changed = [k for k in new if k not in _RUNTIME_ONLY and k in old and old[k] != new[k]]
    if changed:
        raise ConfigError(f"--config: {cfg.out_dir} holds a run with other settings ({', '.join(changed[:4])}"
                          f"{' ...' if len(changed) > 4 else ''} differ); continuing there would replace its stages: "
                          "give --out-dir <new folder>")


CONFIG_HELP = ("JSON config of an earlier run: its config.json or results.json (or --print-config's output), or the "
               "run folder. Its "
               "values replace the preset's, options given here override them (so --preset then only renames). "
               "Without --out-dir the run is the one the config names: re-running it continues it, finished stages "
               "whose parameters are unchanged are skipped")


def _config_file():
    """config.json (`BenchConfig.to_dict()`) -> the options of `ate bench` (one per field, same names)."""
    from ate.bench.pipeline import BenchConfig
    from ate.cli._tyro import ConfigFile

    def select(d: dict) -> dict:  # results.json holds the run's config under "config"
        results = str(d.get("schema", "")).startswith("ate.bench.results") and isinstance(d.get("config"), dict)
        return d["config"] if results else d

    # steer_choice (a record) is accepted and ignored: the preset records it again from the guidance fields
    keys = {f.name: None if f.name == "steer_choice" else f.name for f in dataclasses.fields(BenchConfig)}
    return ConfigFile("config.json", keys, select=select)


def register(sub) -> None:
    from ate.cli._tyro import register_tyro

    p = register_tyro(sub, "bench", "simulator benchmark: SFT vs ATE (vs scratch) on robosuite / MetaWorld", _command)
    sub2 = p.add_subparsers(dest="bench_command", metavar="{summarize,headroom}", required=False,
                            title="after runs (leave out to run the pipeline)")
    register_tyro(sub2, "summarize", "regime summary of finished runs: summary.json, report.md, plots", _summarize_command)
    register_tyro(sub2, "headroom", "the target-task rule: tasks where SFT lies in the headroom band", _headroom_command)


def _summarize_command(argv: list[str]):
    from ate.cli._tyro import option, simple_command

    return simple_command("ate bench summarize", "Collect finished `ate bench` runs per suite × policy family: success "
                                                 "vs target demos per arm with CIs, paired differences to SFT, the "
                                                 "base-policy gate, the guidance profile by noise level. Runs of one "
                                                 "suite × family merge when their numbers of demos are disjoint.", [
        option("runs", list[str], "run folders holding results.json", positional=True, metavar="RUN_DIR"),
        option("out", str, "folder for summary.json, report.md and the PNGs", "benchmarks/results/regime"),
        option("eval_speed", list[str] | None, "`ate.bench.eval_speed` results, one per suite, whose overall speedups "
                                               "are recorded, the lowest as eval_speedup (default: "
                                               "benchmarks/results/eval-speed/results.json when present, else the "
                                               "field is null)", None, metavar="JSON"),
        option("steer_out", str | None, "also write issue 11's steer summary (the chosen variant vs SFT) to "
                                        "DIR/summary.json; each family's ATE-best is named by the steer choice its runs "
                                        "recorded (runs made before that record: the committed choice their guidance "
                                        "options match, the family's own or dp's)", None, metavar="DIR"),
    ], _summarize)


def _headroom_command(argv: list[str]):
    from ate.cli._tyro import option, simple_command

    return simple_command("ate bench headroom", "Apply the evidence protocol's written rule to a finished run scored on "
                                                "validation seeds: keep the target tasks on which SFT's success at the "
                                                "headline number of demos lies in the band (default 15-85 %). Prints "
                                                "the table and writes headroom.json.", [
        option("run", str, "run folder holding results.json (validation seeds)", positional=True, metavar="RUN_DIR"),
        option("n_demos", int | None, "number of target demos (default: the run's headline)", None),
        option("band", tuple[float, float] | None, "SFT success band in percent (default: 15 85)", None,
               type=_band_value, metavar="LOW HIGH"),
        option("out", str | None, "folder for headroom.json (default: the run folder)", None),
    ], _headroom)


def _command_line() -> str:
    import shlex
    import sys

    return "ate " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and sys.argv[0].endswith("ate") else \
        " ".join(shlex.quote(a) for a in sys.argv)


def _run(args) -> int:
    from ate.bench.pipeline import run_bench
    from ate.bench.report import summary_table

    cfg = config_from_args(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    results = run_bench(cfg, command=_command_line())
    print()
    print(summary_table(results))
    print(f"\nresults: {cfg.run_dir / 'results.json'}\nreport:  {cfg.run_dir / 'report.md'}")
    return 0


def _band_value(text: str) -> float:
    v = float(text)
    if not 0 <= v <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage in [0, 100], got {text}")
    return v


def _headroom(args) -> int:
    from pathlib import Path

    from ate.errors import ConfigError

    from ate.bench import regime
    from ate.checkpoint import write_json_atomic

    if args.band and args.band[0] > args.band[1]:
        raise ConfigError(f"--band {args.band[0]:g} {args.band[1]:g}: LOW must be <= HIGH")
    rule = regime.headroom(args.run, args.n_demos, tuple(args.band) if args.band else regime.HEADROOM)
    lo, hi = rule["band"]
    print(f"SFT at {rule['n_demos']} demos per task (validation seeds {rule['eval_seed_start']}...), band {lo:g}-{hi:g} %:")
    for task, v in rule["per_task"].items():
        print(f"  {task:28s} {v:5.1f} %  {'keep' if task in rule['keep'] else 'drop'}")
    out = Path(args.out or args.run) / "headroom.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, rule)
    print(f"keep: {' '.join(rule['keep']) or '(none)'}\nwritten: {out}")
    return 0


def _summarize(args) -> int:
    from ate.bench import regime

    summary = regime.summarize(args.runs, regime.EVAL_SPEED_FILE if args.eval_speed is None else args.eval_speed)
    paths = regime.write_report(summary, args.out)
    if args.steer_out:
        from pathlib import Path

        out = Path(args.steer_out)
        out.mkdir(parents=True, exist_ok=True)
        # each family's ATE-best named by its runs' own recorded steer choice (older runs: matched on their options)
        steer = regime.steer_summary(summary)
        (out / "summary.json").write_text(json.dumps(steer, indent=2) + "\n")
        paths["steer_summary"] = out / "summary.json"
        for suite, fams in steer["suites"].items():
            for family, e in fams.items():
                if e.get("chosen"):
                    print(f"ATE-best of {suite}/{family} = {e['chosen']['label']} [{e['chosen']['how']}]")
    for suite, fams in summary["suites"].items():
        for family, e in fams.items():
            if e:
                print(f"## {suite} / {family} ({e['split']})\n{regime.family_table(e)}\n")
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0
