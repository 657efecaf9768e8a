"""Turn a config dataclass into argparse options (``--field-name``), so every knob is on the command line.

Each option gets its description, choices and range check from ``ate.cli._fields``; a bad value is one
argparse-style line (``ate align stage1: error: argument --batch-size: must be >= 2, got 1``), never a
traceback from deep inside the config.

``--config PATH`` (``add_config_option``): the JSON a training command writes into its run folder, read back
as the defaults of every option it records; options on the command line override them. The file is
checked like the command line: an unknown key, a wrong type or an out-of-range value is one line naming
the file and the key (exit 2, as a bad option).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import typing
from pathlib import Path


class ConfigFile(typing.NamedTuple):
    """How a command's run config maps onto its options.

    keys: JSON key -> option dest; a dict = a nested object with its own keys; None = written by the run
        but not an option (results, resolved values: accepted and ignored). A "*" key in a nested dict
        accepts any other key there (e.g. the full policy config, written for information).
    check: (the loaded JSON) -> an error message when the file belongs to another command, else None.
    json_text: dests whose option takes JSON text (the object in the file is passed on as text).
    select: (the loaded JSON) -> the part that holds the config (e.g. results.json's "config").
    """

    name: str  # the file inside a run folder
    keys: dict
    check: typing.Callable[[dict], str | None] | None = None
    json_text: frozenset = frozenset()
    select: typing.Callable[[dict], dict] | None = None


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block of a command with 40 options would bury the message.
    Sub-parsers inherit the class (``add_subparsers`` uses ``type(self)``); each records its prog, so an
    error raised while the command runs is reported as ``ate policy finetune: error: ...`` too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.set_defaults(prog_name=self.prog)  # the innermost sub-command's value wins

    config_file: ConfigFile | None = None  # set by add_config_option

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        if self.config_file is None:
            return super().parse_known_args(args, namespace)
        import sys

        args = list(sys.argv[1:] if args is None else args)
        # pass 1, every default suppressed: which options the command line gives (and --config's value)
        self._saved = [(a, a.default, a.required) for a in self._actions]
        try:
            for a in self._actions:
                a.default, a.required = argparse.SUPPRESS, False
            given = vars(super().parse_known_args(args, argparse.Namespace())[0])
        finally:
            self._restore()
        values = self._read_config(given["config"]) if given.get("config") else {}
        # pass 2: the file's values are the defaults, so an option on the command line wins
        for a in self._actions:
            if a.dest in values:
                a.default, a.required = values[a.dest], False
        ns, extras = super().parse_known_args(args, namespace)
        ns.from_config = sorted(set(values) - set(given))  # dests whose value came from the file
        return ns, extras

    def _restore(self) -> None:
        for a, default, required in getattr(self, "_saved", ()):
            a.default, a.required = default, required
        self._saved = []

    def format_help(self) -> str:
        self._restore()  # --help during pass 1 shows the real defaults
        return super().format_help()

    def _read_config(self, text: str) -> dict:
        spec = self.config_file
        path = Path(text)
        file = path / spec.name if path.is_dir() else path
        if path.is_dir() and not file.is_file():
            self.error(f"--config {path}: a folder without {spec.name} (not a run folder of {self.prog})")
        if not file.is_file():
            self.error(f"--config {file}: no such file")
        try:
            data = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self.error(f"--config {file}: not valid JSON ({exc})")
        if not isinstance(data, dict):
            self.error(f"--config {file}: expected a JSON object, got {type(data).__name__}")
        data = spec.select(data) if spec.select else data
        if spec.check and (message := spec.check(data)):
            self.error(f"--config {file}: {message}")
        found: dict[str, tuple[str, typing.Any]] = {}
        self._walk_config(data, spec.keys, "", file, found)
        actions = {a.dest: a for a in self._actions}
        values = {}
        for dest, (key, value) in found.items():
            try:
                values[dest] = _config_value(actions[dest], value, dest in spec.json_text)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                self.error(f"--config {file}: {key}: {exc}")
        return values

    def _walk_config(self, data: dict, keys: dict, prefix: str, file: Path, found: dict) -> None:
        for k, v in data.items():
            if k not in keys and "*" not in keys:
                close = difflib.get_close_matches(k, [n for n in keys if n != "*"], n=1)
                hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
                self.error(f"--config {file}: unknown key '{prefix}{k}'{hint}")
            sub = keys.get(k)
            if isinstance(sub, dict):
                if v is None:  # e.g. guidance_config of a run without guidance
                    continue
                if not isinstance(v, dict):
                    self.error(f"--config {file}: {prefix}{k}: expected a JSON object, got {json.dumps(v)}")
                self._walk_config(v, sub, f"{prefix}{k}.", file, found)
            elif sub is not None:
                found[sub] = (prefix + k, v)


def _kind(action) -> str:
    name = getattr(action.type, "__name__", "str") if action.type else "str"
    return {"int": "an integer", "float": "a number"}.get(name, "a string")


def _config_value(action, value, json_text: bool):
    """`value` from a config file as the option would have parsed it; TypeError / ValueError say why not."""
    if json_text:  # an option taking JSON text (ate policy pretrain --policy-config)
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"expected a JSON object, got {json.dumps(value)}")
        return None if value is None else json.dumps(value)
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {json.dumps(value)}")
        return value
    if action.type is json.loads:  # a dict option (--policy-config of ate bench)
        if not isinstance(value, dict):
            raise TypeError(f"expected a JSON object, got {json.dumps(value)}")
        return value
    if action.nargs in ("+", "*"):
        if not isinstance(value, list) or (action.nargs == "+" and not value):
            plural = {"an integer": "integers", "a number": "numbers"}.get(_kind(action), "strings")
            raise TypeError(f"expected a non-empty list of {plural}, got {json.dumps(value)}")
        return [_config_scalar(action, v) for v in value]
    return _config_scalar(action, value)


def _config_scalar(action, value):
    kind = _kind(action)
    if value is None:
        try:  # the "none" an optional option accepts, or an option whose default is None
            if (action.type("none") if action.type else action.default) is None:
                return None
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            pass
        raise TypeError(f"expected {kind}, got null")
    ok = {"an integer": isinstance(value, int), "a number": isinstance(value, (int, float))}.get(kind, isinstance(value, str))
    if isinstance(value, bool) or not ok:
        raise TypeError(f"expected {kind}, got {json.dumps(value)}")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"invalid choice {value!r} (choose from {', '.join(map(repr, action.choices))})")
    return action.type(str(value)) if action.type else value  # the option's own range check


def add_config_option(parser: ArgumentParser, spec: ConfigFile, help: str) -> None:
    """--config PATH, read by `parser` (an ate ArgumentParser) before its other options."""
    parser.config_file = spec
    parser.add_argument("--config", metavar="PATH", default=None, help=help)


def check_config_out(args, dest: str, flag: str, occupied: bool, resumable: bool, hint: str = "") -> None:
    """The output folder taken from --config (not given as `flag`) already holds a run (`occupied`): writing
    there is what a user wants to continue (resume) that run; anything else would overwrite it, so refuse."""
    from ate.errors import ConfigError

    if dest in getattr(args, "from_config", ()) and occupied and not resumable:
        raise ConfigError(f"--config: the out dir {getattr(args, dest)} named by the config holds a run that this "
                          f"would overwrite, not resume; give {flag} <new dir>{hint}")


def number(cast, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False, none: bool = False,
           finite: bool = False):
    """argparse ``type=``: parse with `cast` and check lo <= value <= hi (strict where *_open); `none`
    also accepts "none" / "null" for an optional field; `finite` refuses inf and nan (which pass lo / hi checks)."""

    def parse(text: str):
        if none and text.lower() in ("none", "null"):
            return None
        value = cast(text)  # ValueError -> argparse's "invalid int value: 'x'"
        if finite and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
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
        target.add_argument(flag, nargs="*" if spec.may_be_empty else "+", type=spec.type or item, choices=spec.choices, default=default,
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
