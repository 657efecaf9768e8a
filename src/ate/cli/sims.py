"""`ate sims coverage --suite robosuite|metaworld`: scripted-expert success per robot × task.

Writes coverage.json / coverage.md / coverage.png (see `ate.bench.sims.coverage`); the committed
tables live in benchmarks/results/sims/.
"""

from __future__ import annotations


def _coverage_command(argv: list[str]):
    from ate.cli._fields import INT_GE0, INT_GE1
    from ate.cli._tyro import option, simple_command

    return simple_command("ate sims coverage", "Run each suite's scripted expert on every robot × task (default: all "
                                               "robosuite single arms × Lift, Stack; all 50 MetaWorld v3 tasks) on "
                                               "fixed seeds, up to the env's own step limit, and write JSON + Markdown "
                                               "+ PNG. Also reports success within the episode budget `ate bench` "
                                               "uses.", [
        option("suite", str, "simulator suite", choices=("robosuite", "metaworld")),
        option("robots", list[str] | None, "robosuite robots (default: Panda Sawyer IIWA Jaco Kinova3 UR5e XArm7)",
               None),
        option("tasks", list[str] | None, "tasks (default: every task of the suite)", None),
        option("seeds", int, "episodes per robot × task", 20, type=INT_GE1),
        option("first_seed", int, "seeds first-seed .. first-seed + seeds - 1", 0, type=INT_GE0),
        option("workers", int, "worker processes (1 runs inline)", 2, type=INT_GE1),
        option("max_steps", int | None, "episode limit (default: the env's own: robosuite 150 / 250, MetaWorld 500)",
               None, type=INT_GE1),
        option("out", str | None, "output folder (default: benchmarks/results/sims/coverage-<suite>)", None),
        option("quiet", bool, "no progress bar", False),
    ], _coverage)


def register(sub) -> None:
    from ate.cli._tyro import register_tyro

    p = sub.add_parser("sims", help="simulator checks: scripted-expert coverage per robot × task",
                       description="Simulator checks for the benchmark suites.")
    cmds = p.add_subparsers(dest="sims_command", metavar="SIMS_COMMAND", required=True)
    register_tyro(cmds, "coverage", "expert success per robot × task (every robot / task by default)",
                  _coverage_command)


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
