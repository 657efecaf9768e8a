"""Latent classifier guidance inside a policy's fine-tuning loss (ATE "Steer").

Per training step, with clean chunk ``a0``, noisy chunk ``x_t``, time ``t``, model output ``pred`` and the
policy's regression ``target`` (all (B, H, D) in the policy's normalised action space):

1. ``ẑ = enc(x_t)``, ``z = enc(a0)`` with the frozen adaptation encoder (``enc = μ + σ⊙ξ``, one shared ξ,
   or ``enc = μ``). The clean chunk is always the one encoded next to x_t.
2. ``d_b = mean_Z (ẑ_b − z_b)²``; ``g = ∂(−D)/∂x_t`` where ``D = mean_b d_b`` (``reduction="reference"``,
   per-sample gradient ∝ 1/B) or ``D = Σ_b d_b`` (``"per_sample"``, independent of B). g is detached.
3. g ← 0 on invalid dims / padded steps, ``g ← clamp(c(t)·g, ±κ)``.
4. ``guided = pred + s·λ·g`` (s = +1 ``reference``, −1 ``flipped``; :meth:`LatentGuidance.steer`, the one
   place this step is written), ``loss = masked MSE(guided, target)``.

Multi-process training: pass ``shard=BatchShard(global_batch, first_row)``. The ξ of ``encoder_mode="sample"``
is then drawn for the whole global batch and sliced, and the reference reduction's 1/B is 1/(global B), so
N processes that each hold a slice compute exactly the g of one process holding the whole batch.

Usage::

    guide = LatentGuidance.from_scheduler(bundle.vae, noise_scheduler, GuidanceConfig(scale=2.0))
    loss, diag = guide.guided_loss(pred, target, x_t, a0, t, pad_mask=batch["is_pad"])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from ate.errors import ConfigError, ShapeMismatchError
from ate.steer.coefficients import (
    DDPM_PARAMETERIZATIONS,
    check_parameterization,
    check_t_cap,
    guidance_coefficient,
    noise_level,
)

_SIGNS = {"reference": 1.0, "flipped": -1.0}


@dataclass(frozen=True)
class BatchShard:
    """This process holds rows ``[start, start + B)`` of a global batch of ``total`` rows."""

    total: int
    start: int = 0

    def __post_init__(self):
        if self.total < 1 or not 0 <= self.start < self.total:
            raise ValueError(f"BatchShard needs total >= 1 and 0 <= start < total, got {self}")
_ENCODER_MODES = ("sample", "mean")
_REDUCTIONS = ("reference", "per_sample")
_STRENGTHS = ("absolute", "relative")
_LATENT_TARGETS = ("clean", "source_mode")


@dataclass
class GuidanceConfig:
    """Hyper-parameters of the latent guidance term.

    Args:
        scale: λ ≥ 0, guidance weight (paper best 2.0; reference code 3.0). λ = 0 gives the plain loss.
        clamp: κ > 0, element-wise bound on c(t)·g (reference 0.1); None disables the clamp.
        sign: ``reference`` (guided = pred + λ·g, paper equation and reference code) or ``flipped``
            (pred − λ·g: the network internalises the guidance direction instead).
        encoder_mode: ``sample`` (μ + σ⊙ξ with one ξ shared by x_t and a0, reference) or ``mean`` (μ).
        reduction: ``reference`` (latent distance averaged over batch × Z: per-sample gradient ∝ 1/B) or
            ``per_sample`` (averaged over Z, summed over the batch: batch-size independent).
        t_cap: cap on the noise level at which c(t) is evaluated (DDPM timestep index, or flow noise level
            in [0, 1)); see :func:`ate.steer.guidance_coefficient`.

    Beyond the paper (defaults reproduce it exactly):
        noise_min, noise_max: guide only samples whose noise level (:func:`ate.steer.noise_level`: 0 = clean,
            1 = pure noise, the same scale for DDPM and flow) lies in [noise_min, noise_max]; g = 0 elsewhere
            (limited-interval guidance: high-noise guidance is where the paper's c(t) is large and clamped).
        strength: ``absolute`` (λ multiplies g, paper) or ``relative``: each sample's g is rescaled to the norm
            of the policy's own residual ``target − pred`` on its valid elements, so λ is the shift as a
            fraction of the residual and means the same for every family, batch size and noise level (the
            clamp still shapes g's direction first). Needs ``target`` (``guided_loss`` / ``steer``).
        latent_target: ``clean`` (pull E(x_t) toward E(a0), paper) or ``source_mode``: toward the mean of
            the source-prior component nearest E(a0) (the stage-1 prior the adaptation VAE was aligned to; a
            GMM prior has several), a direction that carries source knowledge. Needs ``prior``.

    Where g goes: since g is detached, ``MSE(pred + s·λ·g, target) = MSE(pred, target − s·λ·g)``: putting the
    guidance on the target side (Model-Guidance style) is the same loss and gradient as the opposite sign on
    the prediction side, so it is not a separate mode (see ``tests/test_steer_variants.py``).
    """

    scale: float = 2.0
    clamp: float | None = 0.1
    sign: str = "reference"
    encoder_mode: str = "sample"
    reduction: str = "reference"
    t_cap: float | int | None = None
    noise_min: float = 0.0
    noise_max: float = 1.0
    strength: str = "absolute"
    latent_target: str = "clean"

    def __post_init__(self):
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise ConfigError(f"GuidanceConfig.scale must be a finite number, got {self.scale!r}")
        if self.scale < 0:
            raise ConfigError(f"GuidanceConfig.scale must be >= 0, got {self.scale}; use sign='flipped' to reverse "
                             "the guidance direction")
        if self.clamp is not None and (isinstance(self.clamp, bool) or not isinstance(self.clamp, (int, float))
                                       or not self.clamp > 0):
            raise ConfigError(f"GuidanceConfig.clamp must be None or a number > 0, got {self.clamp!r}")
        if self.sign not in _SIGNS:
            raise ConfigError(f"GuidanceConfig.sign must be one of {tuple(_SIGNS)}, got {self.sign!r}")
        if self.encoder_mode not in _ENCODER_MODES:
            raise ConfigError(f"GuidanceConfig.encoder_mode must be one of {_ENCODER_MODES}, got {self.encoder_mode!r}")
        if self.reduction not in _REDUCTIONS:
            raise ConfigError(f"GuidanceConfig.reduction must be one of {_REDUCTIONS}, got {self.reduction!r}")
        if self.t_cap is not None and (isinstance(self.t_cap, bool) or not isinstance(self.t_cap, (int, float))
                                       or not math.isfinite(self.t_cap) or self.t_cap < 0):
            raise ConfigError(f"GuidanceConfig.t_cap must be None or a finite number >= 0, got {self.t_cap!r}")
        if not 0.0 <= float(self.noise_min) <= float(self.noise_max) <= 1.0:
            raise ConfigError(f"GuidanceConfig needs 0 <= noise_min <= noise_max <= 1, got {self.noise_min}, "
                             f"{self.noise_max}")
        if self.strength not in _STRENGTHS:
            raise ConfigError(f"GuidanceConfig.strength must be one of {_STRENGTHS}, got {self.strength!r}")
        if self.latent_target not in _LATENT_TARGETS:
            raise ConfigError(f"GuidanceConfig.latent_target must be one of {_LATENT_TARGETS}, got "
                             f"{self.latent_target!r}")

    @property
    def windowed(self) -> bool:
        return self.noise_min > 0.0 or self.noise_max < 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GuidanceConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"GuidanceConfig: unknown fields {sorted(unknown)}")
        return cls(**d)


def _weights(shape: torch.Size, dim_mask, pad_mask, device) -> torch.Tensor | None:
    """(B, H, D) float 0/1 weights (1 = valid element), or None when there is nothing to mask."""
    B, H, D = shape
    w = None
    if dim_mask is not None:
        dm = torch.as_tensor(dim_mask, device=device)
        if dm.ndim == 1 and dm.shape[0] == D:
            dm = dm.reshape(1, 1, D)
        elif dm.ndim == 2 and dm.shape == (B, D):
            dm = dm.reshape(B, 1, D)
        else:
            raise ShapeMismatchError(f"dim_mask has shape {tuple(dm.shape)}; expected (D,)=({D},) or (B, D)=({B}, {D})")
        w = (dm != 0).float().expand(B, H, D)
    if pad_mask is not None:
        pm = torch.as_tensor(pad_mask, device=device)
        if pm.shape != (B, H):
            raise ShapeMismatchError(f"pad_mask has shape {tuple(pm.shape)}; expected (B, H)=({B}, {H})")
        valid = (~pm.bool()).float().reshape(B, H, 1).expand(B, H, D)
        w = valid if w is None else w * valid
    return w


def _residual_norms(pred: torch.Tensor, target: torch.Tensor, dim_mask=None, pad_mask=None) -> torch.Tensor:
    """(B,) L2 norm of each sample's residual target − pred over its valid elements (detached)."""
    r = target.detach() - pred.detach()
    w = _weights(pred.shape, dim_mask, pad_mask, pred.device)
    if w is not None:
        r = r * w.to(r.dtype)
    return r.reshape(r.shape[0], -1).norm(dim=1)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, dim_mask=None, pad_mask=None) -> torch.Tensor:
    """Mean squared error over valid elements only (the policy loss ATE's guided loss replaces).

    Args:
        pred, target: (B, H, D).
        dim_mask: (D,) or (B, D), nonzero / True on valid action dims.
        pad_mask: (B, H) bool, True on padded steps (excluded).

    Returns:
        scalar: Σ w·(pred − target)² / Σ w (0 when nothing is valid).
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ShapeMismatchError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (B, H, D)")
    err = (pred - target) ** 2
    w = _weights(pred.shape, dim_mask, pad_mask, pred.device)
    if w is None:
        return err.mean()
    return (err * w).sum() / w.sum().clamp(min=1.0)


class LatentGuidance:
    """Gradient of the latent distance between the noisy and the clean chunk, as a loss add-on.

    Args:
        encoder: module with ``encode(a) -> (mu, logvar)``, a (B, H, D_vae) -> (B, Z) each. It is frozen here
            (``requires_grad_(False)``, ``eval()``) and must not be part of the policy's parameters. If it also
            has ``encode_fast(a)`` (the same function computed with less work, e.g. ``ActionVAE.encode_fast``),
            the guidance calls that instead.
        parameterization: ``epsilon`` | ``sample`` | ``v_prediction`` | ``flow_paper`` | ``flow_openpi``.
        config: :class:`GuidanceConfig` (default values if None).
        alphas_cumprod: (T,) DDPM schedule, required for the DDPM parameterisations.
        action_index: (D_vae,) long indices of the policy action dims fed to the VAE (e.g. 7 of a policy's
            32 zero-padded dims); g is zero on every other dim. None: all policy dims, in order.
        prior: the source prior (:class:`ate.align.prior.PriorSummary`, e.g. ``load_aligned_vae(...).prior``),
            needed by ``latent_target="source_mode"``.
    """

    def __init__(self, encoder: nn.Module, parameterization: str, config: GuidanceConfig | None = None,
                 alphas_cumprod: torch.Tensor | None = None, action_index=None, prior=None):
        if not callable(getattr(encoder, "encode", None)):
            raise TypeError(f"encoder {type(encoder).__name__} has no encode(a) -> (mu, logvar) method")
        self.parameterization = check_parameterization(parameterization)
        self.config = config if config is not None else GuidanceConfig()
        if not isinstance(self.config, GuidanceConfig):
            raise TypeError(f"config must be a GuidanceConfig, got {type(self.config).__name__}")
        is_ddpm = parameterization in DDPM_PARAMETERIZATIONS
        if is_ddpm and alphas_cumprod is None:
            raise ValueError(f"parameterization {parameterization!r} needs alphas_cumprod "
                             "(e.g. scheduler.alphas_cumprod)")
        if not is_ddpm and alphas_cumprod is not None:
            raise ValueError(f"parameterization {parameterization!r} is a flow; do not pass alphas_cumprod")
        self.alphas_cumprod = (None if alphas_cumprod is None
                               else torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).reshape(-1))
        check_t_cap(parameterization, self.config.t_cap,
                    None if self.alphas_cumprod is None else self.alphas_cumprod.numel())
        if action_index is not None:
            action_index = torch.as_tensor(action_index).detach().to("cpu").reshape(-1)
            if action_index.is_floating_point() or action_index.numel() == 0:
                raise ShapeMismatchError(f"action_index must be a non-empty integer tensor, got {action_index}")
            action_index = action_index.long()
            if action_index.min() < 0 or action_index.unique().numel() != action_index.numel():
                raise ShapeMismatchError("action_index must hold distinct non-negative dims, got "
                                         f"{action_index.tolist()}")
        self.action_index = action_index
        if self.config.latent_target == "source_mode" and prior is None:
            raise ValueError("latent_target='source_mode' needs the source prior: LatentGuidance(..., prior="
                             "load_aligned_vae(<stage-2 dir>).prior)")
        self.prior = prior
        # Frozen: no gradient may reach the VAE; eval() because dropout would make ẑ and z disagree by noise.
        encoder.requires_grad_(False)
        encoder.eval()
        self.encoder = encoder
        cfg = getattr(encoder, "config", None)
        self._enc_horizon = getattr(cfg, "horizon", None)
        self._enc_action_dim = getattr(cfg, "action_dim", None)
        if (action_index is not None and self._enc_action_dim is not None
                and action_index.numel() != self._enc_action_dim):
            raise ShapeMismatchError(f"action_index selects {action_index.numel()} dims but the encoder expects "
                                     f"action_dim={self._enc_action_dim}")

    @classmethod
    def from_scheduler(cls, encoder: nn.Module, scheduler, config: GuidanceConfig | None = None,
                       action_index=None, prior=None) -> "LatentGuidance":
        """Build from a diffusers scheduler.

        DDPM-family schedulers (``DDPMScheduler``, ``DDIMScheduler``, ``DPMSolverMultistepScheduler``...):
        ``scheduler.alphas_cumprod`` and ``scheduler.config.prediction_type`` (epsilon | sample |
        v_prediction); t is then the integer training timestep.
        ``FlowMatchEulerDiscreteScheduler``: ``x_t = σ·ε + (1−σ)·a0``, target ``ε − a0`` (σ = 1 is noise),
        i.e. the ``flow_openpi`` convention; t must be σ in [0, 1] (``timesteps / num_train_timesteps``).
        """
        sched_cfg = getattr(scheduler, "config", None)
        name = type(scheduler).__name__
        abar = getattr(scheduler, "alphas_cumprod", None)
        if abar is not None:
            prediction_type = getattr(sched_cfg, "prediction_type", None) if sched_cfg is not None else None
            if prediction_type not in DDPM_PARAMETERIZATIONS:
                raise ValueError(f"{name}.config.prediction_type={prediction_type!r} is not one of "
                                 f"{DDPM_PARAMETERIZATIONS}; construct LatentGuidance with an explicit "
                                 "parameterization")
            return cls(encoder, prediction_type, config, alphas_cumprod=abar, action_index=action_index, prior=prior)
        if name.startswith("FlowMatch"):
            if sched_cfg is not None and getattr(sched_cfg, "invert_sigmas", False):
                raise ValueError(f"{name} with invert_sigmas=True flips the time axis; construct LatentGuidance "
                                 "with an explicit flow parameterization")
            return cls(encoder, "flow_openpi", config, action_index=action_index, prior=prior)
        raise ValueError(f"cannot read a parameterization from {name}: it has neither alphas_cumprod nor a "
                         "FlowMatch* type; construct LatentGuidance(encoder, parameterization, ...) directly")

    # ------------------------------------------------------------------ core

    def coefficient(self, t, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """c(t), (B,), see :func:`ate.steer.guidance_coefficient`."""
        return guidance_coefficient(self.parameterization, t, self.alphas_cumprod, self.config.t_cap, dtype=dtype)

    def noise_level(self, t) -> torch.Tensor:
        """(B,) share of noise in x_t (0 clean, 1 pure noise), see :func:`ate.steer.noise_level`."""
        return noise_level(self.parameterization, t, self.alphas_cumprod)

    def _nearest_source_mode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, Z): for each clean latent the mean of the nearest source-prior component (Euclidean)."""
        _, means, _ = self.prior._components(z.device)
        means = means.to(z.dtype)
        if means.shape[-1] != z.shape[-1]:
            raise ShapeMismatchError(f"the source prior has Z={means.shape[-1]} but the encoder gives Z={z.shape[-1]}")
        return means[torch.cdist(z, means).argmin(dim=1)]

    def _check_inputs(self, x_t: torch.Tensor, a0: torch.Tensor, t) -> torch.Tensor:
        if x_t.ndim != 3:
            raise ShapeMismatchError(f"x_t must be (B, H, D), got shape {tuple(x_t.shape)}")
        if a0.shape != x_t.shape:
            raise ShapeMismatchError(f"a0 {tuple(a0.shape)} and x_t {tuple(x_t.shape)} must have the same shape")
        B, H, D = x_t.shape
        if self.action_index is not None and self.action_index.max() >= D:
            raise ShapeMismatchError(f"action_index refers to dim {self.action_index.max().item()} but the policy "
                                     f"chunk has D={D}")
        d_vae = D if self.action_index is None else self.action_index.numel()
        if self._enc_horizon is not None and self._enc_horizon != H:
            raise ShapeMismatchError(f"the VAE encoder was trained on chunks of H={self._enc_horizon} steps but the "
                                     f"policy chunk has H={H}; train the adaptation VAE with the policy's horizon")
        if self._enc_action_dim is not None and self._enc_action_dim != d_vae:
            raise ShapeMismatchError(f"the VAE encoder expects action_dim={self._enc_action_dim} but receives "
                                     f"{d_vae} dims (policy D={D}, action_index="
                                     f"{None if self.action_index is None else self.action_index.tolist()})")
        t = torch.as_tensor(t, device=x_t.device)
        if t.numel() == 1:
            t = t.reshape(1).expand(B)
        elif t.numel() == B:
            t = t.reshape(B)
        else:
            raise ShapeMismatchError(f"t has {t.numel()} elements; expected 1 or B={B}")
        return t

    def _encode_stats(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of a: the encoder's ``encode_fast`` when it has one (``ActionVAE``: the same function,
        less work), else its ``encode``."""
        fast = getattr(self.encoder, "encode_fast", None)
        return fast(a) if callable(fast) else self.encoder.encode(a)

    def _encode(self, a: torch.Tensor, xi: torch.Tensor | None, work_dtype: torch.dtype) -> torch.Tensor:
        mu, logvar = self._encode_stats(a)
        mu = mu.to(work_dtype)  # autocast may return bf16: the distance and g stay in float32
        if xi is None:
            return mu
        return mu + torch.exp(0.5 * logvar.to(work_dtype)) * xi

    def gradient(self, x_t: torch.Tensor, a0: torch.Tensor, t, dim_mask=None, pad_mask=None,
                 generator: torch.Generator | None = None, shard: BatchShard | None = None) -> tuple[torch.Tensor, dict]:
        """Masked, c(t)-scaled, clamped guidance ``g`` (no λ, no sign).

        Args:
            x_t: (B, H, D) noisy chunk the policy sees. a0: (B, H, D) clean chunk.
            t: (B,) DDPM integer timesteps or flow times in [0, 1] (scalar broadcast).
            dim_mask: (D,) or (B, D), nonzero on valid dims. pad_mask: (B, H) bool, True on padded steps.
            generator: RNG for the shared ξ in ``encoder_mode="sample"``.
            shard: where these B rows sit in a multi-process global batch (None: they are the whole batch).

        Returns:
            g: (B, H, D) detached, float32 (float64 if x_t is float64).
            diag: python floats ``guidance_norm`` (mean per-sample L2 of g), ``frac_clamped`` (fraction of valid
                elements where |c·g| > κ), ``latent_dist`` (mean d), ``coef_mean`` (mean c(t)).
        """
        t = self._check_inputs(x_t, a0, t)
        B, H, D = x_t.shape
        shard = shard or BatchShard(B)
        if shard.start + B > shard.total:
            raise ShapeMismatchError(f"{B} rows from row {shard.start} do not fit the global batch of {shard.total}")
        work_dtype = torch.float64 if x_t.dtype == torch.float64 else torch.float32
        enc_param = next(iter(self.encoder.parameters()), None)
        enc_dtype = enc_param.dtype if enc_param is not None else work_dtype
        idx = None if self.action_index is None else self.action_index.to(x_t.device)

        def vae_input(a: torch.Tensor) -> torch.Tensor:
            a = a if idx is None else a.index_select(-1, idx)
            return a.to(enc_dtype)

        with torch.enable_grad():
            x = x_t.detach().to(work_dtype).requires_grad_(True)
            xi = None
            with torch.no_grad():
                mu0, logvar0 = self._encode_stats(vae_input(a0.detach()))
                if self.config.encoder_mode == "sample":
                    # drawn on the generator's device, so a CPU generator also seeds a CUDA step
                    gen_device = generator.device if generator is not None else mu0.device
                    xi = torch.randn((shard.total, *mu0.shape[1:]), generator=generator, device=gen_device,
                                     dtype=work_dtype)
                    xi = xi[shard.start:shard.start + B].to(mu0.device)
                    z = mu0.to(work_dtype) + torch.exp(0.5 * logvar0.to(work_dtype)) * xi
                else:
                    z = mu0.to(work_dtype)
                if self.config.latent_target == "source_mode":  # the mode nearest E(a0) = μ, not the draw
                    z = self._nearest_source_mode(mu0.to(work_dtype))
            z_hat = self._encode(vae_input(x), xi, work_dtype)
            if z_hat.shape != z.shape or z_hat.ndim != 2 or z_hat.shape[0] != B:
                raise ShapeMismatchError(f"encoder.encode must return (B, Z) latents, got {tuple(z_hat.shape)}")
            d = ((z_hat - z) ** 2).mean(dim=1)  # (B,)
            if self.config.reduction == "per_sample":
                total = d.sum()
            else:  # reference: the mean over the *global* batch (d.mean() itself when this is the whole batch)
                total = d.mean() if shard.total == B else d.sum() / shard.total
            (grad,) = torch.autograd.grad(-total, x)
        g = grad.detach()

        w = _weights(x_t.shape, dim_mask, pad_mask, x_t.device)
        if w is not None:
            g = g * w.to(g.dtype)
        if self.config.windowed:  # limited interval: no guidance outside [noise_min, noise_max]
            level = self.noise_level(t)
            inside = (level >= self.config.noise_min) & (level <= self.config.noise_max)
            g = g * inside.to(g.device, g.dtype).view(B, 1, 1)
        c = self.coefficient(t, dtype=g.dtype).to(g.device)
        g = c.view(B, 1, 1) * g
        kappa = self.config.clamp
        n_valid = float(B * H * D) if w is None else float(w.sum().item())
        if kappa is not None:
            frac = float((g.abs() > kappa).sum().item()) / max(n_valid, 1.0)
            g = g.clamp(-kappa, kappa)
        else:
            frac = 0.0
        diag = {
            "guidance_norm": float(g.flatten(1).norm(dim=1).mean().item()),
            "frac_clamped": frac,
            "latent_dist": float(d.detach().mean().item()),
            "coef_mean": float(c.mean().item()),
        }
        return g, diag

    def _signed_scale(self) -> float:
        return _SIGNS[self.config.sign] * float(self.config.scale)

    def steer(self, pred: torch.Tensor, g: torch.Tensor, target: torch.Tensor | None = None, dim_mask=None,
              pad_mask=None) -> torch.Tensor:
        """The guided prediction ``pred + s·λ·g`` (g from :meth:`gradient`), in pred's dtype and device.

        Every integration builds its guided loss on this one step; with λ = 0 it returns pred's values.
        ``strength="relative"`` first rescales each sample's g to the norm of its residual ``target − pred``
        over the valid elements (masks as in :meth:`gradient`), so it needs ``target``."""
        g = g.to(pred.device, pred.dtype)
        if self.config.strength == "relative":
            if target is None:
                raise ValueError("strength='relative' scales g by the residual target − pred: pass target")
            g = self.relative(g, pred, target, dim_mask, pad_mask)
        return pred + self._signed_scale() * g

    @staticmethod
    def relative(g: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, dim_mask=None, pad_mask=None) -> torch.Tensor:
        """g rescaled per sample to ‖target − pred‖ on the valid elements (a zero g stays zero); detached."""
        B = g.shape[0]
        with torch.no_grad():
            g_norm = g.reshape(B, -1).norm(dim=1)
            r_norm = _residual_norms(pred, target, dim_mask, pad_mask)
            factor = torch.where(g_norm > 0, r_norm / g_norm.clamp_min(1e-30), 0.0)
        return g * factor.view(B, 1, 1).to(g.dtype)

    @staticmethod
    def fraction_of_residual(shift: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, dim_mask=None,
                             pad_mask=None) -> float:
        """Mean over samples of ‖shift_b‖ / ‖target_b − pred_b‖ (valid elements): how large the guidance's
        shift of the prediction is against the policy's own residual."""
        with torch.no_grad():
            r_norm = _residual_norms(pred, target, dim_mask, pad_mask)
            num = shift.detach().to(r_norm.dtype).reshape(shift.shape[0], -1).norm(dim=1)
            return float((num / r_norm.clamp_min(1e-12)).mean())

    def guided_loss(self, pred: torch.Tensor, target: torch.Tensor, x_t: torch.Tensor, a0: torch.Tensor, t,
                    dim_mask=None, pad_mask=None, generator: torch.Generator | None = None,
                    shard: BatchShard | None = None) -> tuple[torch.Tensor, dict]:
        """``masked_mse(pred + s·λ·g, target)``: replaces the policy's plain (masked) MSE.

        With λ = 0 the loss equals the plain masked MSE exactly (pred + 0·g == pred), while the diagnostics
        still report the latent distance, so a λ = 0 run doubles as a measured baseline.

        pred, target, x_t, a0: (B, H, D). Returns (scalar loss with grad to ``pred``, diag incl. ``plain_loss``).
        """
        if pred.shape != x_t.shape or target.shape != x_t.shape:
            raise ShapeMismatchError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and x_t "
                                     f"{tuple(x_t.shape)} must have the same (B, H, D) shape")
        g, diag = self.gradient(x_t, a0, t, dim_mask, pad_mask, generator=generator, shard=shard)
        guided = self.steer(pred, g, target, dim_mask, pad_mask)
        loss = masked_mse(guided, target, dim_mask, pad_mask)
        # |λ·g| against the policy's own residual (after the relative rescaling, when on)
        diag["rel_strength"] = self.fraction_of_residual(guided - pred, pred, target, dim_mask, pad_mask)
        with torch.no_grad():
            diag["plain_loss"] = float(masked_mse(pred, target, dim_mask, pad_mask).item())
        return loss, diag

    def additive_term(self, pred: torch.Tensor, x_t: torch.Tensor, a0: torch.Tensor, t, dim_mask=None,
                      pad_mask=None, generator: torch.Generator | None = None,
                      shard: BatchShard | None = None) -> tuple[torch.Tensor, dict]:
        """``2·s·λ·masked_mean(pred·g)``, to add to a framework's own plain masked MSE.

        Since g does not depend on the policy parameters,
        ``plain + term = guided_loss − λ²·masked_mean(g²) + 2·s·λ·masked_mean(target·g)``: the same gradient
        as :meth:`guided_loss`. pred, x_t, a0: (B, H, D).
        """
        if pred.shape != x_t.shape:
            raise ShapeMismatchError(f"pred {tuple(pred.shape)} and x_t {tuple(x_t.shape)} must have the same shape")
        if self.config.strength == "relative":
            raise ValueError("additive_term cannot apply strength='relative' (it needs the regression target); "
                             "use guided_loss")
        g, diag = self.gradient(x_t, a0, t, dim_mask, pad_mask, generator=generator, shard=shard)
        prod = pred * g.to(pred.device)
        w = _weights(pred.shape, dim_mask, pad_mask, pred.device)
        mean = prod.mean() if w is None else (prod * w).sum() / w.sum().clamp(min=1.0)
        return 2.0 * self._signed_scale() * mean, diag

    def __repr__(self) -> str:
        return (f"LatentGuidance(parameterization={self.parameterization!r}, config={self.config}, "
                f"action_index={None if self.action_index is None else self.action_index.tolist()})")
