"""The regime summary (ate.bench.regime): summary.json values, merging and refusing runs, report and plots.

The runs are results.json files built with `ate.bench.report.build_results` from hand-made evaluation rows
(success counts chosen so every mean is exact), so the summary is checked against numbers known here.
"""

from __future__ import annotations

import json

import pytest

from ate.bench import regime
from ate.bench.pipeline import BenchConfig
from ate.bench.report import build_results
from ate.errors import ConfigError

N_EPS = 20
BASE = {1: 2, 5: 6, 25: 10}  # SFT at 1 / 5 / 25 demos: 25.0 / 45.0 / 65.0 %


def _rows(arm, n_demos, rates, tasks, step, robot="Sawyer", seed_start=200_000):
    """Evaluation rows: rates[task][seed] successes out of N_EPS, the first k episodes succeed."""
    out = []
    for task in tasks:
        for seed, k in enumerate(rates[task]):
            eps = [{"seed": seed_start + i, "success": i < k, "steps": 50, "wall_s": 0.1} for i in range(N_EPS)]
            out.append({"arm": arm, "task": task, "robot": robot, "seed": seed, "n_demos": n_demos, "step": step,
                        "episodes": eps})
    return out


def _profile(arm, n, seed, scale):
    levels = [0.25, 0.75]
    return {"arm": arm, "n_demos": n, "seed": seed, "levels": levels, "noise_level": levels, "t": [25.0, 75.0],
            "rel_strength": [scale * 1e-3, scale * 1e-2], "frac_clamped": [0.0, 0.5 * scale],
            "guidance_norm": [0.1, 0.2], "rows": 64}


def _paper_choice(family):
    """A committed steer choice (as `ate.bench.steer_choice` gives it) that is the paper's guidance: what the
    runs below used."""
    return {"schema": "ate.steer.choice/1", "family": family, "policy": family, "variant": "paper",
            "name": "the paper's guidance", "options": {}, "file": f"steer_choices/{family}.json"}


def _write_run(path, suite="metaworld", policy="dp", demos=(1, 5), arms=("sft", "ate", "ate_paper"), seed_start=200_000,
               source=True, profiles=True, command="ate bench --suite metaworld ...", anchor_weight=1.0):
    """One finished run: SFT's (seed, task) cells succeed c, c + 2, c + 4, c + 6 times of 20 (c by demos:
    mean (4c + 12) / 80), every other arm 2 more per cell (+10.0 points)."""
    tasks = ["drawer-open-v3", "door-close-v3"]
    cfg = BenchConfig(suite=suite, policy=policy, source_robots=["Sawyer"], target_robot="Sawyer",
                      source_tasks=["reach-v3", "push-v3"], target_tasks=tasks, n_target_demos=list(demos),
                      arms=list(arms), seeds=[0, 1], finetune_steps=100, eval_seed_start=seed_start,
                      out_dir=str(path), source_eval_episodes=N_EPS if source else 0, anchor_weight=anchor_weight)
    evals = []
    for n in demos:
        c = BASE[n]
        sft = {tasks[0]: [c, c + 2], tasks[1]: [c + 4, c + 6]}
        for arm in arms:
            bonus = 0 if arm == "sft" else 2
            evals += _rows(arm, n, {t: [k + bonus for k in v] for t, v in sft.items()}, tasks, 100,
                           seed_start=seed_start)
    if source:  # the pretrained policy on its sources: 18 / 20 and 14 / 20 -> mean 80 %
        for task, k in (("reach-v3", 18), ("push-v3", 14)):
            eps = [{"seed": seed_start + i, "success": i < k, "steps": 50, "wall_s": 0.1} for i in range(N_EPS)]
            evals.append({"arm": "pretrained", "task": task, "robot": "Sawyer", "seed": None, "n_demos": None,
                          "step": 3000, "episodes": eps})
    prof = [_profile("ate", n, s, scale=1 + s) for n in demos for s in (0, 1)] if profiles and "ate" in arms else []
    res = build_results(cfg, evals, {"train-x": {"wall_s": 5.0, "cached": False}}, command=command, total_wall_s=123.0,
                        guidance_profiles=prof)
    if not profiles:
        res.pop("guidance_profiles")  # a run made before the profile existed
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(res))
    return res


