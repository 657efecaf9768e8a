"""What ATE must share with a LeRobot policy, without importing LeRobot (numpy + json only).

Used on both sides of the environment split: the main environment's ``ate lerobot align`` trains the VAEs
with these normalisers / chunk lengths, and the LeRobot plugin (:mod:`ate.integrations.lerobot`, LeRobot's
Python 3.12 environment) checks at its first training step that the VAE it loads was trained in exactly
the action space the policy trains in.

- :data:`POLICY_DEFAULTS`: per upstream policy family, the ACTION normalisation mode of LeRobot 0.6's
  default ``normalization_mapping`` and the chunk definition (diffusion: ``horizon`` steps starting
  ``n_obs_steps − 1`` back; pi0 family: ``chunk_size`` steps from the current frame).
- :func:`normalizer_from_stats`: an :class:`ate.data.Normalizer` equal to LeRobot's NormalizerProcessorStep
  for ``MIN_MAX`` ([min, max] → [-1, 1]), ``MEAN_STD`` and ``QUANTILES`` / ``QUANTILE10`` (the q01/q99 or
  q10/q90 range mapped to [-1, 1], i.e. min-max with the quantiles as bounds).
- :func:`lerobot_action_space`: the :class:`ate.data.ActionSpace` a LeRobot policy trains in (those stats'
  normaliser, its chunk length), what ``ate lerobot align`` trains the VAEs in and what the plugin compares
  the VAE's record with (:func:`ate.data.action_space.compare`, tolerance :data:`STATS_RTOL` /
  :data:`STATS_ATOL`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ate.errors import DataError

# ACTION normalisation of LeRobot 0.6's default configs and their chunk fields.
POLICY_DEFAULTS: dict[str, dict[str, Any]] = {
    "diffusion": {"norm_mode": "MIN_MAX", "horizon": 64, "n_obs_steps": 2, "parameterization": "epsilon"},
    "pi0": {"norm_mode": "MEAN_STD", "horizon": 50, "n_obs_steps": 1, "parameterization": "flow_openpi"},
    "pi05": {"norm_mode": "QUANTILES", "horizon": 50, "n_obs_steps": 1, "parameterization": "flow_openpi"},
    "smolvla": {"norm_mode": "MEAN_STD", "horizon": 50, "n_obs_steps": 1, "parameterization": "flow_openpi"},
}

# LeRobot NormalizationMode value -> (ate Normalizer mode, stats keys used as (lo, hi) or (mean, std))
_MODE_KEYS = {
    "MIN_MAX": ("minmax", ("min", "max")),
    "QUANTILES": ("minmax", ("q01", "q99")),
    "QUANTILE10": ("minmax", ("q10", "q90")),
    "MEAN_STD": ("meanstd", ("mean", "std")),
}
# LeRobot's NormalizerProcessorStep eps: it divides by (max - min) unless that is exactly 0, and by std + 1e-8.
_LEROBOT_EPS = 1e-8
# how close the VAE's normaliser (from meta/stats.json) must be to the one the plugin rebuilds from the stats
# LeRobot hands the policy (float32 tensors): on the scale and offset of the affine map
STATS_RTOL, STATS_ATOL = 1e-4, 1e-5


def read_stats(root: str | Path) -> dict:
    """``<root>/meta/stats.json`` of a LeRobotDataset (v2.1 or v3.0) as a dict of feature -> stat -> list."""
    path = Path(root) / "meta" / "stats.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; LeRobot writes it with the dataset (lerobot's compute_stats), "
                        "ATE needs it to normalise actions exactly as the policy does")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read stats: {exc}") from exc


def normalizer_from_stats(stats: Mapping[str, Mapping[str, Any]], norm_mode: str, key: str = "action",
                          source: str = "stats.json"):
    """The :class:`ate.data.Normalizer` that reproduces LeRobot's normalisation of feature ``key``.

    Args:
        stats: LeRobot dataset stats, feature -> {"min", "max", "mean", "std", "q01", ...} (lists, numpy
            arrays or torch tensors: ``meta/stats.json`` or ``dataset.meta.stats``).
        norm_mode: LeRobot NormalizationMode value (``MIN_MAX`` | ``MEAN_STD`` | ``QUANTILES`` | ``QUANTILE10``)
            or the enum itself.
        key: feature name, ``action`` by default.
        source: where the stats came from, for error messages.

    Returns:
        Normalizer with (D,) stats; ``normalize(x)`` equals LeRobot's normalised ``x`` up to its 1e-8 eps
        (constant dims excepted: LeRobot maps them to -1 under MIN_MAX, ate to 0).
    """
    from ate.data import Normalizer

    mode_name = getattr(norm_mode, "value", norm_mode)
    if mode_name not in _MODE_KEYS:
        raise DataError(f"{source}: normalisation mode {mode_name!r} for {key!r} is not supported by ATE's "
                        f"VAE (choose one of {sorted(_MODE_KEYS)})")
    mode, (k_a, k_b) = _MODE_KEYS[mode_name]
    if key not in stats:
        raise DataError(f"{source}: no stats for feature {key!r} (has {sorted(stats)})")
    feat = stats[key]
    missing = [k for k in (k_a, k_b) if k not in feat]
    if missing:
        raise DataError(f"{source}: {key!r} stats lack {missing} needed for {mode_name} normalisation")

    def arr(name: str) -> np.ndarray:
        v = feat[name]
        v = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(v)):
            raise DataError(f"{source}: {key!r} stat {name!r} holds NaN/Inf")
        return v

    a, b = arr(k_a), arr(k_b)
    if a.shape != b.shape:
        raise DataError(f"{source}: {key!r} stats {k_a} {a.shape} and {k_b} {b.shape} differ in length")
    count = int(np.asarray(feat.get("count", [0])).reshape(-1)[0]) if "count" in feat else 0
    if mode == "minmax":
        mean = arr("mean") if "mean" in feat else (a + b) / 2
        std = arr("std") if "std" in feat else (b - a) / 2
        # range_eps tiny: LeRobot divides by any non-zero range
        return Normalizer("minmax", a, b, mean, std, count, range_eps=_LEROBOT_EPS)
    lo = arr("min") if "min" in feat else a - 3 * b
    hi = arr("max") if "max" in feat else a + 3 * b
    # LeRobot divides by std + 1e-8: fold the eps into std so both give the same numbers
    return Normalizer("meanstd", lo, hi, a, b + _LEROBOT_EPS, count, std_eps=_LEROBOT_EPS)


def chunk_defaults(policy: str) -> dict[str, Any]:
    """Copy of :data:`POLICY_DEFAULTS` for ``policy`` (``diffusion`` | ``pi0`` | ``pi05`` | ``smolvla``)."""
    base = policy.removeprefix("ate_")
    if base not in POLICY_DEFAULTS:
        raise ValueError(f"unknown LeRobot policy family {policy!r}; choose from {sorted(POLICY_DEFAULTS)}")
    return dict(POLICY_DEFAULTS[base])


def lerobot_action_space(stats: Mapping[str, Mapping[str, Any]] | None, norm_mode, horizon: int,
                         action_dim: int | None = None, key: str = "action", source: str = "stats.json"):
    """The :class:`ate.data.ActionSpace` of a LeRobot policy: chunks of ``horizon`` steps of feature ``key``,
    normalised as :func:`normalizer_from_stats` says (``stats`` None: statistics not known, normalizer None).
    ``action_dim`` defaults to the stats' dims. No robot and no pad rule: LeRobot's policy names neither."""
    from ate.data import ActionSpace

    norm = normalizer_from_stats(stats, norm_mode, key=key, source=source) if stats is not None else None
    if action_dim is None:
        if norm is None:
            raise DataError(f"{source}: no stats, so the action dims must be given")
        action_dim = norm.dim
    return ActionSpace(action_dim=action_dim, horizon=horizon, normalizer=norm)
