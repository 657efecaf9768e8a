"""What each config field means on the command line: a short description, its choices (taken from the
config modules, so the CLI and the configs accept the same values) and a range check.

`FIELDS[<config class name>][<field>]` is read by `ate.cli._tyro`; a field without an entry is a
KeyError when the parser is built, so a new config field cannot reach `--help` undocumented.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ate.align.train import ALIGN_CHOICES
from ate.align.vae import PRESETS as VAE_PRESETS
from ate.cli._options import number
from ate.data.chunks import PAD_MODES
from ate.training import DEVICES
from ate.steer.guidance import (  # the modes GuidanceConfig accepts
    _ENCODER_MODES,
    _LATENT_TARGETS,
    _REDUCTIONS,
    _SIGNS,
    _STRENGTHS,
)


class Field(NamedTuple):
    help: str
    type: Any = None
    choices: tuple | None = None
    may_be_empty: bool = False  # a list field whose empty list is meaningful (given as the bare option)


INT_GE0, INT_GE1 = number(int, lo=0), number(int, lo=1)
POS, NONNEG = number(float, lo=0, lo_open=True), number(float, lo=0)
FRACTION = number(float, lo=0, hi=1, hi_open=True)
FINITE_NONNEG = number(float, lo=0, finite=True)

PAD_HELP = ("episode ends: repeat = every frame starts a window, the last action repeats and is masked (LeRobot); "
            "drop = full windows only, episodes shorter than the chunk are skipped (reference trainer)")

# guidance (ate.steer.GuidanceConfig); defaults are the paper's, see README "Results"
GUIDANCE = {
    "scale": Field("λ, guidance weight: the guided prediction is pred ± λ·c(t)·g (paper best 2.0; 0 = plain loss)",
                   NONNEG),
    "clamp": Field("κ, element-wise bound on c(t)·g, the guidance step ('none' = no clamp; reference 0.1)",
                   number(float, lo=0, lo_open=True, none=True)),
    "sign": Field("reference = pred + λ·g, the paper's equation and code; flipped = pred − λ·g (the network "
                  "learns the guidance direction itself)", choices=tuple(_SIGNS)),
    "encoder_mode": Field("latent of a chunk: sample = μ + σ·ξ with one ξ shared by x_t and a0 (reference); "
                          "mean = μ only", choices=_ENCODER_MODES),
    "reduction": Field("reference = latent distance averaged over batch × Z as published (per-sample gradient "
                       "∝ 1/B: measured too weak to change actions at batch 64); per_sample = averaged over Z, "
                       "summed over the batch (batch-size independent)", choices=_REDUCTIONS),
    "t_cap": Field("cap on the noise level at which c(t) is evaluated (DDPM timestep index, or flow time in "
                   "[0, 1)); 'none' = no cap", number(float, lo=0, none=True)),
    # beyond the paper (defaults reproduce it)
    "noise_min": Field("guide only samples whose noise level (0 = clean .. 1 = pure noise, one scale for DDPM "
                       "and flow) is >= this", number(float, lo=0, hi=1)),
    "noise_max": Field("... and <= this (1 = every sample, as the paper)", number(float, lo=0, hi=1)),
    "strength": Field("absolute = λ multiplies g (paper); relative = each sample's g rescaled to the norm of the "
                      "policy's residual, so λ is the shift as a fraction of it (the same for every family and "
                      "batch size)", choices=_STRENGTHS),
    "latent_target": Field("clean = pull E(x_t) toward E(a0) (paper); source_mode = toward the nearest mode of "
                           "the stage-1 source prior (use --prior-mode gmm for several)", choices=_LATENT_TARGETS),
}
GUIDANCE_NOTE = ("Guidance defaults are the paper's (reduction reference, sign reference, λ 2.0, κ 0.1). No variant "
                 "has yet been shown to beat plain fine-tuning (--guidance off) significantly in our benchmarks "
                 "(README, Results): compare both arms on your task.")
BENCH_GUIDANCE_NOTE = ("Guidance: the smoke / quick presets use the paper's settings (reduction reference, sign "
                       "reference, λ 2.0, κ 0.1); the full presets use reduction per_sample, sign flipped, λ 0.3, picked "
                       "on validation seeds. Neither has been shown to beat plain fine-tuning (SFT) significantly "
                       "(README, Results). --print-config shows the resolved values.")

# the anchor to the frozen pretrained policy (ate.steer.PolicyAnchor), not latent guidance
ANCHOR_HELP = ("β: add β·MSE(pred, the frozen pretrained policy's pred on the same noisy chunk, time and observation) "
               "to the fine-tuning loss, a low-data regulariser that keeps the source policy's knowledge (composes "
               "with --guidance ate; 0 = off)")

ALIGN = {
    "horizon": Field("chunk length H in frames; use the policy's horizon / chunk_size", INT_GE1),
    "pad": Field(PAD_HELP, choices=ALIGN_CHOICES["pad"]),
    "normalization": Field("action normalisation fitted on the data: minmax = [-1, 1] per dim (DP); "
                           "meanstd = zero mean, unit std (pi0)", choices=ALIGN_CHOICES["normalization"]),
    "val_ratio": Field("share of episodes held out for validation: floor(episodes × val_ratio), so none below "
                       "1/val_ratio episodes (then model/ is the last checkpoint)", FRACTION),
    "val_max_chunks": Field("validate on a fixed, seeded subset of at most this many windows", INT_GE1),
    "preset": Field("VAE size: small (CPU-sized) or reference (the public trainer's 52 M params)",
                    choices=tuple(VAE_PRESETS)),
    "latent_dim": Field("latent size Z instead of the preset's; stage 1 and stage 2 must agree",
                        number(int, lo=1, none=True)),
    "recon": Field("reconstruction loss over unpadded steps: smooth_l1 (reference) or mse",
                   choices=ALIGN_CHOICES["recon"]),
    "w_kl": Field("weight of the KL term", NONNEG),
    "w_mmd": Field("weight of the MMD term", NONNEG),
    "mmd_distance": Field("MMD kernel distance: sum of squared latent differences (correct); mean = reference "
                          "quirk (kernel ≈ 1, MMD nearly inert)", choices=ALIGN_CHOICES["mmd_distance"]),
    "sigma2_z": Field("MMD kernel bandwidth σ²", POS),
    "kl_direction": Field("stage 2: paper = KL(q‖prior), reverse; reference = KL(prior‖q) (reference code)",
                          choices=ALIGN_CHOICES["kl_direction"]),
    "mmd_target": Field("stage 2: MMD against samples of the stage-1 prior, or of N(0, I) (reference quirk)",
                        choices=ALIGN_CHOICES["mmd_target"]),
    "prior_mode": Field("stage-1 latent summary: aggregate = moment-matched Gaussian; reference = mean σ on noised "
                        "inputs; gmm = Gaussian mixture", choices=ALIGN_CHOICES["prior_mode"]),
    "prior_max_samples": Field("at most this many source chunks are encoded to fit the prior", INT_GE1),
    "gmm_components": Field("mixture components for --prior-mode gmm", INT_GE1),
    "steps": Field("optimiser steps in total (a resumed run continues up to this)", INT_GE1),
    "batch_size": Field("chunks per step (>= 2: the MMD needs pairs); fewer windows than a batch repeat",
                        number(int, lo=2)),
    "lr": Field("AdamW learning rate", POS),
    "weight_decay": Field("AdamW weight decay", NONNEG),
    "lr_schedule": Field("cosine = per-step warm-up, then cosine to --min-lr at --lr-decay-steps; epoch_decay = "
                         "the reference's per-epoch staircase (--lr-decay)", choices=ALIGN_CHOICES["lr_schedule"]),
    "warmup_steps": Field("linear warm-up steps of the cosine schedule", INT_GE0),
    "lr_decay_steps": Field("cosine horizon ('none' = --steps; fix it to extend a run on resume)",
                            number(int, lo=1, none=True)),
    "device": Field("auto = CUDA when present, else CPU", choices=ALIGN_CHOICES["device"]),
    "lr_decay": Field("epoch_decay: learning-rate factor per epoch (staircase), floored at --min-lr",
                      number(float, lo=0, hi=1, lo_open=True)),
    "min_lr": Field("learning-rate floor", NONNEG),
    "grad_clip": Field("max gradient norm ('none' = no clipping)", number(float, lo=0, lo_open=True, none=True)),
    "bf16": Field("bf16 autocast for the forward pass (losses in fp32)"),
    "seed": Field("seeds weights, data order and noise (same seed, same run)", int),
    "log_every": Field("metrics line every this many steps (metrics.jsonl, and stderr without a bar)", INT_GE1),
    "eval_every": Field("validate every this many steps", INT_GE1),
    "save_every": Field("resumable checkpoint every this many steps", INT_GE1),
    "log_to": Field("also log to wandb or tensorboard (pip install 'align-then-steer[log]')",
                    choices=ALIGN_CHOICES["log_to"]),
    "wandb_project": Field("wandb project for --log-to wandb"),
    "progress": Field("progress bar on a terminal; without one (or with --no-progress) a log line every "
                      "--log-every steps"),
}

TRAIN = {
    "steps": Field("optimiser steps in total (a resumed run continues up to this)", INT_GE1),
    "epochs": Field("budget rule instead of --steps: ceil(epochs × windows / batch) steps, clamped to "
                    "[--min-steps, --max-steps] ('none' = use --steps)", number(float, lo=0, lo_open=True, none=True)),
    "min_steps": Field("lower clamp of the --epochs budget rule", INT_GE1),
    "max_steps": Field("upper clamp of the --epochs budget rule ('none' = no cap)", number(int, lo=1, none=True)),
    "device": Field("auto = CUDA when present, else CPU", choices=DEVICES),
    "batch_size": Field("global batch (split across processes); fewer windows than a batch are drawn with "
                        "replacement", INT_GE1),
    "lr": Field("AdamW peak learning rate", POS),
    "weight_decay": Field("AdamW weight decay (not on norms, biases, embeddings)", NONNEG),
    "warmup_steps": Field("linear warm-up steps, then cosine decay to 0 at --steps", INT_GE0),
    "grad_clip": Field("max global gradient norm (0 = no clipping)", NONNEG),
    "ema_decay": Field("max EMA decay of the saved weights (warm-up (1+n)/(10+n))", number(float, lo=0, hi=1)),
    "mixed_precision": Field("no = float32; bf16 = autocast (weights, optimiser and guidance stay float32)",
                             choices=("no", "bf16")),
    "seed": Field("seeds the data / noise / guidance generators and the initial weights", int),
    "pad": Field(PAD_HELP, choices=PAD_MODES),
    "save_every": Field("checkpoint every this many steps (0 = only at the end)", INT_GE0),
    "log_every": Field("metrics line every this many steps (metrics.jsonl, and stderr without a bar)", INT_GE1),
    "progress": Field("progress bar on a terminal; without one (or with --no-progress) a log line every "
                      "--log-every steps"),
}


def _bench() -> dict[str, Field]:
    from ate.bench.pipeline import ARMS
    from ate.bench.sims import SUITES

    same = {k: ALIGN[k] for k in ("latent_dim", "w_kl", "w_mmd", "mmd_distance", "kl_direction", "mmd_target",
                                  "prior_mode")}
    return {
        **same, **GUIDANCE,
        "suite": Field("simulator suite", choices=tuple(SUITES)),
        "preset": Field("named budget"),
        "out_dir": Field("run directory (default runs/bench/<suite>-<preset>)"),
        "demo_dir": Field("demo cache shared between runs (default <out-dir>/../demos); 'none' = default",
                          number(str, none=True)),
        "source_robots": Field("pretraining robots (every robot × task)"),
        "source_tasks": Field("pretraining tasks"),
        "target_robot": Field("adaptation robot (fine-tuning and evaluation)"),
        "target_tasks": Field("adaptation tasks"),
        "n_source_demos": Field("successful expert demos per source (robot, task)", INT_GE1),
        "n_target_demos": Field("target demos per task; several values sweep success vs demos", INT_GE1),
        "demo_seed": Field("first expert seed tried (demos are the first n successes from there)", int),
        "policy": Field("policy family", choices=("dp", "rdt", "pi0")),
        "policy_config": Field("policy config overrides (horizon, widths, ...)"),
        "pretrain_steps": Field("pretraining steps", INT_GE1),
        "finetune_steps": Field("fine-tuning steps per arm", INT_GE1),
        "batch_size": Field("policy training batch", INT_GE1),
        "pretrain_lr": Field("pretraining learning rate", POS),
        "finetune_lr": Field("fine-tuning learning rate", POS),
        "finetune_epochs": Field("budget rule: every arm trains ceil(epochs × windows / batch) steps clamped to "
                                 "[--finetune-min-steps, --finetune-max-steps] ('none' = --finetune-steps)",
                                 number(float, lo=0, lo_open=True, none=True)),
        "finetune_min_steps": Field("lower clamp of the budget rule", INT_GE1),
        "finetune_max_steps": Field("upper clamp of the budget rule ('none' = no cap)", number(int, lo=1, none=True)),
        "anchor_weight": Field("β of the anchor arm: SFT's loss + β·MSE(pred, the frozen pretrained policy's pred "
                               "on the same noisy chunk, time and observation); no latent guidance", FINITE_NONNEG),
        "lora_rank": Field("rank of the lora arm's adapters", INT_GE1),
        "lora_lr": Field("learning rate of the lora arm ('none' = --finetune-lr)", number(float, lo=0, lo_open=True, none=True)),
        "seeds": Field("fine-tuning seeds (each trains every arm once)", int),
        "pretrain_seed": Field("seed of the one pretrained checkpoint all arms start from", int),
        "arms": Field("sft = plain fine-tuning; ate = with the configured latent guidance; ate_paper = with the "
                      "paper's guidance exactly; ate_unaligned = configured guidance, target-only VAE (no KL / MMD); "
                      "lora = peft LoRA fine-tuning; anchor = SFT + β·MSE to the frozen pretrained policy's prediction "
                      "(--anchor-weight); scratch = target demos only", choices=ARMS),
        "headline_demos": Field("the headline number of target demos per task ('none' = the first of "
                                "--n-target-demos)", number(int, lo=1, none=True)),
        "headline_arms": Field("extra arms trained and evaluated only at the headline number of demos (the bare "
                               "option = none)", choices=ARMS, may_be_empty=True),
        "headline_eval_episodes": Field("evaluation episodes per (arm, seed, task) at the headline number of demos "
                                        "('none' = --eval-episodes)", number(int, lo=1, none=True)),
        "eval_episodes": Field("evaluation episodes per (arm, seed, task, checkpoint)", INT_GE1),
        "eval_seed_start": Field("first evaluation seed (the same seeds for every arm)", int),
        "eval_every": Field("also evaluate fine-tuning checkpoints every this many steps (0 = final only)", INT_GE0),
        "action_steps": Field("actions executed per predicted chunk", INT_GE1),
        "max_steps": Field("episode step budget ('none' = the suite's default)", number(int, lo=1, none=True)),
        "source_eval_episodes": Field("episodes per source (robot, task) for the pretrained policy (0 = skip)",
                                      INT_GE0),
        "workers": Field("processes for demo generation and evaluation", INT_GE1),
        "torch_threads": Field("intra-op threads of the training process ('none' = torch's default; 1 is "
                               "robust on a shared CPU)", number(int, lo=1, none=True)),
        "vae_preset": Field("VAE size", choices=tuple(VAE_PRESETS)),
        "stage1_steps": Field("stage-1 VAE steps", INT_GE1),
        "stage2_steps": Field("stage-2 VAE steps", INT_GE1),
        "vae_batch_size": Field("VAE batch (>= 2: the MMD needs pairs)", number(int, lo=2)),
        "vae_lr": Field("VAE learning rate", POS),
        "progress": Field("progress bars on a terminal (stage lines are always printed)"),
    }


class _Fields(dict):
    """FIELDS with the bench table built on first use (it imports the simulator registry)."""

    def __missing__(self, key):
        if key != "BenchConfig":
            raise KeyError(key)
        self[key] = _bench()
        return self[key]


FIELDS = _Fields(AlignConfig=ALIGN, TrainConfig=TRAIN)
