"""Pretraining and fine-tuning of the reference policies, with ATE as one switch (`guidance="ate"`).

    from ate.policies.train import pretrain, finetune
    pretrain(["demos/panda", "demos/iiwa"], "runs/pre", policy="dp", steps=2000)
    finetune("demos/ur5e", "runs/sft", init="runs/pre", guidance="off", steps=500)
    finetune("demos/ur5e", "runs/ate", init="runs/pre", guidance="ate", vae="runs/vae_adapt", scale=2.0, steps=500)
    finetune("demos/ur5e", "runs/anchor", init="runs/pre", anchor_weight=1.0, steps=500)  # ate.steer.PolicyAnchor

Both arms of a fine-tuning comparison are identical for a given seed except for the guidance term:
the batch indices come from one generator ("data"), the policy's noise and times from another ("noise"),
and the guidance's ξ from a third ("guidance"), so switching ATE on changes no other random draw. The anchor to the
frozen pretrained policy (`anchor_weight`) draws nothing: its reference sees the very noise the policy sees.

Devices: `device="auto"` trains on CUDA when present (else CPU); "cpu" / "cuda" force one. Data, noise and
the guidance's ξ are drawn on the CPU from seeded generators and moved, so a run's random draws do not
depend on the device.

Multi-process (accelerate / torchrun; gloo on CPU, nccl on GPUs): `batch_size` is the *global* batch; every
rank draws the same global indices, noise and guidance ξ and takes its slice; the guidance's batch mean and
the loss's mean over valid elements are taken over the global batch. N processes therefore follow the
single-process run up to float summation order, with or without guidance, anchor and padding.

Run directory:
    train_config.json (the run's options, data and resolved budget; rewritten at every (re)start, and read back by
    `ate policy pretrain|finetune --config`), metrics.jsonl (one line per log step, incl. guidance diagnostics),
    pretrained_model/ (EMA weights: config.json, model.safetensors, normalizer.json, action_space.json),
    checkpoints/<step:06d>/{pretrained_model/, training_state/} and checkpoints/last -> <step:06d>
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ate.errors import CheckpointError, ConfigError, ShapeMismatchError
from ate.training import process_group_scope

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Args:
        steps: optimiser steps. batch_size: global batch (divided across processes).
        epochs: when set, the budget rule replaces `steps`: ceil(epochs · windows / batch_size) optimiser
            steps, clamped to [min_steps, max_steps], so more data gets proportionally more updates and every
            arm of a comparison follows the same rule. The resolved count is logged and written to
            train_config.json (`resolved_steps`).
        lr, weight_decay: AdamW. warmup_steps: linear warm-up, then cosine decay to 0 at `steps`.
        grad_clip: max global grad norm (0 disables). ema_decay: max EMA decay, warm-up (1+n)/(10+n).
        mixed_precision: "no" or "bf16" (autocast on the active device; weights, optimiser and guidance stay
            float32).
        device: "auto" (CUDA when available), "cpu" or "cuda".
        seed: seeds the data / noise / guidance generators and the initial weights.
        pad: chunk padding at episode ends ("repeat" or "drop").
        save_every: checkpoint period in steps (0: only at the end). log_every: metrics period.
        progress: tqdm bar on rank 0.
    """

    steps: int = 2000
    epochs: float | None = None
    min_steps: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    mixed_precision: str = "no"
    device: str = "auto"
    seed: int = 0
    pad: str = "repeat"
    save_every: int = 0
    log_every: int = 20
    progress: bool = True

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"TrainConfig.steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"TrainConfig.epochs must be > 0 (or None to use steps), got {self.epochs}")
        if self.min_steps < 1 or (self.max_steps is not None and self.max_steps < self.min_steps):
            raise ConfigError(f"TrainConfig needs 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ConfigError(f"TrainConfig.mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        from ate.training import resolve_device

        resolve_device(self.device)  # validates the name and that a requested GPU exists

    def resolve_steps(self, num_windows: int) -> "TrainConfig":
        """This config with `steps` set by the budget rule for a dataset of `num_windows` windows (a no-op
        without `epochs`)."""
        if self.epochs is None:
            return self
        n = math.ceil(self.epochs * num_windows / self.batch_size)
        n = max(self.min_steps, n if self.max_steps is None else min(n, self.max_steps))
        return dataclasses.replace(self, steps=n)


class EMA:
    """Exponential moving average of a module's floating-point tensors (params and buffers)."""

    def __init__(self, model: torch.nn.Module, max_decay: float):
        self.max_decay = max_decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.max_decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        sd = model.state_dict()
        for k, v in self.shadow.items():
            sd[k].copy_(v)


# ---------------------------------------------------------------------------- VAE check


def check_vae(policy, robot: str, bundle, source: str = "VAE", pad: str | None = None) -> None:
    """Refuse a VAE that does not see exactly the policy's action space for `robot`.

    Compares the VAE's `ate.data.ActionSpace` (its action_space.json, or the one its config implies) with the
    policy's (`Policy.action_space`): robot, action dims, chunk length and normalisation stats; raises a
    one-line ActionSpaceMismatchError (a ShapeMismatchError) naming the first that differs. A VAE trained
    with another pad rule than `pad` (the fine-tuning run's) is only warned about."""
    from ate.align.checkpoint import action_space_of
    from ate.data.action_space import compare

    expected, found = policy.action_space(robot, pad=pad), action_space_of(bundle)
    compare(expected, found, what=str(source), expected_name=f"policy, robot {robot!r}", found_name="VAE",
            ignore=("pad",), hint={"normalizer": "fine-tune both arms with normalizer=<VAE dir> or train the VAE "
                                                 "with the policy's stats"})
    if pad is not None and found.pad is not None and found.pad != pad:
        logger.warning("%s: the VAE was trained on chunks padded with pad=%r, the policy fine-tunes with pad=%r",
                       source, found.pad, pad)


# ---------------------------------------------------------------------------- loop


def _export(policy):
    """The policy as it is saved for use: LoRA adapters (if any) merged into plain layers."""
    from ate.policies.lora import merge_lora

    return merge_lora(policy) if any("lora_" in n for n, _ in policy.named_parameters()) else copy.deepcopy(policy)


def _save_checkpoint(out: Path, step: int, policy, ema: EMA, optimizer, gens: dict, extra: dict,
                     pad: str | None = None) -> None:
    from ate.checkpoint import atomic_directory, save_tensors, save_training_state

    ckpts = out / "checkpoints"
    name = f"{step:06d}"
    with atomic_directory(ckpts / name) as tmp:
        ema_policy = copy.deepcopy(policy)
        ema.copy_to(ema_policy)
        _export(ema_policy).save_pretrained(tmp / "pretrained_model", pad=pad)
        state = {"step": step, **extra}  # the LR is a function of the step: no scheduler state
        save_training_state(tmp / "training_state", optimizer, gens, state)
        save_tensors(tmp / "training_state" / "model.safetensors", policy.state_dict())
        save_tensors(tmp / "training_state" / "ema.safetensors", ema.shadow)
    link = ckpts / f".last.{os.getpid()}"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(name, link)
    os.replace(link, ckpts / "last")  # atomic switch of the pointer


def _load_checkpoint(ck: Path, policy, ema: EMA, optimizer, gens: dict) -> dict:
    from ate.checkpoint import load_tensors, load_training_state

    raw = load_tensors(ck / "training_state" / "model.safetensors")
    missing, unexpected = policy.load_state_dict(raw, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{ck}: model state does not fit (missing {missing}, unexpected {unexpected})")
    device = next(policy.parameters()).device
    ema.shadow = {k: v.to(device) for k, v in load_tensors(ck / "training_state" / "ema.safetensors").items()}
    return load_training_state(ck / "training_state", optimizer, gens)


def _to(x: torch.Tensor, device, dtype: torch.dtype) -> torch.Tensor:
    return x.to(device, dtype) if x.is_floating_point() else x.to(device)


def _valid_elements(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Number of elements the masked loss averages over: valid action dims × unpadded steps."""
    per_sample_dims = (batch["action_mask"] != 0).sum(-1)  # (B,)
    return ((~batch["is_pad"]).sum(-1) * per_sample_dims).sum().to(torch.float64)


# options that may change when a run is resumed: its length, logging and the device it runs on
_FREE_ON_RESUME = {"steps", "epochs", "min_steps", "max_steps", "progress", "log_every", "save_every", "device"}
# (the normalizer by its statistics, not by the file they were read from: another file of the same numbers
# resumes, e.g. a run started on a VAE's stats continued from the target's action_space.json)
_RUN_KEYS = ("mode", "init", "data", "state_key", "action_key", "guidance", "vae", "guidance_config",
             "normalizer_stats", "adapter", "lora", "anchor_weight")
# the value a run key had in runs written before the key existed (what those runs trained with)
_RUN_KEY_BEFORE = {"anchor_weight": 0.0}


def _check_resume(out: Path, cfg: TrainConfig, run_info: dict) -> None:
    """Refuse to resume a run with other training options or data than it was started with, naming each."""
    path = out / "train_config.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    now = json.loads(json.dumps({"train": dataclasses.asdict(cfg), **run_info}))  # the form saved
    diffs = [(k, saved.get("train", {}).get(k), v) for k, v in now["train"].items()
             if k not in _FREE_ON_RESUME and saved.get("train", {}).get(k) != v]
    for k in _RUN_KEYS:
        old = saved.get(k, _RUN_KEY_BEFORE.get(k))
        if (k in saved or (k in now and k in _RUN_KEY_BEFORE)) and old != now.get(k):
            diffs.append((k, old, now.get(k)))
    # statistics are long lists: name the files they came from instead
    diffs = [("normalizer", f"{saved.get('normalizer')}: other statistics", now.get("normalizer"))
             if k == "normalizer_stats" else (k, old, new) for k, old, new in diffs]
    if diffs:
        what = "; ".join(f"--{k.replace('_', '-')} {old!r} (checkpoint) vs {new!r} (now)" for k, old, new in diffs)
        raise ConfigError(f"{out}: cannot resume with other options than the run was started with: {what}; use the "
                          "same options, or a new --out")


@process_group_scope()  # its process group ends after the export, with every rank
def train_loop(policy, dataset, out_dir: str | Path, cfg: TrainConfig, guidance=None, run_info: dict | None = None,
               resume: bool = False, anchor=None):
    """Train `policy` on `dataset` (a PolicyDataset) and write the run directory. Returns the unwrapped policy
    holding the EMA weights (the ones saved in `out_dir/pretrained_model`).

    guidance: an `ate.steer.LatentGuidance` or None. anchor: an `ate.steer.PolicyAnchor` (its frozen reference
    moves to the training device and the weights' dtype; it is never optimised, saved or averaged) or None."""
    from tqdm.auto import tqdm

    from ate.checkpoint import write_json_atomic
    from ate.steer import BatchShard
    from ate.training import MetricsLog, adamw, cosine_lr_factor, make_accelerator, rank_share

    if cfg.epochs is not None:
        cfg = cfg.resolve_steps(len(dataset))
        logger.info("budget rule: %g epochs of %d windows at batch %d -> %d steps (clamped to [%d, %s])", cfg.epochs,
                    len(dataset), cfg.batch_size, cfg.steps, cfg.min_steps, cfg.max_steps)
    out = Path(out_dir)
    # precision stays the explicit autocast below: accelerate's bf16 would patch the policy's forward in place
    # (the returned policy would keep autocasting) and cast its outputs to float32 before the rank weighting
    acc = make_accelerator(cfg.device, "no")
    world, rank = acc.num_processes, acc.process_index
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size={cfg.batch_size} is not divisible by the {world} processes")
    local = slice(rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)
    shard = BatchShard(cfg.batch_size, local.start)
    # weights on the device before the optimiser, the EMA copy and a resumed optimiser state are built from
    # them, so all of those live there too (accelerate's prepare moves only the model)
    policy.to(acc.device)
    if guidance is not None:
        guidance.encoder.to(acc.device)
    if anchor is not None:
        anchor.to(acc.device, next(policy.parameters()).dtype)

    gens = {name: torch.Generator().manual_seed(cfg.seed + i) for i, name in enumerate(("data", "noise", "guidance"))}
    decay, no_decay = [], []
    for n, p in policy.named_parameters():
        if p.requires_grad:  # LoRA fine-tuning trains the adapters (and embedding tables) only
            (no_decay if p.ndim < 2 or "embedding" in n or n.endswith(".pos") else decay).append(p)
    optimizer = adamw([{"params": decay, "weight_decay": cfg.weight_decay},
                       {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.95, 0.999))
    ema = EMA(policy, cfg.ema_decay)
    start = 0
    last = out / "checkpoints" / "last"
    if resume and last.exists():
        _check_resume(out, cfg, run_info or {})
        start = _load_checkpoint(last.resolve(), policy, ema, optimizer, gens)["step"]
        if acc.is_main_process:
            logger.info("resumed from %s at step %d of %d", last.resolve(), start, cfg.steps)
    if acc.is_main_process:  # on resume too: the file holds the options of the latest start (e.g. a longer --steps)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_config.json", {**(run_info or {}), "train": dataclasses.asdict(cfg),
                                                      "resolved_steps": cfg.steps, "num_windows": len(dataset),
                                                      "policy": policy.config.to_dict(), "world_size": world})
    metrics = MetricsLog(out, start, acc.is_main_process)  # rows after the checkpoint resumed from are dropped
    dtype = next(policy.parameters()).dtype  # data follow the weights (float64 in the exactness tests)
    model = acc.prepare(policy)
    ema_device_sync = acc.unwrap_model(model)
    autocast = torch.autocast(device_type=acc.device.type, dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16")
    if acc.is_main_process and len(dataset) < cfg.batch_size:
        logger.info("%d training windows < batch_size %d: batches repeat windows (indices are drawn with "
                    "replacement)", len(dataset), cfg.batch_size)
    # a bar only on a terminal (redraws would flood a log file); otherwise one log line per log_every steps
    use_bar = cfg.progress and acc.is_main_process and sys.stderr.isatty()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not use_bar,
               desc=f"train {policy.config.type}", dynamic_ncols=True, mininterval=1.0)
    model.train()
    acc_diag: dict[str, float] = {}
    n_acc, t_log = 0, time.perf_counter()
    for step in bar:
        idx = torch.randint(len(dataset), (cfg.batch_size,), generator=gens["data"])
        noise = policy.draw_noise(cfg.batch_size, gens["noise"])
        batch = {k: _to(v, acc.device, dtype) for k, v in dataset.get_batch(idx[local]).items()}
        noise = {k: _to(v[local], acc.device, dtype) for k, v in noise.items()}
        with autocast:
            loss, diag = model(batch, guidance, guidance_generator=gens["guidance"], noise=noise, shard=shard,
                               anchor=anchor)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"non-finite loss at step {step}: {diag}")
        if world > 1:
            # each rank's loss is a mean over its own valid elements (the anchor term too: same masks); weigh it by
            # its share of the global count (times world, since DDP averages the gradients) so the update is that
            # of the global mean
            n_local = _valid_elements(batch)
            n_global = acc.reduce(n_local.clone(), reduction="sum")
            loss = loss * rank_share(n_local, n_global, world).to(loss.dtype)
        acc.backward(loss)
        lr = cfg.lr * cosine_lr_factor(step, cfg.steps, cfg.warmup_steps)  # warm-up, then cosine to 0 at `steps`
        for group in optimizer.param_groups:
            group["lr"] = lr
        grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else torch.tensor(0.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(ema_device_sync, step)
        diag["grad_norm"] = float(grad_norm)
        for k, v in diag.items():
            acc_diag[k] = acc_diag.get(k, 0.0) + v
        n_acc += 1
        done = step + 1
        if acc.is_main_process and (done % cfg.log_every == 0 or done == cfg.steps):
            now = time.perf_counter()
            rec = {"step": done, "lr": lr, "step_s": (now - t_log) / n_acc,
                   **{k: v / n_acc for k, v in acc_diag.items()}}
            metrics.log(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", refresh=False)
            if not use_bar:
                logger.info("train %s step %d/%d loss %.4f lr %.2e %.1f samples/s", policy.config.type, done,
                            cfg.steps, rec["loss"], rec["lr"], cfg.batch_size / max(rec["step_s"], 1e-9))
            acc_diag, n_acc, t_log = {}, 0, now
        if acc.is_main_process and ((cfg.save_every and done % cfg.save_every == 0) or done == cfg.steps):
            _save_checkpoint(out, done, ema_device_sync, ema, optimizer, gens, {"world_size": world}, pad=cfg.pad)
    acc.wait_for_everyone()
    final = copy.deepcopy(ema_device_sync)
    ema.copy_to(final)
    final = _export(final)
    if acc.is_main_process:
        final.save_pretrained(out / "pretrained_model", pad=cfg.pad)
    return final


# ---------------------------------------------------------------------------- entry points


def _train_config(**kw) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(kw) - names
    if unknown:
        raise TypeError(f"unknown training options {sorted(unknown)}; TrainConfig has {sorted(names)}")
    return TrainConfig(**kw)


def pretrain(data, out_dir: str | Path, policy: str = "dp", policy_config: dict[str, Any] | None = None,
             resume: bool = False, state_key: str = "observations/state", action_key: str = "action", **train_kw):
    """Train a fresh policy on source data (several datasets / robots allowed).

    Args:
        data: dataset path or list of paths (per-episode HDF5 dirs etc., see `ate.policies.data.load_sources`).
        out_dir: run directory (see module docstring); the model is `out_dir/pretrained_model`.
        policy: family "dp" | "rdt" | "pi0" (or "dp_unet" | "rdt_dit" | "pi0_flow").
        policy_config: config overrides, e.g. {"horizon": 16, "state_dim": 64}.
        resume: continue from `out_dir/checkpoints/last` when present.
        **train_kw: TrainConfig fields (steps, batch_size, lr, seed, mixed_precision, ...).
    Returns:
        the trained policy (EMA weights).
    """
    from ate.policies import load_policy, make_policy
    from ate.policies.data import PolicyDataset, load_sources, prepare_policy

    cfg = _train_config(**train_kw)
    torch.manual_seed(cfg.seed)
    sources = load_sources(data, action_key=action_key, state_key=state_key)
    last = Path(out_dir) / "checkpoints" / "last"
    if resume and last.exists():
        model = load_policy(last.resolve() / "pretrained_model")
    else:
        model = make_policy(policy, **(policy_config or {}))
    prepare_policy(model, sources)
    ds = PolicyDataset(model, sources, pad=cfg.pad)
    info = {"mode": "pretrain", "data": [str(d) for d in ([data] if isinstance(data, (str, Path)) else data)],
            "state_key": state_key, "action_key": action_key, "policy_config": policy_config or {}, "out": str(out_dir)}
    return train_loop(model, ds, out_dir, cfg, run_info=info, resume=resume)


def finetune(data, out_dir: str | Path, init: str | Path, guidance: str = "off", vae: str | Path | Any = None,
             scale: float = 2.0, clamp: float | None = 0.1, sign: str = "reference", encoder_mode: str = "sample",
             reduction: str = "reference", t_cap: float | None = None, noise_min: float = 0.0,
             noise_max: float = 1.0, strength: str = "absolute", latent_target: str = "clean",
             normalizer: str | Path | None = None, adapter: str = "full", lora_rank: int = 8, lora_alpha: float | None = None,
             anchor_weight: float = 0.0, resume: bool = False, state_key: str = "observations/state",
             action_key: str = "action", **train_kw):
    """Fine-tune a pretrained policy on target data, plain (`guidance="off"`) or with ATE (`"ate"`), optionally
    anchored to the frozen pretrained policy (`anchor_weight`).

    Args:
        data: target dataset path(s); one robot (the robot the VAE encodes when guidance="ate").
        out_dir: run directory; the model is `out_dir/pretrained_model`.
        init: pretrained policy (model dir or pretrain run dir).
        guidance: "off" | "ate".
        vae: adaptation VAE dir (`ate align`) or an `AlignedVAE`-like object; required for "ate".
        scale, clamp, sign, encoder_mode, reduction, t_cap, noise_min, noise_max, strength, latent_target:
            `ate.steer.GuidanceConfig` (λ, κ, ...; the last four go beyond the paper, defaults reproduce it).
        normalizer: where the target robot's action stats come from (a VAE dir, policy dir or Normalizer
            JSON). Default: the pretrained stats for a known robot, else fitted on `data`. Pass the same
            value to both arms so they train in the same action space.
        adapter: "full" (every weight trains) or "lora" (peft LoRA adapters of rank `lora_rank`, scale
            `lora_alpha` / rank, default alpha 2·rank, on every Linear / Conv1d; merged into the saved model).
            Combines with either guidance.
        anchor_weight: β >= 0 of the anchor term (`ate.steer.PolicyAnchor`): β·masked MSE between the policy's
            training prediction and the frozen `init` policy's on the same x_t, t and observation is added to the
            loss (plain or guided), a low-data regulariser that keeps the source policy's knowledge. The reference
            is `init` as loaded (before any LoRA adapter; re-loaded from `init` on resume). 0 (default): no
            reference is built and the run is exactly the one without the option.
        resume: continue from `out_dir/checkpoints/last`.
        **train_kw: TrainConfig fields.
    Returns:
        the fine-tuned policy (EMA weights). Inference never needs the VAE (nor peft).
    """
    from ate.data.action_space import load_normalizer
    from ate.policies import load_policy
    from ate.policies.data import PolicyDataset, load_sources, prepare_policy

    if guidance not in ("off", "ate"):
        raise ValueError(f"guidance must be 'off' or 'ate', got {guidance!r}")
    if adapter not in ("full", "lora"):
        raise ValueError(f"adapter must be 'full' or 'lora', got {adapter!r}")
    from ate.steer import check_anchor_weight

    anchor_weight = check_anchor_weight(anchor_weight)
    cfg = _train_config(**train_kw)
    torch.manual_seed(cfg.seed)
    sources = load_sources(data, action_key=action_key, state_key=state_key)
    robots = list(dict.fromkeys(s.robot for s in sources))
    last = Path(out_dir) / "checkpoints" / "last"
    resuming = resume and last.exists()
    model = load_policy(last.resolve() / "pretrained_model" if resuming else init)
    norms = {r: load_normalizer(normalizer, r) for r in robots} if normalizer is not None else None
    prepare_policy(model, sources, action_normalizers=norms)
    model.config.default_robot = robots[0]
    guide, gcfg = None, None
    if guidance == "ate":
        from ate.steer import GuidanceConfig

        if vae is None:
            raise ValueError("guidance='ate' needs vae=<adaptation VAE dir>")
        if len(robots) != 1:
            raise ShapeMismatchError(f"ATE fine-tuning needs one target robot, the data holds {robots}")
        if isinstance(vae, (str, Path)):
            from ate.align import load_aligned_vae

            bundle, vae_src = load_aligned_vae(vae), str(vae)
        else:
            bundle, vae_src = vae, "VAE"
        check_vae(model, robots[0], bundle, vae_src, pad=cfg.pad)
        gcfg = GuidanceConfig(scale=scale, clamp=clamp, sign=sign, encoder_mode=encoder_mode, reduction=reduction,
                              t_cap=t_cap, noise_min=noise_min, noise_max=noise_max, strength=strength,
                              latent_target=latent_target)
        guide = model.make_guidance(bundle.vae, gcfg, robots[0], prior=getattr(bundle, "prior", None))
    ds = PolicyDataset(model, sources, pad=cfg.pad)
    anchor = None
    if anchor_weight > 0:  # the init weights, before LoRA; a resumed model holds trained weights: read init again
        from ate.steer import PolicyAnchor

        anchor = PolicyAnchor(load_policy(init) if resuming else copy.deepcopy(model), anchor_weight)
    lora = None
    if adapter == "lora":
        from ate.policies.lora import add_lora

        lora = add_lora(model, lora_rank, lora_alpha)
        logger.info("LoRA: rank %d, alpha %g on %d layers: %d of %d parameters train", lora["rank"], lora["alpha"],
                    lora["layers"], lora["trainable_params"], lora["total_params"])
    info = {"mode": "finetune", "init": str(init), "guidance": guidance, "adapter": adapter, "lora": lora,
            "anchor_weight": anchor_weight,
            "vae": str(vae) if vae is not None else None,
            "guidance_config": gcfg.to_dict() if gcfg else None, "normalizer": str(normalizer) if normalizer else None,
            "normalizer_stats": {r: n.to_dict() for r, n in norms.items()} if norms else None,
            "data": [str(d) for d in ([data] if isinstance(data, (str, Path)) else data)],
            "state_key": state_key, "action_key": action_key, "out": str(out_dir)}
    return train_loop(model, ds, out_dir, cfg, guidance=guide, run_info=info, resume=resume, anchor=anchor)