def test_summary_values_merge_and_outputs(tmp_path, single_torch_thread):
    a = _write_run(tmp_path / "mw-dp-a", demos=(1, 5))
    _write_run(tmp_path / "mw-dp-b", demos=(25,), arms=("sft", "ate"), source=False, profiles=False,
               command="ate bench --n-target-demos 25")
    _write_run(tmp_path / "rs-rdt", suite="robosuite", policy="rdt", demos=(5,), arms=("sft", "lora"), source=False,
               seed_start=100_000)
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"schema": "ate.eval_speed/1", "compare": {"speedup": 3.4}}))
    s = regime.summarize([tmp_path / "mw-dp-a", tmp_path / "mw-dp-b", tmp_path / "rs-rdt"], speed)
    assert s["schema"] == "ate.regime.summary/1" and s["eval_speedup"] == 3.4
    assert s["eval_speedup_by_suite"] == {"unknown": 3.4}  # a result that did not record its suite
    # one result per suite: each recorded, the lowest is the headline; a suite measured twice keeps its lower figure
    rs = tmp_path / "rs.json"
    rs.write_text(json.dumps({"args": {"suite": "robosuite"}, "compare": {"speedup": 3.7}}))
    mw = tmp_path / "mw.json"
    mw.write_text(json.dumps({"args": {"suite": "metaworld"}, "compare": {"speedup": 3.8}}))
    mw2 = tmp_path / "mw2.json"
    mw2.write_text(json.dumps({"args": {"suite": "metaworld"}, "compare": {"speedup": 2.6}}))
    assert regime.eval_speedups([rs, mw, tmp_path / "absent.json"]) == {"metaworld": 3.8, "robosuite": 3.7}
    assert regime.eval_speedups([mw, mw2]) == {"metaworld": 2.6}
    s2 = regime.summarize([tmp_path / "rs-rdt"], [rs, mw])
    assert s2["eval_speedup"] == 3.7 and s2["eval_speedup_by_suite"] == {"metaworld": 3.8, "robosuite": 3.7}
    assert regime.summarize([tmp_path / "rs-rdt"], None)["eval_speedup_by_suite"] == {}
    assert set(s["suites"]) == {"metaworld", "robosuite"}
    mw = s["suites"]["metaworld"]
    assert mw["rdt"] == {} and mw["pi0"] == {} and s["suites"]["robosuite"]["dp"] == {}
    dp = mw["dp"]
    assert dp["sft_by_demos"] == {"1": 25.0, "5": 45.0, "25": 65.0}
    assert list(dp["sft_by_demos"]) == ["1", "5", "25"]  # merged from both runs, in numeric order
    assert list(dp["arms"]) == list(regime.REPORT_ARMS)
    assert dp["arms"]["lora"] == {} and dp["arms"]["ate_unaligned"] == {} and dp["arms"]["scratch"] == {}
    # every non-SFT arm has 2 more successes per (seed, task) cell of 20 episodes: +10.0 points exactly
    best = dp["arms"]["ate_best"]["5"]
    assert best["mean"] == 55.0 and best["delta_vs_sft"]["mean"] == 10.0
    assert dp["arms"]["ate_best"]["25"]["delta_vs_sft"]["mean"] == 10.0  # from run b
    assert dp["arms"]["ate_paper"]["1"]["delta_vs_sft"]["mean"] == 10.0
    assert "delta_vs_sft" not in dp["arms"]["sft"]["1"] and "25" not in dp["arms"]["ate_paper"]
    # issue 11's steer summary: the chosen arm (ate_best) against SFT per demos, ATE-paper alongside
    steer = regime.steer_summary(s, _paper_choice)  # the runs recorded no choice: matched on their options
    assert steer["schema"] == "ate.steer.summary/1" and set(steer["suites"]) == {"metaworld"}  # rs-rdt has no ate
    chosen = steer["suites"]["metaworld"]["dp"]["chosen"]
    assert (chosen["variant"], chosen["family"], chosen["how"]) == ("paper", "dp", "matched")
    assert steer["chosen"] == f"metaworld/dp: {chosen['label']}"
    cell = steer["suites"]["metaworld"]["dp"]["5"]
    assert (cell["sft"], cell["best"], cell["delta"], cell["paper"], cell["paper_delta"]) == (45.0, 55.0, 10.0, 55.0, 10.0)
    assert steer["suites"]["metaworld"]["dp"]["25"]["paper"] is None  # run b had no ate_paper arm
    # the intervals are the run's own bootstrap, in percent rounded to 0.1
    row = next(r for r in a["summary"] if (r["arm"], r["n_demos"], r["task"]) == ("ate", 5, "all"))
    assert best["ci"] == [round(100 * v, 1) for v in row["ci95"]] and best["ci"][0] < 55.0 < best["ci"][1]
    # base: 90 % and 70 % on the two sources (only run a has a source evaluation)
    assert dp["base_by_source"] == {"Sawyer/push-v3": 70.0, "Sawyer/reach-v3": 90.0}
    assert dp["base_success"] == 80.0 and dp["base_gate_80"] is True
    assert (dp["seeds"], dp["episodes"], dp["eval_seed_start"], dp["split"]) == (2, N_EPS, 200_000, "validation")
    # the guidance profile: run a's four ate rows (scales 1, 2, 1, 2), run b has none
    prof = dp["guidance_profile"]["ate_best"]
    assert prof["profiles"] == 4 and prof["rel_strength"] == pytest.approx([1.5e-3, 1.5e-2])
    assert prof["rel_strength_min"] == pytest.approx([1e-3, 1e-2]) and prof["frac_clamped"] == pytest.approx([0, 0.75])
    assert [r["command"] for r in dp["runs"]] == ["ate bench --suite metaworld ...", "ate bench --n-target-demos 25"]
    rs = s["suites"]["robosuite"]["rdt"]
    assert rs["split"] == "test" and rs["base_success"] is None and rs["base_gate_80"] is None
    assert rs["guidance_profile"] == {} and rs["arms"]["lora"]["5"]["delta_vs_sft"]["mean"] == 10.0

    paths = regime.write_report(s, tmp_path / "out")
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(s))
    for name in ("success_vs_demos", "delta_vs_sft", "guidance_profile"):
        assert paths[name].stat().st_size > 5000  # a real figure, not an empty canvas
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## metaworld / dp" in report and "## robosuite / rdt" in report
    assert "| ate_best | 35.0" in report and "Δ +10.0" in report and "80.0 % — passed" in report
    assert "Split: **validation**" in report and "ate bench --n-target-demos 25" in report and "3.4x" in report
    assert "no profile in these runs" in report  # the robosuite runs have none


