"""Common base of the reference policies: config dataclass, robot/task bookkeeping, the normalisers the
policy holds, the training loss (optionally guided and / or anchored to a frozen reference), timed inference
and safetensors save / load.

A policy lives in one *policy action space* of `config.action_dim` dims: the robot's own action dims are
written at `RobotSpec.action_index` (zero-padded dims for DP / pi0, named unified slots for RDT) and a
0/1 dim mask says which dims are real. Observations are the robot's state vector, normalised with the
robot's own statistics and zero-padded to `config.state_dim` with a mask, plus a task id (embedding).

Batch keys (all normalised, policy space):
    action (B, H, D) float, is_pad (B, H) bool, action_mask (B, D) bool,
    state (B, S) float, state_mask (B, S) bool, task (B,) long.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ate.errors import CheckpointError, ShapeMismatchError
from ate.checkpoint import atomic_directory, write_json_atomic

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def initial_noise(shape: tuple[int, int, int], generator=None) -> torch.Tensor:
    """The sampler's starting N(0, I) noise (B, H, D), drawn on CPU.

    generator: None, one torch.Generator for the whole batch, or a sequence of B generators, one per row.
    With one per row, row i depends only on its own generator: a batched evaluation of many episodes draws
    exactly the noise each episode would draw alone (`ate.bench.sims.evaluate`)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator)
    if len(generator) != shape[0]:
        raise ShapeMismatchError(f"got {len(generator)} generators for a batch of {shape[0]}")
    return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator])


@dataclass
class RobotSpec:
    """Where one robot's action lives in the policy action space.

    Args:
        action_dim: the robot's own action dims (e.g. 8 = 7 joints + gripper).
        state_dim: the robot's own state dims (before padding to `PolicyConfig.state_dim`).
        action_index: `action_dim` distinct indices into the policy action space.
    """

    action_dim: int
    state_dim: int
    action_index: list[int]

    def __post_init__(self):
        if len(self.action_index) != self.action_dim or len(set(self.action_index)) != self.action_dim:
            raise ValueError(f"RobotSpec.action_index must hold {self.action_dim} distinct indices, got {self.action_index}")


