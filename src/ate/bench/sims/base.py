"""The uniform simulator interface every suite wrapper implements."""

from __future__ import annotations

import os

import numpy as np


def set_headless() -> None:
    """Make MuJoCo never open a window. No camera is rendered, so no GL context is ever created;
    MUJOCO_GL=egl (unless the user set it) only matters if a renderer is touched by accident."""
    os.environ.setdefault("MUJOCO_GL", "egl")


def sim_error(suite: str, task: str, robot: str, what: str, exc: BaseException, seed: int | None = None):
    """A one-line `SimError` for an unexpected simulator exception, naming suite / task / robot (/ seed).
    Raise it `from exc`, so the original traceback stays attached for debugging."""
    from ate.errors import SimError

    where = f"{suite}/{task}/{robot}" + ("" if seed is None else f" seed {seed}")
    detail = (str(exc).splitlines() or [""])[0]
    detail = detail if len(detail) <= 300 else detail[:300] + " ..."
    return SimError(f"{where}: {what} failed: {type(exc).__name__}: {detail}")


class SimEnv:
    """One simulator episode at a time, fixed-size float32 state, raw actions.

    Attributes:
        suite, task, robot: names.
        action_dim: D, the size of the vector `step` takes (raw units, see the suite's docstring).
        state_dim: S, the size of obs["state"].
        state_layout: name -> slice of obs["state"] (see `ate.bench.sims.obs`).
        max_steps: episode step budget (`evaluate` / `generate_demos` stop there).
        qpos_dim: Q, the size of `qpos()` (robot proprioception, unpadded, saved as /observations/qpos).
    """

    suite: str
    task: str
    robot: str
    action_dim: int
    state_dim: int
    state_layout: dict[str, slice]
    max_steps: int
    qpos_dim: int

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        """Start a new episode whose initial scene is a pure function of `seed`. -> {"state": (S,)}"""
        raise NotImplementedError

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool]:
        """Apply one raw action (D,). -> (obs {"state": (S,)}, success so far in this step)."""
        raise NotImplementedError

    def qpos(self) -> np.ndarray:
        """(Q,) float32 robot proprioception of the current step."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _check_action(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape[0] != self.action_dim:
            from ate.errors import ShapeMismatchError

            raise ShapeMismatchError(
                f"{self.suite}/{self.task}/{self.robot}: action has {a.shape[0]} dims, env takes {self.action_dim}"
            )
        if not np.all(np.isfinite(a)):
            from ate.errors import DataError

            raise DataError(f"{self.suite}/{self.task}/{self.robot}: action contains NaN/Inf: {a}")
        return a
