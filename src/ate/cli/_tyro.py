"""Commands whose options tyro generates from dataclasses: each config field (``AlignConfig``,
``TrainConfig``, ...) becomes ``--field-name``, described in ``ate.cli._fields``, grouped by the config it
belongs to.

A `TyroCommand` is a list of `Group`s of fields. From it this module derives one dataclass per group,
its fields annotated for tyro (help, choices as ``Literal``, and the range check of ``_fields`` as a
constructor), and a command dataclass nesting them. ``tyro.conf.OmitArgPrefixes`` keeps the flags flat
(``--batch-size``, not ``--training.batch-size``) so every field name is one option, as before.

Around tyro, two things are ate's:
- errors: tyro draws a box of 8-10 lines; ``ate`` prints its message as one line
  (``ate align stage1: error: --batch-size: must be >= 2, got 1 (see ate align stage1 --help)``), exit 2;
- ``--config PATH``: the JSON a training command writes into its run folder, checked key by key like the
  command line (`ConfigFile`), becomes the default instance tyro parses against, so
  options given on the command line override it.

The parsed command comes back as an ``argparse.Namespace`` with one attribute per field (the names are
unique across groups), ``from_config`` (the fields taken from the file) and ``prog_name``, so a command's
handler reads ``args.out`` whichever parser built it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import re
import sys
import typing
from typing import Any, Callable



class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # the default of an option that must be given (or come from --config)


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


@dataclasses.dataclass
class Option:
    """One option: `name` is the field (``--name-with-dashes`` on the command line)."""

    name: str
    hint: Any  # the field's type: int, float | None, list[str], Literal is not needed (choices are in `spec`)
    spec: Any  # ate.cli._fields.Field: help, range-checking parser, choices
    default: Any = REQUIRED
    metavar: str | None = None  # instead of INT / FLOAT / STR / {choices}


@dataclasses.dataclass
class Group:
    """Options shown together in a box titled "<title> options" (tyro draws one per nested dataclass)."""

    title: str  # a Python identifier: it names the nested field
    options: list[Option]


def config_options(cls, skip: frozenset | set = frozenset(), defaults: dict | None = None) -> list[Option]:
    """The fields of config dataclass `cls`, described in ``ate.cli._fields.FIELDS[cls.__name__]``; a field
    without a description is a KeyError here, so a new field cannot reach --help undocumented."""
    from ate.cli._fields import FIELDS

    hints = typing.get_type_hints(cls)
    specs = FIELDS[cls.__name__]
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else REQUIRED)
        out.append(Option(f.name, hints[f.name], specs[f.name], (defaults or {}).get(f.name, default)))
    return out


def _optional_base(hint):
    args = typing.get_args(hint)
    if type(None) in args:
        return next(t for t in args if t is not type(None))
    return hint


def _accepts_none(spec) -> bool:
    """The field's parser takes "none" (``number(..., none=True)``): an optional value."""
    try:
        return spec.type is not None and spec.type("none") is None
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return False


def _item_parser(spec, cast) -> Callable[[str], Any]:
    parse = spec.type or cast
    choices = spec.choices

    def item(text: str):
        if choices is not None and text not in choices:
            raise ValueError(f"invalid choice: {text!r} (choose from {', '.join(map(repr, choices))})")
        try:
            return parse(text)
        except argparse.ArgumentTypeError as exc:  # the range checks of ate.cli._options.number
            raise ValueError(str(exc)) from None
        except ValueError:
            raise ValueError(f"invalid {getattr(parse, '__name__', 'str')} value: {text!r}") from None

    return item


def _metavar(option: Option, cast) -> str:
    spec = option.spec
    if option.metavar:
        return option.metavar
    if spec.choices is not None:
        return "{" + ",".join(map(str, spec.choices)) + "}"
    return {int: "INT", float: "FLOAT"}.get(cast, "STR")


