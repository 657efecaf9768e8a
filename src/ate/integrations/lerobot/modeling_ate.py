"""LeRobot policies with ATE latent guidance in the training loss.

``AteDiffusionPolicy``, ``AtePI0Policy``, ``AtePI05Policy``, ``AteSmolVLAPolicy`` subclass LeRobot's own
policies: same modules, same parameter names (so ``--policy.pretrained_path`` loads a plain checkpoint),
same inference. Only the training loss changes, to ``MSE(pred + s·λ·g, target)`` where ``g`` comes from
:class:`ate.steer.LatentGuidance` (never re-implemented here). Guidance-only quantities follow the policy:

- diffusion: ``a0 = batch["action"]`` (``horizon`` steps starting ``n_obs_steps − 1`` back), ``x_t`` the
  DDPM-noised chunk, ``t`` the integer timestep, c(t) from the policy's own scheduler ``alphas_cumprod``
  and ``prediction_type``; g is zero on ``action_is_pad`` steps; the loss keeps the policy's reduction
  (``do_mask_loss_for_padding``).
- pi0 / pi0.5 / SmolVLA: openpi flow convention ``x_t = t·ε + (1 − t)·a0``, target ``ε − a0``; actions are
  zero-padded to ``max_action_dim``: only the real dims feed the VAE and receive g; g is zero on
  ``action_is_pad`` steps; the loss keeps the upstream reduction (pi0 / pi0.5: mean over the real dims,
  SmolVLA: masked by ``action_is_pad``). ``v_t`` is read from ``action_out_proj`` with a forward hook, so
  the upstream forward pass runs unmodified.

The frozen adaptation VAE is held by :class:`_AteRuntime`, a plain object: it is not a sub-module, so it is
absent from ``parameters()``, ``state_dict()``, the optimiser, ``save_pretrained`` and the DDP wrapper. It
is loaded lazily from ``config.vae_path`` at the first training step (evaluation never loads it) and its
action-space record (``action_space.json``) is compared with the policy's
(:func:`ate.data.action_space.compare`): chunk length, action dims, and the normaliser against the dataset
stats the policy normalises with. The loss output dict carries ``ate_guidance_norm``, ``ate_frac_clamped``,
``ate_latent_dist``, ``ate_coef_mean`` and ``ate_plain_loss``, which lerobot-train logs with the loss.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
from lerobot.policies.pi0.modeling_pi0 import PI0Policy
from lerobot.policies.pi05.modeling_pi05 import PI05Policy
from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
from lerobot.utils.constants import (
    ACTION,
    OBS_ENV_STATE,
    OBS_IMAGES,
    OBS_LANGUAGE_ATTENTION_MASK,
    OBS_LANGUAGE_TOKENS,
    OBS_STATE,
)

from ate.align.checkpoint import action_space_of
from ate.data.action_space import compare
from ate.errors import CheckpointError, ShapeMismatchError
from ate.integrations.lerobot.configuration_ate import (
    AteDiffusionConfig,
    AtePI05Config,
    AtePI0Config,
    AteSmolVLAConfig,
)
from ate.integrations.lerobot_common import STATS_ATOL, STATS_RTOL, lerobot_action_space
from ate.steer import LatentGuidance

logger = logging.getLogger(__name__)

DIAG_PREFIX = "ate_"


class _AteRuntime:
    """Lazily built :class:`LatentGuidance` plus the checks that tie the VAE to the policy.

    A plain object on purpose: ``nn.Module.__setattr__`` registers only Modules / Parameters / buffers, so the
    VAE it holds never enters the policy's parameters, state dict, optimiser or DDP wrapper.
    """

    def __init__(self, config, dataset_stats=None):
        self.config = config
        self.dataset_stats = dataset_stats
        self.guide: LatentGuidance | None = None
        self.bundle = None
        self._device = None

    def get(self, device: torch.device, *, horizon: int, action_dim: int, parameterization: str,
            alphas_cumprod: Tensor | None = None, padded_dim: int | None = None) -> LatentGuidance | None:
        """The guidance for this policy on ``device`` (None when λ = 0 and no VAE is configured).

        Args:
            horizon: the policy's chunk length H (diffusion ``horizon``, flow ``chunk_size``).
            action_dim: the dataset's real action dims D (the VAE's input width).
            padded_dim: the policy's padded action width (flow ``max_action_dim``); None = D.
        """
        cfg = self.config
        if cfg.vae_path is None:
            if float(cfg.guidance_scale) == 0.0:
                return None
            raise CheckpointError(f"{cfg.type}: guidance_scale={cfg.guidance_scale} but no --policy.vae_path; train "
                                  "the VAEs with `ate lerobot align` or set --policy.guidance_scale=0 for plain "
                                  "fine-tuning")
        if self.guide is None:
            self.guide = self._build(horizon, action_dim, parameterization, alphas_cumprod, padded_dim)
        if self._device != device:
            self.guide.encoder.to(device)
            self._device = device
        return self.guide

    def _build(self, horizon, action_dim, parameterization, alphas_cumprod, padded_dim) -> LatentGuidance:
        from ate.align import load_aligned_vae

        cfg = self.config
        bundle = load_aligned_vae(cfg.vae_path, require_prior=False)
        self._check_action_space(bundle, horizon, action_dim)
        index = None if padded_dim in (None, action_dim) else torch.arange(action_dim)
        guide = LatentGuidance(bundle.vae, parameterization, cfg.guidance_config(), alphas_cumprod=alphas_cumprod,
                               action_index=index, prior=bundle.prior)
        self.bundle = bundle
        logger.info("ATE guidance: VAE %s (Z=%d, H=%d, D=%d), %s, %s", bundle.path, bundle.config.latent_dim,
                    bundle.config.horizon, bundle.config.action_dim, parameterization, cfg.guidance_config())
        return guide

    def _check_action_space(self, bundle, horizon: int, action_dim: int) -> None:
        """Refuse a VAE trained in another action space than the one the policy trains in: chunk length, action
        dims and (``guidance_check_stats``) the normaliser against the dataset stats the policy's processor uses."""
        cfg = self.config
        stats = self.dataset_stats if cfg.guidance_check_stats else None
        if cfg.guidance_check_stats and stats is None:
            logger.warning("ATE: no dataset stats reached the policy; cannot check the VAE's normaliser")
        mode = cfg.normalization_mapping.get("ACTION")
        expected = lerobot_action_space(stats, mode, horizon, action_dim=action_dim, source="dataset stats")
        fix = (f"rerun `ate lerobot align --policy {cfg.type.removeprefix('ate_')}` with this dataset and "
               f"--horizon {horizon}")
        compare(expected, action_space_of(bundle), what=str(bundle.path), expected_name=f"{cfg.type} policy",
                found_name="VAE", ignore=() if stats is not None else ("normalizer",),
                rtol=STATS_RTOL, atol=STATS_ATOL,
                hint={"horizon": fix, "action_dim": fix,
                      "normalizer": f"the VAE's action normaliser differs from the policy's "
                                    f"{getattr(mode, 'value', mode)} normalisation with this dataset's stats; {fix}, "
                                    "or set --policy.guidance_check_stats=false"})

    def diag(self, diag: dict) -> dict:
        return {DIAG_PREFIX + k: float(v) for k, v in diag.items()}


