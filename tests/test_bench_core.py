"""Smoke runs of the core benchmark (`ate bench-core`) at tiny sizes: every figure is produced, finite and
consistent, the report / figure render, and the large-dataset writer produces a readable npy folder."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from ate.bench import core


@pytest.fixture(scope="module")
def tiny_results():
    torch.set_num_threads(1)
    thr = {"preset": "small", "action_dim": 3, "horizon": 4, "batch_size": 4,
           **core.vae_throughput_pair("small", 3, 4, 4, warmup=1, steps=2)}
    guid = core.bench_guidance_overhead(batch_size=4, horizon=8, action_dim=3, cond_dim=5,
                                        variants=["ate_sample", "ate_small_vae_1layer_bf16"], warmup=1, repeats=2)
    sweep = core.bench_guidance_sweep(sizes=((8, 16), (16, 32)), batch_size=4, horizon=8, action_dim=3, cond_dim=5,
                                      warmup=1, repeats=2)
    guid["bench_dp"] = core.bench_guidance_bench_dp(batch_size=4, warmup=1, repeats=2)
    return {"command": "pytest", "threads": 1, "quick": True, "machine": core.machine_info(),
            "started": "now", "load_start": list(os.getloadavg()), "load_end": list(os.getloadavg()),
            "wall_s": 1.0, "throughput": [thr], "guidance": guid, "guidance_sweep": sweep}


def test_vae_throughput_fp32_vs_bf16(tiny_results):
    r = tiny_results["throughput"][0]
    for key in ("fp32", "bf16"):
        assert r[key]["samples_per_s"] > 0 and math.isfinite(r[key]["samples_per_s"])
        assert len(r[key]["step_times"]) == 2 and len(r[key]["losses"]) == 3
        assert "first_grad" not in r[key]  # popped: not serialisable
    acc = r["bf16_accuracy"]
    # same init + same batch: bf16 autocast changes the first loss / gradient only by rounding. bf16 keeps 8
    # significant bits (relative rounding ≤ 2^-9 ≈ 2e-3 per op); ~10 rounded ops in the forward give ≲ 2e-2 on
    # the loss (bound 0.05; measured 8e-4), ~2x as many in the backward ≲ 4e-2 per element, so a relative
    # gradient error < 0.2 and cosine > 0.98 (= 1 − 0.2²/2) hold with margin (measured 0.013 / 0.99993);
    # a broken autocast (wrong dtype of the loss, lost gradient) is off by O(1).
    assert acc["loss_step0_bf16"] == pytest.approx(acc["loss_step0_fp32"], rel=0.05)
    assert 0 < acc["grad_rel_error_step0"] < 0.2 and acc["grad_cosine_step0"] > 0.98
    json.dumps(r)  # JSON-serialisable


def test_vae_throughput_measures_the_trainers_step_against_the_plain_one(tiny_results):
    """The 'trainer' run is the VAE's fast paths + bf16 autocast + the trainer's fused AdamW; fp32 and bf16 keep
    the module path and torch's default AdamW, so the trainer's speed-up is against the plain fp32 eager step."""
    r = tiny_results["throughput"][0]
    assert r["fp32"]["optimizer"] == r["bf16"]["optimizer"] == "AdamW, torch default"
    assert r["trainer"]["optimizer"] == "AdamW, fused" and r["trainer"]["dtype"] == "bf16-autocast"
    assert r["trainer_speedup"] == pytest.approx(r["fp32"]["step_s"] / r["trainer"]["step_s"])
    assert (r["fp32"]["fast_paths"], r["bf16"]["fast_paths"], r["trainer"]["fast_paths"]) == (False, False, True)
    # the first loss comes before any optimiser step: same init and data, the same function up to rounding (the
    # fast paths are exact in real arithmetic, tests/test_vae_fast_paths.py), so within the bf16 budget of
    # test_vae_throughput_fp32_vs_bf16 (≲ 2e-2 relative, bound 0.05) of the fp32 loss
    assert r["trainer"]["losses"][0] == pytest.approx(r["fp32"]["losses"][0], rel=0.05)
    # the ceiling: the fast paths skip matmuls (the encoder's last layer on H tokens, the cross-attention's q/k)
    assert 0 < r["trainer"]["matmul_gflop_per_sample"] < r["fp32"]["matmul_gflop_per_sample"]
    assert r["fp32"]["matmul_gflop_per_sample"] == r["bf16"]["matmul_gflop_per_sample"]  # same computation
    assert r["trainer_roofline_samples_per_s"] == pytest.approx(
        r["matmul_peak_gflops"]["bf16"] / r["trainer"]["matmul_gflop_per_sample"])
    assert min(r["matmul_peak_gflops"].values()) > 0
    assert "first_grad" not in r["trainer"]


def test_guidance_overhead_interleaved(tiny_results):
    g = tiny_results["guidance"]
    assert set(g["variants"]) == {"ate_sample", "ate_small_vae_1layer_bf16"}
    assert len(g["plain_step_times"]) == 2 * 2  # one plain step before each guided step
    v1, v2 = g["variants"]["ate_sample"], g["variants"]["ate_small_vae_1layer_bf16"]
    assert v1["vae_layers"] == 3 and v2["vae_layers"] == 1 and v2["bf16_encoder"] and v2["vae_params"] < v1["vae_params"]
    for v in g["variants"].values():
        assert v["ratio"] == pytest.approx(v["step_s"] / g["plain_step_s"])
        assert v["ratio"] > 0 and len(v["step_times"]) == 2
    assert g["meets_target"] == sorted(n for n, v in g["variants"].items() if v["ratio"] <= 1.10)
    assert 0 < g["denoiser_params"]
    with pytest.raises(ValueError, match="unknown guidance variants"):
        core.bench_guidance_overhead(variants=["nope"])


def test_guidance_at_the_bench_default_dp_size(tiny_results):
    from ate.bench.pipeline import BenchConfig
    from ate.policies.dp_unet import DPConfig

    r = tiny_results["guidance"]["bench_dp"]
    cfg = BenchConfig()  # the defaults the quick / full / regime presets keep
    assert (r["policy"], r["policy_config"], r["vae_preset"]) == (cfg.policy, cfg.policy_config, cfg.vae_preset)
    assert core.bench_dp_size()["batch_size"] == cfg.batch_size and r["batch_size"] == 4  # overridden here
    assert r["down_dims"] == list(DPConfig().down_dims) and r["horizon"] == cfg.policy_config["horizon"]
    assert set(r["variants"]) == {"ate_paper", "ate_best"} and len(r["plain_step_times"]) == 2 * 2
    assert r["variants"]["ate_best"]["guidance"] == core._bench_dp_guidance_variants()["ate_best"]
    for v in r["variants"].values():
        assert v["ratio"] == pytest.approx(v["step_s"] / r["plain_step_s"]) and len(v["step_times"]) == 2
        assert v["page_faults_per_step"] >= 0
    assert r["plain_page_faults_per_step"] >= 0
    assert r["target_ratio"] == 1.5 and r["meets_target"] == sorted(
        n for n, v in r["variants"].items() if max(v["ratio"], v["ratio_median_of_pairs"]) <= 1.5)
    json.dumps(r)
    with pytest.raises(ValueError, match="unknown bench-DP guidance variants"):
        core.bench_guidance_bench_dp(variants=["nope"])


def test_guidance_sweep_over_denoiser_sizes(tiny_results):
    sw = tiny_results["guidance_sweep"]
    pts = sw["points"]
    assert [p["down_dims"] for p in pts] == [[8, 16], [16, 32]]
    assert pts[0]["denoiser_params"] < pts[1]["denoiser_params"]  # wider UNet, more parameters
    for p in pts:
        assert p["ratio"] == pytest.approx(p["guided_step_s"] / p["plain_step_s"])
        # interleaved: one plain step right before each guided step
        assert len(p["plain_step_times"]) == len(p["guided_step_times"]) == 2
        assert p["ratio_median_of_pairs"] > 0 and len(p["load_before"]) == 3 and p["vae_params"] > 0
    assert sw["meets_target_params"] == [p["denoiser_params"] for p in pts
                                         if max(p["ratio"], p["ratio_median_of_pairs"]) <= 1.10]
    json.dumps(sw)


def test_sweep_merges_into_existing_results(tmp_path, monkeypatch):
    """`--parts guidance_sweep` keeps the parts already in results.json and records its own run."""
    monkeypatch.setattr(core, "bench_guidance_sweep", lambda **kw: {"stub": kw["sizes"]})
    monkeypatch.setattr(core, "write_figure", lambda res, path: None)
    monkeypatch.setattr(core, "render_report", lambda res, png: "report")
    old = {"command": "first", "threads": 1, "quick": True, "started": "t0", "wall_s": 5.0, "memory": {"x": 1}}
    (tmp_path / "results.json").write_text(json.dumps(old))
    res = core.run_core_bench(tmp_path, parts=("guidance_sweep",), threads=1, quick=True, command="second",
                              merge=True, sweep_sizes=((4, 8),))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(res))
    assert saved["memory"] == {"x": 1} and saved["command"] == "first" and saved["wall_s"] == 5.0
    assert saved["guidance_sweep"] == {"stub": [[4, 8]]}
    assert [r["command"] for r in saved["merged_runs"]] == ["second"] and saved["merged_runs"][0]["parts"] == ["guidance_sweep"]
    with pytest.raises(ValueError, match="same settings"):
        core.run_core_bench(tmp_path, parts=("guidance_sweep",), threads=2, quick=True, merge=True)
    with pytest.raises(ValueError, match="unknown parts"):
        core.run_core_bench(tmp_path, parts=("nope",), threads=1, quick=True)


def test_report_and_figure(tiny_results, tmp_path):
    png = core.write_figure(tiny_results, tmp_path / "figures.png")
    assert png.is_file() and png.stat().st_size > 1000
    md = core.render_report(tiny_results, png.name)
    assert "Command: `pytest`" in md and "![figures](figures.png)" in md
    assert "| small |" in md and "| ate_sample |" in md and "Load" in md
    assert "## 2b. Guidance overhead vs denoiser size" in md and "| (16, 32) |" in md
    assert "## 2a. Guidance overhead at the bench's default DP size" in md and "| ate_best | scale=" in md
    assert md.index("## 2. ") < md.index("## 2a.") < md.index("## 2b.")


def test_write_large_npy_is_readable(tmp_path):
    from ate.data import load_episodes

    folder = core.write_large_npy(tmp_path / "big", episodes=7, length=50, dim=3)
    eps = load_episodes(folder)
    assert len(eps) == 350 and eps.dim == 3 and eps.num_episodes == 7
    assert np.array_equal(eps.episode_ends, np.arange(1, 8) * 50)
    x = np.asarray(eps.actions[0:350])
    assert np.isfinite(x).all() and x.std() > 0.1
    rss = core._proc_rss(os.getpid())
    assert rss["VmRSS"] > 0 and rss["RssAnon"] > 0


def test_cli_registers_bench_core():
    from ate.cli import parse_args

    args = parse_args(["bench-core", "--quick", "--parts", "guidance", "--out", "x"])
    assert args.quick and args.parts == ["guidance"] and callable(args.func)
    args = parse_args(["bench-core", "--parts", "guidance_sweep", "--sweep-sizes", "48,96", "256,512,1024"])
    assert args.parts == ["guidance_sweep"] and args.sweep_sizes == ["48,96", "256,512,1024"] and args.merge


@pytest.mark.slow
def test_stage1_memory_child_process(tmp_path):
    """The child-process measurement end to end on a tiny dataset (~10-30 s: a fresh Python + torch)."""
    r = core.bench_stage1_memory(tmp_path, episodes=6, length=100, steps=2, batch_size=4, prior_max_samples=50,
                                 threads=1, baseline_episodes=None)
    assert r["frames"] == 600 and r["dim"] == 14 and r["final_metrics"]["step"] == 2
    assert r["peak_rss_mb"] >= r["sampled_peak_rss_anon_mb"] > 10  # torch alone is tens of MiB
    assert r["samples"] > 0 and r["data_deleted"] and not (tmp_path / "data_large").exists()
