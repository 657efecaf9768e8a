"""`ActionSpace`: the action space a VAE was trained in or a policy trains in, as one record.

A VAE can guide a policy only if it reads exactly the chunks the policy trains on: the same robot, the
same D action dims, chunks of the same H steps padded by the same rule, in the same normalised units.
Every VAE directory (`ate.align`: stage 1 / stage 2 ``last/``, ``best/``, ``model/``, converted checkpoints)
and every policy directory (`ate.policies`: ``pretrained_model/`` of pretrain / finetune and their
checkpoints) holds that record as ``action_space.json``, and one function, :func:`compare`, says whether
two records agree::

    found = read(vae_dir)                               # the VAE's record
    compare(policy.action_space("ur5e"), found, what=str(vae_dir), expected_name="policy", found_name="VAE")
    # ActionSpaceMismatchError: runs/vae/model: chunk length mismatch (horizon): H=16 (VAE) vs H=8 (policy)

File layout (one record per robot: one in a VAE directory, one per robot a policy knows)::

    {"format": "ate.action_space", "format_version": 1,
     "spaces": [{"robot": "ur5e", "action_dim": 7, "horizon": 16, "pad": "repeat",
                 "normalizer": {<ate.Normalizer dict>}, "action_index": [0, 1, ...] | null}]}

Fields, in the order :func:`compare` checks them:

- ``robot``: the robot whose actions these are (None: not known, e.g. a VAE trained on data without a
  ``robot`` attribute). Compared only when both records name one.
- ``action_dim``: D, the robot's own action dims (the VAE's input width).
- ``horizon``: H, steps per chunk.
- ``normalizer``: the affine map from raw actions to the normalised chunks (an :class:`ate.data.Normalizer`,
  None: no statistics stored). Two agree when they have the same mode and dims and the same scale and
  offset up to ``rtol`` / ``atol`` (float32 round-off by default).
- ``pad``: the chunk rule at episode ends, "repeat" or "drop" (None: not recorded). Compared only when both
  records hold one; a policy fine-tuned with another rule than its VAE's is warned about, not refused
  (`ate.policies.train.check_vae`).
- ``action_index``: where the robot's D dims sit in the policy action space (policies only: padded dims or
  unified slots; None for a VAE, which reads the robot's own dims). Compared only when both hold one.

Directories written before this file existed have none; their record is derived from the config files
they do hold (`ate.align.checkpoint.vae_dir_action_space`, `ate.policies.base.Policy.action_space`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ate.errors import ActionSpaceMismatchError, CheckpointError, ConfigError, DataError
from ate.data.normalize import Normalizer

FILE_NAME = "action_space.json"
FORMAT = "ate.action_space"
FORMAT_VERSION = 1
PAD_MODES = ("repeat", "drop")
# the order compare() checks the fields in, and the words its message uses for each
LABELS = {"robot": "robot", "action_dim": "action dim", "horizon": "chunk length", "normalizer": "normalisation stats",
          "pad": "pad rule", "action_index": "action index"}
# fields a record may leave unknown (None): compared only when both records hold a value
OPTIONAL = frozenset({"robot", "pad", "action_index"})


@dataclass(frozen=True, kw_only=True)
class ActionSpace:
    """The action space of one robot as a VAE or a policy sees it (see the module docstring for each field)."""

    robot: str | None = None
    action_dim: int
    horizon: int
    pad: str | None = None
    normalizer: Normalizer | None = None
    action_index: tuple[int, ...] | None = None

    def __post_init__(self):
        for name in ("action_dim", "horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"ActionSpace.{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.pad is not None and self.pad not in PAD_MODES:
            raise ConfigError(f"ActionSpace.pad must be one of {PAD_MODES} or None, got {self.pad!r}")
        if self.robot is not None:
            object.__setattr__(self, "robot", str(self.robot))
        if self.normalizer is not None and not isinstance(self.normalizer, Normalizer):
            raise ConfigError(f"ActionSpace.normalizer must be an ate.data.Normalizer or None, got "
                              f"{type(self.normalizer).__name__}")
        if self.action_index is not None:
            object.__setattr__(self, "action_index", tuple(int(i) for i in self.action_index))

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; `ActionSpace.from_dict(s.to_dict()) == s`."""
        return {"robot": self.robot, "action_dim": self.action_dim, "horizon": self.horizon, "pad": self.pad,
                "normalizer": self.normalizer.to_dict() if self.normalizer is not None else None,
                "action_index": list(self.action_index) if self.action_index is not None else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ActionSpace":
        if not isinstance(d, Mapping):
            raise ConfigError(f"an action-space record must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown action-space field(s) {unknown}; a record has {sorted(names)}")
        missing = [k for k in ("action_dim", "horizon") if k not in d]
        if missing:
            raise ConfigError(f"action-space record lacks {', '.join(missing)}")
        norm = d.get("normalizer")
        try:
            norm = Normalizer.from_dict(norm) if norm is not None else None
        except (DataError, ValueError, TypeError) as exc:
            raise ConfigError(f"action-space normalizer: {exc}") from None
        return cls(**{**d, "normalizer": norm})


# ------------------------------------------------------------------------------------------------ compare
def compare(expected: ActionSpace, found: ActionSpace, what: str, *, expected_name: str = "expected",
            found_name: str = "found", ignore: Iterable[str] = (), rtol: float = 1e-6, atol: float = 1e-7,
            hint: str | Mapping[str, str] | None = None) -> None:
    """Raise unless `found` is the action space `expected` says it must be.

    Args:
        expected / found: the two records (e.g. the policy's and the VAE's).
        what: what is being checked, at the start of the message (a directory, "VAE").
        expected_name / found_name: how the message names each side.
        ignore: fields not to compare (e.g. ``("normalizer",)`` where the expected stats are unknown).
        rtol / atol: tolerance on the normalisers' scale and offset.
        hint: appended to the message ("; <hint>"): one text, or field name -> text.

    Raises:
        ActionSpaceMismatchError: one line naming the first field (in the module docstring's order) that
            differs, with both values: ``"{what}: {label} mismatch ({field}): {found} ({found_name}) vs
            {expected} ({expected_name})"``. Optional fields that one side leaves None are skipped.
    """
    skip = set(ignore)
    bad = skip - set(LABELS)
    if bad:
        raise ValueError(f"compare(ignore=...): unknown action-space fields {sorted(bad)}")
    for name in LABELS:
        if name in skip:
            continue
        want, got = getattr(expected, name), getattr(found, name)
        if name in OPTIONAL and (want is None or got is None):
            continue
        if _same(name, want, got, rtol, atol):
            continue
        detail = ""
        if name == "normalizer" and want is not None and got is not None and want.dim == got.dim:
            diff = ~(np.isclose(want.scale, got.scale, rtol=rtol, atol=atol)
                     & np.isclose(want.offset, got.offset, rtol=rtol, atol=atol))
            if diff.any():
                detail = f", first difference at dim {int(np.flatnonzero(diff)[0])}"
        text = hint.get(name) if isinstance(hint, Mapping) else hint
        raise ActionSpaceMismatchError(
            f"{what}: {LABELS[name]} mismatch ({name}): {_show(name, got)} ({found_name}) vs {_show(name, want)} "
            f"({expected_name}){detail}" + (f"; {text}" if text else ""))


def _same(name: str, a, b, rtol: float, atol: float) -> bool:
    if name != "normalizer":
        return a == b
    if a is None or b is None:
        return a is b
    return (a.mode == b.mode and a.dim == b.dim and np.allclose(a.scale, b.scale, rtol=rtol, atol=atol)
            and np.allclose(a.offset, b.offset, rtol=rtol, atol=atol))


def normalizer_digest(norm: Normalizer) -> str:
    """8 hex digits naming a normaliser's map (mode, float32 scale and offset): equal stats, equal digest."""
    h = hashlib.sha256(norm.mode.encode())
    for v in (norm.scale, norm.offset):
        h.update(np.ascontiguousarray(v, dtype="<f4").tobytes())
    return h.hexdigest()[:8]


def _short(values) -> str:
    vals = [f"{float(v):.4g}" for v in np.asarray(values).reshape(-1)[:3]]
    return "[" + ", ".join(vals) + (", ...]" if np.size(values) > 3 else "]")


def _show(name: str, value) -> str:
    if value is None:
        return "no stats stored" if name == "normalizer" else "none"
    if name == "action_dim":
        return f"D={value}"
    if name == "horizon":
        return f"H={value}"
    if name == "normalizer":
        a, b = ("min", "max") if value.mode == "minmax" else ("mean", "std")
        return (f"{value.mode} normaliser D={value.dim} #{normalizer_digest(value)} "
                f"({a} {_short(getattr(value, a))}, {b} {_short(getattr(value, b))})")
    if name == "action_index":
        return _short(value) if len(value) > 3 else str(list(value))
    return repr(value)


# ------------------------------------------------------------------------------------------------ file I/O
def write(directory: str | Path, spaces: ActionSpace | Iterable[ActionSpace]) -> Path:
    """Write `directory/action_space.json` atomically (one record, or one per robot; the directory is made when
    missing). Returns the file."""
    from ate.checkpoint import write_json_atomic

    spaces = [spaces] if isinstance(spaces, ActionSpace) else list(spaces)
    robots = [s.robot for s in spaces]
    if len(spaces) > 1 and (None in robots or len(set(robots)) != len(robots)):
        raise ConfigError(f"several action-space records need distinct robot names, got {robots}")
    path = Path(directory) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"format": FORMAT, "format_version": FORMAT_VERSION,
                             "spaces": [s.to_dict() for s in spaces]})
    return path


