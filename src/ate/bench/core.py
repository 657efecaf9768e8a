"""Core library figures (issue 2): VAE training throughput, guidance overhead, stage-1 peak memory.

Three measurements, each recorded with the machine load (``os.getloadavg``) because the benchmark may run
on a shared machine:

1. :func:`bench_vae_throughput` — samples/s of one stage-1 training step (forward + backward + AdamW step of
   the trainer's own Info-VAE loss, ``ate.align.train._loss_terms``) for a VAE preset, fp32 or bf16 autocast.
   Warm-up steps excluded, median over timed steps. bf16 accuracy: relative error of the first-step
   gradient vs fp32 and the loss difference after the same steps from the same init and data.
2. :func:`bench_guidance_overhead` — policy training-step time with ATE guidance / without, for a small
   Diffusion-Policy denoiser (``ate.policies.dp_unet.ConditionalUnet1D``, ε-prediction, ᾱ from the diffusers
   ``squaredcos_cap_v2`` DDPM schedule). Variants with and without guidance are timed *interleaved*
   (round-robin over repeats), so load changes hit all of them alike.
3. :func:`bench_stage1_memory` — peak RSS of ``train_stage1`` over a large npy-folder dataset, in a child
   process (``ru_maxrss`` of the child + psutil / ``/proc`` sampling of total, anonymous and file-backed RSS).

:func:`run_core_bench` runs all three and writes ``results.json``, ``report.md`` and ``figures.png``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

# --------------------------------------------------------------------------------------------------
# helpers


def machine_info() -> dict:
    """CPU model, core counts, memory, library versions (for the report header)."""
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        flags = fields.get("Flags", "")
    except OSError:
        flags = ""
    import psutil

    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _toy_chunks(n: int, horizon: int, dim: int, seed: int) -> torch.Tensor:
    """(n, H, D) float32 windows of smooth synthetic motions, roughly in [-1, 1] like normalised actions."""
    from ate.bench.synthetic import toy_episodes

    rng = np.random.default_rng(seed)
    eps = toy_episodes(max(4, n // 8), max(2 * horizon, 64), dim, seed=seed)
    out = np.empty((n, horizon, dim), np.float32)
    for i in range(n):
        e = eps[rng.integers(len(eps))]
        s = rng.integers(0, len(e) - horizon + 1)
        out[i] = e[s:s + horizon]
    return torch.from_numpy(out / max(1.0, float(np.abs(out).max())))


# --------------------------------------------------------------------------------------------------
# 1. VAE training throughput


def _vae_setup(preset: str, action_dim: int, horizon: int, seed: int):
    from ate.align import ActionVAE, VAEConfig

    torch.manual_seed(seed)
    vae = ActionVAE(VAEConfig.preset(preset, action_dim=action_dim, horizon=horizon))
    vae.train()
    return vae


def bench_vae_throughput(preset: str = "small", action_dim: int = 14, horizon: int = 16, batch_size: int = 64,
                         bf16: bool = False, warmup: int = 2, steps: int = 8, seed: int = 0,
                         init_state: dict | None = None, fused: bool = False, fast_paths: bool = True) -> dict:
    """Time stage-1 training steps of a fresh VAE on synthetic chunks.

    Each step = Info-VAE loss (trainer's ``_loss_terms``: SmoothL1 recon + w_kl·KL + w_mmd·MMD vs N(0, I)),
    backward, AdamW step (torch's default implementation, or with ``fused`` the trainer's
    :func:`ate.training.adamw`). ``fast_paths``: :meth:`ate.align.ActionVAE.set_fast_paths` (off: every layer
    through ``nn.MultiheadAttention``, as the public reference trainer computes it). The batches and
    reparameterisation noise are fixed per step index, so runs with the same ``init_state`` see identical inputs.

    Returns dict: samples_per_s (median), step_s (median), step_times, losses (per step, warm-up included),
    first_grad (flat fp32 gradient of step 0, popped by the caller), params, load_before/after.
    """
    from ate.align.train import AlignConfig, _loss_terms

    cfg = AlignConfig(horizon=horizon, batch_size=batch_size, preset=preset, bf16=bf16, progress=False)
    vae = _vae_setup(preset, action_dim, horizon, seed).set_fast_paths(fast_paths)
    if init_state is not None:
        vae.load_state_dict(init_state)
    if fused:
        from ate.training import adamw

        opt = adamw(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = warmup + steps
    data = _toy_chunks(batch_size * 4, horizon, action_dim, seed)  # 4 distinct batches, cycled
    g = torch.Generator().manual_seed(seed + 1)
    noises = [torch.randn(batch_size, vae.latent_dim, generator=g) for _ in range(total)]
    targets = [torch.randn(batch_size, vae.latent_dim, generator=g) for _ in range(total)]
    load_before = _load()
    times, losses, first_grad = [], [], None
    for i in range(total):
        a = data[(i % 4) * batch_size:(i % 4 + 1) * batch_size]
        t0 = time.perf_counter()
        loss, _ = _loss_terms(vae, a, None, cfg, None, noises[i], targets[i], 1, kl_draws=None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if i == 0:
            first_grad = torch.cat([p.grad.detach().flatten().float() for p in vae.parameters() if p.grad is not None])
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(float(loss.item()))
        if i >= warmup:
            times.append(dt)
    step_s = statistics.median(times)
    return {"preset": preset, "action_dim": action_dim, "horizon": horizon, "batch_size": batch_size,
            "dtype": "bf16-autocast" if bf16 else "fp32", "fast_paths": fast_paths, "params": vae.num_parameters(),
            "warmup": warmup,
            "optimizer": "AdamW, fused" if opt.param_groups[0].get("fused") else "AdamW, torch default",
            "timed_steps": steps, "step_s": step_s, "samples_per_s": batch_size / step_s,
            "step_times": [round(t, 5) for t in times], "losses": losses, "first_grad": first_grad,
            "load_before": load_before, "load_after": _load()}


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """This machine's matrix-multiply rate: n×n @ n×n in ``dtype``, median over ``repeats`` after one warm-up,
    in GFLOP/s (2n³ FLOP per product): the ceiling a matmul-bound training step can reach."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        torch.mm(a, b)
        if i:
            times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def vae_step_flops(preset: str, action_dim: int, horizon: int, batch_size: int, fast_paths: bool,
                   seed: int = 0) -> int:
    """Matrix-multiply FLOPs of one stage-1 training step (forward + backward; ``torch.utils.flop_counter`` counts
    mm / bmm / addmm / attention), on an untimed copy of the model."""
    from torch.utils.flop_counter import FlopCounterMode

    from ate.align.train import AlignConfig, _loss_terms

    cfg = AlignConfig(horizon=horizon, batch_size=batch_size, preset=preset, progress=False)
    vae = _vae_setup(preset, action_dim, horizon, seed).set_fast_paths(fast_paths)
    a = _toy_chunks(batch_size, horizon, action_dim, seed)
    g = torch.Generator().manual_seed(seed + 1)
    noise, target = (torch.randn(batch_size, vae.latent_dim, generator=g) for _ in range(2))
    with FlopCounterMode(display=False) as counter:
        loss, _ = _loss_terms(vae, a, None, cfg, None, noise, target, 1, kl_draws=None)
        loss.backward()
    return int(counter.get_total_flops())


def vae_throughput_pair(preset: str, action_dim: int, horizon: int, batch_size: int, warmup: int, steps: int,
                        seed: int = 0) -> dict:
    """The plain fp32 eager step (every layer through ``nn.MultiheadAttention``, torch's AdamW: the public
    reference trainer's step), that step under bf16 autocast, and the trainer's step (what ``ate align --bf16``
    runs: the VAE's fast paths, bf16 autocast, fused AdamW), from the same init and data, plus the bf16
    accuracy figures."""
    init = _vae_setup(preset, action_dim, horizon, seed).state_dict()
    runs = {}
    for name, bf16, fast in (("fp32", False, False), ("bf16", True, False), ("trainer", True, True)):
        runs[name] = bench_vae_throughput(preset, action_dim, horizon, batch_size, bf16, warmup, steps, seed,
                                          init_state=init, fused=fast, fast_paths=fast)
    runs["trainer"].pop("first_grad")  # the gradient is bf16's: the optimiser runs after it
    # float64: a 52 M-element fp32 dot product alone is off by ~1e-3 (cosine > 1)
    g32, g16 = runs["fp32"].pop("first_grad").double(), runs["bf16"].pop("first_grad").double()
    l32, l16 = runs["fp32"]["losses"], runs["bf16"]["losses"]
    accuracy = {
        "grad_rel_error_step0": float((g16 - g32).norm() / g32.norm().clamp_min(1e-30)),
        "grad_cosine_step0": float(torch.nn.functional.cosine_similarity(g16, g32, dim=0)),
        "loss_step0_fp32": l32[0], "loss_step0_bf16": l16[0],
        "loss_final_fp32": l32[-1], "loss_final_bf16": l16[-1],
        "loss_final_rel_diff": abs(l16[-1] - l32[-1]) / max(abs(l32[-1]), 1e-30),
        "steps_compared": len(l32),
    }
    # the roofline: a step is ~80 % matmul, so samples/s ≤ (bf16 matmul rate) / (matmul FLOPs per sample)
    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    flops = {fast: vae_step_flops(preset, action_dim, horizon, batch_size, fast, seed)  # fp32 and bf16 share one
             for fast in {run["fast_paths"] for run in runs.values()}}
    for run in runs.values():
        per_sample = flops[run["fast_paths"]] / batch_size
        run["matmul_gflop_per_sample"] = per_sample / 1e9
        run["matmul_gflops_achieved"] = per_sample * run["samples_per_s"] / 1e9
    roof = peak["bf16"] / runs["trainer"]["matmul_gflop_per_sample"]
    return {**runs, "bf16_speedup": runs["fp32"]["step_s"] / runs["bf16"]["step_s"],
            "trainer_speedup": runs["fp32"]["step_s"] / runs["trainer"]["step_s"], "bf16_accuracy": accuracy,
            "matmul_peak_gflops": peak, "trainer_roofline_samples_per_s": roof,
            "trainer_roofline_speedup": roof / runs["fp32"]["samples_per_s"]}


# --------------------------------------------------------------------------------------------------
# 2. guidance overhead


GUIDANCE_VARIANTS = {
    # name: (VAE overrides of the small preset, GuidanceConfig overrides, bf16 autocast of the encoder pass)
    "ate_sample": ({}, {}, False),  # the default method configuration
    "ate_mean": ({}, {"encoder_mode": "mean"}, False),
    "ate_sample_bf16": ({}, {}, True),
    "ate_small_vae_1layer": ({"num_layers": 1}, {}, False),
    "ate_small_vae_1layer_bf16": ({"num_layers": 1}, {}, True),
}


class _PolicyStep:
    """One ε-prediction DDPM training step of a DP-style 1-D conv UNet, optionally with ATE guidance.

    x_t = √ᾱ_t·a0 + √(1−ᾱ_t)·ε (diffusers DDPMScheduler, squaredcos_cap_v2, 100 steps); loss = MSE(ε̂, ε) or
    ``LatentGuidance.guided_loss``; backward; AdamW step.
    """

    def __init__(self, unet, guide, bf16_guidance: bool, batch: dict, scheduler, seed: int):
        self.unet, self.guide, self.bf16 = unet, guide, bf16_guidance
        self.batch, self.scheduler = batch, scheduler
        self.opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=1e-6)
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self) -> float:
        a0, cond = self.batch["action"], self.batch["cond"]
        t0 = time.perf_counter()
        eps = torch.randn(a0.shape, generator=self.gen)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (a0.shape[0],), generator=self.gen)
        x_t = self.scheduler.add_noise(a0, eps, t)
        pred = self.unet(x_t, t, cond)
        if self.guide is None:
            loss = torch.nn.functional.mse_loss(pred, eps)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                loss, _ = self.guide.guided_loss(pred, eps, x_t, a0, t, generator=self.gen)
            loss = loss.float()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0


