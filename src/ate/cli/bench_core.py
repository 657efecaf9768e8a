"""`ate bench-core`: measure the core library figures (VAE throughput, guidance overhead, stage-1 memory)."""

from __future__ import annotations

import argparse

PARTS = ("throughput", "guidance", "guidance_sweep", "memory")
DEFAULT_PARTS = ("throughput", "guidance", "memory")


def register(sub) -> None:
    from ate.cli._fields import INT_GE1

    p = sub.add_parser("bench-core", help="VAE training throughput, guidance overhead ratio, stage-1 peak RSS",
                       description="Measure the core figures and write results.json, report.md and figures.png. "
                                   "Record the machine load: on a shared machine absolute times are pessimistic.")
    p.add_argument("--out", default="benchmarks/results/core", help="output directory (default: %(default)s)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(DEFAULT_PARTS),
                   help="which figures to measure (default: %(default)s; guidance_sweep = overhead vs denoiser size)")
    p.add_argument("--threads", type=INT_GE1, default=2, help="torch.set_num_threads (default: %(default)s)")
    p.add_argument("--quick", action=argparse.BooleanOptionalAction, default=False,
                   help="tiny sizes for a smoke run (seconds; numbers not meaningful)")
    p.add_argument("--memory-episodes", type=INT_GE1, default=10_000, help="episodes of the large dataset")
    p.add_argument("--memory-length", type=INT_GE1, default=1000, help="frames per episode of the large dataset")
    p.add_argument("--memory-steps", type=INT_GE1, default=200, help="stage-1 steps on the large dataset")
    p.add_argument("--memory-workdir", default=None,
                   help="where to write the large dataset (default: a temporary dir; deleted afterwards)")
    p.add_argument("--throughput-steps", type=INT_GE1, default=None, help="timed steps per small-preset run (default 8)")
    p.add_argument("--guidance-repeats", type=INT_GE1, default=None, help="interleaved pairs per variant (default 8)")
    p.add_argument("--sweep-sizes", nargs="+", default=None, metavar="DIMS",
                   help="UNet down_dims of the guidance sweep, comma-separated per size, e.g. 48,96 256,512,1024 "
                        "(default: 0.6 / 3.9 / 15 / 62 M params)")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the parts of an existing OUT/results.json not measured in this run (default: on)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                   help="reuse the parts already in OUT/results.partial.json, measure the rest")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import shlex
    import sys

    from ate.bench.core import run_core_bench

    if args.threads < 1:
        raise SystemExit("ate bench-core: --threads must be >= 1")
    try:
        sizes = [tuple(int(d) for d in s.split(",")) for s in args.sweep_sizes] if args.sweep_sizes else None
    except ValueError:
        raise SystemExit(f"ate bench-core: --sweep-sizes must be comma-separated integers, got {args.sweep_sizes}")
    command = "ate " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "ate bench-core"
    res = run_core_bench(args.out, parts=tuple(args.parts), threads=args.threads, quick=args.quick, command=command,
                         memory_episodes=args.memory_episodes, memory_length=args.memory_length,
                         memory_steps=args.memory_steps, memory_workdir=args.memory_workdir,
                         throughput_steps=args.throughput_steps, guidance_repeats=args.guidance_repeats,
                         resume=args.resume, merge=args.merge, sweep_sizes=sizes)
    print(f"wrote {args.out}/results.json, report.md (wall {res['wall_s']:.0f} s)")
    for r in res.get("throughput", []):
        print(f"  VAE {r['preset']} D={r['action_dim']} H={r['horizon']}: fp32 {r['fp32']['samples_per_s']:.1f} "
              f"samples/s, bf16 {r['bf16']['samples_per_s']:.1f} samples/s")
    if "guidance" in res:
        for name, v in res["guidance"]["variants"].items():
            print(f"  guidance {name}: ratio {v['ratio']:.3f}")
    if "guidance_sweep" in res:
        for pt in res["guidance_sweep"]["points"]:
            print(f"  guidance sweep {pt['denoiser_params'] / 1e6:.1f} M params: ratio {pt['ratio']:.3f} "
                  f"(median of pairs {pt['ratio_median_of_pairs']:.3f})")
    if "memory" in res:
        m = res["memory"]
        print(f"  stage-1 on {m['frames']:,} frames ({m['dataset_mb']:.0f} MiB): peak RSS {m['peak_rss_mb']:.0f} MiB, "
              f"peak RssAnon {m['sampled_peak_rss_anon_mb']:.0f} MiB")
    return 0