@contextmanager
def _capture_output(module: torch.nn.Module):
    """Record the first output of ``module`` inside the block (later calls, e.g. checkpoint recomputation in
    backward, are ignored). Yields a dict whose ``"out"`` holds the tensor."""
    box: dict = {}

    def hook(_mod, _inp, out):
        box.setdefault("out", out)

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------- diffusion
class AteDiffusionPolicy(DiffusionPolicy):
    """LeRobot Diffusion Policy whose training loss carries the ATE guidance (see module docstring)."""

    config_class = AteDiffusionConfig
    name = "ate_diffusion"

    def __init__(self, config: AteDiffusionConfig, dataset_stats=None, **kwargs):
        super().__init__(config, **kwargs)
        self._ate = _AteRuntime(config, dataset_stats)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """Training loss. batch: ``observation.state`` (B, n_obs, S), images and/or env state,
        ``action`` (B, horizon, D) normalised, ``action_is_pad`` (B, horizon)."""
        if self.config.image_features:
            batch = dict(batch)
            for key in self.config.image_features:
                if self.config.n_obs_steps == 1 and batch[key].ndim == 4:
                    batch[key] = batch[key].unsqueeze(1)
            batch[OBS_IMAGES] = torch.stack([batch[key] for key in self.config.image_features], dim=-4)
        return self._guided_compute_loss(batch)

    def _guided_compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """``DiffusionModel.compute_loss`` (LeRobot 0.6) with the guided target; identical at λ = 0."""
        model, cfg = self.diffusion, self.config
        if not set(batch).issuperset({OBS_STATE, ACTION, "action_is_pad"}):
            raise KeyError(f"batch needs {OBS_STATE}, {ACTION} and action_is_pad; has {sorted(batch)}")
        if OBS_IMAGES not in batch and OBS_ENV_STATE not in batch:
            raise KeyError(f"batch needs {OBS_IMAGES} or {OBS_ENV_STATE}")
        trajectory = batch[ACTION]
        if trajectory.shape[1] != cfg.horizon or batch[OBS_STATE].shape[1] != cfg.n_obs_steps:
            raise ShapeMismatchError(f"batch action {tuple(trajectory.shape)} / state {tuple(batch[OBS_STATE].shape)} "
                                     f"do not match horizon={cfg.horizon}, n_obs_steps={cfg.n_obs_steps}")
        global_cond = model._prepare_global_conditioning(batch)
        eps = torch.randn(trajectory.shape, device=trajectory.device)
        timesteps = torch.randint(0, model.noise_scheduler.config.num_train_timesteps, (trajectory.shape[0],),
                                  device=trajectory.device).long()
        noisy = model.noise_scheduler.add_noise(trajectory, eps, timesteps)
        pred = model.unet(noisy, timesteps, global_cond=global_cond)
        if cfg.prediction_type == "epsilon":
            target = eps
        elif cfg.prediction_type == "sample":
            target = trajectory
        else:
            raise ValueError(f"Unsupported prediction type {cfg.prediction_type}")

        pad = batch["action_is_pad"]
        guide = self._ate.get(trajectory.device, horizon=cfg.horizon, action_dim=trajectory.shape[-1],
                              parameterization=cfg.prediction_type,
                              alphas_cumprod=model.noise_scheduler.alphas_cumprod)
        out: dict = {}
        guided = pred
        if guide is not None:
            g, diag = guide.gradient(noisy, trajectory, timesteps, pad_mask=pad)
            guided = guide.steer(pred, g, target, pad_mask=pad)
            out = self._ate.diag(diag)

        def reduce(p: Tensor) -> Tensor:
            loss = F.mse_loss(p, target, reduction="none")
            if cfg.do_mask_loss_for_padding:
                mask = (~pad).unsqueeze(-1)
                return (loss * mask).sum() / (mask.sum() * loss.shape[-1]).clamp_min(1)
            return loss.mean()

        loss = reduce(guided)
        if guide is not None:
            with torch.no_grad():
                out[DIAG_PREFIX + "plain_loss"] = float(reduce(pred).item())
        return loss, out


