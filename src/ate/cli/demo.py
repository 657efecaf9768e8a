"""`ate demo`: the quick robosuite cross-embodiment run (Panda + IIWA -> UR5e, Lift): SFT vs ATE as published
vs ATE with the guidance chosen on validation seeds.

Same pipeline as `ate bench --suite robosuite --preset quick` with the arms sft, ate_paper and ate (the
committed steer choice of the dp family, `ate.bench.steer_choice("dp")`); prints the table, how strong each guidance was
relative to the policy's own residual by noise level, and a plain verdict. Cached: a second run only
rebuilds the report.
"""

from __future__ import annotations


def _command(argv: list[str]):
    from ate.cli._fields import INT_GE1
    from ate.cli._tyro import option, simple_command

    return simple_command("ate demo", "Pretrain a small Diffusion Policy on Panda + IIWA (joint-space actions), adapt "
                                      "it to UR5e with 5 demos by plain fine-tuning (SFT), by ATE with the paper's "
                                      "guidance and by ATE with the guidance chosen on validation seeds, evaluate all "
                                      "three on the same seeds, print the table and the guidance strength, write the "
                                      "plots.", [
        option("out", str, "run directory", "runs/demo"),
        option("preset", str, "quick: the demo (about 10 min on 2 cores); smoke: a 2-minute plumbing check", "quick",
               choices=("smoke", "quick")),
        option("workers", int, "processes for demos and evaluation", 2, type=INT_GE1),
        option("quiet", bool, "no progress bars", False),
    ], _run)


def register(sub) -> None:
    from ate.cli._tyro import register_tyro

    register_tyro(sub, "demo", "quick cross-embodiment demo: SFT vs ATE (paper) vs ATE (chosen) on robosuite "
                               "(about 10 min on 2 cores)", _command)


def verdict(diff: float, ci: list[float], name: str) -> str:
    """One plain sentence for a paired difference 'name − SFT' in success (fractions)."""
    lo, hi = 100 * ci[0], 100 * ci[1]
    if lo > 0:
        word = f"{name} is better than SFT"
    elif hi < 0:
        word = f"{name} is worse than SFT"
    elif lo == hi == 0:
        word = f"{name} gave exactly SFT's episodes (its guidance changed nothing that mattered)"
    else:
        word = "no significant difference from SFT at this budget (the 95 % interval includes 0)"
    return f"{name} − SFT: {100 * diff:+.1f} points, 95 % CI [{lo:+.1f}, {hi:+.1f}] -> {word}"


def _percent(x: float) -> str:
    """Two significant digits without exponents: 0.00063, 0.21, 1.6, 100 (':.2g' writes 100 as '1e+02')."""
    return f"{x:.0f}" if abs(x) >= 10 else f"{float(f'{x:.2g}'):g}"


def profile_lines(results: dict) -> list[str]:
    """|λ·c·g| as a fraction of the policy's residual at a few noise levels, mean over seeds, per guided arm."""
    import numpy as np

    by_arm: dict[str, list] = {}
    for p in results.get("guidance_profiles") or []:
        by_arm.setdefault(p["arm"], []).append(p)
    lines = []
    for arm, ps in by_arm.items():
        levels = ps[0]["levels"]
        rel = np.mean([p["rel_strength"] for p in ps], axis=0)
        pick = [i for i, lv in enumerate(levels) if round(lv, 2) in (0.05, 0.25, 0.55, 0.95)] or range(len(levels))
        cells = ", ".join(f"{levels[i]:.2f}: {_percent(100 * rel[i])} %" for i in pick)
        lines.append(f"  {arm:10s} shift / residual by noise level ({cells})")
    return lines


def _run(args) -> int:
    import time

    from ate.bench import steer_choice
    from ate.bench.pipeline import BenchConfig, run_bench
    from ate.bench.report import summary_table

    choice = steer_choice("dp")  # the demo trains a Diffusion Policy: dp's choice
    cfg = BenchConfig.with_steer_choice("robosuite", args.preset, "dp", out_dir=args.out, workers=args.workers,
                                        progress=not args.quiet, arms=["sft", "ate_paper", "ate"])
    t0 = time.perf_counter()
    results = run_bench(cfg, command=f"ate demo --out {args.out} --preset {args.preset} --workers {args.workers}")
    wall = time.perf_counter() - t0
    print(f"\nSFT vs ATE, {cfg.source_robots} -> {cfg.target_robot}, {', '.join(cfg.target_tasks)}, "
          f"{cfg.n_target_demos[0]} target demos, seeds {cfg.seeds}, {cfg.eval_episodes} episodes each "
          f"(success %, 95 % CI). ATE_PAPER = the published guidance; ATE = {choice['name']}, chosen on "
          f"{choice['chosen_on']} (not on this task):\n")
    print(summary_table(results))
    n, step = cfg.headline, cfg.finetune_steps
    print()
    for arm, name in (("ate_paper", "ATE (paper)"), ("ate", "ATE (chosen)")):
        c = next((c for c in results["comparisons"] if (c["a"], c["b"]) == (arm, "sft") and c["task"] == "all"
                  and c["n_demos"] == n and c["step"] == step), None)
        if c is not None:
            print(verdict(c["diff"], c["ci95"], name))
    prof = profile_lines(results)
    if prof:
        print("\nHow strong the guidance was (final weights, 256 target windows):")
        print("\n".join(prof))
    if args.preset == "smoke":
        print("\n(smoke preset: a plumbing check; its success rates mean nothing)")
    print(f"\nplot:    {cfg.run_dir / 'success_by_arm.png'}\nreport:  {cfg.run_dir / 'report.md'}\n"
          f"results: {cfg.run_dir / 'results.json'}\nwall time: {wall:.0f} s (cached stages are not re-run)")
    return 0
