"""`ate` command line. Each sub-command lives in its own module under ate.cli and exposes
`register(subparsers)`, which lists it (argparse, for `ate --help`) and registers the builder of its
tyro command (`ate.cli._tyro`): options generated from dataclasses, a handler `func(args) -> int`.
Heavy imports happen inside the builder and the handler, so `ate --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

# module name under ate.cli, in the order shown by --help
COMMANDS = [
    "align",  # stage-1 / stage-2 VAE training
    "inspect",  # latent projection + reconstruction errors
    "convert",  # reference checkpoint -> safetensors
    "bench_core",  # throughput / guidance overhead / memory figures
    "policy",  # pretrain / finetune / predict reference policies
    "bench",  # simulator benchmarks
    "sims",  # simulator checks (expert coverage per robot × task)
    "demo",  # the quick end-to-end demo
    "lerobot",  # LeRobot integration helpers
]


def build_parser() -> argparse.ArgumentParser:
    from ate.cli._options import ArgumentParser

    parser = ArgumentParser(prog="ate", description="Align-Then-stEer: align action chunks of source and target data in one latent space, then steer fine-tuning with latent guidance.")
    from ate import __version__

    parser.add_argument("--version", action="version", version=f"ate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"ate.cli.{name}")
        except ModuleNotFoundError as exc:  # sub-command not written yet in this checkout
            if exc.name == f"ate.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def _show_library_messages() -> None:
    """ate's own log lines (data loaded, validation rule, resume, progress without a bar) go to stderr as
    plain one-liners; other libraries keep their own logging settings."""
    import logging

    log = logging.getLogger("ate")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def parse_args(argv: list[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The command line as the namespace its command's handler (`args.func`) reads, parsed by the tyro
    command it names (ate.cli._tyro); argparse only for `ate --help`, `--version` and a missing or unknown
    command."""
    from ate.cli._tyro import find_command

    parser = parser or build_parser()  # also registers the tyro commands
    argv = [str(a) for a in argv]
    found = find_command(argv)
    return found[0].parse(found[1]) if found else parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(sys.argv[1:] if argv is None else argv, parser)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ate.errors import ATEError

    _show_library_messages()
    try:
        return int(args.func(args) or 0)
    except ATEError as exc:
        prog = getattr(args, "prog_name", None) or f"ate {args.command}"
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
