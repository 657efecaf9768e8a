"""The committed steer choice per policy family (`ate.bench.choice`): a family's own file, dp's as a recorded
fallback, one-line errors for a bad file (never at import), the regime preset's `ate` arm and its record,
the existing regime runs staying the same config, the steer summary naming each family's choice, and
`python -m ate.bench.sweep --choose --family`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ate.bench import choice as choice_mod
from ate.bench import regime, steer_choice
from ate.bench.pipeline import GUIDED_ARMS, PAPER_GUIDANCE, BenchConfig
from ate.cli.bench import _RUNTIME_ONLY
from ate.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from test_bench_regime import _write_run  # noqa: E402

COMMITTED = choice_mod.CHOICE_DIR
ROOT = Path(__file__).resolve().parents[1]
PI0 = {"scale": 0.3, "sign": "flipped", "reduction": "per_sample"}  # a made-up pi0 choice, unlike dp's


def _write_choice(folder: Path, family: str, options: dict, variant: str = "ps0.3-flipped") -> Path:
    path = folder / f"{family}.json"
    path.write_text(json.dumps({"schema": "ate.steer.choice/1", "family": family, "variant": variant,
                                "name": "test choice", "options": options, "chosen_on": "validation seeds 200000+"}))
    return path


@pytest.fixture
def choices(tmp_path, monkeypatch):
    """A choice folder holding a copy of dp's committed file only (no pi0 / rdt choice yet)."""
    folder = tmp_path / "steer_choices"
    folder.mkdir()
    shutil.copy(COMMITTED / "dp.json", folder / "dp.json")
    monkeypatch.setattr(choice_mod, "CHOICE_DIR", folder)
    return folder


def test_the_committed_choice_files_are_valid_and_named_by_family():
    files = sorted(COMMITTED.glob("*.json"))
    assert "dp.json" in [f.name for f in files]
    for f in files:
        c = choice_mod.load_choice(f, f.stem)
        assert c["family"] == f.stem and "validation" in c["chosen_on"] and set(c["options"]) <= set(PAPER_GUIDANCE)
    dp = steer_choice("dp")
    assert dp["file"] == "ate/bench/steer_choices/dp.json" and "fallback_from" not in dp


def test_a_family_gets_its_own_choice_or_dps_recorded_as_a_fallback(choices):
    dp = steer_choice("dp")
    pi0 = steer_choice("pi0")  # no pi0 file yet: dp's, and it says so
    assert pi0["fallback_from"] == "dp" and pi0["family"] == "dp" and pi0["policy"] == "pi0"
    assert pi0["options"] == dp["options"] and pi0["variant"] == dp["variant"]
    assert "(dp's choice, fallback: pi0 has none)" in choice_mod.choice_label(choice_mod.choice_record(pi0))
    _write_choice(choices, "pi0", PI0)
    pi0 = steer_choice("pi0")  # read when asked: the new file counts at once
    assert pi0["family"] == "pi0" and "fallback_from" not in pi0 and pi0["options"] == PI0
    assert pi0["file"] == str(choices / "pi0.json") and steer_choice("pi0_flow")["family"] == "pi0"
    assert steer_choice("rdt")["fallback_from"] == "dp"  # rdt still has none
    with pytest.raises(ConfigError, match="no steer choice for policy 'xyz'"):
        steer_choice("xyz")


@pytest.mark.parametrize("content, match", [
    ("{not json", "invalid JSON"),
    (json.dumps({"schema": "ate.steer.choice/0", "variant": "v", "name": "n", "options": {}}), "schema"),
    (json.dumps({"schema": "ate.steer.choice/1", "variant": "v", "name": "n", "options": {"lamda": 1}}),
     r"options \['lamda'\] are not guidance options"),
    (json.dumps({"schema": "ate.steer.choice/1", "variant": "v", "name": "n"}), "an 'options' object"),
    (json.dumps({"schema": "ate.steer.choice/1", "family": "dp", "variant": "v", "name": "n", "options": {}}),
     "holds family 'dp', expected 'pi0'"),
])
def test_a_bad_choice_file_is_a_one_line_error_naming_it(choices, content, match):
    (choices / "pi0.json").write_text(content)
    with pytest.raises(ConfigError, match=match) as err:
        steer_choice("pi0")  # a bad file of its own never falls back silently
    assert str(choices / "pi0.json") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=match):
        BenchConfig.from_preset("metaworld", "regime", policy="pi0")
    BenchConfig.from_preset("metaworld", "regime", policy="dp")  # other families are unaffected


