"""MetaWorld (3.1) tasks by name, goal observable, with the shipped scripted experts.

Action (raw units, D = 4): MetaWorld's own action, hand displacement (dx, dy, dz) and gripper
effort, each in [-1, 1]. State: MetaWorld's 39-dim observation (`ate.bench.sims.obs.METAWORLD_LAYOUT`).
Episodes never end on success in MetaWorld: `step` reports `info["success"]` and the caller stops.
Each `reset(seed)` draws a fresh object / goal placement from `seed` (MetaWorld's "seeded_rand_vec").
"""

from __future__ import annotations

import numpy as np

from ate.bench.sims.base import SimEnv, set_headless, sim_error
from ate.bench.sims.obs import METAWORLD_LAYOUT, layout_dim, layout_slices

ROBOT = "Sawyer"  # MetaWorld has one arm


def ml10_tasks(split: str = "train") -> list[str]:
    """ML10 task names: split "train" (10 tasks) or "test" (5 held-out tasks)."""
    from metaworld.env_dict import ML10_V3

    if split not in ("train", "test"):
        raise ValueError(f"ML10 split must be 'train' or 'test', got {split!r}")
    return list(ML10_V3[split])


def all_tasks() -> list[str]:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return list(ALL_V3_ENVIRONMENTS)


class MetaWorldEnv(SimEnv):
    """One MetaWorld task (e.g. "drawer-open-v3"); see the module docstring."""

    suite = "metaworld"
    robot = ROBOT

    def __init__(self, task: str = "reach-v3", robot: str | None = None, seed: int = 0, max_steps: int | None = None):
        set_headless()
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        if robot not in (None, ROBOT, ROBOT.lower()):
            from ate.errors import DataError

            raise DataError(f"MetaWorld has one robot ({ROBOT}); got robot={robot!r}")
        key = f"{task}-goal-observable"
        if key not in ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE:
            from ate.errors import DataError

            raise DataError(f"unknown MetaWorld task {task!r}; e.g. {ml10_tasks('train')[:3]}, see all_tasks()")
        self.task = task
        try:
            self._env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[key](seed=seed)
        except Exception as exc:
            raise sim_error(self.suite, task, ROBOT, "environment construction", exc) from exc
        limit = int(self._env.max_path_length)
        self.max_steps = min(int(max_steps or limit), limit)  # MetaWorld refuses to step past its limit
        self.action_dim = int(self._env.action_space.shape[0])
        self.state_dim = layout_dim(METAWORLD_LAYOUT)
        self.state_layout = layout_slices(METAWORLD_LAYOUT)
        self.qpos_dim = 4
        self._obs = None
        self.seed: int | None = None  # of the current episode (named in errors)

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        env = self._env
        self.seed = int(seed)
        env._freeze_rand_vec = False  # new placement every reset ...
        env.seeded_rand_vec = True  # ... drawn from env.np_random, which we seed here
        try:
            env.seed(self.seed)
            obs, _ = env.reset()
        except Exception as exc:
            raise sim_error(self.suite, self.task, ROBOT, "reset", exc, self.seed) from exc
        self._obs = obs
        self.steps = 0
        return {"state": obs.astype(np.float32)}

    def step(self, action) -> tuple[dict[str, np.ndarray], bool]:
        a = np.clip(self._check_action(action), -1.0, 1.0)
        try:
            obs, _, _, _, info = self._env.step(a.astype(np.float32))
        except Exception as exc:  # e.g. MuJoCo instability, or stepping past MetaWorld's limit
            raise sim_error(self.suite, self.task, ROBOT, f"step {self.steps}", exc, self.seed) from exc
        self._obs = obs
        self.steps += 1
        return {"state": obs.astype(np.float32)}, bool(info["success"])

    def qpos(self) -> np.ndarray:
        """(4,) hand position + gripper opening (the proprioceptive part of the observation)."""
        return self._obs[:4].astype(np.float32)

    def close(self) -> None:
        self._env.close()


class MetaWorldExpert:
    """The shipped `metaworld.policies` scripted policy of one task, acting on the 39-dim state."""

    def __init__(self, task: str):
        import warnings

        from metaworld.policies import ENV_POLICY_MAP

        # the shipped policies warn on every step that their gains exceed the [-1, 1] action clip
        warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")

        if task not in ENV_POLICY_MAP:
            from ate.errors import DataError

            raise DataError(f"no scripted MetaWorld policy for task {task!r}")
        self._policy = ENV_POLICY_MAP[task]()

    def reset(self) -> None:
        pass  # the shipped policies are stateless

    def act(self, state: np.ndarray) -> np.ndarray:
        action = self._policy.get_action(np.asarray(state, dtype=np.float64))
        # the env clips to [-1, 1] anyway; clipping here makes recorded demos hold the effective action
        return np.clip(action, -1.0, 1.0).astype(np.float32)
