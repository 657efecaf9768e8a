"""Checkpoint I/O shared by every trainer: safetensors weights + JSON config, written atomically.

Layout of one checkpoint directory::

    model.safetensors        weights (and small tensors such as a prior summary, under a prefix)
    config.json              everything needed to rebuild the model (+ normalisation stats)
    training_state/          only in resumable checkpoints
        optimizer.safetensors, optimizer.json   optimiser tensors / param groups + scalars
        rng.safetensors                         torch CPU RNG + named generators
        state.json                              step, epoch, scheduler state, best metric, ...

A directory is written under a temporary name and renamed into place, so a process killed at any point
leaves either the previous checkpoint or the new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ate.errors import CheckpointError


def write_json_atomic(path: str | Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"corrupt JSON in {path}: {exc}") from exc


@contextlib.contextmanager
def atomic_directory(final: str | Path):
    """Yield a temporary directory; on clean exit it replaces ``final`` (old one removed only afterwards)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated headers / data
        raise CheckpointError(f"unreadable safetensors file {path}: {exc}") from exc


def save_training_state(directory: str | Path, optimizer: torch.optim.Optimizer,
                        generators: dict[str, torch.Generator], state: dict) -> None:
    """Optimiser, RNG and loop state into ``directory`` (tensors via safetensors, the rest as JSON)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, pstate in opt["state"].items():
        for key, val in pstate.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    save_tensors(directory / "optimizer.safetensors", tensors)
    write_json_atomic(directory / "optimizer.json", {"param_groups": opt["param_groups"], "scalars": scalars})
    rng = {"torch_cpu": torch.get_rng_state()}
    rng.update({f"gen.{name}": g.get_state() for name, g in generators.items()})
    save_tensors(directory / "rng.safetensors", rng)
    write_json_atomic(directory / "state.json", state)


def load_training_state(directory: str | Path, optimizer: torch.optim.Optimizer,
                        generators: dict[str, torch.Generator]) -> dict:
    directory = Path(directory)
    meta = read_json(directory / "optimizer.json")
    tensors = load_tensors(directory / "optimizer.safetensors")
    state: dict[int, dict] = {}
    for flat, val in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    rng = load_tensors(directory / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    for name, g in generators.items():
        if f"gen.{name}" not in rng:
            raise CheckpointError(f"{directory}: no saved state for generator {name!r}")
        g.set_state(rng[f"gen.{name}"])
    return read_json(directory / "state.json")
