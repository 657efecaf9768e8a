"""Cost of ATE in the reference policies: training-step time with and without the guidance term,
inference time per chunk and parameter counts, on synthetic data (timings only, no accuracy).

Arms are timed in interleaved blocks (off, ate, ate variants, off, ...) and the median per-step time is
kept, so a noisy shared machine biases all arms alike. A "step" is the full optimiser step of
`ate.policies.train` (forward, guidance, backward, clip, AdamW, EMA not included).
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

VARIANTS = {
    "ate": {"encoder_mode": "sample", "bf16": False},  # reference settings, float32 encoder
    "ate_mean": {"encoder_mode": "mean", "bf16": False},  # deterministic μ, no ξ draw
    "ate_bf16": {"encoder_mode": "sample", "bf16": True},  # encoder weights in bf16
}


# "default": the reference sizes (~1 M params). "large": ~10x the compute, to show how the relative cost of
# the fixed-size guidance encoder shrinks as the policy grows (real VLAs are 100-1000x larger still).
SIZES = {
    "default": {"dp": {}, "rdt": {}, "pi0": {}},
    "large": {"dp": {"down_dims": (128, 256), "cond_dim": 256}, "rdt": {"width": 384, "depth": 6, "cond_dim": 256},
              "pi0": {"width": 384, "depth": 6, "cond_dim": 256}},
}


def _synthetic_policy(family: str, horizon: int, size: str = "default", action_dim: int = 8, state_dim: int = 24):
    from ate.data import Normalizer
    from ate.policies import make_policy

    rng = np.random.default_rng(0)
    policy = make_policy(family, horizon=horizon, state_dim=32, **SIZES[size][family])
    policy.add_robot("panda", Normalizer.fit(rng.normal(size=(512, action_dim))), Normalizer.fit(rng.normal(size=(512, state_dim))))
    policy.add_task("lift")
    return policy


def _batch(policy, b: int, gen: torch.Generator) -> dict:
    c = policy.config
    mask = policy.action_mask("panda")
    s = c.robots["panda"].state_dim
    state, smask = policy.pad_state(torch.randn(b, s, generator=gen), "panda")
    return {"action": torch.randn(b, c.horizon, c.action_dim, generator=gen).clamp(-1, 1) * mask,
            "is_pad": torch.zeros(b, c.horizon, dtype=torch.bool), "action_mask": mask[None].expand(b, -1),
            "state": state, "state_mask": smask, "task": torch.zeros(b, dtype=torch.long)}


def _step_fn(policy, guide, batch, gen, ggen):
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)

    def step():
        loss, _ = policy.compute_loss(batch, guide, generator=gen, guidance_generator=ggen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench_family(family: str, steps: int, repeats: int, batch_size: int, horizon: int, vae_preset: str,
                 size: str = "default") -> dict:
    from ate.align import ActionVAE, VAEConfig
    from ate.steer import GuidanceConfig

    torch.manual_seed(0)
    policy = _synthetic_policy(family, horizon, size)
    gen, ggen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    batch = _batch(policy, batch_size, gen)
    vae = ActionVAE(VAEConfig.preset(vae_preset, action_dim=8, horizon=horizon))
    arms = {"off": _step_fn(policy, None, batch, gen, ggen)}
    for name, v in VARIANTS.items():
        enc = ActionVAE(vae.config)
        enc.load_state_dict(vae.state_dict())
        if v["bf16"]:
            enc = enc.to(torch.bfloat16)
        guide = policy.make_guidance(enc, GuidanceConfig(scale=2.0, encoder_mode=v["encoder_mode"]), "panda")
        arms[name] = _step_fn(policy, guide, batch, gen, ggen)
    for fn in arms.values():  # warm-up (allocator, lazy init)
        for _ in range(3):
            fn()
    times = {k: [] for k in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    step_ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    ratio = {k: step_ms[k] / step_ms["off"] for k in VARIANTS}
    obs = {"state": torch.randn(1, policy.config.robots["panda"].state_dim), "task": 0}
    pred = []
    for i in range(12):
        policy.predict_chunk(obs, generator=torch.Generator().manual_seed(i))
        pred.append(policy.last_predict_s)
    return {
        "params": policy.param_count(), "vae_params": sum(p.numel() for p in vae.parameters()),
        "parameterization": policy.parameterization, "num_inference_steps": policy.config.num_inference_steps,
        "action_dim": policy.config.action_dim, "horizon": horizon, "size": size,
        "step_ms": step_ms, "ratio": ratio, "best_variant": min(ratio, key=ratio.get),
        "predict_ms": 1e3 * statistics.median(pred[2:]),
    }


def _plot(res: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # the viz extra is optional: the table still tells everything
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(res["families"])
    arms = ["off", *VARIANTS]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    w = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        ax.bar(np.arange(len(fams)) + i * w, [res["families"][f]["step_ms"][arm] for f in fams], w, label=arm)
    ax.set_xticks(np.arange(len(fams)) + w * (len(arms) - 1) / 2, fams)
    ax.set_ylabel("ms / training step")
    ax.set_yscale("log")
    ax.set_title(f"train step, batch {res['batch_size']}, H={res['horizon']} ({res['device']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _report(res: dict, command: str) -> str:
    lines = [
        "# Reference policies: cost of ATE", "",
        f"Command: `{command}`", "",
        f"Device: {res['device']}, torch {res['torch']}, {res['threads']} threads, git {res['git']}. "
        f"Batch {res['batch_size']}, horizon {res['horizon']}, target robot 8 action dims, VAE preset "
        f"`{res['vae_preset']}`. Median of {res['repeats']}×{res['steps']} interleaved steps per arm "
        "(`@large` rows: fewer steps, see the command).", "",
        "| family | params | parameterisation | step off (ms) | ATE (ms) | ATE/off | mean-mode/off | bf16-enc/off | "
        "predict (ms/chunk, steps) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f, r in res["families"].items():
        s, q = r["step_ms"], r["ratio"]
        lines.append(f"| {f} | {r['params']:,} | {r['parameterization']} | {s['off']:.1f} | {s['ate']:.1f} | "
                     f"{q['ate']:.2f} | {q['ate_mean']:.2f} | {q['ate_bf16']:.2f} | {r['predict_ms']:.1f} "
                     f"({r['num_inference_steps']}) |")
    lines += ["", "Target: ATE/off ≤ 1.10. ATE adds two encoder passes (x_t with grad, a0 without) and one "
              "backward through the encoder w.r.t. x_t per step; its absolute cost is set by the VAE "
              f"({next(iter(res['families'].values()))['vae_params']:,} params with the decoder, which guidance "
              "does not run), so the ratio shrinks as the policy grows. Inference is unchanged by construction "
              "(no VAE is loaded).", "",
              "Noise: a shared 2-core machine with other jobs running; arms are interleaved so they share the load, "
              "but ratios still move by about ±10 % between runs (a ratio below 1 is noise).", "",
              "Added ms per step by the guidance (ATE − off): "
              + ", ".join(f"{f} {r['step_ms']['ate'] - r['step_ms']['off']:.0f}" for f, r in res["families"].items())
              + ". This is the encoder's two passes + one input-gradient backward and is roughly constant across "
              "policy sizes; with ~1 M-parameter policies it is comparable to the policy step itself, so the 1.10 "
              "target is only met once the policy is several times the encoder's compute (`@large` rows). "
              "Encoder in bf16 does not help on this CPU (no fast bf16 matmul); `encoder_mode=mean` saves the ξ "
              "draw and the σ path only. The guidance encodes through `ActionVAE.encode_fast` (the last layer on "
              "the two distribution tokens only); one batched a0 + x_t call is slower on a CPU (its backward runs "
              "over both halves). A further saving: cache (μ, log σ²)(a0) per window, since the VAE is frozen.", "",
              "![step time](step_time.png)", ""]
    return "\n".join(lines)


def run_bench(out: str | Path, families=("dp", "rdt", "pi0"), steps: int = 30, repeats: int = 3, batch_size: int = 64,
              horizon: int = 16, vae_preset: str = "small", threads: int | None = None, sizes=("default",),
              large_steps: int = 6, command: str | None = None) -> dict:
    """Benchmark every family and write out/results.json, out/report.md, out/step_time.png.

    threads: torch intra-op threads (None keeps torch's default)."""
    if threads:
        torch.set_num_threads(threads)
    from ate.checkpoint import write_json_atomic
    from ate.policies import policy_class

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        git = "unknown"
    res = {"device": f"cpu ({platform.processor() or platform.machine()})", "torch": torch.__version__,
           "threads": torch.get_num_threads(), "git": git, "batch_size": batch_size, "horizon": horizon,
           "steps": steps, "repeats": repeats, "vae_preset": vae_preset, "families": {}}
    for size in sizes:
        for fam in families:
            name = policy_class(fam).config_class.type + ("" if size == "default" else f"@{size}")
            n = steps if size == "default" else large_steps
            res["families"][name] = bench_family(fam, n, repeats, batch_size, horizon, vae_preset, size)
    command = command or (f"ate policy bench --out {out} --families {' '.join(families)} --steps {steps} "
                          f"--repeats {repeats} --batch-size {batch_size} --horizon {horizon} --vae-preset {vae_preset}"
                          + (f" --threads {threads}" if threads else "") + f" --sizes {' '.join(sizes)} --large-steps {large_steps}")
    res["command"] = command
    write_json_atomic(out / "results.json", res)
    _plot(res, out / "step_time.png")
    (out / "report.md").write_text(_report(res, command))
    return res