def read_all(directory: str | Path) -> list[ActionSpace]:
    """Every record of `directory/action_space.json`; a missing or corrupt file is one CheckpointError naming it."""
    path = Path(directory) / FILE_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (directories written before ate recorded action spaces have none)")
    return _parse(_read_json(path), path)


def _parse(d, path: Path) -> list[ActionSpace]:
    if not isinstance(d, dict) or d.get("format") != FORMAT or not isinstance(d.get("spaces"), list):
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise CheckpointError(f"{path}: not an ate action-space record (format={got!r}, expected {FORMAT!r} "
                              "with a 'spaces' list)")
    if d.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {d['format_version']!r}, this ate reads {FORMAT_VERSION}")
    try:
        return [ActionSpace.from_dict(s) for s in d["spaces"]]
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def read(directory: str | Path, robot: str | None = None) -> ActionSpace:
    """The record of `robot` in `directory/action_space.json` (robot None: the file's only record)."""
    spaces = read_all(directory)
    path = Path(directory) / FILE_NAME
    if robot is None:
        if len(spaces) != 1:
            raise CheckpointError(f"{path}: holds {len(spaces)} records (robots {[s.robot for s in spaces]}); "
                                  "name the robot")
        return spaces[0]
    for s in spaces:
        if s.robot == robot:
            return s
    raise CheckpointError(f"{path}: no record for robot {robot!r} (it has {[s.robot for s in spaces]})")


