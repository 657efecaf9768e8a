"""Helpers shared by the format readers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ate.errors import DataError


def require(module: str, extra: str = "data"):
    """Import an optional dependency or fail with the install command (MissingDependencyError)."""
    from ate._optional import require as _require

    return _require(module, extra, "reading this format")


def natural_key(name: str) -> list:
    """Sort key so that "ep_2" < "ep_10"."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(name))]


def natural_sorted(paths) -> list[Path]:
    return sorted(paths, key=lambda p: natural_key(Path(p).name))


def json_safe(value: Any) -> Any:
    """Turn HDF5 / numpy attribute values into JSON-safe Python values (bytes -> str, arrays -> lists)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()] if value.ndim else json_safe(value.item())
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def check_frames(array: np.ndarray | Any, source: str, field: str) -> None:
    """Per-frame arrays must be 2-D (T, D) and numeric."""
    shape = tuple(getattr(array, "shape", ()))
    if len(shape) != 2:
        raise DataError(f"{source}: field '{field}' must be 2-D (frames, dims), got shape {shape}")
    dtype = np.dtype(getattr(array, "dtype", np.float32))
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise DataError(f"{source}: field '{field}' is not numeric (dtype {dtype})")