# ---------------------------------------------------------------------------------------------- flow family
class _FlowGuidanceMixin:
    """Shared loss of the flow policies. ``self.model`` is the upstream flow model whose ``forward`` returns
    ``mse(u_t, v_t)`` per element and whose ``action_out_proj`` produces ``v_t``."""

    _mask_loss_with_pad = False  # SmolVLA masks its loss with action_is_pad; pi0 / pi0.5 do not

    def _ate_flow_loss(self, call_model, batch: dict[str, Tensor], reduction: str) -> tuple[Tensor, dict]:
        """call_model(actions, noise, time) -> per-element losses (B, H, max_action_dim), run under a hook."""
        actions = self.prepare_action(batch)  # (B, H, max_action_dim), zero-padded
        noise = self.model.sample_noise(actions.shape, actions.device)
        time = self.model.sample_time(actions.shape[0], actions.device)
        with _capture_output(self.model.action_out_proj) as box:
            losses = call_model(actions, noise, time)
        d_real = self.config.output_features[ACTION].shape[0]
        pad = batch.get("action_is_pad")
        guide = self._ate.get(actions.device, horizon=self.config.chunk_size, action_dim=d_real,
                              parameterization="flow_openpi", padded_dim=actions.shape[-1])
        out: dict = {}
        plain = losses[:, :, :d_real]
        elem = plain
        if guide is not None:
            if "out" not in box:
                raise RuntimeError(f"{type(self).__name__}: action_out_proj was not called in the forward pass")
            v_t = box["out"].float()
            t3 = time[:, None, None]
            x_t = t3 * noise + (1 - t3) * actions  # exactly the upstream noisy chunk
            u_t = noise - actions
            dim_mask = torch.zeros(actions.shape[-1], device=actions.device)
            dim_mask[:d_real] = 1
            g, diag = guide.gradient(x_t, actions, time, dim_mask=dim_mask, pad_mask=pad)
            guided = guide.steer(v_t, g, u_t, dim_mask=dim_mask, pad_mask=pad)
            elem = F.mse_loss(u_t, guided, reduction="none")[:, :, :d_real]
            out = self._ate.diag(diag)
        loss = self._reduce(elem, pad, reduction)
        if guide is not None:
            with torch.no_grad():
                out[DIAG_PREFIX + "plain_loss"] = float(self._reduce(plain, pad, "mean").item())
        out["loss"] = float(loss.mean().item())
        return loss, out

    def _reduce(self, elem: Tensor, pad: Tensor | None, reduction: str) -> Tensor:
        """The upstream reduction: (B, H, D) -> scalar, or (B,) for ``reduction="none"``."""
        if self._mask_loss_with_pad and pad is not None:
            valid = (~pad).unsqueeze(-1).to(elem.dtype)
            elem = elem * valid
            if reduction == "none":
                return elem.sum(dim=(1, 2)) / ((~pad).sum(dim=1) * elem.shape[-1]).clamp_min(1)
            return elem.sum() / ((~pad).sum() * elem.shape[-1]).clamp_min(1)
        return elem.mean(dim=(1, 2)) if reduction == "none" else elem.mean()