def test_an_arm_outside_report_arms_follows_them(tmp_path, single_torch_thread):
    """The anchor arm (not one of REPORT_ARMS, which the committed summaries list) is summarised, compared with SFT,
    tabled and plotted after them; runs whose anchor arms used different weights do not merge."""
    _write_run(tmp_path / "a", demos=(5,), arms=("sft", "ate", "anchor"))
    s = regime.summarize([tmp_path / "a"], None)
    dp = s["suites"]["metaworld"]["dp"]
    assert list(dp["arms"]) == [*regime.REPORT_ARMS, "anchor"]
    assert dp["arms"]["anchor"]["5"]["mean"] == 55.0 and dp["arms"]["anchor"]["5"]["delta_vs_sft"]["mean"] == 10.0
    assert "anchor" not in dp["guidance_profile"]  # no latent guidance, no profile
    # issue 11's steer summary carries it beside the chosen variant, with its β; a run of SFT + anchor only has
    # no chosen latent-guidance variant but keeps its anchor row
    steer = regime.steer_summary(s, _paper_choice)["suites"]["metaworld"]["dp"]
    assert steer["anchor"] == {"weight": 1.0, "5": {"sft": 45.0, "anchor": 55.0, "delta": 10.0,
                                                    "ci": dp["arms"]["anchor"]["5"]["delta_vs_sft"]["ci"]}}
    assert steer["5"]["delta"] == 10.0 and steer["chosen"]["variant"] == "paper"
    _write_run(tmp_path / "only", demos=(5,), arms=("sft", "anchor"), anchor_weight=0.3)
    only = regime.steer_summary(regime.summarize([tmp_path / "only"], None), _paper_choice)
    assert only["chosen"] == "" and set(only["suites"]["metaworld"]["dp"]) == {
        "anchor", "split", "seeds", "episodes", "headline_episodes"}
    assert only["suites"]["metaworld"]["dp"]["anchor"]["weight"] == 0.3
    paths = regime.write_report(s, tmp_path / "out")
    assert "| anchor | 55.0" in (tmp_path / "out" / "report.md").read_text()
    assert paths["delta_vs_sft"].stat().st_size > 5000
    _write_run(tmp_path / "b", demos=(25,), arms=("sft", "anchor"), anchor_weight=0.5)
    with pytest.raises(ConfigError, match=r"anchor arms use different anchor_weight \(\[0.5, 1.0\]\)"):
        regime.summarize([tmp_path / "a", tmp_path / "b"], None)
    _write_run(tmp_path / "c", demos=(25,), arms=("sft", "ate"), anchor_weight=0.5)  # no anchor arm: it merges
    assert "25" in regime.summarize([tmp_path / "a", tmp_path / "c"], None)["suites"]["metaworld"]["dp"]["arms"]["sft"]


