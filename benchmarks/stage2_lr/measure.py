"""Stage-2 LR schedule at 5 target demos: reference per-epoch decay vs per-step cosine (issue: the 0.95-per-epoch
decay collapses when an epoch is a handful of steps).

    python benchmarks/stage2_lr/measure.py --out benchmarks/results/stage2_lr

Synthetic data (ate.bench.synthetic): 200 source episodes for stage 1; stage 2 on 5 target episodes, scored on
50 held-out target episodes of the same domain (reconstruction smooth-L1, KL and MMD to the stage-1 prior, the
trainer's own validation terms). Same seed, data, steps and peak LR for both schedules.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/stage2_lr")
    ap.add_argument("--stage1-steps", type=int, default=3000)
    ap.add_argument("--stage2-steps", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args(argv)
    from ate.align import load_aligned_vae
    from ate.align.train import AlignConfig, _validate, train_stage1, train_stage2
    from ate.bench.synthetic import write_toy_npz
    from ate.data import ChunkDataset, load_episodes

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path("runs/stage2_lr")  # git-ignored scratch: data, stage-1 and stage-2 runs
    shutil.rmtree(work, ignore_errors=True)  # never resume an older run: its LR horizon would differ
    src = write_toy_npz(work / "src.npz", 200, 200, 7, seed=0)
    tgt = write_toy_npz(work / "tgt5.npz", 5, 150, 7, seed=1, domain="target")
    held = write_toy_npz(work / "held.npz", 50, 150, 7, seed=2, domain="target")
    base = dict(preset="small", horizon=16, batch_size=64, progress=False, log_every=100, device="cpu")
    m1 = train_stage1(src, work / "s1", AlignConfig(steps=args.stage1_steps, lr=1e-3, **base))
    rows = []
    for seed in args.seeds:
        for schedule in ("epoch_decay", "cosine"):
            cfg = AlignConfig(steps=args.stage2_steps, lr=1e-3, lr_schedule=schedule, seed=seed, val_ratio=0,
                              eval_every=10**9, **base)
            run = work / f"s2_{schedule}_{seed}"
            m2 = train_stage2(tgt, run, m1, cfg)
            bundle = load_aligned_vae(m2)
            ds = ChunkDataset(load_episodes(held), horizon=16, normalizer=bundle.normalizer, pad="repeat")
            val = _validate(bundle.vae, ds, cfg, bundle.prior, torch.device("cpu"))
            lrs = [json.loads(x)["lr"] for x in (run / "metrics.jsonl").read_text().splitlines()]
            rows.append({"schedule": schedule, "seed": seed, "lr_at_400": lrs[3],
                         "lr_last": lrs[-1], **{k.replace("val_", "held_"): v for k, v in val.items()}})
            print(rows[-1], flush=True)
    res = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
           "torch": torch.__version__, "wall_s": time.perf_counter() - t0, "stage1_steps": args.stage1_steps,
           "stage2_steps": args.stage2_steps, "rows": rows}
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = ["# Stage-2 LR schedule at 5 target demos", "", f"Command: `{res['command']}`  ",
             f"Machine: {res['machine']}, torch {res['torch']}; wall {res['wall_s']:.0f} s. Synthetic toy data "
             "(200 source episodes, 5 target, 50 held-out target); stage 2 peak LR 1e-3, batch 64, "
             f"{args.stage2_steps} steps (~{150 * 5 // 64} steps per epoch).", "",
             "| schedule | seed | LR at step 400 | final LR | held-out recon | held-out KL | held-out MMD |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['schedule']} | {r['seed']} | {r['lr_at_400']:.2e} | {r['lr_last']:.2e} | {r['held_recon']:.4f} | "
                     f"{r['held_kl']:.3f} | {r['held_mmd']:.4f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