@dataclass
class PolicyConfig:
    """Fields shared by every family.

    Args:
        horizon: chunk length H predicted per call.
        action_dim: size D of the policy action space (padding max dim, or 128 unified slots).
        state_dim: size S the state vector is zero-padded to.
        max_tasks: rows of the task embedding table (tasks are added by name up to this many).
        cond_dim: width of the observation embedding (state + task).
        normalization: "minmax" ([-1, 1], Diffusion Policy) or "meanstd" (pi0).
        num_inference_steps: denoising / integration steps of `predict_chunk`.
        robots: robot name -> RobotSpec, filled by the data pipeline (`Policy.add_robot`).
        tasks: task names; the index is the task id.
        default_robot: robot used by `predict_chunk` when none is named (last one fine-tuned on).
    """

    type: ClassVar[str] = "base"

    horizon: int = 16
    action_dim: int = 32
    state_dim: int = 64
    max_tasks: int = 64
    cond_dim: int = 128
    normalization: str = "minmax"
    num_inference_steps: int = 10
    robots: dict[str, RobotSpec] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)
    default_robot: str | None = None

    def __post_init__(self):
        for name in ("horizon", "action_dim", "state_dim", "max_tasks", "cond_dim", "num_inference_steps"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be > 0, got {getattr(self, name)}")
        if self.normalization not in ("minmax", "meanstd"):
            raise ValueError(f"{type(self).__name__}.normalization must be 'minmax' or 'meanstd', got {self.normalization!r}")
        self.robots = {k: v if isinstance(v, RobotSpec) else RobotSpec(**v) for k, v in self.robots.items()}

    def to_dict(self) -> dict[str, Any]:
        from ate import __version__

        d = dataclasses.asdict(self)
        return {"type": self.type, "format_version": FORMAT_VERSION, "ate_version": __version__, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> PolicyConfig:
        d = {k: v for k, v in d.items() if k not in ("type", "format_version", "ate_version")}
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise CheckpointError(f"{source}: unknown {cls.__name__} field {key!r}{hint}")
        return cls(**d)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16 autocast outputs go up to float32 for the loss; float64 (the exactness tests) stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class Policy(nn.Module):
    """Base class. Subclasses set `config_class`, `parameterization` (the ate.steer name) and implement
    `denoise_view(batch, generator)` and `sample(cond, shape, action_mask, generator)`."""

    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig
    parameterization: ClassVar[str] = ""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        c = config
        # robot name -> {"action": Normalizer, "state": Normalizer}; saved in normalizer.json
        self.normalizers: dict[str, dict[str, Any]] = {}
        self.state_encoder = nn.Sequential(nn.Linear(2 * c.state_dim, c.cond_dim), nn.Mish(), nn.Linear(c.cond_dim, c.cond_dim))
        self.task_embedding = nn.Embedding(c.max_tasks, c.cond_dim)
        self.last_predict_s: float | None = None  # wall time of the last predict_chunk call

    # ------------------------------------------------------------------ robots, tasks, normalisers
    def default_action_index(self, robot: str, action_dim: int) -> list[int]:
        """Where a new robot's action dims go; padding families put them first."""
        if action_dim > self.config.action_dim:
            raise ShapeMismatchError(
                f"robot {robot!r} has {action_dim} action dims but the policy action space has {self.config.action_dim}"
            )
        return list(range(action_dim))

    def add_robot(self, robot: str, action_normalizer, state_normalizer, action_index: list[int] | None = None) -> RobotSpec:
        """Register a robot (its normalisers fix its action / state dims). Re-adding replaces the stats."""
        a_dim, s_dim = int(action_normalizer.dim), int(state_normalizer.dim)
        if s_dim > self.config.state_dim:
            raise ShapeMismatchError(f"robot {robot!r} has {s_dim} state dims but the policy pads states to {self.config.state_dim}")
        old = self.config.robots.get(robot)
        if old is not None and (old.action_dim != a_dim or old.state_dim != s_dim):
            raise ShapeMismatchError(
                f"robot {robot!r} was registered with action_dim={old.action_dim}, state_dim={old.state_dim}; "
                f"new data has action_dim={a_dim}, state_dim={s_dim}"
            )
        index = action_index or (old.action_index if old else self.default_action_index(robot, a_dim))
        spec = RobotSpec(a_dim, s_dim, [int(i) for i in index])
        if max(spec.action_index) >= self.config.action_dim:
            raise ShapeMismatchError(f"robot {robot!r}: action_index {spec.action_index} exceeds action_dim {self.config.action_dim}")
        self.config.robots[robot] = spec
        self.normalizers[robot] = {"action": action_normalizer, "state": state_normalizer}
        if self.config.default_robot is None:
            self.config.default_robot = robot
        return spec

    def add_task(self, task: str) -> int:
        """Task id of `task`, adding it to the vocabulary if new."""
        if task not in self.config.tasks:
            if len(self.config.tasks) >= self.config.max_tasks:
                raise ShapeMismatchError(f"task {task!r}: the policy already holds max_tasks={self.config.max_tasks} tasks")
            self.config.tasks.append(task)
        return self.config.tasks.index(task)

    def task_id(self, task: str | int) -> int:
        if isinstance(task, int):
            return task
        if task not in self.config.tasks:
            raise ShapeMismatchError(f"unknown task {task!r}; the policy knows {self.config.tasks}")
        return self.config.tasks.index(task)

    def robot_spec(self, robot: str | None) -> tuple[str, RobotSpec]:
        robot = robot or self.config.default_robot
        if robot not in self.config.robots:
            raise ShapeMismatchError(f"unknown robot {robot!r}; the policy knows {sorted(self.config.robots)}")
        return robot, self.config.robots[robot]

    def action_mask(self, robot: str | None = None) -> torch.Tensor:
        """(D,) bool: True on the dims robot `robot` uses."""
        _, spec = self.robot_spec(robot)
        mask = torch.zeros(self.config.action_dim, dtype=torch.bool)
        mask[spec.action_index] = True
        return mask

    def action_space(self, robot: str | None = None, pad: str | None = None):
        """The `ate.data.ActionSpace` robot `robot` trains in (D, H, its action normaliser, where its dims sit),
        what a guiding VAE must share; `pad`: the training run's chunk rule (None: not known here)."""
        from ate.data import ActionSpace

        robot, spec = self.robot_spec(robot)
        return ActionSpace(robot=robot, action_dim=spec.action_dim, horizon=self.config.horizon, pad=pad,
                           normalizer=self.normalizers[robot]["action"], action_index=spec.action_index)

    def to_policy_space(self, action: torch.Tensor, robot: str | None = None) -> torch.Tensor:
        """(..., D_robot) normalised -> (..., D) policy space, zeros on unused dims."""
        _, spec = self.robot_spec(robot)
        out = action.new_zeros(*action.shape[:-1], self.config.action_dim)
        out[..., spec.action_index] = action
        return out

    def pad_state(self, state: torch.Tensor, robot: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S_robot) normalised -> padded (B, S) and mask (B, S)."""
        _, spec = self.robot_spec(robot)
        if state.shape[-1] != spec.state_dim:
            raise ShapeMismatchError(f"state has {state.shape[-1]} dims, robot expects {spec.state_dim}")
        out = state.new_zeros(*state.shape[:-1], self.config.state_dim)
        out[..., : spec.state_dim] = state
        mask = torch.zeros_like(out, dtype=torch.bool)
        mask[..., : spec.state_dim] = True
        return out, mask

    # ------------------------------------------------------------------ conditioning and loss
    def encode_obs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """state (B, S), state_mask (B, S), task (B,) -> (B, 2, cond_dim) tokens [state, task]."""
        m = batch["state_mask"].to(batch["state"].dtype)
        s = self.state_encoder(torch.cat([batch["state"] * m, m], dim=-1))
        return torch.stack([s, self.task_embedding(batch["task"])], dim=1)

    def draw_noise(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Noise ε (B, H, D) and uniform u (B,) that fixes the time: DDPM t = floor(u·T), flow t from u.

        Drawn on CPU from `generator` for the whole (global) batch, so a multi-process run can slice the
        very same draws as a single process would use."""
        c = self.config
        noise = torch.randn(batch_size, c.horizon, c.action_dim, generator=generator)
        return {"noise": noise, "u": torch.rand(batch_size, generator=generator)}

    def denoise_view(self, batch: dict[str, torch.Tensor], noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Noise the clean chunk and run the network: returns x_t, pred, target, a0 (B, H, D) and t (B,)."""
        raise NotImplementedError

    def training_view(self, batch: dict[str, torch.Tensor], noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`denoise_view` with ε zeroed on the dims the robot does not use, so those dims stay exactly 0 in
        training as `sample` keeps them (noisy padding in training but zeros at inference is a train/test
        mismatch that the conv UNet, which mixes dims, cannot absorb)."""
        dev = batch["action"].device
        noise = {k: v.to(dev) for k, v in noise.items()}
        noise["noise"] = noise["noise"] * batch["action_mask"][:, None, :].to(noise["noise"].dtype)
        return self.denoise_view(batch, noise)

    def forward(self, batch, guidance=None, generator=None, guidance_generator=None, noise=None, shard=None,
                anchor=None):
        """= compute_loss; going through forward lets DistributedDataParallel synchronise gradients."""
        return self.compute_loss(batch, guidance, generator, guidance_generator, noise, shard, anchor)

    def compute_loss(self, batch: dict[str, torch.Tensor], guidance=None, generator: torch.Generator | None = None,
                     guidance_generator: torch.Generator | None = None, noise: dict[str, torch.Tensor] | None = None,
                     shard=None, anchor=None):
        """Training loss on one batch (see module docstring for keys). Returns (loss, diag).

        guidance: None for plain training, or an `ate.steer.LatentGuidance` built by `make_guidance`;
        its guided loss then replaces the plain MSE (SPEC "Steer"). Noise and times come from
        `generator` (or are given as `noise`, see `draw_noise`), so the same seed draws the same noise with
        or without guidance; the guidance's ξ comes from `guidance_generator` (an independent stream).
        shard: an `ate.steer.BatchShard` when this batch is one process's slice of a global batch.
        anchor: None, or an `ate.steer.PolicyAnchor`: β·masked MSE to the frozen reference policy's prediction on
            the same noise draw is added to the plain or guided loss (diag `anchor_loss`; None: the loss is
            exactly the one without the argument).
        """
        from ate.steer import masked_mse

        if noise is None:
            noise = self.draw_noise(batch["action"].shape[0], generator)
        view = self.training_view(batch, noise)
        f32 = _at_least_float32
        pred, target = f32(view["pred"]), f32(view["target"])
        if guidance is None:
            loss = masked_mse(pred, target, batch["action_mask"], batch["is_pad"])
            diag = {}
        else:
            loss, diag = guidance.guided_loss(
                pred, target, f32(view["x_t"]), f32(view["a0"]), view["t"],
                dim_mask=batch["action_mask"], pad_mask=batch["is_pad"], generator=guidance_generator, shard=shard,
            )
            diag = {k: float(v) for k, v in diag.items()}
        if anchor is not None:  # the same noise dict: the reference sees exactly this x_t, t and observation
            term, anchor_diag = anchor.term(pred, view["x_t"], batch, noise)
            loss = loss + term
            diag.update(anchor_diag)
        diag["loss"] = float(loss.detach())
        return loss, diag

    def make_guidance(self, encoder, guidance_config, robot: str | None = None, prior=None):
        """LatentGuidance for this policy's parameterisation, reading only `robot`'s action dims (`prior`: the
        source prior, for latent_target="source_mode")."""
        from ate.steer import LatentGuidance

        _, spec = self.robot_spec(robot)
        index = torch.tensor(spec.action_index, dtype=torch.long)
        return LatentGuidance(encoder, self.parameterization, guidance_config, alphas_cumprod=self.alphas_cumprod(),
                              action_index=index, prior=prior)

    def alphas_cumprod(self) -> torch.Tensor | None:
        """ᾱ of the training scheduler (DDPM families) or None (flow)."""
        return None

    def u_at(self, t: torch.Tensor) -> torch.Tensor:
        """The uniform u of `draw_noise` that `denoise_view` turns into time t (DDPM: integer timesteps)."""
        abar = self.alphas_cumprod()
        if abar is None:
            raise NotImplementedError(f"{type(self).__name__} must say how its times come from u")
        return (torch.as_tensor(t, dtype=torch.float64) + 0.5).div(abar.numel()).float()  # floor(u·T) = t

    def guidance_profile(self, batch: dict[str, torch.Tensor], guidance, levels=None, batch_size: int | None = None,
                         seed: int = 0) -> dict:
        """`ate.steer.guidance_profile` of these weights on `batch` (training keys): the guidance strength
        relative to the residual at each noise level, with one fixed ε (from `seed`) for every level. The
        policy is put in eval mode for the call and nothing is updated."""
        from ate.steer.profile import DEFAULT_LEVELS, guidance_profile

        b = batch["action"].shape[0]
        eps = self.draw_noise(b, torch.Generator().manual_seed(seed))["noise"].to(batch["action"].dtype)
        f32 = _at_least_float32

        def view(t):
            v = self.training_view(batch, {"noise": eps, "u": self.u_at(t).reshape(1).expand(b)})
            return {k: f32(x) if k != "t" else x for k, x in v.items()}

        was_training = self.training
        self.eval()
        try:
            return guidance_profile(guidance, view, DEFAULT_LEVELS if levels is None else levels, batch_size,
                                    dim_mask=batch["action_mask"], pad_mask=batch["is_pad"], seed=seed + 1)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ inference
    def sample(self, cond: torch.Tensor, shape: tuple[int, int, int], action_mask: torch.Tensor,
               generator: torch.Generator | None) -> torch.Tensor:
        """Draw a normalised chunk (B, H, D) given condition tokens (B, 2, cond_dim)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict_chunk(self, obs: dict[str, Any], robot: str | None = None, generator=None) -> torch.Tensor:
        """Sample an action chunk in raw units. Identical whether or not the policy was fine-tuned with ATE.

        Args:
            obs: {"state": (B, S_robot) or (S_robot,) raw float, "task": (B,) long ids, int or task name}.
            robot: robot name (default `config.default_robot`).
            generator: torch.Generator for the initial noise (fixed seed -> identical chunk), or a list of
                B generators, one per row (see `initial_noise`).
        Returns:
            (B, H, D_robot) float32 actions in the robot's raw units. Sets `self.last_predict_s`.
        """
        t0 = time.perf_counter()
        robot, spec = self.robot_spec(robot)
        device = next(self.parameters()).device
        state = torch.as_tensor(obs["state"], dtype=torch.float32)
        if state.ndim == 1:
            state = state[None]
        b = state.shape[0]
        task = obs.get("task", 0)
        if isinstance(task, (str, int)):
            task = torch.full((b,), self.task_id(task), dtype=torch.long)
        task = torch.as_tensor(task, dtype=torch.long).reshape(b)
        state = self.normalizers[robot]["state"].normalize(state)
        padded, smask = self.pad_state(state.float(), robot)
        batch = {"state": padded.to(device), "state_mask": smask.to(device), "task": task.to(device)}
        amask = self.action_mask(robot).to(device)[None].expand(b, -1)
        was_training = self.training
        if was_training:  # train() walks every submodule (~1 ms here): only when the mode changes
            self.eval()
        try:
            chunk = self.sample(self.encode_obs(batch), (b, self.config.horizon, self.config.action_dim), amask, generator)
        finally:
            if was_training:
                self.train()
        chunk = chunk[..., spec.action_index].float().cpu()
        out = self.normalizers[robot]["action"].unnormalize(chunk)
        self.last_predict_s = time.perf_counter() - t0
        return torch.as_tensor(out, dtype=torch.float32)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path, pad: str | None = None) -> Path:
        """Write config.json, model.safetensors, normalizer.json and action_space.json (one `ActionSpace` per
        robot; `pad`: the chunk rule the weights were trained with, when known) into `path` atomically."""
        from safetensors.torch import save_model

        from ate.data import action_space

        path = Path(path)
        with atomic_directory(path) as tmp:
            write_json_atomic(tmp / "config.json", self.config.to_dict())
            save_model(self, str(tmp / "model.safetensors"))
            norm = {r: {k: n.to_dict() for k, n in d.items()} for r, d in self.normalizers.items()}
            write_json_atomic(tmp / "normalizer.json", norm)
            action_space.write(tmp, [self.action_space(r, pad) for r in self.config.robots if r in self.normalizers])
        return path

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_normalizers(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from ate.data import Normalizer

    return {r: {k: Normalizer.from_dict(v) for k, v in kinds.items()} for r, kinds in d.items()}


def read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "config.json").read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no config.json (not a policy directory)") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path / 'config.json'}: invalid JSON ({exc})") from exc