def test_overlap_other_seeds_and_bad_input_are_refused(tmp_path):
    _write_run(tmp_path / "a", demos=(1, 5))
    _write_run(tmp_path / "b", demos=(5, 25))
    with pytest.raises(ConfigError, match=r"both hold metaworld/dp at 5 demos"):
        regime.summarize([tmp_path / "a", tmp_path / "b"], None)
    _write_run(tmp_path / "c", demos=(25,), seed_start=100_000)
    with pytest.raises(ConfigError, match="different evaluation seeds"):
        regime.summarize([tmp_path / "a", tmp_path / "c"], None)
    with pytest.raises(ConfigError, match="no results.json"):
        regime.summarize([tmp_path / "missing"], None)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "results.json").write_text(json.dumps({"schema": "other/1"}))
    with pytest.raises(ConfigError, match="schema"):
        regime.summarize([tmp_path / "d"], None)
    assert regime.eval_speedup(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="compare.speedup"):
        regime.eval_speedup(tmp_path / "bad.json")


def test_cli_summarize_and_the_pipeline_options_still_parse(tmp_path, capsys):
    from ate.cli import main, parse_args

    _write_run(tmp_path / "run", demos=(1,))
    assert main(["bench", "summarize", str(tmp_path / "run"), "--out", str(tmp_path / "out"),
                 "--eval-speed", str(tmp_path / "none.json")]) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["eval_speedup"] is None
    assert "| sft | 25.0" in capsys.readouterr().out
    args = parse_args(["bench", "--suite", "metaworld", "--preset", "smoke", "--seeds", "0", "1"])
    assert args.func.__name__ == "_run" and args.seeds == [0, 1]
    assert main(["bench", "summarize", str(tmp_path / "run"), str(tmp_path / "run"), "--out", str(tmp_path / "o")]) == 1
    assert "ate bench summarize: error:" in capsys.readouterr().err


def test_headline_arms_only_at_the_headline_point(tmp_path, single_torch_thread):
    """One run with the whole arm set at 5 demos (50 episodes) and a cheaper curve (sft, ate) around it."""
    cfg = BenchConfig(suite="metaworld", source_robots=["Sawyer"], target_robot="Sawyer", source_tasks=["reach-v3"],
                      target_tasks=["drawer-open-v3"], n_target_demos=[1, 5, 25], arms=["sft", "ate"],
                      headline_demos=5, headline_arms=["lora", "ate_paper"], headline_eval_episodes=50,
                      eval_episodes=20, seeds=[0], finetune_steps=100, out_dir=str(tmp_path))
    assert cfg.headline == 5 and cfg.all_arms == ["sft", "ate", "lora", "ate_paper"]
    assert cfg.arms_at(1) == ["sft", "ate"] and cfg.arms_at(5) == cfg.all_arms
    assert (cfg.episodes_at(1), cfg.episodes_at(5)) == (20, 50)
    evals = []
    for n in cfg.n_target_demos:
        for arm in cfg.arms_at(n):
            k = {"sft": 5, "ate": 6, "lora": 7, "ate_paper": 5}[arm]  # successes of the first 10 episodes
            eps = [{"seed": 200_000 + i, "success": i < k, "steps": 50, "wall_s": 0.1} for i in range(cfg.episodes_at(n))]
            evals.append({"arm": arm, "task": "drawer-open-v3", "robot": "Sawyer", "seed": 0, "n_demos": n, "step": 100,
                          "episodes": eps})
    res = build_results(cfg, evals, {})
    cells = {(s["arm"], s["n_demos"]): s for s in res["summary"] if s["task"] == "all"}
    assert set(cells) == {(a, n) for n in (1, 25) for a in ("sft", "ate")} | {(a, 5) for a in cfg.all_arms}
    assert cells[("lora", 5)]["episodes"] == 50 and cells[("sft", 1)]["episodes"] == 20
    assert res["headline"]["n_demos"] == 5 and res["headline"]["lora"]["success_rate"] == pytest.approx(7 / 50)
    # ATE − SFT at the headline is 1 success in 50, paired episode by episode: every resample agrees
    assert res["headline"]["ate_minus_sft"]["diff"] == pytest.approx(1 / 50)
    assert {(c["a"], c["n_demos"]) for c in res["comparisons"] if c["b"] == "sft" and c["task"] == "all"} == \
        {("ate", 1), ("ate", 5), ("ate", 25), ("lora", 5), ("ate_paper", 5)}


