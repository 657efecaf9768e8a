"""`ate demo`: the quick robosuite cross-embodiment run (Panda + IIWA -> UR5e, Lift), SFT vs ATE.

Same pipeline as `ate bench --suite robosuite --preset quick`; prints the table, writes the plot and says
where everything is. Cached: a second run only rebuilds the report.
"""

from __future__ import annotations


def register(sub) -> None:
    from ate.cli._fields import INT_GE1

    p = sub.add_parser("demo", help="quick cross-embodiment demo: SFT vs ATE on robosuite (about 10 min on 2 cores)",
                       description="Pretrain a small Diffusion Policy on Panda + IIWA (joint-space actions), adapt it to "
                                   "UR5e with 5 demos by plain fine-tuning (SFT) and by ATE, evaluate both on the same "
                                   "seeds, print the table and write the plot.")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--preset", choices=["smoke", "quick"], default="quick", help="smoke: a 2-minute plumbing check")
    p.add_argument("--workers", type=INT_GE1, default=2, help="processes for demos and evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import time

    from ate.bench.pipeline import BenchConfig, run_bench
    from ate.bench.report import summary_table

    cfg = BenchConfig.from_preset("robosuite", args.preset, out_dir=args.out, workers=args.workers, progress=not args.quiet)
    t0 = time.perf_counter()
    results = run_bench(cfg, command=f"ate demo --out {args.out} --preset {args.preset} --workers {args.workers}")
    wall = time.perf_counter() - t0
    head = results["headline"]
    print(f"\nATE vs SFT, {cfg.source_robots} -> {cfg.target_robot}, {', '.join(cfg.target_tasks)}, "
          f"{cfg.n_target_demos[0]} target demos, seeds {cfg.seeds}, {cfg.eval_episodes} episodes each "
          f"(success %, 95 % CI):\n")
    print(summary_table(results))
    if "ate_minus_sft" in head:
        d = head["ate_minus_sft"]
        verdict = ("ATE better" if d["ci95"][0] > 0 else "SFT better" if d["ci95"][1] < 0
                   else "no significant difference at this budget")
        print(f"\nATE - SFT: {100 * d['diff']:+.1f} points, 95 % CI [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"
              f" -> {verdict}")
    print(f"\nplot:    {cfg.run_dir / 'success_by_arm.png'}\nreport:  {cfg.run_dir / 'report.md'}\n"
          f"results: {cfg.run_dir / 'results.json'}\nwall time: {wall:.0f} s (cached stages are not re-run)")
    return 0