# ------------------------------------------------------------------------------------------------ normalisers
def load_normalizer(path: str | Path, robot: str | None = None) -> Normalizer:
    """The action Normalizer stored in a VAE directory, a policy directory (or their run directories) or a JSON
    file (a Normalizer dict, a VAE config.json or an action_space.json).

    Reads ``action_space.json`` where there is one; directories written before it use their config files
    (a VAE's config.json "normalizer", a policy's normalizer.json). `robot` picks the robot of a file that
    holds several; a file with one robot gives that one whatever `robot` is."""
    path = Path(path)
    for cand in (path, path / "model", path / "pretrained_model"):
        if (cand / FILE_NAME).is_file():
            spaces = read_all(cand)
            return _normalizer_of(_pick(spaces, robot, cand / FILE_NAME), cand / FILE_NAME)
        cfg_file, norm_file = cand / "config.json", cand / "normalizer.json"
        if cfg_file.is_file():
            cfg = _read_json(cfg_file)
            if isinstance(cfg, dict) and "normalizer" in cfg:
                return _normalizer_from_dict(cfg["normalizer"], cfg_file)
        if norm_file.is_file():
            per_robot = _read_json(norm_file)
            if not isinstance(per_robot, dict) or not per_robot:
                raise CheckpointError(f"{norm_file}: holds no robots")
            if len(per_robot) == 1:
                return _normalizer_from_dict(next(iter(per_robot.values())).get("action"), norm_file)
            if robot not in per_robot:
                raise CheckpointError(f"{norm_file}: holds robots {sorted(per_robot)}; name one (or export it with "
                                      "`ate policy normalizer --robot R`)")
            return _normalizer_from_dict(per_robot[robot].get("action"), norm_file)
    if path.is_file():
        d = _read_json(path)
        if isinstance(d, dict) and d.get("format") == FORMAT:  # an action_space.json itself
            return _normalizer_of(_pick(_parse(d, path), robot, path), path)
        if isinstance(d, dict) and "normalizer" in d:  # a VAE checkpoint's config.json
            d = d["normalizer"]
        return _normalizer_from_dict(d, path)
    raise CheckpointError(f"{path}: no normaliser found (VAE dir, policy dir or Normalizer JSON)")


def _pick(spaces: list[ActionSpace], robot: str | None, path: Path) -> ActionSpace:
    if len(spaces) == 1:
        return spaces[0]
    for s in spaces:
        if robot is not None and s.robot == robot:
            return s
    raise CheckpointError(f"{path}: holds robots {[s.robot for s in spaces]}; name one (or export it with "
                          "`ate policy normalizer --robot R`)")


def _normalizer_of(space: ActionSpace, path: Path) -> Normalizer:
    if space.normalizer is None:
        raise CheckpointError(f"{path}: stores no normalisation stats")
    return space.normalizer


def _normalizer_from_dict(d, path: Path) -> Normalizer:
    if d is None:
        raise CheckpointError(f"{path}: stores no normalisation stats")
    try:
        return Normalizer.from_dict(d)
    except (DataError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a normaliser: {exc}") from None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from None