def test_without_dps_file_every_family_is_refused_in_one_line(choices):
    (choices / "dp.json").unlink()
    for family in ("dp", "rdt"):
        with pytest.raises(ConfigError, match=f"steer choice {choices / 'dp.json'}: no such file"):
            steer_choice(family)


def test_no_choice_is_read_at_import_and_the_cli_reports_a_bad_one_in_one_line(tmp_path):
    """A subprocess, as a user runs it: importing the bench modules and building the parser reads no choice
    file; `ate bench --preset regime --policy pi0` with a corrupt pi0 choice is one error line, no traceback."""
    folder = tmp_path / "steer_choices"
    folder.mkdir()
    shutil.copy(COMMITTED / "dp.json", folder / "dp.json")
    (folder / "pi0.json").write_text('{"schema": "ate.steer.choice/1", "options": ')
    code = """
import pathlib, sys
reads, read_text = [], pathlib.Path.read_text
pathlib.Path.read_text = lambda self, *a, **k: (reads.append(str(self)), read_text(self, *a, **k))[1]
import ate.bench, ate.bench.pipeline, ate.bench.regime, ate.bench.core, ate.bench.sweep, ate.cli.demo
from ate.cli import build_parser, main
build_parser()
print("READS", [r for r in reads if r.endswith(".json")], flush=True)
ate.bench.choice.CHOICE_DIR = pathlib.Path(sys.argv[1])
sys.exit(main(["bench", "--suite", "metaworld", "--preset", "regime", "--policy", "pi0", "--print-config"]))
"""
    r = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "READS []" in r.stdout, r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert line.startswith("ate bench: error: steer choice ") and "pi0.json: invalid JSON" in line


def test_the_regime_preset_takes_its_familys_choice_and_records_it(choices):
    from ate.bench.report import _choice_lines

    dp_opts = steer_choice("dp")["options"]
    _write_choice(choices, "pi0", PI0)
    pi0 = BenchConfig.from_preset("metaworld", "regime", policy="pi0")
    assert pi0.guidance_kwargs("ate") == {**PAPER_GUIDANCE, **PI0} and pi0.guidance_kwargs("ate_paper") == PAPER_GUIDANCE
    assert pi0.finetune_lr == 1e-3 and pi0.target_tasks == ["shelf-place-v3", "lever-pull-v3"]  # FAMILY_PRESETS too
    assert (pi0.steer_choice["family"], pi0.steer_choice["variant"], pi0.steer_choice["options"]) == ("pi0", "ps0.3-flipped", PI0)
    assert "fallback_from" not in pi0.steer_choice and pi0.to_dict()["steer_choice"] == pi0.steer_choice
    assert "test choice (pi0's choice)" in _choice_lines(pi0.to_dict())[0]
    dp = BenchConfig.from_preset("metaworld", "regime", policy="dp")
    assert dp.guidance_kwargs("ate") == {**PAPER_GUIDANCE, **dp_opts} and dp.steer_choice["family"] == "dp"
    rdt = BenchConfig.from_preset("metaworld", "regime", policy="rdt")
    assert rdt.guidance_kwargs("ate") == dp.guidance_kwargs("ate")
    assert rdt.steer_choice["fallback_from"] == "dp" and rdt.steer_choice["policy"] == "rdt"
    assert "dp's choice, fallback: rdt has none" in _choice_lines(rdt.to_dict())[0]
    # a guidance override leaves the choice: no record (the arm is not that choice), the options as given
    own = BenchConfig.from_preset("metaworld", "regime", policy="pi0", scale=4.0)
    assert own.steer_choice is None and own.guidance_kwargs("ate") == {**PAPER_GUIDANCE, **PI0, "scale": 4.0}
    assert BenchConfig.from_preset("metaworld", "regime", policy="pi0", **PI0).steer_choice is not None  # same values
    with pytest.raises(ConfigError, match="differs in scale"):  # a record that names another variant is refused
        BenchConfig.from_preset("metaworld", "quick", steer_choice=pi0.steer_choice, scale=0.5, **{
            k: v for k, v in PI0.items() if k != "scale"})
    assert BenchConfig.from_preset("metaworld", "quick").steer_choice is None  # other presets: no choice


