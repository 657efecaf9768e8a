"""Turn a config dataclass into argparse options (``--field-name``), so every knob is on the command line.

Each option gets its description, choices and range check from ``ate.cli._fields``; a bad value is one
argparse-style line (``ate align stage1: error: argument --batch-size: must be >= 2, got 1``), never a
traceback from deep inside the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block of a command with 40 options would bury the message.
    Sub-parsers inherit the class (``add_subparsers`` uses ``type(self)``); each records its prog, so an
    error raised while the command runs is reported as ``ate policy finetune: error: ...`` too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.set_defaults(prog_name=self.prog)  # the innermost sub-command's value wins

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(cast, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False, none: bool = False):
    """argparse ``type=``: parse with `cast` and check lo <= value <= hi (strict where *_open); `none`
    also accepts "none" / "null" for an optional field."""

    def parse(text: str):
        if none and text.lower() in ("none", "null"):
            return None
        value = cast(text)  # ValueError -> argparse's "invalid int value: 'x'"
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo}, got {text}")
        if hi is not None and (value > hi or (hi_open and value == hi)):
            raise argparse.ArgumentTypeError(f"must be {'<' if hi_open else '<='} {hi}, got {text}")
        return value

    parse.__name__ = cast.__name__
    return parse


def add_dataclass_options(parser: argparse.ArgumentParser, cls, skip: set[str] = frozenset(), group: str | None = None):
    """One ``--field-name`` per field of `cls`, described in ``ate.cli._fields.FIELDS[cls.__name__]``."""
    from ate.cli._fields import FIELDS

    target = parser.add_argument_group(group) if group else parser
    hints = typing.get_type_hints(cls)
    specs = FIELDS[cls.__name__]
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        add_field_option(target, f.name, hints[f.name], specs[f.name], default=f.default)


def add_field_option(target, name: str, hint, spec, default=argparse.SUPPRESS, metavar: str | None = None) -> None:
    """The option for one field: bool -> --x / --no-x; choices -> {a,b}; else `spec.type` or the field's type."""
    flag = "--" + name.replace("_", "-")
    text = spec.help + ("" if default is argparse.SUPPRESS else " (default: %(default)s)")
    if hint is bool:
        target.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        return
    args = typing.get_args(hint)
    base = next((t for t in args if t is not type(None)), hint) if type(None) in args else hint  # Optional[X] -> X
    if typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        target.add_argument(flag, nargs="+", type=spec.type or item, choices=spec.choices, default=default,
                            metavar=None if spec.choices else metavar or name.upper(), help=text)
    elif typing.get_origin(base) is dict:
        import json

        target.add_argument(flag, type=json.loads, default=default, metavar="JSON", help=text)
    elif spec.choices:
        target.add_argument(flag, choices=spec.choices, default=default, help=text)
    else:
        target.add_argument(flag, type=spec.type or base, default=default, metavar=metavar or name.upper(), help=text)


def dataclass_from_args(cls, args: argparse.Namespace, **overrides):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})
