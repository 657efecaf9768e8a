"""`ate sims coverage --suite robosuite|metaworld`: scripted-expert success per robot × task.

Writes coverage.json / coverage.md / coverage.png (see `ate.bench.sims.coverage`); the committed
tables live in benchmarks/results/sims/.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("sims", help="simulator checks: scripted-expert coverage per robot × task",
                       description="Simulator checks for the benchmark suites.")
    cmds = p.add_subparsers(dest="sims_command", metavar="SIMS_COMMAND", required=True)
    c = cmds.add_parser("coverage", help="expert success per robot × task (every robot / task by default)",
                        description="Run each suite's scripted expert on every robot × task (default: all robosuite "
                                    "single arms × Lift, Stack; all 50 MetaWorld v3 tasks) on fixed seeds, up to the "
                                    "env's own step limit, and write JSON + Markdown + PNG. Also reports success "
                                    "within the episode budget `ate bench` uses.")
    c.add_argument("--suite", choices=["robosuite", "metaworld"], required=True, help="simulator suite")
    c.add_argument("--robots", nargs="+", help="robosuite robots (default: Panda Sawyer IIWA Jaco Kinova3 UR5e XArm7)")
    c.add_argument("--tasks", nargs="+", help="tasks (default: every task of the suite)")
    from ate.cli._fields import INT_GE0, INT_GE1

    c.add_argument("--seeds", type=INT_GE1, default=20, help="episodes per robot × task (default: 20)")
    c.add_argument("--first-seed", type=INT_GE0, default=0, help="seeds first-seed .. first-seed + seeds - 1 (default: 0)")
    c.add_argument("--workers", type=INT_GE1, default=2, help="worker processes (default: 2; 1 runs inline)")
    c.add_argument("--max-steps", type=INT_GE1, help="episode limit (default: the env's own: robosuite 150 / 250, MetaWorld 500)")
    c.add_argument("--out", help="output folder (default: benchmarks/results/sims/coverage-<suite>)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_coverage)


def _coverage(args) -> int:
    import shlex
    import sys

    from ate.bench.sims.coverage import run_coverage, write_coverage

    command = "ate " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    cov = run_coverage(args.suite, tasks=args.tasks, robots=args.robots, seeds=args.seeds, first_seed=args.first_seed,
                       workers=args.workers, max_steps=args.max_steps, progress=not args.quiet, command=command)
    paths = write_coverage(cov, args.out or f"benchmarks/results/sims/coverage-{args.suite}")
    print(paths["md"].read_text())
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0
