"""The committed steer choice per policy family: the guidance options of the `ate` arm (ATE-best).

    from ate.bench import steer_choice
    steer_choice("pi0")   # pi0's own choice, or dp's with "fallback_from": "dp" while pi0 has none

One file per family, `ate/bench/steer_choices/<family>.json` (schema `ate.steer.choice/1`), written by a
validation sweep of that family::

    python -m ate.bench.sweep SWEEP_DIR --out DIR --choose src/ate/bench/steer_choices/pi0.json --family pi0

A family without a file falls back to dp's choice (the first sweep), and says so: the returned dict has
"fallback_from": "dp" and "policy" (the family asked for). Files are read when asked for, never at import; a
missing (dp's) or unreadable, corrupt or wrong-schema file is a one-line ConfigError naming it.

`choice_record` is what a run records of the choice its `ate` arm used (`BenchConfig.steer_choice`, so
config.json and results.json); `choice_label` is how a report names it ("rel1.0-flipped: ... (dp's choice,
fallback: pi0 has none)").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ate.errors import ConfigError

SCHEMA = "ate.steer.choice/1"
CHOICE_DIR = Path(__file__).with_name("steer_choices")
FALLBACK = "dp"  # the family whose choice stands in for a family without one
FAMILIES = ("dp", "rdt", "pi0")
FAMILY_OF = {"dp_unet": "dp", "rdt_dit": "rdt", "pi0_flow": "pi0"}  # policy type names -> family
_PKG_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the `ate` package


def family_of(policy: str) -> str:
    """The policy family of a BenchConfig.policy value (or a policy type name); ConfigError if unknown."""
    family = FAMILY_OF.get(policy, policy)
    if family not in FAMILIES:
        raise ConfigError(f"no steer choice for policy {policy!r}: choose a family from {FAMILIES}")
    return family


def choice_file(family: str) -> Path:
    """Where the committed steer choice of `family` lives (the file may not exist)."""
    return CHOICE_DIR / f"{family_of(family)}.json"


def _shown(path: Path) -> str:
    """The path as recorded: relative to the package's parent ("ate/bench/steer_choices/dp.json") when inside it."""
    try:
        return Path(path).resolve().relative_to(_PKG_ROOT).as_posix()
    except ValueError:
        return str(path)


def load_choice(path: str | Path, family: str | None = None) -> dict[str, Any]:
    """One choice file, checked: schema, variant, name, options (GuidanceConfig fields only) and its family
    (the file's `family`, else its stem; `family` given: they must agree). One-line ConfigError otherwise."""
    from ate.bench.pipeline import PAPER_GUIDANCE

    path = Path(path)
    fix = f"rewrite it with `python -m ate.bench.sweep SWEEP_DIR --out DIR --choose {path} --family {family or path.stem}`"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"steer choice {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"steer choice {path}: unreadable ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"steer choice {path}: invalid JSON ({exc}); {fix}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"steer choice {path}: schema {found!r}, expected {SCHEMA!r}; {fix}")
    opts = data.get("options")
    if not isinstance(opts, dict) or not all(isinstance(data.get(k), str) and data[k] for k in ("variant", "name")):
        raise ConfigError(f"steer choice {path}: needs a non-empty 'variant' and 'name' and an 'options' object; {fix}")
    unknown = sorted(set(opts) - set(PAPER_GUIDANCE))
    if unknown:
        raise ConfigError(f"steer choice {path}: options {unknown} are not guidance options ({sorted(PAPER_GUIDANCE)})")
    stored = data.get("family", path.stem)
    if family is not None and stored != family:
        raise ConfigError(f"steer choice {path}: holds family {stored!r}, expected {family!r}")
    return {**data, "family": stored}


def steer_choice(policy: str) -> dict[str, Any]:
    """The committed steer choice for a policy family: its own file's content, or dp's with
    "fallback_from": "dp" when the family has no file. Both carry "family" (whose choice it is), "policy"
    (the family asked for) and "file" (the file read, relative to the package's parent)."""
    family = family_of(policy)
    path = choice_file(family)
    if path.is_file() or family == FALLBACK:
        return {**load_choice(path, family), "policy": family, "file": _shown(path)}
    fallback = choice_file(FALLBACK)
    return {**load_choice(fallback, FALLBACK), "policy": family, "file": _shown(fallback), "fallback_from": FALLBACK}


def choice_record(choice: dict[str, Any]) -> dict[str, Any]:
    """What a run records of the choice its `ate` arm used (a `steer_choice` dict, or a record)."""
    rec = {k: choice[k] for k in ("family", "policy", "variant", "name", "file")}
    rec["options"] = dict(choice["options"])
    if choice.get("fallback_from"):
        rec["fallback_from"] = choice["fallback_from"]
    return rec


def choice_label(record: dict[str, Any]) -> str:
    """How a report names the choice: "variant: name (family's choice[, fallback: policy has none])"."""
    whose = f"{record['family']}'s choice"
    if record.get("fallback_from"):
        whose += f", fallback: {record.get('policy', '?')} has none"
    return f"{record['variant']}: {record['name']} ({whose})"


def guidance_differs(guidance: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """The guidance fields (present in `guidance`) that differ from a choice's: its options over the paper's
    guidance. [] = `guidance` is that choice."""
    from ate.bench.pipeline import PAPER_GUIDANCE

    want = {**PAPER_GUIDANCE, **options}
    return [k for k in PAPER_GUIDANCE if k in guidance and guidance[k] != want[k]]