# the committed test-seed runs whose family still has the choice they ran with (pi0 and rdt got their own later:
# below)
REGIME_RUNS = {"dp": "metaworld-dp-test"}


@pytest.mark.parametrize("family", list(REGIME_RUNS))
def test_the_regime_runs_made_before_the_record_stay_the_same_config(tmp_path, family):
    """The committed test-seed runs (and so runs/bench/metaworld-regime-*) continue as the same config: every
    setting, the guidance of every guided arm included, is what the preset gives now; the new record is not
    compared by `ate bench --config`'s continue check, and the stage cache keys hold only the guidance."""
    from ate.cli.bench import _check_continues

    old = json.loads((ROOT / "benchmarks" / "results" / "regime" / REGIME_RUNS[family] / "config.json").read_text())
    assert "steer_choice" not in old
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**old, "out_dir": str(run)}))
    # they played 50 placements per task at the headline point, the preset now plays 200 (a new evaluation, no
    # re-training); with the old count given, every other setting is what the preset gives now
    assert old["headline_eval_episodes"] == 50
    new = BenchConfig.from_preset("metaworld", "regime", policy=family, out_dir=str(run), headline_eval_episodes=50)
    assert new.steer_choice["family"] == "dp" and "fallback_from" not in new.steer_choice
    then = BenchConfig(**{**old, "out_dir": str(run)})
    for arm in GUIDED_ARMS:  # the train-* and profile-* stages key on exactly this
        assert new.guidance_kwargs(arm) == then.guidance_kwargs(arm), arm
    _check_continues(new)  # no error: the same settings
    (run / "config.json").write_text(json.dumps({**new.to_dict(), "steer_choice": {"variant": "renamed"}}))
    _check_continues(new)  # a later run's record may differ: it is a record, not a setting
    (run / "config.json").write_text(json.dumps({**old, "out_dir": str(run), "scale": 0.5}))
    with pytest.raises(ConfigError, match="scale"):  # while a guidance field that changed is still refused
        _check_continues(new)


@pytest.mark.parametrize("family", ["pi0", "rdt"])
def test_a_familys_own_choice_changes_only_the_arms_that_use_the_best_guidance(family):
    """pi0's and rdt's committed test runs used dp's choice (the fallback then). With the family's own choice,
    continuing that run re-trains exactly the arms guided by the best variant (`ate`, and `ate_unaligned` at its
    strength); SFT, ATE-paper, LoRA and scratch stay cached."""
    old = json.loads((ROOT / "benchmarks" / "results" / "regime" / f"metaworld-{family}-test" / "config.json").read_text())
    new = BenchConfig.from_preset("metaworld", "regime", policy=family, out_dir=old["out_dir"])
    assert new.steer_choice["family"] == family and "fallback_from" not in new.steer_choice
    then = BenchConfig(**old)
    changed = {arm for arm in GUIDED_ARMS if new.guidance_kwargs(arm) != then.guidance_kwargs(arm)}
    assert changed == {"ate", "ate_unaligned"} & set(GUIDED_ARMS)
    assert new.guidance_kwargs("ate_paper") == then.guidance_kwargs("ate_paper") == PAPER_GUIDANCE
    same = {k for k in old if k not in PAPER_GUIDANCE and k not in _RUNTIME_ONLY}  # rdt's ran with --torch-threads 2
    # the preset now plays 200 placements per task at the headline point (those runs: 50): continuing re-evaluates
    # every arm there, it re-trains none (an evaluation stage's key holds its seeds, a training stage's does not)
    assert (new.headline_eval_episodes, then.headline_eval_episodes) == (200, 50)
    same.discard("headline_eval_episodes")
    assert {k: getattr(new, k) for k in same} == {k: getattr(then, k) for k in same}