def test_headroom_rule_keeps_tasks_inside_the_band_on_validation_seeds_only(tmp_path, single_torch_thread):
    # SFT per task at 5 demos: drawer-open (6 + 8) / 40 = 35 %, door-close (10 + 12) / 40 = 55 %; at 1 demo 15 % / 35 %
    _write_run(tmp_path / "val", demos=(5, 1))
    rule = regime.headroom(tmp_path / "val")
    assert rule["n_demos"] == 5 and rule["per_task"] == {"drawer-open-v3": 35.0, "door-close-v3": 55.0}
    assert rule["keep"] == ["drawer-open-v3", "door-close-v3"]
    assert regime.headroom(tmp_path / "val", n_demos=1)["per_task"]["drawer-open-v3"] == 15.0
    assert len(regime.headroom(tmp_path / "val", n_demos=1)["keep"]) == 2  # the band is inclusive: 15 % stays
    assert regime.headroom(tmp_path / "val", n_demos=1, band=(16, 85))["keep"] == ["door-close-v3"]
    assert regime.headroom(tmp_path / "val", band=(40, 85))["keep"] == ["door-close-v3"]
    _write_run(tmp_path / "test", demos=(5,), seed_start=100_000)
    with pytest.raises(ConfigError, match="not validation seeds"):
        regime.headroom(tmp_path / "test")
    with pytest.raises(ConfigError, match="no SFT result with 3 target demos"):
        regime.headroom(tmp_path / "val", n_demos=3)


# per family: the committed validation run whose SFT LR the sweep chose and whose headroom rule picked the tasks
REGIME_EVIDENCE = {("metaworld", "dp"): "metaworld-dp-base-gate/d50-s30k",
                   ("metaworld", "pi0"): "metaworld-pi0-val/sft-lr1e-3",
                   ("metaworld", "rdt"): "metaworld-rdt-val/sft-lr1e-3",
                   ("robosuite", "rdt"): "robosuite-rdt-val/sft-lr1e-3",
                   ("robosuite", "pi0"): "robosuite-pi0-val/sft-lr3e-3",
                   ("robosuite", "dp"): "robosuite-dp-val/sft-lr3e-3"}
# per (suite, family): the committed validation run of the LoRA LR the preset takes (dp's: the demos-curve run)
LORA_EVIDENCE = {("metaworld", "pi0"): "metaworld-pi0-val/lora-lr3e-3", ("metaworld", "rdt"): "metaworld-rdt-val/lora-lr3e-3",
                 ("robosuite", "rdt"): "robosuite-rdt-val/lora-lr3e-3", ("robosuite", "pi0"): "robosuite-pi0-val/lora-lr1e-2",
                 ("robosuite", "dp"): "robosuite-dp-val/lora-lr1e-2"}


