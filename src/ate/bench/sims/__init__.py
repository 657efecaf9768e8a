"""Simulators for the evidence benchmarks: robosuite (cross-embodiment) and MetaWorld (cross-task).

Headless on CPU (no camera, no renderer). One uniform interface (`SimEnv`):

```python
from ate.bench.sims import make_env, make_expert, generate_demos, evaluate
env = make_env("robosuite", "Lift", robot="UR5e", seed=0)   # or make_env("metaworld", "drawer-open-v3")
obs = env.reset(seed=3)                  # {"state": (S,) float32}; scene is a pure function of seed
obs, success = env.step(action)          # action (D,) raw units; MetaWorld: success = info["success"]
env.action_dim, env.state_dim, env.state_layout, env.max_steps, env.qpos()
expert = make_expert(env); expert.reset(); action = expert.act(obs["state"])
paths = generate_demos("robosuite", "Lift", "UR5e", n=10, seed=0, out_dir="demos/ur5e_lift")
results = evaluate(policy_factory, "robosuite", "Lift", "UR5e", seeds=range(1000, 1050), action_steps=8)
with WorkerPool(2) as pool:              # workers (and their envs) kept across evaluation calls
    results = evaluate(policy_factory, "robosuite", "Lift", "UR5e", pool=pool)
```

| suite     | tasks                  | robots                         | D          | S  | default max_steps |
|-----------|------------------------|--------------------------------|------------|----|-------------------|
| robosuite | Lift, Stack            | single arms by name; expert    | n_joints+1 | 44 | Lift 150,         |
|           |                        | works on Panda, IIWA, UR5e,    | (8 / 7)    |    | Stack 250         |
|           |                        | Kinova3, XArm7; Sawyer, Jaco   |            |    |                   |
|           |                        | refused (`check_expert`)       |            |    |                   |
| metaworld | any v3 task (ML10 ...) | Sawyer                         | 4          | 39 | 500               |

State layouts: `ate.bench.sims.obs`. Action definitions: the suite modules' docstrings.
Expert success per robot × task: `ate sims coverage --suite robosuite|metaworld` (tables in
benchmarks/results/sims/); simulator speed: `python -m ate.bench.sims.measure`; evaluation speed, batched
vs the one-episode-at-a-time reference (`evaluate_sequential`): `python -m ate.bench.eval_speed`.
`generate_demos` is the plain-function entry point for an `ate bench demos` command.
"""

from __future__ import annotations

from ate.bench.sims.base import SimEnv
from ate.bench.sims.demos import demo_path, generate_demos
from ate.bench.sims.evaluate import ExpertPolicy, ZeroPolicy, evaluate, evaluate_sequential, summarize
from ate.bench.sims.factory import SUITES, check_expert, make_env, make_expert
from ate.bench.sims.pool import WorkerPool

__all__ = [
    "SUITES",
    "SimEnv",
    "make_env",
    "make_expert",
    "check_expert",
    "generate_demos",
    "demo_path",
    "evaluate",
    "evaluate_sequential",
    "WorkerPool",
    "summarize",
    "ExpertPolicy",
    "ZeroPolicy",
]