def _set_choice(run_dir: Path, options: dict, record: dict | None) -> None:
    res = json.loads((run_dir / "results.json").read_text())
    res["config"].update({**PAPER_GUIDANCE, **options}, steer_choice=record)
    (run_dir / "results.json").write_text(json.dumps(res))


def test_the_steer_summary_names_each_familys_choice(tmp_path, choices, single_torch_thread):
    dp_opts = steer_choice("dp")["options"]
    rec_dp = choice_mod.choice_record(steer_choice("dp"))
    rec_rdt = choice_mod.choice_record(steer_choice("rdt"))  # recorded while pi0 and rdt had no file
    _write_choice(choices, "pi0", PI0)
    rec_pi0 = choice_mod.choice_record(steer_choice("pi0"))
    runs = {}
    for family, opts, rec in (("dp", dp_opts, rec_dp), ("pi0", PI0, rec_pi0), ("rdt", dp_opts, rec_rdt)):
        runs[family] = tmp_path / f"mw-{family}"
        _write_run(runs[family], policy=family, demos=(5,))
        _set_choice(runs[family], opts, rec)
    steer = regime.steer_summary(regime.summarize(list(runs.values()), None))
    mw = steer["suites"]["metaworld"]
    assert {f: (mw[f]["chosen"]["family"], mw[f]["chosen"]["how"]) for f in mw} == {
        "dp": ("dp", "recorded"), "pi0": ("pi0", "recorded"), "rdt": ("dp", "recorded")}
    assert "fallback_from" not in mw["pi0"]["chosen"] and mw["rdt"]["chosen"]["fallback_from"] == "dp"
    assert "metaworld/rdt: " in steer["chosen"] and "(dp's choice, fallback: rdt has none)" in steer["chosen"]
    assert mw["pi0"]["5"]["delta"] == 10.0
    # a run recorded before the record: matched on its options, the family's own choice or else dp's
    old_pi0 = tmp_path / "mw-pi0-old"
    _write_run(old_pi0, policy="pi0", demos=(5,))
    _set_choice(old_pi0, dp_opts, None)  # pi0's run from before pi0 had its own choice: dp's options
    (chosen,) = [e["chosen"] for e in regime.steer_summary(regime.summarize([old_pi0], None))["suites"]["metaworld"].values()]
    assert (chosen["family"], chosen["fallback_from"], chosen["how"]) == ("dp", "dp", "matched")
    _set_choice(old_pi0, PI0, None)
    (chosen,) = [e["chosen"] for e in regime.steer_summary(regime.summarize([old_pi0], None))["suites"]["metaworld"].values()]
    assert (chosen["family"], chosen["how"]) == ("pi0", "matched") and "fallback_from" not in chosen
    # never another variant under the chosen name
    _set_choice(old_pi0, {"scale": 4.0}, None)
    with pytest.raises(ConfigError, match="not a committed steer choice"):
        regime.steer_summary(regime.summarize([old_pi0], None))
    _set_choice(runs["pi0"], {"scale": 4.0}, rec_pi0)
    with pytest.raises(ConfigError, match="not its recorded steer choice ps0.3-flipped"):
        regime.steer_summary(regime.summarize([runs["pi0"]], None))


def test_sweep_choose_records_the_family(tmp_path, single_torch_thread):
    from ate.bench import sweep

    for name, arms in (("paper", ("sft", "ate_paper")), ("flip", ("sft", "ate"))):
        _write_run(tmp_path / "sweep" / name, policy="pi0", demos=(5,), arms=arms)
    out = tmp_path / "choice" / "pi0.json"
    assert sweep.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "table"), "--choose", str(out),
                       "--family", "pi0"]) == 0
    c = choice_mod.load_choice(out, "pi0")
    assert c["family"] == "pi0" and c["schema"] == "ate.steer.choice/1" and "pi0 family" in c["note"]
    assert [x["variant"] for x in c["candidates"]] == ["flip", "paper:ate_paper"]  # +10 each, no option changed
    with pytest.raises(SystemExit, match="variants of policy pi0 in a --family dp sweep"):
        sweep.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "table"), "--choose", str(out)])
    assert json.loads(out.read_text())["family"] == "pi0"  # the refused run wrote nothing