@pytest.mark.parametrize("suite,family", list(REGIME_EVIDENCE))
def test_regime_preset_follows_the_committed_validation_evidence(suite, family):
    """The preset's choices are the ones the committed validation runs made, and it scores on test seeds."""
    from pathlib import Path

    from ate.bench import steer_choice

    root = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "regime"
    cfg = BenchConfig.from_preset(suite, "regime", policy=family)
    gate = root / REGIME_EVIDENCE[(suite, family)]
    rule = json.loads((gate / "headroom.json").read_text())
    assert cfg.target_tasks == rule["keep"] and rule["eval_seed_start"] >= regime.VALIDATION_SEED_START
    gate_cfg = json.loads((gate / "config.json").read_text())  # the base that passed the 80 % gate
    for k in ("suite", "policy", "n_source_demos", "pretrain_steps", "pretrain_lr", "source_robots", "source_tasks",
              "target_robot", "policy_config", "batch_size", "max_steps", "action_steps", "demo_seed",
              "finetune_lr", "finetune_epochs", "finetune_min_steps", "finetune_max_steps"):
        assert getattr(cfg, k) == gate_cfg[k], k
    if (suite, family) in LORA_EVIDENCE:
        lora = json.loads((root / LORA_EVIDENCE[(suite, family)] / "config.json").read_text())
        assert lora["arms"] == ["lora"] and lora["eval_seed_start"] >= regime.VALIDATION_SEED_START
        assert cfg.lora_lr == lora["lora_lr"] and cfg.lora_rank == lora["lora_rank"]
    assert cfg.eval_seed_start < regime.VALIDATION_SEED_START  # test seeds
    assert cfg.headline == 5 and cfg.episodes_at(5) >= 50 and len(cfg.seeds) >= 3
    assert set(cfg.all_arms) == set(regime.REPORT_ARMS) - {"ate_best"} | {"ate"}
    assert all(cfg.guidance_kwargs("ate")[k] == v for k, v in steer_choice(family)["options"].items())


def test_sweep_choice_rule_mean_over_demos_ties_to_fewer_changes():
    from ate.bench.pipeline import PAPER_GUIDANCE
    from ate.bench.sweep import choose

    def row(variant, arm, n, diff, **changed):
        g = {**PAPER_GUIDANCE, "kl_direction": "paper", "prior_mode": "aggregate", **changed}
        return {"variant": variant, "arm": arm, "n_demos": n, "diff": diff, "ci95": [diff - 0.1, diff + 0.1],
                "guidance": g}

    rows = [row("paper:ate_paper", "ate_paper", 1, 0.0), row("paper:ate_paper", "ate_paper", 5, 0.0),
            row("a", "ate", 1, 0.10, sign="flipped"), row("a", "ate", 5, -0.04, sign="flipped"),  # mean +0.03
            row("b", "ate", 1, 0.02, sign="flipped", scale=0.3), row("b", "ate", 5, 0.04, sign="flipped", scale=0.3),
            row("c", "ate_unaligned", 1, 0.5)]  # a control, never a candidate
    c = choose(rows, "sweep/", "validation seeds")
    assert c["variant"] == "a" and c["options"] == {"sign": "flipped"}  # 0.03 = 0.03: fewer changes win
    assert [x["variant"] for x in c["candidates"]] == ["a", "b", "paper:ate_paper"]
    rows[3]["diff"] = -0.10  # a falls to 0.0 (level with the paper): b leads alone
    assert choose(rows, "sweep/", "validation seeds")["variant"] == "b"


def test_merge_refuses_runs_of_another_setting_and_steer_summary_checks_the_guidance(tmp_path, single_torch_thread):
    _write_run(tmp_path / "a", demos=(1, 5))
    res = _write_run(tmp_path / "b", demos=(25,), arms=("sft", "ate"))
    res["config"]["target_tasks"] = ["lever-pull-v3", "door-close-v3"]  # another instrument
    (tmp_path / "b" / "results.json").write_text(json.dumps(res))
    with pytest.raises(ConfigError, match="differ in target_tasks"):
        regime.summarize([tmp_path / "a", tmp_path / "b"], None)
    s = regime.summarize([tmp_path / "a"], None)
    assert regime.steer_summary(s, _paper_choice)["suites"]["metaworld"]["dp"]["5"]["delta"] == 10.0
    other = lambda f: {**_paper_choice(f), "variant": "rel1.0", "options": {"scale": 1.0, "strength": "relative"}}
    with pytest.raises(ConfigError, match="not a committed steer choice"):  # the run's ate arm used the paper's λ 2
        regime.steer_summary(s, other)


def test_sweep_choice_skips_alignment_ablations():
    from ate.bench.pipeline import PAPER_GUIDANCE
    from ate.bench.sweep import choose

    g = {**PAPER_GUIDANCE, "kl_direction": "paper", "prior_mode": "aggregate"}
    rows = [{"variant": "gmm", "arm": "ate", "n_demos": 5, "diff": 0.3, "ci95": [0.1, 0.5],
             "guidance": {**g, "prior_mode": "gmm"}},
            {"variant": "flip", "arm": "ate", "n_demos": 5, "diff": 0.1, "ci95": [0.0, 0.2],
             "guidance": {**g, "sign": "flipped"}}]
    c = choose(rows, "s/", "validation seeds")
    assert c["variant"] == "flip" and [x["variant"] for x in c["candidates"]] == ["flip"]