def bench_guidance_overhead(batch_size: int = 256, horizon: int = 16, action_dim: int = 7, cond_dim: int = 20,
                            down_dims: tuple[int, ...] = (48, 96), variants: list[str] | None = None,
                            warmup: int = 2, repeats: int = 8, seed: int = 0) -> dict:
    """Interleaved timing of the plain policy step and each guided variant; ratio = median_guided / median_plain.

    The plain step is timed between every variant (round-robin: plain, v1, plain, v2, ...) so each ratio
    compares steps taken under the same load. The VAEs are freshly initialised (training them does not
    change the cost). Returns dict with per-variant medians, ratios and the load.
    """
    from diffusers import DDPMScheduler

    from ate.align import ActionVAE, VAEConfig
    from ate.policies.dp_unet import ConditionalUnet1D
    from ate.steer import GuidanceConfig, LatentGuidance

    variants = list(GUIDANCE_VARIANTS) if variants is None else variants
    unknown = set(variants) - set(GUIDANCE_VARIANTS)
    if unknown:
        raise ValueError(f"unknown guidance variants {sorted(unknown)}; choose from {sorted(GUIDANCE_VARIANTS)}")
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon")
    batch = {"action": _toy_chunks(batch_size, horizon, action_dim, seed),
             "cond": torch.randn(batch_size, cond_dim, generator=torch.Generator().manual_seed(seed))}
    torch.manual_seed(seed)
    init = ConditionalUnet1D(action_dim, cond_dim, down_dims, 5, 8).state_dict()

    def make_unet():
        m = ConditionalUnet1D(action_dim, cond_dim, down_dims, 5, 8)
        m.load_state_dict(init)
        return m.train()

    steps, info = {"plain": _PolicyStep(make_unet(), None, False, batch, scheduler, seed)}, {}
    for name in variants:
        vae_over, g_over, bf16 = GUIDANCE_VARIANTS[name]
        vae = ActionVAE(VAEConfig.preset("small", action_dim=action_dim, horizon=horizon, **vae_over))
        guide = LatentGuidance(vae, "epsilon", GuidanceConfig(scale=2.0, clamp=0.1, **g_over),
                               alphas_cumprod=scheduler.alphas_cumprod)
        steps[name] = _PolicyStep(make_unet(), guide, bf16, batch, scheduler, seed)
        info[name] = {"vae_params": vae.num_parameters(), "vae_layers": vae.config.num_layers,
                      "vae_latent_dim": vae.latent_dim, "encoder_mode": guide.config.encoder_mode,
                      "bf16_encoder": bf16}
    load_before = _load()
    for fn in steps.values():  # warm-up (allocator, oneDNN kernels)
        for _ in range(warmup):
            fn()
    times = {k: [] for k in steps}
    pair_ratios = {k: [] for k in variants}
    for _ in range(repeats):
        for name in variants:  # plain right before each variant: paired under the same load
            tp = steps["plain"]()
            tg = steps[name]()
            times["plain"].append(tp)
            times[name].append(tg)
            pair_ratios[name].append(tg / tp)
    plain = statistics.median(times["plain"])
    results = {}
    for name in variants:
        med = statistics.median(times[name])
        results[name] = {**info[name], "step_s": med, "ratio": med / plain,
                         "ratio_median_of_pairs": statistics.median(pair_ratios[name]),
                         "step_times": [round(t, 5) for t in times[name]]}
    unet_params = sum(p.numel() for p in steps["plain"].unet.parameters())
    return {"denoiser": f"ConditionalUnet1D down_dims={list(down_dims)} (ate.policies.dp_unet), eps-prediction, "
                        "DDPM squaredcos_cap_v2 100 steps",
            "denoiser_params": unet_params, "batch_size": batch_size, "horizon": horizon, "action_dim": action_dim,
            "cond_dim": cond_dim, "warmup": warmup, "repeats": repeats, "plain_step_s": plain,
            "plain_step_times": [round(t, 5) for t in times["plain"]], "variants": results,
            "target_ratio": 1.10, "meets_target": sorted(n for n, r in results.items() if r["ratio"] <= 1.10),
            "load_before": load_before, "load_after": _load()}


