"""Tests of the evidence pipeline: statistics, stage cache, CLI options, report, and a smoke run end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ate.bench.pipeline import BenchConfig, StageCache
from ate.bench.report import bootstrap_mean, build_results, summary_table, write_report


def _rows(seed_rates: dict[int, float], task: str, arm: str, n_eps: int = 20, step: int = 100, rng=None):
    out = []
    for seed, p in seed_rates.items():
        k = int(round(p * n_eps))
        eps = [{"seed": 100_000 + i, "success": i < k, "steps": 50, "wall_s": 0.1} for i in range(n_eps)]
        out.append({"arm": arm, "task": task, "robot": "UR5e", "seed": seed, "n_demos": 5, "step": step, "episodes": eps})
    return out


def test_bootstrap_mean_brackets_and_shrinks():
    x = np.zeros((3, 2, 40))
    x[..., :20] = 1.0  # 50 % everywhere
    mean, (lo, hi) = bootstrap_mean(x)
    assert mean == 0.5 and lo < 0.5 < hi
    wide = bootstrap_mean(x[:, :, ::4])[1]
    assert (wide[1] - wide[0]) > (hi - lo)  # fewer episodes -> wider interval
    assert bootstrap_mean(np.ones((2, 1, 5)))[1] == [1.0, 1.0]
    with pytest.raises(ValueError, match="seeds, tasks, episodes"):
        bootstrap_mean(np.ones((4, 5)))


def test_bootstrap_carries_seed_variance():
    # same pooled mean, but one arm's seeds disagree completely: its interval must be wider
    agree = np.zeros((4, 1, 50))
    agree[..., :25] = 1
    disagree = np.zeros((4, 1, 50))
    disagree[:2] = 1
    ci_a, ci_d = bootstrap_mean(agree)[1], bootstrap_mean(disagree)[1]
    assert (ci_d[1] - ci_d[0]) > 2 * (ci_a[1] - ci_a[0])


def test_bootstrap_resamples_placements_shared_by_the_seeds():
    # three training seeds that agree episode by episode: the placement alone decides success, so the seeds add no
    # information and the interval must be the one of a single seed. 2 tasks x 100 episodes at p = 0.5: sd of the
    # mean = sqrt(0.25 / 200) = 0.035, 95 % width ~ 2 * 1.96 * 0.035 = 0.139. Tolerance 15 %: the percentile width
    # of 2000 resamples has a Monte-Carlo sd of ~2 %, and each end moves in steps of 1 / 200 = 0.005 (~4 % of the
    # width). Resampling episodes per (seed, task) cell instead would give 1 / sqrt(3) of it (0.58): far outside.
    rng = np.random.default_rng(1)
    one = (rng.permutation(200) < 100).astype(float).reshape(1, 2, 100)
    lo1, hi1 = bootstrap_mean(one)[1]
    lo3, hi3 = bootstrap_mean(np.repeat(one, 3, axis=0))[1]
    assert 0.85 < (hi3 - lo3) / (hi1 - lo1) < 1.15
    assert 0.85 < (hi3 - lo3) / (2 * 1.96 * np.sqrt(0.25 / 200)) < 1.15


def test_stage_cache_skips_reruns_and_invalidates(tmp_path):
    calls = []
    out = tmp_path / "out"

    def work(v):
        def fn():
            calls.append(v)
            out.mkdir(exist_ok=True)
            (out / "w").write_text(str(v))
            return {"v": v}

        return fn

    cache = StageCache(tmp_path / "stages")
    assert cache.run("s", {"a": 1}, work(1), output=out) == {"v": 1}
    assert cache.run("s", {"a": 1}, work(2), output=out) == {"v": 1}  # cached
    assert calls == [1] and cache.timings["s"]["cached"]
    assert cache.run("s", {"a": 2}, work(3), output=out) == {"v": 3}  # parameters changed -> re-run
    assert calls == [1, 3]
    # interrupted run with other parameters: its output folder is removed before the new run
    (tmp_path / "stages" / "t.started.json").write_text(json.dumps({"a": 0}))
    out.mkdir(exist_ok=True)
    (out / "stale").write_text("x")
    cache.run("t", {"a": 5}, work(5), output=out)
    assert not (out / "stale").exists()


def test_presets_and_config_validation():
    q = BenchConfig.from_preset("robosuite", "quick")
    assert q.source_robots == ["Panda", "IIWA"] and q.target_robot == "UR5e" and q.arms == ["sft", "ate"]
    f = BenchConfig.from_preset("robosuite", "full")
    assert "scratch" in f.arms and f.eval_episodes >= 50 and f.n_target_demos == [5, 10, 20] and len(f.seeds) >= 2
    mw = BenchConfig.from_preset("metaworld", "full")
    assert len(mw.source_tasks) == 10 and len(mw.target_tasks) == 5 and not set(mw.source_tasks) & set(mw.target_tasks)
    with pytest.raises(ValueError, match="arms"):
        BenchConfig(arms=["sft", "magic"])
    with pytest.raises(ValueError, match="sign"):
        BenchConfig(sign="sideways")
    with pytest.raises(ValueError, match="kl_direction"):
        BenchConfig(kl_direction="forward")
    for bad in (-1.0, float("inf")):
        with pytest.raises(ValueError, match=r"BenchConfig.anchor_weight must be a finite number >= 0"):
            BenchConfig(anchor_weight=bad)
    with pytest.raises(ValueError, match="no preset"):
        BenchConfig.from_preset("robosuite", "huge")
    with pytest.raises(ValueError, match="Sawyer"):
        BenchConfig.from_preset("metaworld", "quick", target_robot="UR5e")


def test_cli_options_override_preset_only_where_given():
    from ate.cli import parse_args
    from ate.cli.bench import config_from_args

    args = parse_args(["bench", "--seeds", "0", "1", "2", "--clamp", "none", "--sign", "flipped", "--scale", "3",
                       "--policy-config", '{"horizon": 8}', "--no-progress", "--target-robot", "IIWA",
                       "--anchor-weight", "0.25"])
    cfg = config_from_args(args)
    assert cfg.seeds == [0, 1, 2] and cfg.clamp is None and cfg.sign == "flipped" and cfg.scale == 3.0
    assert cfg.anchor_weight == 0.25 and BenchConfig.from_preset("robosuite", "quick").anchor_weight == 0.3
    assert cfg.policy_config == {"horizon": 8} and cfg.progress is False and cfg.target_robot == "IIWA"
    q = BenchConfig.from_preset("robosuite", "quick")
    assert cfg.pretrain_steps == q.pretrain_steps and cfg.out_dir == "runs/bench/robosuite-quick"


def test_results_schema_report_and_plots(tmp_path):
    cfg = BenchConfig(out_dir=str(tmp_path), arms=["sft", "ate"], seeds=[0, 1], target_tasks=["Lift", "Stack"],
                      finetune_steps=100, n_target_demos=[5])
    evals = []
    for task in ("Lift", "Stack"):
        evals += _rows({0: 0.2, 1: 0.3}, task, "sft") + _rows({0: 0.5, 1: 0.6}, task, "ate")
        evals += _rows({0: 0.1, 1: 0.1}, task, "sft", step=50) + _rows({0: 0.2, 1: 0.2}, task, "ate", step=50)
    res = build_results(cfg, evals, {"pretrain": {"wall_s": 3.0, "cached": False},
                                     "eval-x": {"wall_s": 1.0, "cached": False}, "eval-y": {"wall_s": 2.0, "cached": True}})
    assert res["schema"] == "ate.bench.results/1" and res["stage_wall_s"] == {"pretrain": 3.0, "eval": 3.0}
    head = res["headline"]
    assert head["sft"]["success_rate"] == pytest.approx(0.25) and head["ate"]["success_rate"] == pytest.approx(0.55)
    d = head["ate_minus_sft"]
    assert d["diff"] == pytest.approx(0.30) and 0 < d["ci95"][0] < 0.30 < d["ci95"][1]
    row = res["evaluations"][0]
    assert row["episodes"] == 20 and len(row["episode_results"]) == 20 and row["wilson95"][0] < row["success_rate"]
    table = summary_table(res)
    assert "| SFT | 25.0" in table and "| ATE | 55.0" in table and "+30.0" in table
    paths = write_report(res, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["headline"]["step"] == 100
    assert (tmp_path / "success_by_arm.png").stat().st_size > 1000 and "success_vs_steps" in paths
    assert "ATE − SFT" in (tmp_path / "report.md").read_text()


def test_target_action_space_is_the_finetuning_space(tmp_path):
    """Stage 2 and every arm train the target robot in one ActionSpace: the pretrained stats for a known robot,
    stats fitted on the target demos for a new one; the policy's chunk length and pad="repeat" either way."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_policies_helpers import write_demos

    from ate.bench.pipeline import _target_action_space
    from ate.data import Normalizer, load_episodes
    from ate.policies import make_policy
    from ate.policies.data import load_sources, prepare_policy

    src = write_demos(tmp_path / "src", "Sawyer", 4, 5, n_eps=2, T=12)
    tgt = write_demos(tmp_path / "tgt", "UR5e", 3, 5, n_eps=2, T=12, seed=1)
    policy = make_policy("dp", horizon=8, state_dim=8, down_dims=(16, 32), cond_dim=16)
    prepare_policy(policy, load_sources(src))
    known = _target_action_space(policy, "Sawyer", src, "minmax")
    assert known == policy.action_space("Sawyer", pad="repeat") and known.normalizer is policy.normalizers["Sawyer"]["action"]
    new = _target_action_space(policy, "UR5e", tgt, "minmax")
    assert (new.robot, new.action_dim, new.horizon, new.pad, new.action_index) == ("UR5e", 3, 8, "repeat", None)
    assert new.normalizer == Normalizer.fit(load_episodes(str(tgt)), mode="minmax")