def test_the_default_anchor_weight_is_the_best_beta_of_the_committed_validation_sweep():
    """BenchConfig.anchor_weight follows the evidence: the β whose anchor arm has the largest mean paired difference
    to SFT over the numbers of demos it ran (the sweep's choice rule), on validation seeds."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "steer" / "pi0" / "anchor"
    score = {}
    for run in sorted(root.glob("b*/results.json")):
        res = json.loads(run.read_text())
        assert res["config"]["eval_seed_start"] >= regime.VALIDATION_SEED_START and res["config"]["arms"] == ["sft", "anchor"]
        diffs = [c["diff"] for c in res["comparisons"] if (c["a"], c["b"], c["task"]) == ("anchor", "sft", "all")
                 and c["step"] == res["config"]["finetune_steps"]]
        assert len(diffs) == len(res["config"]["n_target_demos"])
        score[res["config"]["anchor_weight"]] = sum(diffs) / len(diffs)
    assert len(score) == 5 and BenchConfig().anchor_weight == max(score, key=score.get) == 0.3


def test_ci_recheck_recomputes_each_comparison_from_the_stored_episodes(tmp_path, capsys):
    """`python -m ate.bench.ci_recheck`: a run written with the current bootstrap gets back its own intervals (same
    episodes, same resampling), one row per arm and demos; the recorded ones are read from the file untouched."""
    from ate.bench import ci_recheck

    res = _write_run(tmp_path / "run", demos=(1, 5), arms=("sft", "ate", "anchor"), seed_start=100_000)
    rows = ci_recheck.recheck(tmp_path / "run")
    assert [(r["arm"], r["n_demos"]) for r in rows] == [("ate", 1), ("anchor", 1), ("ate", 5), ("anchor", 5)]
    recorded = {(c["a"], c["n_demos"]): c for c in res["comparisons"] if c["task"] == "all" and c["b"] == "sft"}
    for r in rows:
        c = recorded[(r["arm"], r["n_demos"])]
        assert r["ci_now"] == r["ci_recorded"] == [round(100 * v, 1) for v in c["ci95"]]
        assert (r["diff"], r["split"], r["family"]) == (10.0, "test", "dp")
    assert ci_recheck.main([str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "ci_recheck.md").read_text()
    assert md.count("| contains 0 |") + md.count("| above 0 |") == 4 and "**" not in md  # no verdict changed
    assert json.loads((tmp_path / "out" / "ci_recheck.json").read_text())["rows"] == json.loads(json.dumps(rows))
    with pytest.raises(SystemExit, match=r"error: .*nowhere: no results.json"):
        ci_recheck.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])


def test_summary_rescores_runs_recorded_with_an_older_interval_method(tmp_path, single_torch_thread):
    """A run whose results.json recorded another `ci_method` (and other intervals) is re-scored from its stored
    episodes before it is summarised: the summary's intervals are the current bootstrap's, i.e. those of the same
    run written today, and the means are untouched. A current run is passed through as it is."""
    from ate.bench.report import CI_METHOD, rescored

    res = _write_run(tmp_path / "new", demos=(1, 5), seed_start=100_000)
    assert rescored(res) is res
    old = json.loads(json.dumps(res))
    old["ci_method"] = "hierarchical ... within each (seed, task)"
    for row in old["summary"] + old["comparisons"]:
        row["ci95"] = [0.0, 0.0]  # what an older bootstrap recorded: anything but the current intervals
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(old))
    again = rescored(old)
    assert (again["ci_method"], again["ci_method_recorded"]) == (CI_METHOD, old["ci_method"])
    for key in ("summary", "comparisons", "headline"):
        assert again[key] == json.loads(json.dumps(res[key])), key
    assert old["summary"][0]["ci95"] == [0.0, 0.0]  # the record read is not modified
    new_summary = regime.summarize([tmp_path / "new"], eval_speed_file=None)
    old_summary = regime.summarize([tmp_path / "old"], eval_speed_file=None)
    assert old_summary["ci_method"] == CI_METHOD
    assert old_summary["suites"]["metaworld"]["dp"]["arms"] == new_summary["suites"]["metaworld"]["dp"]["arms"]