def bench_dp_size() -> dict:
    """What the benchmark pipeline trains by default: ``ate.bench.pipeline.BenchConfig``'s policy family, policy
    config, batch size and VAE preset (its robosuite / MetaWorld quick, full and regime presets keep them)."""
    from ate.bench.pipeline import BenchConfig

    f = BenchConfig.__dataclass_fields__
    return {"policy": f["policy"].default, "policy_config": f["policy_config"].default_factory(),
            "batch_size": f["batch_size"].default, "vae_preset": f["vae_preset"].default}


def _bench_dp_guidance_variants() -> dict[str, dict]:
    from ate.bench import steer_choice
    from ate.bench.pipeline import PAPER_GUIDANCE

    # name: GuidanceConfig fields; the guidance of the pipeline's `ate_paper` arm and of its `ate` arm in the
    # regime preset for dp (the variant chosen on dp's validation seeds: this measures the dp family)
    return {"ate_paper": dict(PAPER_GUIDANCE), "ate_best": dict(steer_choice("dp")["options"])}


BENCH_DP_TARGET = 1.5  # issue 12, item 7b: guided / plain step at the bench's default DP size


def bench_guidance_bench_dp(variants: list[str] | None = None, warmup: int = 2, repeats: int = 8, seed: int = 0,
                            batch_size: int | None = None, robot_action_dim: int = 4, robot_state_dim: int = 39) -> dict:
    """Guidance overhead of the policy the benchmark pipeline trains by default (:func:`bench_dp_size`).

    One step = ``Policy.compute_loss`` (observation encoder, the DP UNet, masked MSE or the guided loss through
    ``LatentGuidance.guided_loss`` with the robot's ``action_index``), backward, grad-norm clip 1.0, AdamW: the
    step of ``ate.policies.train`` without data loading and EMA, on a synthetic batch of a robot shaped like
    MetaWorld's Sawyer (4 action, 39 state dims; the regime preset's suite) and a freshly initialised VAE of the
    bench's preset. Every arm has its own copy of the same initial policy; plain and guided steps alternate
    (plain, v1, plain, v2, ...). Returns per-variant medians, ratio of medians, median of pair ratios, the
    median minor page faults per step (``ru_minflt``) and the load.
    """
    import copy

    from ate.align import ActionVAE, VAEConfig
    from ate.data import Normalizer
    from ate.policies import make_policy
    from ate.steer import GuidanceConfig

    size = bench_dp_size()
    b = batch_size or size["batch_size"]
    all_variants = _bench_dp_guidance_variants()
    variants = list(all_variants) if variants is None else variants
    unknown = set(variants) - set(all_variants)
    if unknown:
        raise ValueError(f"unknown bench-DP guidance variants {sorted(unknown)}; choose from {sorted(all_variants)}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    policy = make_policy(size["policy"], **size["policy_config"])
    robot = "sawyer"
    policy.add_robot(robot, Normalizer.fit(rng.normal(size=(512, robot_action_dim))),
                     Normalizer.fit(rng.normal(size=(512, robot_state_dim))))
    policy.add_task("task")
    c = policy.config
    gen = torch.Generator().manual_seed(seed)
    mask = policy.action_mask(robot)
    state, smask = policy.pad_state(torch.randn(b, robot_state_dim, generator=gen), robot)
    batch = {"action": torch.randn(b, c.horizon, c.action_dim, generator=gen).clamp(-1, 1) * mask,
             "is_pad": torch.zeros(b, c.horizon, dtype=torch.bool), "action_mask": mask[None].expand(b, -1),
             "state": state, "state_mask": smask, "task": torch.zeros(b, dtype=torch.long)}
    vae = ActionVAE(VAEConfig.preset(size["vae_preset"], action_dim=robot_action_dim, horizon=c.horizon))

    def make_step(guide):
        pol = copy.deepcopy(policy).train()
        g = None if guide is None else pol.make_guidance(vae, GuidanceConfig(**guide), robot)
        opt = torch.optim.AdamW(pol.parameters(), lr=1e-4, weight_decay=1e-6)
        noise_gen, guide_gen = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 2)

        def step() -> tuple[float, int]:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            loss, _ = pol.compute_loss(batch, g, generator=noise_gen, guidance_generator=guide_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(pol.parameters(), 1.0)
            opt.step()
            return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0

        return step

    steps = {"plain": make_step(None), **{n: make_step(all_variants[n]) for n in variants}}
    load_before = _load()
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in steps}
    faults = {k: [] for k in steps}
    pair_ratios = {k: [] for k in variants}
    for _ in range(repeats):
        for name in variants:  # plain right before each variant: paired under the same load
            (tp, fp), (tg, fg) = steps["plain"](), steps[name]()
            times["plain"].append(tp)
            times[name].append(tg)
            faults["plain"].append(fp)
            faults[name].append(fg)
            pair_ratios[name].append(tg / tp)
    plain = statistics.median(times["plain"])
    results = {n: {"guidance": all_variants[n], "step_s": statistics.median(times[n]),
                   "ratio": statistics.median(times[n]) / plain,
                   "ratio_median_of_pairs": statistics.median(pair_ratios[n]),
                   "page_faults_per_step": statistics.median(faults[n]),
                   "step_times": [round(t, 5) for t in times[n]]} for n in variants}
    return {"policy": size["policy"], "policy_config": size["policy_config"], "policy_params": policy.param_count(),
            "down_dims": list(getattr(c, "down_dims", [])), "action_dim": c.action_dim, "cond_dim": c.cond_dim,
            "horizon": c.horizon, "batch_size": b, "robot_action_dim": robot_action_dim,
            "robot_state_dim": robot_state_dim, "vae_preset": size["vae_preset"], "vae_params": vae.num_parameters(),
            "warmup": warmup, "repeats": repeats, "plain_step_s": plain,
            "plain_step_times": [round(t, 5) for t in times["plain"]],
            "plain_page_faults_per_step": statistics.median(faults["plain"]), "variants": results,
            "target_ratio": BENCH_DP_TARGET,
            "meets_target": sorted(n for n, r in results.items()
                                   if max(r["ratio"], r["ratio_median_of_pairs"]) <= BENCH_DP_TARGET),
            "load_before": load_before, "load_after": _load()}


