"""`ate demo`: its plain-language verdict, the guidance-strength lines, the committed steer choice, and the
smoke preset end to end (three arms, the table, the verdicts and the profile printed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ate.bench import steer_choice
from ate.bench.pipeline import PAPER_GUIDANCE, BenchConfig
from ate.cli.demo import profile_lines, verdict


def test_verdict_reads_the_paired_interval():
    assert "better than SFT" in verdict(0.1, [0.02, 0.2], "ATE")
    assert "worse than SFT" in verdict(-0.1, [-0.2, -0.01], "ATE")
    assert "exactly SFT's episodes" in verdict(0.0, [0.0, 0.0], "ATE")
    line = verdict(0.025, [-0.05, 0.1], "ATE")
    assert "no significant difference" in line and "+2.5 points" in line and "[-5.0, +10.0]" in line


def test_profile_lines_average_seeds_per_arm():
    levels = [0.05, 0.25, 0.55, 0.95]
    res = {"guidance_profiles": [{"arm": "ate", "seed": s, "levels": levels, "rel_strength": [0.01 * (s + 1)] * 4}
                                 for s in (0, 1)]}
    (line,) = profile_lines(res)
    assert line.split()[0] == "ate" and "0.05: 1.5 %" in line and "0.95: 1.5 %" in line  # mean of 1 % and 2 %
    assert profile_lines({}) == []
    res["guidance_profiles"] = [{"arm": "ate", "seed": 0, "levels": levels, "rel_strength": [6.3e-6, 0.0021, 0.124, 1.0]}]
    (line,) = profile_lines(res)  # plain numbers at every size: relative strength 1.0 is "100 %", not "1e+02 %"
    assert "0.05: 0.00063 %" in line and "0.25: 0.21 %" in line and "0.55: 12 %" in line and "0.95: 100 %" in line


def test_steer_choice_is_a_valid_guidance_chosen_on_validation_seeds():
    choice = steer_choice("dp")  # the demo runs dp: dp's own choice, never a fallback
    opts = choice["options"]
    assert choice["family"] == "dp" and "fallback_from" not in choice
    assert set(opts) <= set(PAPER_GUIDANCE)
    assert all(opts[k] != PAPER_GUIDANCE[k] for k in opts)  # only what differs is listed
    cfg = BenchConfig.with_steer_choice("robosuite", "quick", "dp", arms=["sft", "ate_paper", "ate"])
    assert cfg.guidance_kwargs("ate") == {**PAPER_GUIDANCE, **opts}
    assert cfg.guidance_kwargs("ate_paper") == PAPER_GUIDANCE
    assert cfg.steer_choice["family"] == "dp" and cfg.steer_choice["variant"] == choice["variant"]
    assert choice["name"] and "validation" in choice["chosen_on"]


@pytest.mark.sim
@pytest.mark.slow
def test_demo_smoke_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ate", "demo", "--preset", "smoke", "--out", str(tmp_path / "demo"),
                        "--workers", "1", "--quiet"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "| SFT |" in out and "| ATE_PAPER |" in out and "| ATE |" in out
    assert "ATE (paper) − SFT:" in out and "ATE (chosen) − SFT:" in out
    assert "shift / residual by noise level" in out and "smoke preset" in out
    assert (tmp_path / "demo" / "report.md").is_file()