class AtePI0Policy(_FlowGuidanceMixin, PI0Policy):
    """LeRobot pi0 (openpi port) whose training loss carries the ATE guidance."""

    config_class = AtePI0Config
    name = "ate_pi0"

    def __init__(self, config: AtePI0Config, dataset_stats=None, **kwargs):
        super().__init__(config, **kwargs)
        self._ate = _AteRuntime(config, dataset_stats)

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict]:
        images, img_masks = self._preprocess_images(batch)
        tokens, masks = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
        state = self.prepare_state(batch)
        return self._ate_flow_loss(
            lambda a, n, t: self.model.forward(images, img_masks, tokens, masks, state, a, n, t), batch, reduction)


class AtePI05Policy(_FlowGuidanceMixin, PI05Policy):
    """LeRobot pi0.5 whose training loss carries the ATE guidance (state enters through the tokens)."""

    config_class = AtePI05Config
    name = "ate_pi05"

    def __init__(self, config: AtePI05Config, dataset_stats=None, **kwargs):
        super().__init__(config, **kwargs)
        self._ate = _AteRuntime(config, dataset_stats)

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict]:
        images, img_masks = self._preprocess_images(batch)
        tokens, masks = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
        return self._ate_flow_loss(
            lambda a, n, t: self.model.forward(images, img_masks, tokens, masks, a, n, t), batch, reduction)


class AteSmolVLAPolicy(_FlowGuidanceMixin, SmolVLAPolicy):
    """LeRobot SmolVLA whose training loss carries the ATE guidance (loss masked by action_is_pad, as upstream)."""

    config_class = AteSmolVLAConfig
    name = "ate_smolvla"
    _mask_loss_with_pad = True

    def __init__(self, config: AteSmolVLAConfig, dataset_stats=None, **kwargs):
        super().__init__(config, **kwargs)
        self._ate = _AteRuntime(config, dataset_stats)

    def forward(self, batch: dict[str, Tensor], noise=None, time=None, reduction: str = "mean"):
        if noise is not None or time is not None:
            raise ValueError("ate_smolvla draws its own noise and time (they enter the guidance)")
        images, img_masks = self.prepare_images(batch)
        state = self.prepare_state(batch)
        tokens, masks = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
        return self._ate_flow_loss(
            lambda a, n, t: self.model.forward(images, img_masks, tokens, masks, state, a, n, t), batch, reduction)
