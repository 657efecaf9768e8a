"""Simulator coverage: every robosuite single arm and every MetaWorld v3 task builds (no expert roll-out),
errors from simulator workers arrive as one line, and `ate sims coverage` works end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ate.errors import ATEError, DataError, SimError

pytestmark = pytest.mark.sim

from ate.bench.sims import generate_demos, make_env, make_expert  # noqa: E402
from ate.bench.sims.base import sim_error  # noqa: E402
from ate.bench.sims.coverage import ROBOSUITE_ROBOTS  # noqa: E402

try:
    from metaworld.env_dict import MT50_V3

    MW_TASKS = list(MT50_V3)
except ImportError:  # collected, then skipped
    MW_TASKS = []


@pytest.mark.parametrize("robot", ROBOSUITE_ROBOTS)
def test_every_robosuite_arm_builds_for_lift(robot):
    pytest.importorskip("robosuite")
    from ate.bench.sims.robosuite_env import fingerpad_geoms

    env = make_env("robosuite", "Lift", robot=robot)
    try:
        s = env.reset(0)["state"]
        assert s.shape == (44,) and np.all(np.isfinite(s))
        gripper = env._arm.gripper["right"]
        pads = fingerpad_geoms(env._env.sim.model, gripper)
        assert all(pads) and all(g in env._env.sim.model.geom_names for side in pads for g in side)
        assert np.isclose(np.linalg.norm(env.finger_axis), 1.0)
        assert not env._env._check_grasp(gripper, env._env.cube)  # robosuite's grasp check runs on these names
        action = make_expert(env).act(s)
        assert action.shape == (env.action_dim,) and np.all(np.abs(action) <= 1.0)
        env.step(action)
    finally:
        env.close()


@pytest.mark.skipif(not MW_TASKS, reason="metaworld not installed")
def test_every_metaworld_task_builds():
    assert len(MW_TASKS) == 50
    for task in MW_TASKS:
        env = make_env("metaworld", task)
        try:
            s = env.reset(0)["state"]
            env.step(make_expert(env).act(s))
            assert s.shape == (39,) and env.max_steps == 500, task
        finally:
            env.close()


def test_sim_error_is_one_line_naming_the_episode():
    e = sim_error("robosuite", "Lift", "Panda", "step 3", ValueError("bad\nsecond line " + "x" * 400), seed=7)
    assert isinstance(e, SimError) and isinstance(e, ATEError)
    assert str(e).startswith("robosuite/Lift/Panda seed 7: step 3 failed: ValueError: bad") and "\n" not in str(e)


def test_unsupported_expert_is_refused_in_one_line(tmp_path):
    pytest.importorskip("robosuite")
    with pytest.raises(SimError, match=r"robosuite/Lift/Jaco: the scripted expert does not work on Jaco: .*drops"):
        generate_demos("robosuite", "Lift", "Jaco", n=1, out_dir=tmp_path, workers=2, progress=False)
    assert not list(tmp_path.iterdir())  # refused before any worker or file


def test_worker_setup_error_reaches_the_caller_not_a_broken_pool(tmp_path, monkeypatch):
    pytest.importorskip("robosuite")
    from concurrent.futures.process import BrokenProcessPool

    from ate.bench.sims import demos, factory

    # through real spawned workers: the env fails to build inside each worker
    with pytest.raises(DataError, match="unknown robosuite robot 'NoSuchArm'") as info:
        generate_demos("robosuite", "Lift", "NoSuchArm", n=2, out_dir=tmp_path, workers=2, progress=False)
    assert not isinstance(info.value, BrokenProcessPool)
    # an unexpected (non-ate) exception in setup becomes a SimError naming suite / task / robot / seed
    monkeypatch.setattr(factory, "make_env", lambda *a, **k: (_ for _ in ()).throw(KeyError("boom")))
    ctx = demos._setup_expert("robosuite", "Lift", "Panda", None)
    with pytest.raises(SimError, match=r"^robosuite/Lift/Panda seed 5: expert setup failed: KeyError: 'boom'$"):
        demos._expert_episode(ctx, 5)


def _ate(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "ate", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("ate sims coverage: error:")]


def test_coverage_cli_tiny_run_and_unknown_names(tmp_path):
    pytest.importorskip("robosuite")
    r = _ate("sims", "coverage", "--suite", "robosuite", "--robots", "Panda", "--tasks", "Lift", "--seeds", 2,
             "--out", "cov", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    cov = json.loads((tmp_path / "cov" / "coverage.json").read_text())
    assert cov["schema"] == "ate.sims.coverage/1" and cov["seeds"] == [0, 1]
    (cell,) = cov["cells"]
    assert (cell["task"], cell["robot"], cell["episodes"], cell["errors"]) == ("Lift", "Panda", 2, 0)
    assert cell["success_rate"] == 1.0 and cell["bench_budget"] == 150 and cell["refused_by_bench"] is None
    md = (tmp_path / "cov" / "coverage.md").read_text()
    assert "ate sims coverage --suite robosuite --robots Panda" in md and "Wall time" in md and "| Panda |" in md
    assert (tmp_path / "cov" / "coverage.png").stat().st_size > 0

    r = _ate("sims", "coverage", "--suite", "robosuite", "--robots", "Pnada", "--seeds", 2, cwd=tmp_path)
    assert r.returncode == 1
    assert _error_lines(r.stderr) == ["ate sims coverage: error: unknown robosuite robot 'Pnada'; did you mean 'Panda'? "
                                      "(available: " + ", ".join(ROBOSUITE_ROBOTS) + ")"]
    if MW_TASKS:
        r = _ate("sims", "coverage", "--suite", "metaworld", "--tasks", "reach-v9", cwd=tmp_path)
        assert r.returncode == 1
        (line,) = _error_lines(r.stderr)
        assert line.startswith("ate sims coverage: error: unknown metaworld task 'reach-v9'; did you mean 'reach-v3'?")
    assert not (tmp_path / "benchmarks").exists()  # refused before writing anything


def test_bench_refuses_an_unsupported_target_robot_before_any_demo(tmp_path):
    pytest.importorskip("robosuite")
    from ate.bench.pipeline import BenchConfig, run_bench

    cfg = BenchConfig.from_preset("robosuite", "smoke", target_robot="Sawyer", out_dir=str(tmp_path / "run"),
                                  demo_dir=str(tmp_path / "demos"), progress=False)
    with pytest.raises(SimError, match=r"^robosuite/Lift/Sawyer: the scripted expert does not work on Sawyer"):
        run_bench(cfg)
    assert not (tmp_path / "demos").exists()


@pytest.mark.skipif(not MW_TASKS, reason="metaworld not installed")
def test_metaworld_coverage_reports_the_bench_budget(tmp_path):
    from ate.bench.sims.coverage import run_coverage, write_coverage

    cov = run_coverage("metaworld", tasks=["reach-v3"], seeds=2, workers=1, progress=False, command="test")
    (cell,) = cov["cells"]
    assert (cell["robot"], cell["max_steps"], cell["bench_budget"], cell["episodes"]) == ("Sawyer", 500, 200, 2)
    assert cell["successes_within_budget"] <= cell["successes"] == 2 and cell["max_steps_success"] < 200
    assert cov["recommended_budget"] % 50 == 0 and cov["recommended_budget"] >= cell["max_steps_success"]
    md = write_coverage(cov, tmp_path)["md"].read_text()
    assert "| reach-v3 | 100 % (2/2) | 100 % (2/2) |" in md and "within the bench budget of 200 steps" in md
