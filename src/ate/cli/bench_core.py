"""`ate bench-core`: measure the core library figures (VAE throughput, guidance overhead, stage-1 memory)."""

from __future__ import annotations

PARTS = ("throughput", "guidance", "guidance_sweep", "memory")
DEFAULT_PARTS = ("throughput", "guidance", "memory")


def _command(argv: list[str]):
    from ate.cli._fields import INT_GE1
    from ate.cli._tyro import option, simple_command

    return simple_command("ate bench-core", "Measure the core figures and write results.json, report.md and "
                                            "figures.png. Record the machine load: on a shared machine absolute times "
                                            "are pessimistic.", [
        option("out", str, "output directory", "benchmarks/results/core"),
        option("parts", list[str], "which figures to measure (guidance_sweep = overhead vs denoiser size)",
               list(DEFAULT_PARTS), choices=PARTS),
        option("threads", int, "torch.set_num_threads", 2, type=INT_GE1),
        option("quick", bool, "tiny sizes for a smoke run (seconds; numbers not meaningful)", False),
        option("memory_episodes", int, "episodes of the large dataset", 10_000, type=INT_GE1),
        option("memory_length", int, "frames per episode of the large dataset", 1000, type=INT_GE1),
        option("memory_steps", int, "stage-1 steps on the large dataset", 200, type=INT_GE1),
        option("memory_workdir", str | None, "where to write the large dataset (default: a temporary dir; deleted "
                                             "afterwards)", None),
        option("throughput_steps", int | None, "timed steps per small-preset run (default 8)", None, type=INT_GE1),
        option("guidance_repeats", int | None, "interleaved pairs per variant (default 8)", None, type=INT_GE1),
        option("sweep_sizes", list[str] | None, "UNet down_dims of the guidance sweep, comma-separated per size, e.g. "
                                                "48,96 256,512,1024 (default: 0.6 / 3.9 / 15 / 62 M params)", None,
               type=_dims, metavar="DIMS"),
        option("merge", bool, "keep the parts of an existing OUT/results.json not measured in this run", True),
        option("resume", bool, "reuse the parts already in OUT/results.partial.json, measure the rest", False),
    ], _run)


def _dims(text: str) -> str:
    """One size of --sweep-sizes: comma-separated positive integers (kept as text; split when running)."""
    if not all(d.isdigit() and int(d) > 0 for d in text.split(",")):
        raise ValueError(f"expected comma-separated positive integers, got {text!r}")
    return text


def register(sub) -> None:
    from ate.cli._tyro import register_tyro

    register_tyro(sub, "bench-core", "VAE training throughput, guidance overhead ratio, stage-1 peak RSS", _command)


def _run(args) -> int:
    import shlex
    import sys

    from ate.bench.core import run_core_bench

    sizes = [tuple(int(d) for d in s.split(",")) for s in args.sweep_sizes] if args.sweep_sizes else None
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
