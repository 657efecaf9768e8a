"""`Normalizer`: per-dimension affine normalisation of the last axis, fitted in one streaming pass.

- "minmax" (Diffusion Policy `LinearNormalizer`): maps [min, max] to [-1, 1]. A dimension whose range is
  below `range_eps` (constant, e.g. an unused gripper) is only shifted: its value maps to 0, never divided
  by ~0.
- "meanstd" (pi0 / openpi, LeRobot MEAN_STD): (x - mean) / std; a dimension with std below `std_eps` is
  only centred (divided by 1).

Stats are accumulated in float64 block by block (Chan et al. parallel mean / variance), so fitting a
10-million-frame memmap reads it once and never holds it. `normalize` / `unnormalize` accept numpy
arrays or torch tensors of any leading shape (..., D) and keep their type, dtype and device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ate.data.episodes import EpisodeSet
from ate.data.validate import block_rows
from ate.errors import DataError, ShapeMismatchError

MODES = ("minmax", "meanstd")
FORMAT_VERSION = 1


class Normalizer:
    """Per-dimension affine map `y = x * scale + offset` with its statistics.

    Build with `Normalizer.fit(eps_or_array, mode)` or `Normalizer.from_dict(d)`.
    Attributes (all (D,) float64): min, max, mean, std, scale, offset; count = frames seen.
    """

    def __init__(
        self,
        mode: str,
        min: np.ndarray,
        max: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        count: int,
        range_eps: float = 1e-4,
        std_eps: float = 1e-6,
    ):
        if mode not in MODES:
            raise ValueError(f"Normalizer mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        stats = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (min, max, mean, std))
        self.min, self.max, self.mean, self.std = stats
        if not (len(self.min) == len(self.max) == len(self.mean) == len(self.std)):
            raise ShapeMismatchError("Normalizer stats have different lengths")
        self.count = int(count)
        self.range_eps = float(range_eps)
        self.std_eps = float(std_eps)
        if mode == "minmax":
            span = self.max - self.min
            ok = span >= self.range_eps
            self.scale = np.where(ok, 2.0 / np.where(ok, span, 1.0), 1.0)
            self.offset = np.where(ok, -1.0 - self.scale * self.min, -self.min)
        else:
            ok = self.std >= self.std_eps
            self.scale = np.where(ok, 1.0 / np.where(ok, self.std, 1.0), 1.0)
            self.offset = -self.mean * self.scale
        self._torch_cache: dict = {}

    @property
    def dim(self) -> int:
        return len(self.scale)

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, data: EpisodeSet | Any, mode: str = "minmax", block_elems: int = 1 << 20, **kwargs) -> "Normalizer":
        """Fit on an EpisodeSet or any (N, D) array-like, reading `block_elems` values at a time."""
        frames = data.actions if isinstance(data, EpisodeSet) else data
        source = data.source if isinstance(data, EpisodeSet) else "array"
        shape = tuple(frames.shape)
        if len(shape) != 2 or shape[0] == 0:
            raise DataError(f"{source}: cannot fit a Normalizer on frames of shape {shape}")
        n, d = shape
        lo = np.full(d, np.inf)
        hi = np.full(d, -np.inf)
        mean = np.zeros(d)
        m2 = np.zeros(d)
        count = 0
        step = block_rows(d, block_elems)
        for a in range(0, n, step):
            block = np.asarray(frames[a : min(n, a + step)], dtype=np.float64)
            k = len(block)
            lo = np.minimum(lo, block.min(0))
            hi = np.maximum(hi, block.max(0))
            b_mean = block.mean(0)
            b_m2 = ((block - b_mean) ** 2).sum(0)
            delta = b_mean - mean
            total = count + k
            mean = mean + delta * (k / total)
            m2 = m2 + b_m2 + delta**2 * (count * k / total)
            count = total
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise DataError(f"{source}: non-finite values, cannot fit a Normalizer (load with validate=True)")
        std = np.sqrt(m2 / count)
        return cls(mode, lo, hi, mean, std, count, **kwargs)

    # ---------------------------------------------------------------- apply
    def _params(self, x):
        if x.shape[-1] != self.dim:
            raise ShapeMismatchError(f"Normalizer fitted on {self.dim} dims, got input with last dim {x.shape[-1]}")
        if isinstance(x, np.ndarray):
            dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
            return self.scale.astype(dtype), self.offset.astype(dtype)
        import torch

        dtype = x.dtype if x.is_floating_point() else torch.float32
        cache_key = (dtype, x.device)
        if cache_key not in self._torch_cache:
            self._torch_cache[cache_key] = (
                torch.as_tensor(self.scale, dtype=dtype, device=x.device),
                torch.as_tensor(self.offset, dtype=dtype, device=x.device),
            )
        return self._torch_cache[cache_key]

    def normalize(self, x):
        """(..., D) raw units -> normalised; numpy in, numpy out; torch in, torch out."""
        scale, offset = self._params(x)
        return x * scale + offset

    def unnormalize(self, x):
        """(..., D) normalised -> raw units (exact inverse of `normalize`)."""
        scale, offset = self._params(x)
        return (x - offset) / scale

    __call__ = normalize

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        """JSON-safe dict (plain floats and lists)."""
        return {
            "type": "ate.Normalizer",
            "format_version": FORMAT_VERSION,
            "mode": self.mode,
            "dim": self.dim,
            "count": self.count,
            "range_eps": self.range_eps,
            "std_eps": self.std_eps,
            **{k: getattr(self, k).tolist() for k in ("min", "max", "mean", "std")},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        if d.get("type", "ate.Normalizer") != "ate.Normalizer":
            raise DataError(f"not a Normalizer dict (type={d.get('type')!r})")
        missing = [k for k in ("mode", "min", "max", "mean", "std") if k not in d]
        if missing:
            raise DataError(f"Normalizer dict lacks {', '.join(missing)}")
        return cls(
            d["mode"], d["min"], d["max"], d["mean"], d["std"], d.get("count", 0),
            range_eps=d.get("range_eps", 1e-4), std_eps=d.get("std_eps", 1e-6),
        )  # fmt: skip

    def __eq__(self, other) -> bool:
        """Same mode and the same statistics (up to float32 round-off, so stats saved as float32 still match)."""
        if not isinstance(other, Normalizer):
            return NotImplemented
        if self.mode != other.mode or self.dim != other.dim:
            return False
        return all(
            np.allclose(getattr(self, k), getattr(other, k), rtol=1e-6, atol=1e-7)
            for k in ("min", "max", "mean", "std", "scale", "offset")
        )

    __hash__ = None

    def __repr__(self) -> str:
        return f"Normalizer(mode={self.mode!r}, dim={self.dim}, count={self.count})"