# Denoiser sizes of the sweep: ConditionalUnet1D down_dims -> ~params (action_dim 7, cond 20, kernel 5).
GUIDANCE_SWEEP_SIZES: tuple[tuple[int, ...], ...] = (
    (48, 96),          # ~0.64 M, the policies' default (section 2)
    (128, 256),        # ~3.9 M
    (256, 512),        # ~14.9 M
    (256, 512, 1024),  # ~62 M, Diffusion Policy's default down_dims
)


def bench_guidance_sweep(sizes=GUIDANCE_SWEEP_SIZES, batch_size: int = 256, horizon: int = 16, action_dim: int = 7,
                         cond_dim: int = 20, variant: str = "ate_sample", warmup: int = 2, repeats: int = 8,
                         seed: int = 0) -> dict:
    """Guidance overhead vs denoiser size: :func:`bench_guidance_overhead` with one variant per UNet size.

    Default variant = the default method configuration (λ=2, κ=0.1, ``encoder_mode="sample"``, small-preset
    adaptation VAE, fp32). Per size, plain and guided steps alternate (plain, guided, plain, guided, ...);
    both the ratio of medians and the median of the per-pair ratios are kept, with the load average before
    and after. Returns ``{"variant", "batch_size", ..., "points": [per-size dict], "meets_target": [...]}``.
    """
    points = []
    for dd in sizes:
        r = bench_guidance_overhead(batch_size, horizon, action_dim, cond_dim, tuple(dd), [variant], warmup, repeats,
                                    seed)
        v = r["variants"][variant]
        points.append({"down_dims": list(dd), "denoiser_params": r["denoiser_params"],
                       "plain_step_s": r["plain_step_s"], "guided_step_s": v["step_s"],
                       "ratio": v["ratio"], "ratio_median_of_pairs": v["ratio_median_of_pairs"],
                       "plain_step_times": r["plain_step_times"], "guided_step_times": v["step_times"],
                       "vae_params": v["vae_params"], "load_before": r["load_before"], "load_after": r["load_after"]})
    target = 1.10
    ok = [p["denoiser_params"] for p in points if p["ratio"] <= target and p["ratio_median_of_pairs"] <= target]
    return {"variant": variant, "guidance": "LatentGuidance.guided_loss, GuidanceConfig(scale=2.0, clamp=0.1), "
                                            f"encoder_mode={'mean' if variant == 'ate_mean' else 'sample'}",
            "vae": "small preset (ate.align.VAEConfig.preset('small'))", "batch_size": batch_size,
            "horizon": horizon, "action_dim": action_dim, "cond_dim": cond_dim, "warmup": warmup, "repeats": repeats,
            "target_ratio": target, "points": points, "meets_target_params": ok}


# --------------------------------------------------------------------------------------------------
# 3. stage-1 peak memory over a large dataset


def write_large_npy(folder: str | Path, episodes: int = 10_000, length: int = 1000, dim: int = 14,
                    seed: int = 0) -> Path:
    """Write ``episodes × length`` frames of (dim,) float32 as the npy-folder layout, block by block
    through a memmap (never the whole array in RAM). Smooth per-episode sinusoids + noise."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = episodes * length
    out = np.lib.format.open_memmap(folder / "actions.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, length, dtype=np.float32)[:, None]
    block = 100  # episodes per block: 100 × 1000 × 14 × 4 B = 5.6 MB
    for e0 in range(0, episodes, block):
        e1 = min(episodes, e0 + block)
        k = e1 - e0
        freq = rng.uniform(0.5, 2.0, (k, 1, dim)).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, (k, 1, dim)).astype(np.float32)
        amp = rng.uniform(0.2, 1.0, (k, 1, dim)).astype(np.float32)
        x = amp * np.sin(2 * np.pi * freq * t[None] + phase) + rng.normal(0, 0.01, (k, length, dim)).astype(np.float32)
        out[e0 * length:e1 * length] = x.reshape(-1, dim)
    out.flush()
    del out
    np.save(folder / "episode_ends.npy", np.arange(1, episodes + 1, dtype=np.int64) * length)
    return folder


def _proc_rss(pid: int) -> dict:
    """Current RSS split from /proc/<pid>/status, in bytes (Linux)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = int(line.split()[1]) * 1024
    return out


