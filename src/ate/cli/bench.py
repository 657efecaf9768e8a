"""`ate bench --suite robosuite|metaworld --preset smoke|quick|full [options]`: the evidence pipeline.

Every `BenchConfig` field is an option (`--target-robot UR5e`, `--seeds 0 1 2`, `--sign flipped`, ...);
options left out keep the preset's value. Re-running the same command resumes: finished stages are
skipped (see `ate.bench.pipeline`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

SKIP = {"suite", "preset"}


def _none_or(cast):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else cast(text)

    parse.__name__ = getattr(cast, "__name__", "value")
    return parse


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One `--field-name` per BenchConfig field; an option left out keeps the preset's value.
    Options typed `X | None` accept "none"."""
    from ate.bench.pipeline import BenchConfig

    hints = typing.get_type_hints(BenchConfig)
    group = parser.add_argument_group("run options (default: the preset's value; see BenchConfig)")
    for f in dataclasses.fields(BenchConfig):
        if f.name in SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((t for t in args if t is not type(None)), hint) if optional else hint
        origin = typing.get_origin(base)
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        elif origin is list:
            group.add_argument(flag, nargs="+", type=typing.get_args(base)[0], default=argparse.SUPPRESS, metavar=f.name.upper())
        elif origin is dict:
            group.add_argument(flag, type=json.loads, default=argparse.SUPPRESS, metavar="JSON",
                               help='JSON object, e.g. \'{"horizon": 16}\'')
        else:
            group.add_argument(flag, type=_none_or(base) if optional else base, default=argparse.SUPPRESS, metavar=f.name.upper())


def config_from_args(args: argparse.Namespace):
    from ate.bench.pipeline import BenchConfig

    given = vars(args)  # options not on the command line are absent (argparse.SUPPRESS)
    overrides = {f.name: given[f.name] for f in dataclasses.fields(BenchConfig) if f.name not in SKIP and f.name in given}
    overrides.setdefault("out_dir", f"runs/bench/{args.suite}-{args.preset}")
    return BenchConfig.from_preset(args.suite, args.preset, **overrides)


def register(sub) -> None:
    p = sub.add_parser("bench", help="simulator benchmark: SFT vs ATE (vs scratch) on robosuite / MetaWorld",
                       description="Demos -> pretrain on source -> stage-1 VAE -> stage-2 VAE -> fine-tune SFT and ATE from "
                                   "the same checkpoint -> evaluate on fixed seeds -> results.json, report.md, plots. "
                                   "Cached and resumable: re-run the same command to continue.")
    p.add_argument("--suite", choices=["robosuite", "metaworld"], default="robosuite")
    p.add_argument("--preset", choices=["smoke", "quick", "full"], default="quick")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    add_config_options(p)
    p.set_defaults(func=_run)


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
