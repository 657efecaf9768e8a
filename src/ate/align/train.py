"""Two-stage alignment training.

Stage 1 (``train_stage1``): a VAE on the large *source* data with the Info-VAE loss
``recon + w_kl·KL(q‖N(0,I)) + w_mmd·MMD(q(z), N(0,I))``; afterwards the source latents are summarised
into a prior (:mod:`ate.align.prior`) stored with the model.

Stage 2 (``train_stage2``): a *fresh* VAE (own D and H allowed, same Z) on the small *target* data with
``recon + w_kl·KL_dir(q_ψ, prior) + w_mmd·MMD(q_ψ(z), prior samples)``.

Run directory::

    out_dir/
      run.json          config, data, stage, plus the caller's ``run_info`` (the CLI's options, so
                        ``ate align ... --config out_dir`` repeats the run) and the number of processes
                        (``world_size``); rewritten at every (re)start
      metrics.jsonl     one JSON object per logged step (recon, kl, mmd, lr, samples_per_s, val_*)
      last/             resumable checkpoint (model + training_state/), replaced atomically
      best/             best validation checkpoint (model only)
      model/            the deliverable: best (or last) weights + normaliser + prior, what load_aligned_vae reads

Each checkpoint directory (last/, best/, model/) holds ``action_space.json`` (`ate.data.action_space`): the
robot (the data's ``robot`` attribute when all episodes share one), D, H, pad rule and normaliser, the
record a policy compares with its own before this VAE guides it.

Resume: re-running the same command with the same ``out_dir`` continues from ``last/``; the data order,
noise draws and LR schedule are functions of (seed, step) plus saved generator states, so an interrupted
run ends with exactly the weights of an uninterrupted one.

Device, processes, precision: one ``accelerate.Accelerator`` (:func:`ate.training.make_accelerator`, the
policy trainer's too). ``device="auto"`` trains on this process's GPU when torch sees one, else on the CPU;
``bf16`` is accelerate's bf16 mixed precision: the VAE's forward under autocast on that device, its outputs and
the losses in float32. Batch indices, reparameterisation noise, MMD targets and the gmm prior's Monte-Carlo KL
draws are drawn on the CPU from seeded generators and moved, so the random draws do not depend on the
device; validation draws from its own fixed generator, so --eval-every never changes training.

Learning rate: ``lr_schedule="cosine"`` (default; :func:`ate.training.cosine_lr_factor`, the policy
trainer's schedule too) warms up over ``warmup_steps`` and decays per step to ``min_lr`` at
``lr_decay_steps`` (default ``steps``), whatever the dataset size; ``"epoch_decay"`` is the reference
trainer's ×``lr_decay`` per epoch, which on a few target demos (a handful of steps per epoch) collapses the
LR within a few hundred steps.

Scale-out: launched under ``torchrun --nproc_per_node N`` or ``accelerate launch`` (accelerate joins the
process group: gloo on CPU, nccl on GPU; DDP through ``Accelerator.prepare``) every rank draws the
*global* batch's indices and noise (the gmm KL draws too) and keeps its slice; the MMD is computed on
latents gathered from all ranks (autograd-aware all_gather), so N processes with batch B/N reproduce one process with batch B.
The reconstruction term, a mean over unpadded steps, is re-weighted by each rank's share of the global
count of unpadded steps, so DDP's gradient average equals the single-process mean. Logged terms are rank
0's (recon, kl: its slice; mmd: the global batch).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ate.align.checkpoint import save_vae_checkpoint
from ate.align.losses import kl_to_standard_normal, mmd, reconstruction_loss
from ate.align.prior import PriorSummary, fit_prior
from ate.align.vae import ActionVAE, VAEConfig
from ate.checkpoint import load_tensors, load_training_state, read_json, write_json_atomic
from ate.data.action_space import ActionSpace
from ate.errors import CheckpointError, ConfigError, DataError, ShapeMismatchError
from ate.training import (DEVICES, MetricsLog, adamw, attention_kernels, cosine_lr_factor, make_accelerator,
                          process_group_scope, rank_share)

logger = logging.getLogger(__name__)


# the allowed values of AlignConfig's string fields (the CLI offers the same ones)
ALIGN_CHOICES = dict(pad=("repeat", "drop"), normalization=("minmax", "meanstd"), recon=("smooth_l1", "mse"),
                     mmd_distance=("sum", "mean"), kl_direction=("paper", "reference"),
                     mmd_target=("prior", "standard_normal"), prior_mode=("aggregate", "reference", "gmm"),
                     log_to=("none", "wandb", "tensorboard"), lr_schedule=("cosine", "epoch_decay"),
                     device=DEVICES)


@dataclass
class AlignConfig:
    """Every knob of a stage-1 / stage-2 run (defaults = reference values where the SPEC gives them)."""

    # chunks / data
    horizon: int = 16
    pad: str = "repeat"  # repeat (LeRobot) | drop (reference)
    normalization: str = "minmax"  # minmax (DP, [-1, 1]) | meanstd (pi0)
    val_ratio: float = 0.1
    val_max_chunks: int = 10_000  # validation uses a fixed, seeded subset of at most this many windows
    # model
    preset: str = "small"
    latent_dim: int | None = None  # override the preset's Z
    # loss
    recon: str = "smooth_l1"  # smooth_l1 (reference) | mse
    w_kl: float = 7.5e-5
    w_mmd: float = 1.0
    mmd_distance: str = "sum"  # sum (correct) | mean (reference quirk, nearly inert)
    sigma2_z: float = 2.0
    # stage 2
    kl_direction: str = "paper"  # paper: KL(q‖p) reverse | reference: KL(p‖q)
    mmd_target: str = "prior"  # prior | standard_normal (reference quirk)
    # prior summary fitted after stage 1
    prior_mode: str = "aggregate"  # aggregate | reference | gmm
    prior_max_samples: int = 200_000
    gmm_components: int = 8
    # optimisation
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"  # cosine (per step, warm-up, to min_lr at lr_decay_steps) | epoch_decay (reference)
    warmup_steps: int = 0
    lr_decay_steps: int | None = None  # cosine horizon (default: steps; fix it to extend a run on resume)
    lr_decay: float = 0.95  # epoch_decay: per epoch (staircase), floored at min_lr
    min_lr: float = 1e-6
    grad_clip: float | None = None
    bf16: bool = False  # bf16 autocast for the forward pass (losses in fp32)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    seed: int = 0
    # bookkeeping
    log_every: int = 50
    eval_every: int = 500
    save_every: int = 500
    log_to: str = "none"  # none | wandb | tensorboard
    wandb_project: str = "ate"
    progress: bool = True

    def __post_init__(self) -> None:
        for name, allowed in ALIGN_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"AlignConfig.{name}={getattr(self, name)!r}; choose from {allowed}")
        if self.steps < 1 or self.batch_size < 2:
            raise ConfigError("AlignConfig: steps >= 1 and batch_size >= 2 (MMD needs pairs) are required")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AlignConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# --------------------------------------------------------------------------------------------------
def _gather(x: torch.Tensor, world: int) -> torch.Tensor:
    """The rows of all ranks, in rank order (a no-op in one process). Autograd-aware, unlike accelerate's
    gather: the MMD over the global batch back-propagates into every rank's latents (backward: the sum over
    ranks of the gradients of each rank's rows, a reduce-scatter). It runs on the process group the
    Accelerator joined (the default group).

    torch's functional collective ``all_gather_single_autograd`` where it exists (torch 2.13 deprecates
    ``torch.distributed.nn.functional.all_gather`` for it); the older torch this package supports has only
    the latter, with the same forward and backward."""
    if world == 1:
        return x
    try:
        from torch.distributed._functional_collectives import all_gather_single_autograd
    except ImportError:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x), dim=0)
    import torch.distributed as dist

    return all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)


# --------------------------------------------------------------------------------------------------
def _load_data(data, name: str):
    from ate.data import load_episodes

    if isinstance(data, (str, Path)):
        return load_episodes(data)
    if data is None:
        raise DataError(f"no {name} data given")
    return data


def _make_datasets(eps, cfg: AlignConfig, normalizer, horizon: int, main: bool = True):
    """(train, val or None, normalizer). `main`: this process reports the split (rank 0 only)."""
    from ate.data import ChunkDataset, Normalizer, split_episodes

    if normalizer is None:
        normalizer = Normalizer.fit(eps, mode=cfg.normalization)
    elif normalizer.dim != eps.dim:
        raise ShapeMismatchError(f"normaliser is for D={normalizer.dim} but {eps.source} has D={eps.dim}")
    lengths = eps.episode_lengths
    usable = np.arange(eps.num_episodes)
    if cfg.pad == "drop":  # split only the episodes that give a window, so no split can end up empty
        usable = np.flatnonzero(lengths >= horizon)
        short = [eps.episode_names[e] for e in np.flatnonzero(lengths < horizon)]
        if not len(usable):
            longest = int(np.argmax(lengths))
            raise DataError(f"{eps.source}: no episode has the {horizon} frames one chunk needs under --pad drop "
                            f"(longest: {eps.episode_names[longest]}, {int(lengths[longest])} frames); "
                            "use --pad repeat or a smaller --horizon")
        if short and main:
            logger.warning("%s: %d of %d episodes are shorter than horizon %d and are skipped under --pad drop: %s",
                           eps.source, len(short), len(lengths), horizon,
                           ", ".join(short[:5]) + (", ..." if len(short) > 5 else ""))
    train_i, val_i = split_episodes(len(usable), cfg.val_ratio, cfg.seed)
    train_idx, val_idx = usable[train_i], usable[val_i]
    train = ChunkDataset(eps, horizon=horizon, normalizer=normalizer, pad=cfg.pad, episodes=train_idx)
    val = ChunkDataset(eps, horizon=horizon, normalizer=normalizer, pad=cfg.pad, episodes=val_idx) if len(val_idx) else None
    info = logger.info if main else logger.debug
    why = None
    if val is not None and len(val) < 2:  # one window cannot be validated (the MMD needs pairs): train on it
        why = f"the {len(val_idx)} held-out episode(s) give {len(val)} window, the MMD needs 2, so they train"
        train, val = ChunkDataset(eps, horizon=horizon, normalizer=normalizer, pad=cfg.pad, episodes=usable), None
    if val is not None:
        info("validation: %d of %d episodes held out (floor(%d x val_ratio %g)), %d training windows, %d validation "
             "windows; model/ = the best validation checkpoint", len(val_idx), len(usable), len(usable), cfg.val_ratio,
             len(train), len(val))
    else:
        if why is None:
            need = math.ceil(1 / cfg.val_ratio - 1e-9) if cfg.val_ratio > 0 else None
            why = f"val_ratio {cfg.val_ratio:g} holds out floor(E x val_ratio) episodes, none below {need}" if need \
                else "val_ratio 0"
        info("validation: none (%d episodes; %s): all %d windows train, no val_* metrics, model/ = the last "
             "checkpoint", len(usable), why, len(train))
    if len(train) < cfg.batch_size:
        info("%d training windows < batch_size %d: each batch repeats windows (cycling a shuffled order, fresh noise "
             "per repeat)", len(train), cfg.batch_size)
    return train, val, normalizer


def _robot_of(eps) -> str | None:
    """The robot all episodes name in their ``robot`` attribute, or None (no attribute, or several robots)."""
    robots = [a.get("robot") for a in eps.episode_attrs]
    return str(robots[0]) if robots and robots[0] and all(r == robots[0] for r in robots) else None


def _batch(dataset, indices, device: torch.device) -> dict[str, torch.Tensor]:
    out = dataset[np.asarray(indices, dtype=np.int64)]  # one vectorised gather (lazy storage friendly)
    return {"action": out["action"].to(device, non_blocking=True), "is_pad": out["is_pad"].to(device)}


def _log_line(row: dict) -> str:
    """The progress line printed instead of a bar (no TTY or --no-progress)."""
    keys = ("loss", "recon", "kl", "mmd", "val_loss")
    text = " ".join(f"{k} {row[k]:.4f}" for k in keys if k in row)
    if "lr" in row:
        text += f" lr {row['lr']:.2e} {row['samples_per_s']:.0f} samples/s"
    return text


def _loss_terms(vae, a, is_pad, cfg: AlignConfig, prior: PriorSummary | None, noise, target_samples, world, *,
                kl_draws, rec_share: torch.Tensor | None = None, autocast: bool = True):
    """Loss of one (local) batch. noise: reparameterisation noise for this rank's slice; target_samples:
    the global batch of MMD target samples (identical on every rank); kl_draws: this rank's slice of the
    prior KL's Monte-Carlo draws (`_kl_draws`; None for a closed-form KL); rec_share: this rank's weight of
    the reconstruction term (`_rec_share`; None in one process). autocast: run the forward under bf16
    autocast when ``cfg.bf16``; False for a module whose forward accelerate already autocasts (prepared by
    the run's Accelerator), where the outputs come back in float32 as here."""
    with torch.autocast(a.device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and autocast), \
            attention_kernels(a.device, cfg.bf16):
        recon, z, mu, logvar = vae(a, noise=noise)
    recon, z, mu, logvar = recon.float(), z.float(), mu.float(), logvar.float()
    rec = reconstruction_loss(recon, a, cfg.recon, is_pad)
    if rec_share is not None:
        rec = rec * rec_share.to(rec.dtype)
    if prior is None:
        kl = kl_to_standard_normal(mu, logvar)
    else:
        kl = prior.kl(mu, logvar, cfg.kl_direction, draws=kl_draws)
    m = mmd(_gather(z, world), target_samples, cfg.sigma2_z, cfg.mmd_distance)
    return rec + cfg.w_kl * kl + cfg.w_mmd * m, {"recon": rec.item(), "kl": kl.item(), "mmd": m.item()}


def _rec_share(acc, is_pad: torch.Tensor | None) -> torch.Tensor | None:
    """The reconstruction term is a mean over this rank's *valid* (unpadded) steps; ranks hold different numbers
    of them, so it is re-weighted to (local sum) / (global valid count), times world because DDP averages the
    gradients. None in one process or without padding."""
    if acc.num_processes == 1 or is_pad is None:
        return None
    local = (~is_pad).sum().to(torch.float64)
    return rank_share(local, acc.reduce(local, reduction="sum"), acc.num_processes)


@torch.no_grad()
def _validate(vae, val, cfg: AlignConfig, prior: PriorSummary | None, device: torch.device) -> dict:
    """Validation loss terms. `vae`: the module the Accelerator prepared (its forward autocasts under bf16)."""
    g = torch.Generator().manual_seed(cfg.seed + 12345)  # fixed: validation is comparable across steps
    vae.eval()
    sums, n = {"recon": 0.0, "kl": 0.0, "mmd": 0.0, "loss": 0.0}, 0
    # a fixed seeded subset keeps validation cheap on huge datasets and comparable across steps
    order = torch.arange(len(val)) if len(val) <= cfg.val_max_chunks else torch.randperm(
        len(val), generator=torch.Generator().manual_seed(cfg.seed + 777))[: cfg.val_max_chunks].sort().values
    bs = max(cfg.batch_size, 2)
    for start in range(0, len(order), bs):
        idx = order[start:start + bs]
        if len(idx) < 2:
            break
        b = _batch(val, idx, device)
        noise = torch.randn(len(idx), vae.latent_dim, generator=g).to(device)
        tgt = _mmd_targets(len(idx), vae.latent_dim, cfg, prior, g).to(device)
        loss, terms = _loss_terms(vae, b["action"], b.get("is_pad"), cfg, prior, noise, tgt, 1,
                                  kl_draws=_kl_draws(len(idx), cfg, prior, g), autocast=False)
        for k, v in terms.items():
            sums[k] += v * len(idx)
        sums["loss"] += loss.item() * len(idx)
        n += len(idx)
    vae.train()
    return {f"val_{k}": v / max(n, 1) for k, v in sums.items()}


# options that may change between an interrupted run and its resumption (longer runs, other logging, moving
# the run to another device)
_FREE_ON_RESUME = {"steps", "progress", "log_to", "wandb_project", "log_every", "eval_every", "save_every", "device"}


def _resume_key(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in _FREE_ON_RESUME}


def _mmd_targets(n: int, z_dim: int, cfg: AlignConfig, prior: PriorSummary | None, g: torch.Generator):
    if prior is not None and cfg.mmd_target == "prior":
        return prior.sample(n, generator=g)
    return torch.randn(n, z_dim, generator=g)


def _kl_draws(n: int, cfg: AlignConfig, prior: PriorSummary | None, g: torch.Generator):
    """The Monte-Carlo draws of the prior KL for n rows (gmm only; nothing is drawn for a closed form, so
    the other priors' random streams are untouched)."""
    return None if prior is None else prior.kl_draws(n, cfg.kl_direction, g)


def _train(stage: int, eps, out_dir, cfg: AlignConfig, prior: PriorSummary | None, normalizer,
           horizon: int, source_ckpt: str | None, run_info: dict | None = None) -> bool:
    """Train one stage into out_dir; returns whether this process is the main one (it exports model/)."""
    out_dir = Path(out_dir)
    # process group (under torchrun / accelerate launch), device, bf16 autocast and trackers; a missing
    # --log-to package fails here, before any work
    acc = make_accelerator(cfg.device, "bf16" if cfg.bf16 else "no", cfg.log_to, out_dir)
    device, rank, world, main = acc.device, acc.process_index, acc.num_processes, acc.is_main_process
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    local_bs = cfg.batch_size // world
    torch.manual_seed(cfg.seed)
    train, val, normalizer = _make_datasets(eps, cfg, normalizer, horizon, main)
    overrides = {"latent_dim": cfg.latent_dim} if cfg.latent_dim else {}
    vae_cfg = VAEConfig.preset(cfg.preset, action_dim=eps.dim, horizon=horizon, **overrides)
    if prior is not None and prior.latent_dim != vae_cfg.latent_dim:
        raise ShapeMismatchError(f"stage-1 prior has Z={prior.latent_dim} but the stage-2 VAE has Z={vae_cfg.latent_dim}; "
                                 "source and target VAEs must share the latent size")
    vae = ActionVAE(vae_cfg).to(device)
    opt = adamw(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g_noise = torch.Generator().manual_seed(cfg.seed + 1)
    step, best = 0, math.inf
    steps_per_epoch = max(len(train) // cfg.batch_size, 1)
    meta = {"stage": stage, "source_checkpoint": source_ckpt, "data": str(eps.source),
            "normalizer": normalizer.to_dict(), "chunk": {"horizon": horizon, "pad": cfg.pad},
            "align_config": cfg.to_dict(), "vae_config": vae_cfg.to_dict(), **(run_info or {})}
    space = ActionSpace(robot=_robot_of(eps), action_dim=vae_cfg.action_dim, horizon=horizon, pad=cfg.pad,
                        normalizer=normalizer)

    last = out_dir / "last"
    if (last / "training_state" / "state.json").is_file():
        saved = read_json(last / "config.json")
        if saved.get("stage") != stage:
            raise CheckpointError(f"{last} is a stage-{saved.get('stage')} checkpoint, this is stage {stage}; "
                                  "use a new --out directory")
        old_cfg, new_cfg = _resume_key(saved.get("align_config", {})), _resume_key(cfg.to_dict())
        changed = [f"--{k.replace('_', '-')} {old_cfg.get(k)!r} (checkpoint) vs {new_cfg.get(k)!r} (now)"
                   for k in sorted(old_cfg.keys() | new_cfg.keys()) if old_cfg.get(k) != new_cfg.get(k)]
        if changed:
            raise CheckpointError(f"{last} was written with a different configuration: {'; '.join(changed)}; "
                                  "use a new --out directory or the same options to resume")
        # other data (other D, other statistics) would otherwise fail deep in load_state_dict or, worse,
        # silently continue on different data
        old_vae, new_vae = saved.get("vae_config") or {}, vae_cfg.to_dict()
        what = [f"{k} {old_vae.get(k)!r} (checkpoint) vs {new_vae.get(k)!r} (now)"
                for k in sorted(old_vae.keys() | new_vae.keys()) if old_vae.get(k) != new_vae.get(k)]
        if saved.get("normalizer") != json.loads(json.dumps(meta["normalizer"])):
            what.append("normalisation stats differ")
        if what:
            raise CheckpointError(f"{last} was trained on different data than {eps.source} ({'; '.join(what)}); "
                                  "use a new --out directory or the same data to resume")
        vae.load_state_dict(load_tensors(last / "model.safetensors"))  # copies onto the device
        state = load_training_state(last / "training_state", opt, {"noise": g_noise})
        step, best = state["step"], state["best"]
        old_steps = saved.get("align_config", {}).get("steps")
        if main and cfg.lr_schedule == "cosine" and not cfg.lr_decay_steps and old_steps not in (None, cfg.steps):
            logger.warning("resuming with --steps %d (was %d): the cosine LR now decays over %d steps, so the rest "
                           "of the run follows another schedule; pass --lr-decay-steps %d to keep the old one",
                           cfg.steps, old_steps, cfg.steps, old_steps)
        if main:
            logger.info("resumed from %s at step %d of %d", last, step, cfg.steps)
    if main:  # on resume too: run.json holds the options of the latest start (e.g. a longer --steps)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "run.json", {**meta, "train_chunks": len(train), "val_chunks": len(val) if val else 0,
                                                 "num_episodes": eps.num_episodes, "world_size": world})
    # DDP over the processes (else the module itself); with bf16 its forward autocasts, the outputs float32
    model = acc.prepare(vae)
    metrics = MetricsLog(out_dir, step, main, cfg.log_to, cfg.wandb_project, cfg.to_dict(), accelerator=acc)

    def lr_at(s: int) -> float:
        if cfg.lr_schedule == "epoch_decay":
            return max(cfg.lr * cfg.lr_decay ** (s // steps_per_epoch), cfg.min_lr)
        horizon = cfg.lr_decay_steps or cfg.steps
        return cfg.lr * cosine_lr_factor(s, horizon, cfg.warmup_steps, floor=min(cfg.min_lr / cfg.lr, 1.0))

    def save(kind: str, with_state: bool) -> None:
        save_vae_checkpoint(out_dir / kind, vae, meta, prior=None, training=(opt, {"noise": g_noise},
                            {"step": step, "best": best}) if with_state else None, action_space=space)

    bar = None
    if main and cfg.progress and sys.stderr.isatty():  # redrawn bars would flood a log file: log lines there
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=f"align stage {stage}", unit="step", dynamic_ncols=True,
                   mininterval=1.0)
    vae.train()
    t_log, n_log = time.perf_counter(), 0
    while step < cfg.steps:
        epoch, pos = divmod(step, steps_per_epoch)
        # global batch indices: a permutation per epoch, a function of (seed, epoch) only
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        # consecutive slices of the permutation, wrapping around; with fewer windows than a batch (a few
        # demos) the permutation repeats, i.e. windows recur within the batch with their own noise
        start = (pos * cfg.batch_size) % len(train)
        glob = perm.repeat(cfg.batch_size // len(train) + 2)[start:start + cfg.batch_size]
        mine = glob[rank * local_bs:(rank + 1) * local_bs]
        b = _batch(train, mine, device)
        noise = torch.randn(cfg.batch_size, vae_cfg.latent_dim, generator=g_noise)[rank * local_bs:(rank + 1) * local_bs]
        noise = noise.to(device)
        targets = _mmd_targets(cfg.batch_size, vae_cfg.latent_dim, cfg, prior, g_noise).to(device)
        # drawn for the global batch from g_noise (saved with the checkpoint), this rank keeps its columns
        kl_draws = _kl_draws(cfg.batch_size, cfg, prior, g_noise)
        kl_draws = None if kl_draws is None else kl_draws[:, rank * local_bs:(rank + 1) * local_bs]
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss, terms = _loss_terms(model, b["action"], b.get("is_pad"), cfg, prior, noise, targets, world,
                                  kl_draws=kl_draws, rec_share=_rec_share(acc, b.get("is_pad")), autocast=False)
        if not torch.isfinite(loss):
            raise DataError(f"non-finite loss at step {step} (terms {terms}); check the data for outliers")
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        if cfg.grad_clip:
            acc.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        n_log += cfg.batch_size
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", recon=f"{terms['recon']:.4f}", refresh=False)
        row = None
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.perf_counter() - t_log
            row = {"step": step, "epoch": epoch, "loss": loss.item(), **terms, "lr": lr_at(step - 1),
                   "samples_per_s": n_log / max(dt, 1e-9)}
            t_log, n_log = time.perf_counter(), 0
        if val is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            v = _validate(vae, val, cfg, prior, device)
            row = {**(row or {"step": step, "epoch": epoch}), **v}
            if v["val_loss"] < best:
                best = v["val_loss"]
                if main:
                    save("best", with_state=False)
        if row is not None:
            metrics.log(row)
            if main and bar is None:
                logger.info("align stage %d step %d/%d %s", stage, step, cfg.steps, _log_line(row))
        if main and (step % cfg.save_every == 0 or step == cfg.steps):
            save("last", with_state=True)
        acc.wait_for_everyone()
    if bar is not None:
        bar.close()
    metrics.close()
    return main


def _finish(out_dir: Path, stage: int, prior: PriorSummary | None, cfg: AlignConfig, fit_data=None,
            main: bool = True) -> Path:
    """Export ``model/``: best (else last) weights + prior; stage 1 fits the prior on the source chunks. Only
    the main process (`main`) writes; the others return the path."""
    from ate.align.checkpoint import load_aligned_vae

    if not main:
        return out_dir / "model"
    src = out_dir / ("best" if (out_dir / "best" / "model.safetensors").is_file() else "last")
    bundle = load_aligned_vae(src, require_prior=False)
    if stage == 1:
        prior = fit_prior(bundle.vae, fit_data, cfg.prior_mode, max_samples=cfg.prior_max_samples,
                          gmm_components=cfg.gmm_components, seed=cfg.seed, progress=cfg.progress)
    save_vae_checkpoint(out_dir / "model", bundle.vae, bundle.meta, prior=prior, action_space=bundle.action_space)
    return out_dir / "model"


@process_group_scope()  # its process group ends after the export, with every rank
def train_stage1(data, out_dir, config: AlignConfig | None = None, normalizer=None, run_info: dict | None = None) -> Path:
    """Train the pretraining VAE on source data (path or EpisodeSet); returns the exported model dir.
    `run_info`: extra keys for run.json and the checkpoints' config.json (the CLI records its options)."""
    cfg = config or AlignConfig()
    eps = _load_data(data, "source")
    main = _train(1, eps, out_dir, cfg, None, normalizer, cfg.horizon, None, run_info)
    from ate.data import ChunkDataset, Normalizer

    norm = Normalizer.from_dict(read_json(Path(out_dir) / "last" / "config.json")["normalizer"])
    return _finish(Path(out_dir), 1, None, cfg, ChunkDataset(eps, horizon=cfg.horizon, normalizer=norm, pad=cfg.pad),
                   main=main)


@process_group_scope()
def train_stage2(data, out_dir, source, config: AlignConfig | None = None, normalizer=None,
                 run_info: dict | None = None) -> Path:
    """Train the adaptation VAE on target data, aligned to the prior stored with the stage-1 ``source``
    model (a run dir or model dir). The target VAE may have its own D and H (``config.horizon``)."""
    from ate.align.checkpoint import load_aligned_vae

    cfg = config or AlignConfig()
    src = load_aligned_vae(source)
    eps = _load_data(data, "target")
    main = _train(2, eps, out_dir, cfg, src.prior, normalizer, cfg.horizon, str(Path(source).resolve()), run_info)
    return _finish(Path(out_dir), 2, src.prior, cfg, main=main)