def _stage1_child(data: str, out: str, steps: int, batch_size: int, prior_max_samples: int) -> None:
    """Runs inside the child process: load the dataset lazily, train stage 1, print a JSON line."""
    torch.set_num_threads(int(os.environ.get("ATE_BENCH_THREADS", "2")))
    from ate.align.train import AlignConfig, train_stage1
    from ate.data import load_episodes

    t0 = time.perf_counter()
    eps = load_episodes(data)
    t_load = time.perf_counter() - t0
    # val_ratio=0: the trainer's end-of-run validation covers the *whole* val split (1 M windows here), which
    # would dominate the run; memory is bounded either way (windows are indexed, never materialised).
    cfg = AlignConfig(horizon=16, steps=steps, batch_size=batch_size, prior_max_samples=prior_max_samples, val_ratio=0.0,
                      log_every=max(steps // 4, 1), eval_every=steps, save_every=steps, progress=False)
    model = train_stage1(eps, out, cfg)
    rows = [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    print("ATE_CHILD_RESULT " + json.dumps({
        "frames": len(eps), "dim": eps.dim, "episodes": eps.num_episodes, "load_s": t_load,
        "wall_s": time.perf_counter() - t0, "model": str(model),
        "ru_maxrss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "final": rows[-1] if rows else None, **{f"end_{k}": v for k, v in _proc_rss(os.getpid()).items()}}))


def _measure_child(data: Path, out: Path, steps: int, batch_size: int, prior_max_samples: int, threads: int,
                   interval_s: float) -> dict:
    """Run :func:`_stage1_child` in a subprocess, sampling its RSS; returns the child's JSON + sampled peaks."""
    import psutil

    shutil.rmtree(out, ignore_errors=True)
    code = ("import sys; from ate.bench.core import _stage1_child; "
            "_stage1_child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))")
    env = {**os.environ, "ATE_BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(data), str(out), str(steps), str(batch_size),
                             str(prior_max_samples)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "psutil_rss": 0, "samples": 0}
    stop = threading.Event()

    def sample():
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                r = _proc_rss(proc.pid)
                rss = p.memory_info().rss
            except (OSError, psutil.Error):
                break
            for k in ("VmRSS", "RssAnon", "RssFile"):
                peaks[k] = max(peaks[k], r.get(k, 0))
            peaks["psutil_rss"] = max(peaks["psutil_rss"], rss)
            peaks["samples"] += 1
            stop.wait(interval_s)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"stage-1 memory child failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    line = next(ln for ln in stdout.splitlines() if ln.startswith("ATE_CHILD_RESULT "))
    mb = 2**20
    child = json.loads(line.split(" ", 1)[1])
    return {"frames": child["frames"], "dim": child["dim"], "episodes": child["episodes"],
            "wall_s": time.perf_counter() - t0, "load_s": child["load_s"],
            "peak_rss_mb": child["ru_maxrss_self"] / mb, "sampled_peak_vmrss_mb": peaks["VmRSS"] / mb,
            "sampled_peak_rss_anon_mb": peaks["RssAnon"] / mb, "sampled_peak_rss_file_mb": peaks["RssFile"] / mb,
            "sampled_peak_psutil_rss_mb": peaks["psutil_rss"] / mb, "samples": peaks["samples"],
            "end_rss_anon_mb": child.get("end_RssAnon", 0) / mb, "final_metrics": child["final"]}


def bench_stage1_memory(workdir: str | Path | None = None, episodes: int = 10_000, length: int = 1000, dim: int = 14,
                        steps: int = 200, batch_size: int = 64, prior_max_samples: int = 20_000,
                        keep_data: bool = False, threads: int = 2, interval_s: float = 0.05,
                        baseline_episodes: int | None = 20) -> dict:
    """Write the dataset, run ``train_stage1`` on it in a child process and record its peak memory.

    Figures: ``ru_maxrss`` of the child (kernel high-water mark of total RSS, incl. file-backed mmap pages
    of the dataset), sampled peaks of VmRSS / RssAnon (heap, numpy / torch buffers: what materialising the
    data would grow) / RssFile (mapped dataset pages, reclaimable page cache), and the parent's
    ``RUSAGE_CHILDREN`` high-water mark. ``baseline_episodes``: the same run on a tiny dataset of that many
    episodes first (the process's fixed cost: torch, the model, the optimiser), None to skip. The dataset
    folders are deleted afterwards unless ``keep_data``.
    """
    own_tmp = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="ate-bench-mem-")) if own_tmp else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    baseline = None
    if baseline_episodes:
        small = write_large_npy(workdir / "data_baseline", baseline_episodes, length, dim, seed=1)
        baseline = _measure_child(small, workdir / "stage1_baseline", steps, batch_size, prior_max_samples, threads,
                                  interval_s)
        baseline["dataset_mb"] = (small / "actions.npy").stat().st_size / 2**20
    data = workdir / "data_large"
    t0 = time.perf_counter()
    write_large_npy(data, episodes, length, dim)
    write_s = time.perf_counter() - t0
    dataset_mb = (data / "actions.npy").stat().st_size / 2**20
    big = _measure_child(data, workdir / "stage1_large", steps, batch_size, prior_max_samples, threads, interval_s)
    children_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB
    if not keep_data:
        for d in (data, workdir / "data_baseline"):
            shutil.rmtree(d, ignore_errors=True)
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
    return {**big, "steps": steps, "batch_size": batch_size, "horizon": 16, "prior_max_samples": prior_max_samples,
            "threads": threads, "dataset_mb": dataset_mb, "write_s": write_s,
            "peak_rss_children_mb": children_maxrss, "peak_rss_over_dataset": big["peak_rss_mb"] / dataset_mb,
            "baseline": baseline, "data_deleted": not keep_data, "load_before": load_before, "load_after": _load()}


# --------------------------------------------------------------------------------------------------
# driver + report


PARTS = ("throughput", "guidance", "guidance_sweep", "memory")


def run_core_bench(out_dir: str | Path, parts: tuple[str, ...] = ("throughput", "guidance", "memory"),
                   threads: int = 2, quick: bool = False, command: str | None = None,
                   memory_episodes: int = 10_000, memory_length: int = 1000, memory_steps: int = 200,
                   memory_workdir: str | Path | None = None, throughput_steps: int | None = None,
                   guidance_repeats: int | None = None, resume: bool = False, merge: bool = False,
                   sweep_sizes=None) -> dict:
    """Run the selected figures and write ``results.json``, ``report.md`` and ``figures.png`` to out_dir.

    quick: tiny sizes for smoke tests (seconds); the numbers are then not meaningful.
    resume: reuse the parts already measured in ``out_dir/results.partial.json`` (written after each part;
        same threads / quick required) and measure only the missing ones; the commands of both runs are kept.
    merge: keep the parts of an existing ``out_dir/results.json`` that this run does not measure (same threads /
        quick required); the header (command, start, wall time) stays the first run's and this run is appended
        to ``res["merged_runs"]`` with its own command, start, wall time and load.
    sweep_sizes: UNet ``down_dims`` of the ``guidance_sweep`` part (default :data:`GUIDANCE_SWEEP_SIZES`).
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    res: dict = {"command": command, "threads": threads, "quick": quick, "machine": machine_info(),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load_start": _load()}
    merged_from = None
    if merge and (out_dir / "results.json").is_file():
        merged_from = json.loads((out_dir / "results.json").read_text())
        if (merged_from.get("threads"), merged_from.get("quick")) != (threads, quick):
            raise ValueError(f"{out_dir / 'results.json'} was measured with threads={merged_from.get('threads')} "
                             f"quick={merged_from.get('quick')}; merging needs the same settings (or --no-merge)")
    run_meta = {"command": command, "parts": list(parts), "started": res["started"], "load_start": res["load_start"]}
    partial = out_dir / "results.partial.json"
    if resume and partial.is_file():
        old = json.loads(partial.read_text())
        if (old.get("threads"), old.get("quick")) != (threads, quick):
            raise ValueError(f"{partial} was measured with threads={old.get('threads')} quick={old.get('quick')}; "
                             "resume needs the same settings")
        res.update({k: old[k] for k in (*PARTS, "started", "load_start") if k in old})
        res["command"] = f"{old.get('command')}  (interrupted during the next part), then: {command}"
        # runs from before partial_wall_s existed: started -> file time
        res["resumed_wall_s"] = old.get("partial_wall_s") or (partial.stat().st_mtime - time.mktime(
            time.strptime(old["started"].rsplit(" ", 1)[0], "%Y-%m-%d %H:%M:%S")))
        parts = tuple(p for p in parts if p not in old)
    t_start -= res.get("resumed_wall_s", 0.0)
    if "throughput" in parts:
        steps = throughput_steps or (2 if quick else 8)
        warm = 1 if quick else 2
        specs = [("small", 14, 16, 64)] if quick else [("small", 14, 16, 64), ("reference", 14, 16, 64),
                                                        ("reference", 14, 64, 64)]
        res["throughput"] = [{"preset": p, "action_dim": d, "horizon": h, "batch_size": b,
                              **vae_throughput_pair(p, d, h, b, warm, steps if p == "small" else max(steps // 2, 2))}
                             for p, d, h, b in specs]
    _save_partial(out_dir, res, t_start)
    if "guidance" in parts:
        kw = dict(batch_size=16, warmup=1, repeats=guidance_repeats or 2, variants=["ate_sample", "ate_mean"]) if quick \
            else dict(repeats=guidance_repeats or 8)
        res["guidance"] = bench_guidance_overhead(**kw)
        bkw = dict(batch_size=8, warmup=1, repeats=guidance_repeats or 2) if quick else \
            dict(repeats=guidance_repeats or 8)
        res["guidance"]["bench_dp"] = bench_guidance_bench_dp(**bkw)
    _save_partial(out_dir, res, t_start)
    if "guidance_sweep" in parts:
        kw = dict(sizes=sweep_sizes or ((8, 16), (16, 32)), batch_size=8, horizon=8, warmup=1,
                  repeats=guidance_repeats or 2) if quick else dict(repeats=guidance_repeats or 8)
        if sweep_sizes and not quick:
            kw["sizes"] = sweep_sizes
        res["guidance_sweep"] = bench_guidance_sweep(**kw)
    _save_partial(out_dir, res, t_start)
    if "memory" in parts:
        if quick:
            res["memory"] = bench_stage1_memory(memory_workdir, episodes=20, length=200, steps=2, batch_size=8,
                                                prior_max_samples=200, threads=threads, baseline_episodes=None)
        else:
            res["memory"] = bench_stage1_memory(memory_workdir, memory_episodes, memory_length, steps=memory_steps,
                                                threads=threads)
    res["wall_s"] = time.perf_counter() - t_start
    res.pop("partial_wall_s", None)
    res["load_end"] = _load()
    new_parts = {k: res[k] for k in PARTS if k in res}
    if merged_from is not None and any(k in merged_from and k not in new_parts for k in PARTS):
        # some old part survives: keep the old header, record this run separately
        run_meta.update(wall_s=res["wall_s"], load_end=res["load_end"])
        res = {**merged_from, **new_parts}
        res["merged_runs"] = [*merged_from.get("merged_runs", []), run_meta]
    (out_dir / "results.json").write_text(json.dumps(res, indent=2))
    (out_dir / "results.partial.json").unlink(missing_ok=True)
    png = write_figure(res, out_dir / "figures.png")
    (out_dir / "report.md").write_text(render_report(res, png.name if png else None))
    return res


def _save_partial(out_dir: Path, res: dict, t_start: float) -> None:
    """Keep what is measured so far (a long run interrupted later still leaves its figures)."""
    res["partial_wall_s"] = time.perf_counter() - t_start
    (out_dir / "results.partial.json").write_text(json.dumps(res, indent=2))


def write_figure(res: dict, path: Path) -> Path | None:
    """Bar charts: VAE samples/s (fp32 vs bf16 per preset) and guidance ratios (with the 1.10 target)."""
    panels = [k for k in ("throughput", "guidance", "guidance_sweep") if k in res]
    if not panels:
        return None
    from ate.bench.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, kind in zip(axes[0], panels):
        if kind == "throughput":
            labels = [f"{r['preset']}\nD={r['action_dim']} H={r['horizon']}" for r in res["throughput"]]
            x = np.arange(len(labels))
            series = [("fp32", "fp32", "tab:blue"), ("bf16", "bf16 autocast", "tab:orange"),
                      ("trainer", "bf16 + fused AdamW (trainer)", "tab:green")]
            series = [c for c in series if all(c[0] in r for r in res["throughput"])]  # older results: no trainer
            width = 0.8 / len(series)
            for i, (key, label, color) in enumerate(series):
                vals = [r[key]["samples_per_s"] for r in res["throughput"]]
                bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=label, color=color)
                ax.bar_label(bars, fmt="%.0f", fontsize=8)
            ax.set_xticks(x, labels)
            ax.set_yscale("log")
            ax.set_ylabel("samples / s (log)")
            ax.set_title(f"Stage-1 VAE training throughput ({res['threads']} threads)")
            ax.legend()
        elif kind == "guidance":
            g = res["guidance"]
            names = list(g["variants"])
            vals = [g["variants"][n]["ratio"] for n in names]
            colors = ["tab:green" if v <= g["target_ratio"] else "tab:red" for v in vals]
            bars = ax.bar(range(len(names)), vals, color=colors)
            ax.bar_label(bars, fmt="%.2f", fontsize=8)
            ax.axhline(g["target_ratio"], color="k", ls="--", lw=1, label="target 1.10")
            ax.axhline(1.0, color="gray", lw=0.8)
            ax.set_xticks(range(len(names)), [n.replace("ate_", "").replace("_", "\n") for n in names], fontsize=8)
            ax.set_ylabel("step time guided / plain")
            ax.set_title(f"Guidance overhead (DP UNet {g['denoiser_params'] / 1e6:.2f} M, B={g['batch_size']})")
            ax.legend()
        elif kind == "guidance_sweep":
            sw = res["guidance_sweep"]
            n = [p["denoiser_params"] / 1e6 for p in sw["points"]]
            ax.plot(n, [p["ratio"] for p in sw["points"]], "o-", label="median guided / median plain")
            ax.plot(n, [p["ratio_median_of_pairs"] for p in sw["points"]], "s--", label="median of pair ratios")
            for p, x in zip(sw["points"], n):
                ax.annotate(f"{p['ratio']:.2f}", (x, p["ratio"]), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=8)
            ax.axhline(sw["target_ratio"], color="k", ls="--", lw=1, label=f"target {sw['target_ratio']:.2f}")
            ax.axhline(1.0, color="gray", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("denoiser parameters (M, log)")
            ax.set_ylabel("step time guided / plain")
            ax.set_title(f"Guidance overhead vs DP UNet size (B={sw['batch_size']}, small VAE)")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_report(res: dict, png: str | None) -> str:
    m = res["machine"]
    lines = ["# Core figures (issue 2)", "",
             f"Command: `{res.get('command') or 'ate bench-core'}`", "",
             f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, {m['memory_gb']} GB RAM, "
             f"avx512_bf16={m['avx512_bf16']}; Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}. "
             f"torch threads: {res['threads']}. Started {res['started']}, wall time {res['wall_s']:.0f} s.", "",
             f"**Load:** the machine was shared with other jobs while this ran (1/5/15-min load average at start "
             f"{res['load_start']}, at end {res['load_end']}, on {m['logical_cpus']} CPUs). Absolute times are "
             "therefore pessimistic and noisy; ratios were measured interleaved to be fair.", ""]
    for run in res.get("merged_runs", []):
        lines += [f"Merged later: parts {', '.join(run['parts'])} from `{run['command']}` (started {run['started']}, "
                  f"wall time {run['wall_s']:.0f} s, load {run['load_start']} → {run['load_end']}); the other "
                  "parts are from the run above.", ""]
    if res.get("quick"):
        lines += ["*Quick smoke run: sizes are tiny and the numbers are not meaningful.*", ""]
    if png:
        lines += [f"![figures]({png})", ""]
    if "throughput" in res:
        lines += ["## 1. Stage-1 VAE training throughput", "",
                  "One step = trainer's Info-VAE loss (SmoothL1 recon + 7.5e-5·KL + 1.0·MMD vs N(0, I)), backward, "
                  "AdamW step, on synthetic chunks; warm-up excluded, median of the timed steps. bf16 = "
                  "`torch.autocast('cpu', bfloat16)` on the VAE forward (the trainer's `--bf16`), losses in fp32. "
                  "fp32 and bf16 compute every layer through `nn.MultiheadAttention` and use torch's default AdamW "
                  "(the public reference trainer's step); *trainer* is what `ate align --bf16` runs: the VAE's fast "
                  "paths (`ActionVAE.set_fast_paths`: the encoder's last layer on its two distribution tokens, the "
                  "decoder's cross-attention to its one latent token as `out_proj(v_proj(z))`; the same function up "
                  "to rounding), bf16 autocast and the fused AdamW of `ate.training.adamw`; its speed-up is against "
                  "the plain fp32 step.", "",
                  "| preset | params | D | H | batch | fp32 samples/s | bf16 samples/s | bf16 speed-up | "
                  "trainer samples/s | trainer speed-up | "
                  "grad rel. err. (step 0) | loss after N steps fp32 / bf16 (N) | load |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["throughput"]:
            a = r["bf16_accuracy"]
            trainer = (f"{r['trainer']['samples_per_s']:.1f} | {r['trainer_speedup']:.2f}×" if "trainer" in r
                       else "— | —")
            lines.append(f"| {r['preset']} | {r['fp32']['params'] / 1e6:.2f} M | {r['action_dim']} | {r['horizon']} | "
                         f"{r['batch_size']} | {r['fp32']['samples_per_s']:.1f} | {r['bf16']['samples_per_s']:.1f} | "
                         f"{r['bf16_speedup']:.2f}× | {trainer} | "
                         f"{a['grad_rel_error_step0']:.2e} (cos {a['grad_cosine_step0']:.4f}) | "
                         f"{a['loss_final_fp32']:.4f} / {a['loss_final_bf16']:.4f} ({a['steps_compared']}) | "
                         f"{r['fp32']['load_before'][0]}–{r.get('trainer', r['bf16'])['load_after'][0]} |")
        lines.append("")
        roofs = [r for r in res["throughput"] if "trainer_roofline_samples_per_s" in r]  # absent in older runs
        if roofs:
            lines += ["**The ceiling.** At the reference preset matrix multiplies are most of a step, so a step "
                      "cannot run faster than its matmul FLOPs (`torch.utils.flop_counter`, forward + backward) at "
                      "this machine's n = 2048 matmul rate (the small preset's matrices are too small for that "
                      "rate: its ceiling is not a bound). What each run reached, and the trainer's ceiling:", "",
                      "| preset | H | matmul rate fp32 / bf16 (GFLOP/s) | GFLOP per sample, module / fast paths | "
                      "achieved GFLOP/s fp32 / bf16 / trainer | trainer ceiling (samples/s) | ceiling / fp32 step |",
                      "|---|---|---|---|---|---|---|"]
            for r in roofs:
                pk = r["matmul_peak_gflops"]
                lines.append(
                    f"| {r['preset']} | {r['horizon']} | {pk['fp32']:.0f} / {pk['bf16']:.0f} | "
                    f"{r['fp32']['matmul_gflop_per_sample']:.3g} / {r['trainer']['matmul_gflop_per_sample']:.3g} | "
                    + " / ".join(f"{r[k]['matmul_gflops_achieved']:.0f}" for k in ("fp32", "bf16", "trainer"))
                    + f" | {r['trainer_roofline_samples_per_s']:.1f} | {r['trainer_roofline_speedup']:.2f}× |")
            lines.append("")
    if "guidance" in res:
        g = res["guidance"]
        lines += ["## 2. Guidance overhead", "",
                  f"Denoiser: {g['denoiser']}, {g['denoiser_params'] / 1e6:.2f} M params, batch {g['batch_size']}, "
                  f"H={g['horizon']}, D={g['action_dim']}, cond {g['cond_dim']}. Step = noise + add_noise + UNet "
                  "forward + loss + backward + AdamW. Guided step = `LatentGuidance.guided_loss` (λ=2, κ=0.1, "
                  "ε-prediction): an extra encoder forward on 2×B chunks (a0 without grad, x_t with grad) and a "
                  "backward to x_t. Plain and guided steps alternate (plain, guided, plain, guided, ...), "
                  f"{g['repeats']} pairs per variant after {g['warmup']} warm-up steps; ratio = median guided / "
                  f"median plain (median plain step {g['plain_step_s'] * 1e3:.0f} ms).", "",
                  "| variant | VAE params | layers | encoder | bf16 encoder | step (ms) | ratio | median of pair ratios | ≤ 1.10 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, v in g["variants"].items():
            lines.append(f"| {name} | {v['vae_params'] / 1e3:.0f} k | {v['vae_layers']} | {v['encoder_mode']} | "
                         f"{v['bf16_encoder']} | {v['step_s'] * 1e3:.0f} | {v['ratio']:.3f} | "
                         f"{v['ratio_median_of_pairs']:.3f} | {'yes' if v['ratio'] <= g['target_ratio'] else 'no'} |")
        ok = g["meets_target"]
        lines += ["", f"Load during the measurement: {g['load_before']} → {g['load_after']}.", "",
                  f"Configurations meeting the ≤ 1.10 target: {', '.join(ok) if ok else 'none'}.", "",
                  "Why: the guided step adds a fixed cost, the encoder forward on 2×B chunks plus its backward to "
                  "x_t, so ratio ≈ 1 + cost(encoder) / cost(policy step). With a denoiser of "
                  f"{g['denoiser_params'] / 1e6:.2f} M parameters next to a {min(v['vae_params'] for v in g['variants'].values()) / 1e3:.0f}–"
                  f"{max(v['vae_params'] for v in g['variants'].values()) / 1e3:.0f} k-parameter transformer encoder "
                  "(attention over H+2 tokens) the two costs are of the same order on a CPU; the ratio falls "
                  "towards 1 as the denoiser grows (Diffusion Policy's default UNet has ~62 M parameters in this "
                  "implementation)" + (", measured in section 2b" if "guidance_sweep" in res else
                                       ", which this run did not measure") + ". bf16 autocast helps only where matrices are large enough to "
                  "amortise the casts.", ""]
        if "bench_dp" in g:
            lines += _render_bench_dp(g["bench_dp"])
    if "guidance_sweep" in res:
        lines += _render_sweep(res["guidance_sweep"])
    if "memory" in res:
        r = res["memory"]
        lines += ["## 3. Stage-1 peak memory over a large dataset", "",
                  f"Dataset: {r['frames']:,} frames × {r['dim']} float32 ({r['episodes']:,} episodes) in the npy-folder "
                  f"layout = {r['dataset_mb']:.0f} MiB on disk (written in {r['write_s']:.0f} s, deleted afterwards: "
                  f"{r['data_deleted']}). `train_stage1` (small preset, H={r['horizon']}, batch {r['batch_size']}, "
                  f"{r['steps']} steps, prior fit on ≤ {r['prior_max_samples']:,} windows) ran in a child process "
                  f"({r['threads']} threads, {r['wall_s']:.0f} s incl. loading/validation {r['load_s']:.0f} s).", ""]
        b = r.get("baseline")
        base = (lambda k: f"{b[k]:.0f}") if b else (lambda k: "–")
        if b:
            lines += [f"Baseline: the identical run on a {b['frames']:,}-frame dataset ({b['dataset_mb']:.1f} MiB): the "
                      "fixed cost of the process (Python, torch, model, optimiser).", ""]
        lines += ["| figure | 10 M-frame run (MiB) | baseline run (MiB) | 10 M run / dataset size |", "|---|---|---|---|",
                  f"| peak RSS (child `ru_maxrss`) | {r['peak_rss_mb']:.0f} | {base('peak_rss_mb')} | "
                  f"{r['peak_rss_over_dataset']:.2f} |",
                  f"| sampled peak VmRSS (psutil + /proc, every 50 ms) | {r['sampled_peak_vmrss_mb']:.0f} | "
                  f"{base('sampled_peak_vmrss_mb')} | {r['sampled_peak_vmrss_mb'] / r['dataset_mb']:.2f} |",
                  f"| sampled peak RssAnon (heap, tensors) | {r['sampled_peak_rss_anon_mb']:.0f} | "
                  f"{base('sampled_peak_rss_anon_mb')} | {r['sampled_peak_rss_anon_mb'] / r['dataset_mb']:.2f} |",
                  f"| sampled peak RssFile (mapped dataset pages, reclaimable) | {r['sampled_peak_rss_file_mb']:.0f} | "
                  f"{base('sampled_peak_rss_file_mb')} | {r['sampled_peak_rss_file_mb'] / r['dataset_mb']:.2f} |", "",
                  "File-backed pages of the memory-mapped dataset count in RSS while mapped but are page cache the "
                  "kernel can drop; RssAnon is what would grow if the data were materialised.", "",
                  f"Load: {r['load_before']} → {r['load_after']}.", ""]
    return "\n".join(lines)


def _render_bench_dp(r: dict) -> list[str]:
    """Section 2a of the report: the overhead at the size the benchmark pipeline trains by default."""
    t = r["target_ratio"]
    lines = ["## 2a. Guidance overhead at the bench's default DP size", "",
             f"The policy `ate bench` trains by default (`BenchConfig`: policy `{r['policy']}`, policy_config "
             f"{r['policy_config']}, batch {r['batch_size']}, VAE preset `{r['vae_preset']}`): DP UNet down_dims "
             f"{r['down_dims']}, action space D={r['action_dim']}, cond {r['cond_dim']}, {r['policy_params'] / 1e6:.2f} M "
             f"params with the observation encoder; a synthetic robot with {r['robot_action_dim']} action / "
             f"{r['robot_state_dim']} state dims (MetaWorld's Sawyer), the VAE ({r['vae_params'] / 1e3:.0f} k params) "
             "encoding its action dims. Step = `Policy.compute_loss` (plain masked MSE, or the guided loss), backward, "
             "grad-norm clip, AdamW (the step of `ate.policies.train` without data loading and EMA). Plain and guided "
             f"steps alternate, {r['repeats']} pairs per variant after {r['warmup']} warm-up steps (median plain step "
             f"{r['plain_step_s'] * 1e3:.0f} ms).", "",
             f"| variant | guidance | step (ms) | added (ms) | ratio of medians | median of pair ratios | page faults / "
             f"step | ≤ {t:.2f} (both) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        opts = ", ".join(f"{k}={val}" for k, val in v["guidance"].items()) if name != "ate_paper" else "the paper's"
        ok = max(v["ratio"], v["ratio_median_of_pairs"]) <= t
        lines.append(f"| {name} | {opts} | {v['step_s'] * 1e3:.0f} | {(v['step_s'] - r['plain_step_s']) * 1e3:.0f} | "
                     f"{v['ratio']:.3f} | {v['ratio_median_of_pairs']:.3f} | {v['page_faults_per_step']:.0f} | "
                     f"{'yes' if ok else 'no'} |")
    ok = r["meets_target"]
    lines += ["", f"Load during the measurement: {r['load_before']} → {r['load_after']}. Minor page faults per plain "
              f"step: {r['plain_page_faults_per_step']:.0f}.", "",
              f"Variants meeting ≤ {t:.2f} (issue 12) on both ratios: {', '.join(ok) if ok else 'none'}.", "",
              "Page faults: glibc hands freed heap back to the kernel between steps (its trim and mmap thresholds), and "
              "the guided step, whose encoder temporaries come on top of the policy's live activations, then maps "
              "and zeroes up to thousands of fresh pages per step, a cost the plain step does not pay. How many depends on the process's allocation history (an earlier large free raises glibc's "
              "dynamic mmap threshold: this part runs after section 2's batch-256 steps). `MALLOC_TRIM_THRESHOLD_="
              "268435456 MALLOC_MMAP_THRESHOLD_=67108864` in the environment removes them (measured; an allocator that keeps freed pages, tcmalloc or jemalloc, "
              "should too: not measured).",
              ""]
    return lines


def _render_sweep(sw: dict) -> list[str]:
    """Section 2b of the report: guidance overhead ratio vs denoiser size."""
    t = sw["target_ratio"]
    lines = ["## 2b. Guidance overhead vs denoiser size", "",
             f"Same step as section 2 with the default guidance ({sw['guidance']}; {sw['vae']}, fp32), batch "
             f"{sw['batch_size']}, H={sw['horizon']}, D={sw['action_dim']}, cond {sw['cond_dim']}, for "
             "`ConditionalUnet1D` (ate.policies.dp_unet) of growing `down_dims`. Per size: plain and guided steps "
             f"alternate, {sw['repeats']} pairs after {sw['warmup']} warm-up steps each; both the ratio of the "
             "medians and the median of the per-pair ratios are given.", "",
             "| down_dims | denoiser params | plain step (ms) | guided step (ms) | added (ms) | ratio of medians | "
             f"median of pair ratios | ≤ {t:.2f} (both) | load before → after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in sw["points"]:
        ok = p["ratio"] <= t and p["ratio_median_of_pairs"] <= t
        lines.append(f"| {tuple(p['down_dims'])} | {p['denoiser_params'] / 1e6:.2f} M | {p['plain_step_s'] * 1e3:.0f} | "
                     f"{p['guided_step_s'] * 1e3:.0f} | {(p['guided_step_s'] - p['plain_step_s']) * 1e3:.0f} | "
                     f"{p['ratio']:.3f} | {p['ratio_median_of_pairs']:.3f} | {'yes' if ok else 'no'} | "
                     f"{p['load_before'][0]} → {p['load_after'][0]} |")
    ok = [f"{n / 1e6:.1f} M" for n in sw["meets_target_params"]]
    lines += ["", f"Sizes meeting ≤ {t:.2f} on both ratios: {', '.join(ok) if ok else 'none'}.", ""]
    for note in sw.get("notes", []):  # hand-written context added to results.json after the run
        lines += [note, ""]
    return lines