@pytest.mark.sim
@pytest.mark.slow
def test_smoke_pipeline_end_to_end_and_resume(tmp_path):
    """The whole pipeline on tiny budgets (MetaWorld: the cheapest simulator), then a cached re-run."""
    from ate.bench.pipeline import run_bench

    cfg = BenchConfig.from_preset("metaworld", "smoke", out_dir=str(tmp_path / "run"), workers=1, progress=False,
                                  eval_every=0)
    res = run_bench(cfg)
    assert set(res["stage_wall_s"]) == {"demos", "pretrain", "stage1", "stage2", "train", "profile", "eval"}
    # the guided arm's guidance profile: one row per (arm, n_demos, seed), also next to its weights
    (prof,) = res["guidance_profiles"]
    assert (prof["arm"], prof["n_demos"], prof["seed"]) == ("ate", 2, 0) and len(prof["rel_strength"]) == 10
    assert json.loads((tmp_path / "run" / "train" / "ate-n2-seed0" / "guidance_profile.json").read_text())["levels"] \
        == prof["levels"]
    arms = {(e["arm"], e["step"]) for e in res["evaluations"]}
    assert arms == {("sft", cfg.finetune_steps), ("ate", cfg.finetune_steps)}
    assert all(e["episodes"] == cfg.eval_episodes for e in res["evaluations"])
    run = tmp_path / "run"
    for name in ("results.json", "report.md", "success_by_arm.png"):
        assert (run / name).is_file()
    ate_cfg = json.loads((run / "train" / "ate-n2-seed0" / "train_config.json").read_text())
    sft_cfg = json.loads((run / "train" / "sft-n2-seed0" / "train_config.json").read_text())
    assert ate_cfg["guidance"] == "ate" and sft_cfg["guidance"] == "off" and ate_cfg["init"] == sft_cfg["init"]
    # both arms and the stage-2 VAE share the target action space (the VAE's normaliser)
    vae_norm = json.loads((run / "vae" / "stage2-n2-seed0" / "model" / "config.json").read_text())["normalizer"]
    for arm in ("ate", "sft"):
        pol_norm = json.loads((run / "train" / f"{arm}-n2-seed0" / "pretrained_model" / "normalizer.json").read_text())
        assert np.allclose(pol_norm["Sawyer"]["action"]["min"], vae_norm["min"])
    again = run_bench(cfg)  # everything cached
    assert all(t["cached"] for t in again["stages"].values())
    assert again["headline"] == res["headline"]
    # a sweep folder of finished runs collates into one table (ate.bench.sweep)
    from ate.bench import sweep

    shutil.copytree(run, tmp_path / "sweep" / "variant-a", symlinks=True)
    assert sweep.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "table")]) == 0
    rows = json.loads((tmp_path / "table" / "sweep.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["variant-a"]
    assert rows[0]["diff"] == res["headline"]["ate_minus_sft"]["diff"] and rows[0]["guidance"]["scale"] == cfg.scale
    assert rows[0]["guidance_norm"] > 0 and (tmp_path / "table" / "sweep.png").is_file()


@pytest.mark.sim
@pytest.mark.slow
def test_smoke_unguided_arm_trains_no_vae(tmp_path):
    """`--arms sft` trains neither VAE stage (the arm reads its stats from the target space file, and its cache key
    is unchanged); adding `ate` to the same folder then trains both and keeps sft cached, in the VAE's space."""
    from ate.bench.pipeline import run_bench

    kw = dict(out_dir=str(tmp_path / "run"), workers=1, progress=False, eval_every=0, eval_episodes=1)
    run = tmp_path / "run"
    res = run_bench(BenchConfig.from_preset("metaworld", "smoke", arms=["sft"], **kw))
    assert set(res["stage_wall_s"]) == {"demos", "pretrain", "train", "eval"} and not (run / "vae").exists()
    assert res["guidance_profiles"] == [] and "| stage2 |" not in (run / "report.md").read_text()
    more = run_bench(BenchConfig.from_preset("metaworld", "smoke", arms=["sft", "ate"], **kw))
    assert not more["stages"]["stage1"]["cached"] and not more["stages"]["stage2-n2-seed0"]["cached"]
    assert more["stages"]["train-sft-n2-seed0"]["cached"] and not more["stages"]["train-ate-n2-seed0"]["cached"]
    vae_norm = json.loads((run / "vae" / "stage2-n2-seed0" / "model" / "config.json").read_text())["normalizer"]
    pol_norm = json.loads((run / "train" / "sft-n2-seed0" / "pretrained_model" / "normalizer.json").read_text())
    assert np.allclose(pol_norm["Sawyer"]["action"]["min"], vae_norm["min"])


@pytest.mark.sim
@pytest.mark.slow
def test_smoke_robosuite_cross_embodiment(tmp_path):
    """Panda -> UR5e: the stage-1 VAE reads 8-dim source chunks, the stage-2 VAE and the fine-tuned arms the
    7-dim UR5e space; intermediate checkpoints are evaluated too (eval_every)."""
    from ate.bench.pipeline import run_bench

    cfg = BenchConfig.from_preset("robosuite", "smoke", out_dir=str(tmp_path / "run"), workers=1, progress=False)
    res = run_bench(cfg)
    run = tmp_path / "run"
    s1 = json.loads((run / "vae" / "stage1" / "model" / "config.json").read_text())
    s2 = json.loads((run / "vae" / "stage2-n2-seed0" / "model" / "config.json").read_text())
    assert len(s1["normalizer"]["min"]) == 8 and len(s2["normalizer"]["min"]) == 7
    steps = sorted({e["step"] for e in res["evaluations"]})
    assert steps == [cfg.eval_every, cfg.finetune_steps] and (run / "success_vs_steps.png").is_file()
    assert {e["robot"] for e in res["evaluations"]} == {"UR5e"}


@pytest.mark.sim
@pytest.mark.slow
def test_smoke_every_arm_with_the_budget_rule(tmp_path):
    """Every arm on tiny budgets under the epochs budget rule: the same resolved step count for every arm,
    the paper's guidance for ate_paper, a target-only VAE for ate_unaligned, LoRA for lora, the anchor term (and only
    it: no guidance, full fine-tuning) for anchor, and each arm compared with SFT in the report."""
    from ate.bench.pipeline import ARMS, PAPER_GUIDANCE, run_bench

    cfg = BenchConfig.from_preset("metaworld", "smoke", out_dir=str(tmp_path / "run"), workers=1, progress=False,
                                  eval_every=0, eval_episodes=1, arms=list(ARMS), finetune_epochs=0.5,
                                  finetune_min_steps=2, finetune_max_steps=40, lora_rank=2, lora_lr=2e-3, scale=0.2,
                                  strength="relative", sign="flipped", reduction="per_sample", anchor_weight=0.5)
    res = run_bench(cfg)
    run = tmp_path / "run"
    tc = {a: json.loads((run / "train" / f"{a}-n2-seed0" / "train_config.json").read_text()) for a in ARMS}
    steps = {a: c["resolved_steps"] for a, c in tc.items()}
    assert len(set(steps.values())) == 1 and 2 <= steps["sft"] <= 40, steps
    assert {(e["arm"], e["trained_steps"]) for e in res["evaluations"]} == {(a, steps["sft"]) for a in ARMS}
    assert tc["ate_paper"]["guidance_config"] == PAPER_GUIDANCE
    from ate.steer import GuidanceConfig

    assert PAPER_GUIDANCE == GuidanceConfig().to_dict()  # the paper's guidance is GuidanceConfig's defaults
    assert tc["ate"]["guidance_config"]["strength"] == "relative" == tc["ate_unaligned"]["guidance_config"]["strength"]
    assert tc["lora"]["adapter"] == "lora" and tc["lora"]["guidance"] == "off" and tc["lora"]["lora"]["rank"] == 2
    assert tc["lora"]["train"]["lr"] == 2e-3 and tc["sft"]["train"]["lr"] == cfg.finetune_lr
    a = tc["anchor"]
    assert (a["anchor_weight"], a["guidance"], a["adapter"], a["train"]["lr"]) == (0.5, "off", "full", cfg.finetune_lr)
    assert {tc[x]["anchor_weight"] for x in ARMS if x not in ("anchor", "scratch")} == {0.0}
    assert "anchor_loss" in json.loads((run / "train" / "anchor-n2-seed0" / "metrics.jsonl").read_text().splitlines()[-1])
    # only the anchor arm's cache key holds the weight: the other arms' keys (and their cached runs) are unchanged
    keys = {x: json.loads((run / "stages" / f"train-{x}-n2-seed0.json").read_text())["params"] for x in ARMS}
    assert keys["anchor"]["anchor_weight"] == 0.5 and not any("anchor_weight" in keys[x] for x in ARMS if x != "anchor")
    assert {k: v for k, v in keys["anchor"].items() if k not in ("arm", "anchor_weight")} == \
        {k: v for k, v in keys["sft"].items() if k != "arm"}  # otherwise the anchor arm is sft's run
    unaligned = json.loads((run / "vae" / "stage2u-n2-seed0" / "model" / "config.json").read_text())
    assert unaligned["align_config"]["w_kl"] == 0 and unaligned["align_config"]["w_mmd"] == 0
    assert tc["ate_unaligned"]["vae"].endswith("stage2u-n2-seed0/model")
    pairs = [(c["a"], c["b"]) for c in res["comparisons"] if c["task"] == "all"]
    assert set(pairs) == {(a, "sft") for a in ARMS if a not in ("sft", "scratch")} | {("ate", "scratch"), ("sft", "scratch")}
    assert len(pairs) == len(set(pairs))  # each comparison once
    report = (run / "report.md").read_text()
    assert "LORA − SFT" in report and "ATE_PAPER − SFT" in report and "Fine-tuning budget" in report
    assert "ANCHOR − SFT" in report and "ANCHOR = SFT + β·MSE to the frozen pretrained policy's prediction" in report
    assert "(β = 0.5;" in report
