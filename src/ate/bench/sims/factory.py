"""`make_env` / `make_expert`: suite name -> env wrapper / scripted expert."""

from __future__ import annotations

from ate.bench.sims.base import SimEnv

SUITES = ("robosuite", "metaworld")


def make_env(suite: str, task: str, robot: str | None = None, seed: int = 0, max_steps: int | None = None,
             reference_step: bool = False) -> SimEnv:
    """Build one headless env. robot: robosuite arm name (default "Panda"); ignored-or-"Sawyer" for MetaWorld.
    reference_step: robosuite only, every action through robosuite's own ``env.step`` instead of the wrapper's
    bit-identical, faster control loop (``RobosuiteEnv.lean_step``), with a model of its own
    (no ``RobosuiteEnv.share_model``)."""
    if suite == "robosuite":
        from ate.bench.sims.robosuite_env import RobosuiteEnv

        return RobosuiteEnv(task, robot or "Panda", seed=seed, max_steps=max_steps, lean_step=not reference_step,
                            share_model=not reference_step)
    if suite == "metaworld":
        from ate.bench.sims.metaworld_env import MetaWorldEnv

        return MetaWorldEnv(task, robot, seed=seed, max_steps=max_steps)
    from ate.errors import DataError

    raise DataError(f"unknown simulator suite {suite!r}; choose one of {SUITES}")


def make_expert(env: SimEnv):
    """The scripted expert of env's task: `.reset()` then `.act(state (S,)) -> raw action (D,)`."""
    if env.suite == "robosuite":
        from ate.bench.sims.robosuite_expert import JointSpaceExpert

        return JointSpaceExpert.for_env(env)
    from ate.bench.sims.metaworld_env import MetaWorldExpert

    return MetaWorldExpert(env.task)


def check_expert(suite: str, task: str, robot: str | None = None) -> None:
    """Refuse, in one line (SimError), a (suite, task, robot) whose scripted expert is known not to work.
    Cheap (nothing is built): call it before starting demo workers."""
    if suite == "robosuite":
        from ate.bench.sims.robosuite_expert import UNSUPPORTED

        if robot in UNSUPPORTED:
            from ate.errors import SimError

            raise SimError(f"robosuite/{task}/{robot}: the scripted expert does not work on {robot}: "
                           f"{UNSUPPORTED[robot]}; pick another robot (measured by: ate sims coverage --suite robosuite)")
