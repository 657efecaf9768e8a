"""``--env.type=ate_toy``: the reaching task of :mod:`ate.integrations.lerobot.toy` as a gymnasium env, so
``lerobot-eval`` can roll out a policy trained on a toy dataset (offline, no simulator).

The state is the previous action (as in the toy dataset: the state lags one step behind the action), the
goal is drawn per episode, ``environment_state`` carries it the way the dataset does, and an episode
succeeds when the state comes within ``success_radius`` of the goal.

    lerobot-eval --policy.path=RUN/checkpoints/last/pretrained_model --env.type=ate_toy --env.action_dim=4 \\
        --eval.n_episodes=2 --eval.batch_size=1
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from lerobot.configs import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE

GYM_ID = "ate_toy/Reach-v0"


class ToyReachEnv(gym.Env):
    """Observations ``agent_pos`` (D) and ``environment_state`` (3); action: the next joint target (D)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, action_dim: int = 4, success_radius: float = 0.15, render_mode: str = "rgb_array",
                 task: str = "reach (target)"):
        self.action_dim = action_dim
        self.success_radius = success_radius
        self.render_mode = render_mode
        self.task = self.task_description = task  # lerobot-eval reads both
        self.observation_space = gym.spaces.Dict({
            "agent_pos": gym.spaces.Box(-3.0, 3.0, (action_dim,), np.float32),
            "environment_state": gym.spaces.Box(-3.0, 3.0, (3,), np.float32),
        })
        self.action_space = gym.spaces.Box(-3.0, 3.0, (action_dim,), np.float32)
        self._state = np.zeros(action_dim, np.float32)
        self._goal = np.zeros(action_dim, np.float32)

    def _obs(self) -> dict:
        return {"agent_pos": self._state.copy(), "environment_state": np.resize(self._goal, 3).astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._state = self.np_random.uniform(-1, 1, self.action_dim).astype(np.float32)
        self._goal = self.np_random.uniform(-1, 1, self.action_dim).astype(np.float32)
        return self._obs(), {"is_success": False}

    def step(self, action):
        self._state = np.clip(np.asarray(action, np.float32), -3.0, 3.0)
        dist = float(np.linalg.norm(self._state - self._goal))
        success = dist < self.success_radius
        return self._obs(), -dist, success, False, {"is_success": success}

    def render(self):
        # a small top view of the first two joints (lerobot-eval writes it to a video)
        img = np.zeros((32, 32, 3), np.uint8)
        for value, channel in ((self._goal, 1), (self._state, 0)):
            x, y = (np.clip((np.resize(value, 2) + 1.5) / 3.0, 0, 0.999) * 32).astype(int)
            img[y, x, channel] = 255
        return img


if GYM_ID not in gym.registry:
    gym.register(GYM_ID, entry_point=ToyReachEnv)


@EnvConfig.register_subclass("ate_toy")
@dataclass
class AteToyEnv(EnvConfig):
    """LeRobot env config of :class:`ToyReachEnv` (``action_dim`` must match the dataset the policy saw)."""

    task: str | None = "Reach-v0"
    fps: int = 10
    episode_length: int = 40
    action_dim: int = 4
    success_radius: float = 0.15
    features: dict[str, PolicyFeature] = field(default_factory=dict)
    features_map: dict[str, str] = field(default_factory=lambda: {
        ACTION: ACTION, "agent_pos": OBS_STATE, "environment_state": OBS_ENV_STATE})

    def __post_init__(self):
        if self.action_dim < 1:
            raise ValueError(f"env.action_dim must be >= 1, got {self.action_dim}")
        self.features = {ACTION: PolicyFeature(FeatureType.ACTION, (self.action_dim,)),
                         "agent_pos": PolicyFeature(FeatureType.STATE, (self.action_dim,)),
                         "environment_state": PolicyFeature(FeatureType.ENV, (3,))}

    @property
    def package_name(self) -> str:
        return __name__  # imported if the gym id is missing; importing it registers the id

    @property
    def gym_id(self) -> str:
        return GYM_ID

    @property
    def gym_kwargs(self) -> dict:
        return {"action_dim": self.action_dim, "success_radius": self.success_radius,
                "max_episode_steps": self.episode_length}