def _annotated(option: Option):
    """`option`'s type for tyro: Annotated with its help and (except for flags and JSON) a constructor that
    parses and range-checks the text with the same function ``--config`` values go through."""
    import tyro
    from tyro.constructors import PrimitiveConstructorSpec

    spec, hint = option.spec, option.hint
    # tyro adds "(default: ...)"; a description that already says what the default means keeps its own words
    says_default = option.default is not REQUIRED and re.search(r"\bdefault\b", spec.help)
    arg = tyro.conf.arg(help=spec.help, help_behavior_hint="(required)" if option.default is REQUIRED else
                        "" if says_default else None)
    base = _optional_base(hint)
    if base is bool:
        return typing.Annotated[bool, arg]
    if typing.get_origin(base) is dict:
        def from_json(args: list[str]) -> dict:
            try:
                value = json.loads(args[0])
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON: {exc}") from None
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {args[0]}")
            return value

        constructor = PrimitiveConstructorSpec(nargs=1, metavar="JSON", instance_from_str=from_json,
                                               is_instance=lambda v: isinstance(v, dict),
                                               str_from_instance=lambda v: [json.dumps(v)])
        return typing.Annotated[base, constructor, arg]
    if typing.get_origin(base) is list:
        cast = typing.get_args(base)[0]
        item = _item_parser(spec, cast)

        def from_list(args: list[str]) -> list:
            if not args and not spec.may_be_empty:
                raise ValueError("expected at least one value")
            return [item(a) for a in args]

        one = _metavar(option, cast)
        constructor = PrimitiveConstructorSpec(nargs="*", metavar=f"{one} [{one} ...]", instance_from_str=from_list,
                                               is_instance=lambda v: isinstance(v, list),
                                               str_from_instance=lambda v: [str(x) for x in v])
        return typing.Annotated[base, constructor, arg]
    item = _item_parser(spec, base)
    if _accepts_none(spec):
        hint = base | None
    constructor = PrimitiveConstructorSpec(nargs=1, metavar=_metavar(option, base) + ("|none" if _accepts_none(spec) else ""),
                                           instance_from_str=lambda args: item(args[0]),
                                           is_instance=lambda v: True,
                                           str_from_instance=lambda v: ["none" if v is None else str(v)])
    return typing.Annotated[hint, constructor, arg]


def _field(option: Option):
    if option.default is REQUIRED:
        return dataclasses.field()
    if isinstance(option.default, (list, dict)):
        value = option.default
        return dataclasses.field(default_factory=lambda: json.loads(json.dumps(value)))
    return dataclasses.field(default=option.default)


def _dataclass(name: str, options: list[Option], nested: dict[str, type] | None = None, doc: str = ""):
    fields = [(o.name, _annotated(o), _field(o)) for o in options]
    for key, cls in (nested or {}).items():
        fields.append((key, cls, dataclasses.field(default_factory=cls)))
    cls = dataclasses.make_dataclass(name, fields, kw_only=True)
    cls.__doc__ = doc
    return cls


@dataclasses.dataclass
class TyroCommand:
    """A command whose options tyro parses. `groups[0]` holds the command's own options (data, out, ...);
    each further group is one box in --help. `config_file` enables ``--config PATH``."""

    prog: str
    description: str
    groups: list[Group]
    func: Callable[[argparse.Namespace], int]
    config_file: ConfigFile | None = None
    config_help: str = ""

    def options(self) -> dict[str, Option]:
        return {o.name: o for g in self.groups for o in g.options}

    def _classes(self, values: dict[str, Any]):
        """The command dataclass; `values` (from --config) replace the declared defaults."""
        def with_values(options):
            return [dataclasses.replace(o, default=values[o.name]) if o.name in values else o for o in options]

        top, *rest = self.groups
        nested = {g.title: _dataclass(g.title, with_values(g.options)) for g in rest}  # one box "<title> options"
        own = with_values(top.options)
        if self.config_file is not None:
            from ate.cli._fields import Field

            own.append(Option("config", str | None, Field(self.config_help), None, metavar="PATH"))
        return _dataclass(self.prog.split()[-1], own, nested, self.description)

    def parse(self, argv: list[str]) -> argparse.Namespace:
        argv = [str(a) for a in argv]
        values: dict[str, Any] = {}
        config = _config_path(argv)
        if config is not None and self.config_file is not None:
            values = read_config(self, config)
        cls = self._classes(values)
        options, given = self.options(), _given(argv, self.options())
        missing = [o for o in options.values() if o.default is REQUIRED and o.name not in values and o.name not in given]
        if missing and not {"-h", "--help"} & set(argv):
            # tyro names missing options before bad values; ate names a bad value first (fixing it is the
            # user's next step either way): parse once with stand-ins for the missing ones
            self._tyro(cls, argv + [a for o in missing for a in (_flags(o.name)[0], _stand_in(o))])
            _config_error(self.prog, f"missing {', '.join(_flags(o.name)[0] for o in missing)}")
        ns = argparse.Namespace(**_flatten(self._tyro(cls, argv)), prog_name=self.prog, func=self.func)
        ns.given = sorted(given)  # options on the command line
        ns.from_config = sorted(set(values) - given)  # options whose value came from --config
        return ns

    def _tyro(self, cls, argv: list[str]):
        import tyro

        buf = io.StringIO()
        try:
            with contextlib.redirect_stderr(buf):
                return tyro.cli(cls, args=argv, prog=self.prog, description=self.description,
                                config=(tyro.conf.OmitArgPrefixes,))
        except SystemExit as exc:
            if exc.code:  # a parse error: tyro's box as one line
                print(f"{self.prog}: error: {one_line(buf.getvalue())} (see {self.prog} --help)", file=sys.stderr)
            raise


