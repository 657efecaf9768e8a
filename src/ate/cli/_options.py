"""Turn a config dataclass into argparse options (``--field-name``), so every knob is on the command line."""

from __future__ import annotations

import argparse
import dataclasses
import typing


def add_dataclass_options(parser: argparse.ArgumentParser, cls, skip: set[str] = frozenset(), group: str | None = None):
    target = parser.add_argument_group(group) if group else parser
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        default = f.default
        if hint is bool:
            target.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
            continue
        base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)  # Optional[X] -> X
        target.add_argument(flag, type=base, default=default, metavar=f.name.upper(),
                            help=f"(default: {default})")


def dataclass_from_args(cls, args: argparse.Namespace, **overrides):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})