def _stand_in(option: Option) -> str:
    """A value that parses, for a missing required option."""
    return str(option.spec.choices[0]) if option.spec.choices else {int: "1", float: "1"}.get(option.hint, "_")


def _flatten(obj) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out.update(_flatten(value) if dataclasses.is_dataclass(value) else {f.name: value})
    return out


def _flags(name: str) -> tuple[str, ...]:
    flag = "--" + name.replace("_", "-")
    return flag, "--no-" + flag[2:]


def _given(argv: list[str], options: dict[str, Option]) -> set[str]:
    """Options that appear on the command line (``--x``, ``--x=v``, ``--no-x``)."""
    tokens = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return {name for name in options if tokens & set(_flags(name))}


def _config_path(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def _config_error(prog: str, message: str) -> typing.NoReturn:
    print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
    raise SystemExit(2)


def read_config(command: TyroCommand, text: str) -> dict[str, Any]:
    """The values of the config file `text` (a run folder or the file), by option name; each checked as the
    command line would check it. A bad file is one line naming the file and key (exit 2)."""
    import difflib
    from pathlib import Path

    spec, prog = command.config_file, command.prog
    path = Path(text)
    file = path / spec.name if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        _config_error(prog, f"--config {path}: a folder without {spec.name} (not a run folder of {prog})")
    if not file.is_file():
        _config_error(prog, f"--config {file}: no such file")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        _config_error(prog, f"--config {file}: not valid JSON ({exc})")
    if not isinstance(data, dict):
        _config_error(prog, f"--config {file}: expected a JSON object, got {type(data).__name__}")
    data = spec.select(data) if spec.select else data
    if spec.check and (message := spec.check(data)):
        _config_error(prog, f"--config {file}: {message}")

    found: dict[str, tuple[str, Any]] = {}

    def walk(d: dict, keys: dict, prefix: str) -> None:
        for k, v in d.items():
            if k not in keys and "*" not in keys:
                close = difflib.get_close_matches(k, [n for n in keys if n != "*"], n=1)
                hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
                _config_error(prog, f"--config {file}: unknown key '{prefix}{k}'{hint}")
            sub = keys.get(k)
            if isinstance(sub, dict):
                if v is None:  # e.g. guidance_config of a run without guidance
                    continue
                if not isinstance(v, dict):
                    _config_error(prog, f"--config {file}: {prefix}{k}: expected a JSON object, got {json.dumps(v)}")
                walk(v, sub, f"{prefix}{k}.")
            elif sub is not None:
                found[sub] = (prefix + k, v)

    walk(data, spec.keys, "")
    options = command.options()
    values = {}
    for name, (key, value) in found.items():
        try:
            values[name] = config_value(options[name], value, name in spec.json_text)
        except (TypeError, ValueError) as exc:
            _config_error(prog, f"--config {file}: {key}: {exc}")
    return values


def _kind(cast) -> str:
    return {int: "an integer", float: "a number", bool: "true or false"}.get(cast, "a string")


def config_value(option: Option, value, json_text: bool = False):
    """`value` from a config file as the option would have parsed it; TypeError / ValueError say why not."""
    base = _optional_base(option.hint)
    if value is None:
        if base is not option.hint or option.default is None or _accepts_none(option.spec):
            return None
        raise TypeError(f"expected {_kind(base)}, got null")
    if json_text or typing.get_origin(base) is dict:  # a JSON object (kept as text where the option takes text)
        if not isinstance(value, dict):
            raise TypeError(f"expected a JSON object, got {json.dumps(value)}")
        return json.dumps(value) if json_text else value
    if base is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {json.dumps(value)}")
        return value
    if typing.get_origin(base) is list:
        cast = typing.get_args(base)[0]
        if not isinstance(value, list) or (not value and not option.spec.may_be_empty):
            plural = {int: "integers", float: "numbers"}.get(cast, "strings")
            raise TypeError(f"expected a non-empty list of {plural}, got {json.dumps(value)}")
        return [_scalar(option.spec, cast, v) for v in value]
    return _scalar(option.spec, base, value)


def _scalar(spec, cast, value):
    ok = {int: isinstance(value, int), float: isinstance(value, (int, float))}.get(cast, isinstance(value, str))
    if isinstance(value, bool) or not ok:
        raise TypeError(f"expected {_kind(cast)}, got {json.dumps(value)}")
    return _item_parser(spec, cast)(str(value))


_BOX = "│╭╮╰╯"


def one_line(text: str) -> str:
    """tyro's error box as one line: its message up to the first rule. Anything unrecognised comes back
    as it is, so a change in tyro's drawing loses the brevity, never the message."""
    lines = [ln.strip().strip(_BOX).strip() for ln in text.strip().splitlines()]
    if len(lines) < 2 or not text.lstrip().startswith("╭"):
        return text.strip()
    body = []
    for ln in lines[1:]:
        if ln and set(ln) <= set("─ "):
            break
        body.append(ln)
    message = " ".join(ln for ln in body if ln)
    # argparse's wording, which ate printed before tyro: "argument --x: ..."
    message = re.sub(r"^Error parsing (--\S+?):", r"argument \1:", message)
    if "Perhaps you meant:" in lines:  # tyro's suggestions for an unknown option: each "--flag METAVAR", then help
        close = [ln.split()[0] for ln in lines[lines.index("Perhaps you meant:") + 1:] if ln.startswith("--")]
        message += f" (did you mean {' or '.join(close[:3])}?)" if close else ""
    return message or text.strip()


# prog ("ate align stage1") -> (its command, built on use from the command line; the argparse sub-commands under it)
_COMMANDS: dict[str, tuple[Callable[[list[str]], TyroCommand], tuple[str, ...]]] = {}


def register_tyro(subparsers, name: str, help: str, command: Callable, subcommands: tuple[str, ...] = ()):
    """List `name` among argparse's sub-commands (for ``ate --help``) and let tyro parse its options.
    `command` (called with the command line after `name`, e.g. to show a preset's values as defaults) is
    called only when that command runs, so the others' imports stay lazy. `subcommands`: words after `name` that argparse handles (e.g.
    ``ate bench summarize``); they are added to the returned parser."""
    parser = subparsers.add_parser(name, help=help, add_help=False)
    _COMMANDS[parser.prog] = (command, subcommands)
    return parser


def find_command(argv: list[str]) -> tuple[TyroCommand, list[str]] | None:
    """The tyro command that `argv` names (its longest prefix of sub-command words), and the rest of argv."""
    words = 0
    while words < len(argv) and not argv[words].startswith("-"):
        words += 1
    for k in range(words, 0, -1):
        found = _COMMANDS.get(" ".join(["ate", *argv[:k]]))
        if found is not None:
            build, subcommands = found
            if k < len(argv) and argv[k] in subcommands:
                return None
            return build(argv[k:]), argv[k:]
    return None
