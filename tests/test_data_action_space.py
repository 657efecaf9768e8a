"""`ate.data.action_space`: the one action-space record every VAE and policy directory holds, and `compare`.

Round trip (dict, file), one-line errors for a missing / corrupt / foreign file, one-line mismatch messages
naming each field and both values, the record written by the VAE trainer and by `save_pretrained`, and
directories written before the record existed (no action_space.json): derived from their config files."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_policies_helpers import StandInVAE, write_demos  # noqa: E402

from ate.data import ActionSpace, Normalizer  # noqa: E402
from ate.data import action_space as aspace  # noqa: E402
from ate.errors import ActionSpaceMismatchError, CheckpointError, ConfigError, ShapeMismatchError  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tests/conftest.py


def norm(seed: int = 0, dim: int = 3, mode: str = "minmax") -> Normalizer:
    return Normalizer.fit(np.random.default_rng(seed).normal(size=(64, dim)), mode=mode)


def space(**kw) -> ActionSpace:
    base = dict(robot="ur5e", action_dim=3, horizon=8, pad="repeat", normalizer=norm(), action_index=(0, 1, 2))
    return ActionSpace(**{**base, **kw})


# ------------------------------------------------------------------------------------------------ record
def test_round_trip_dict_and_file(tmp_path):
    s = space()
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d  # JSON-safe
    assert ActionSpace.from_dict(d) == s and ActionSpace.from_dict(json.loads(json.dumps(d))) == s
    path = aspace.write(tmp_path, s)
    assert path == tmp_path / "action_space.json"
    assert json.loads(path.read_text())["format"] == "ate.action_space"
    assert aspace.read(tmp_path) == s and aspace.read_all(tmp_path) == [s]
    # unknown optional fields stay None through the round trip
    bare = ActionSpace(action_dim=2, horizon=4)
    aspace.write(tmp_path / "bare", bare)  # the directory is made when missing
    assert aspace.read(tmp_path / "bare") == bare and bare.normalizer is None and bare.robot is None


def test_one_record_per_robot(tmp_path):
    a, b = space(robot="panda", action_dim=3), space(robot="ur5e", action_dim=3, action_index=(3, 4, 5))
    aspace.write(tmp_path, [a, b])
    assert aspace.read(tmp_path, "ur5e") == b and aspace.read(tmp_path, "panda") == a
    with pytest.raises(CheckpointError, match=r"holds 2 records \(robots \['panda', 'ur5e'\]\); name the robot"):
        aspace.read(tmp_path)
    with pytest.raises(CheckpointError, match="no record for robot 'iiwa'"):
        aspace.read(tmp_path, "iiwa")
    with pytest.raises(ConfigError, match="distinct robot names"):
        aspace.write(tmp_path, [a, a])


@pytest.mark.parametrize("content,expected", [
    (None, "action_space.json: missing"),
    ('{"format": "ate.action_space", "spaces": [', "action_space.json: unreadable JSON"),
    ('{"format": "something.else", "spaces": []}', "not an ate action-space record (format='something.else'"),
    ('[1, 2]', "not an ate action-space record (format='list'"),
    ('{"format": "ate.action_space", "spaces": [{"action_dim": 3}]}', "action-space record lacks horizon"),
    ('{"format": "ate.action_space", "spaces": [{"action_dim": 3, "horizon": 8, "horizn": 8}]}',
     "unknown action-space field(s) ['horizn']"),
    ('{"format": "ate.action_space", "spaces": [{"action_dim": 0, "horizon": 8}]}',
     "ActionSpace.action_dim must be a positive int, got 0"),
    ('{"format": "ate.action_space", "spaces": [{"action_dim": 3, "horizon": 8, "normalizer": {"mode": "x"}}]}',
     "action-space normalizer: Normalizer dict lacks min, max, mean, std"),
    ('{"format": "ate.action_space", "format_version": 9, "spaces": []}', "format_version 9, this ate reads 1"),
])
def test_missing_or_corrupt_file_is_one_line_naming_it(tmp_path, content, expected):
    if content is not None:
        (tmp_path / "action_space.json").write_text(content)
    with pytest.raises(CheckpointError) as exc:
        aspace.read(tmp_path)
    msg = str(exc.value)
    assert msg.startswith(f"{tmp_path / 'action_space.json'}: ") and expected in msg, msg
    assert "\n" not in msg


def test_bad_field_values_are_refused():
    with pytest.raises(ConfigError, match="pad must be one of"):
        space(pad="zero")
    with pytest.raises(ConfigError, match="horizon must be a positive int"):
        space(horizon=True)
    with pytest.raises(ConfigError, match="must be an ate.data.Normalizer"):
        space(normalizer={"mode": "minmax"})


# ------------------------------------------------------------------------------------------------ compare
def _shifted(n: Normalizer) -> Normalizer:
    d = n.to_dict()
    d["max"] = [m + 0.5 for m in d["max"][:1]] + d["max"][1:]
    return Normalizer.from_dict(d)


@pytest.mark.parametrize("field,found,shown", [
    ("robot", dict(robot="panda"), "'panda' (VAE) vs 'ur5e' (policy)"),
    ("action_dim", dict(action_dim=4, normalizer=norm(dim=4), action_index=None), "D=4 (VAE) vs D=3 (policy)"),
    ("horizon", dict(horizon=16), "H=16 (VAE) vs H=8 (policy)"),
    ("normalizer", dict(normalizer=_shifted(norm())), "first difference at dim 0"),
    ("normalizer", dict(normalizer=norm(mode="meanstd")), "meanstd normaliser D=3"),
    ("normalizer", dict(normalizer=None), "no stats stored (VAE) vs minmax normaliser D=3"),
    ("pad", dict(pad="drop"), "'drop' (VAE) vs 'repeat' (policy)"),
    ("action_index", dict(action_index=(0, 1, 5)), "[0, 1, 5] (VAE) vs [0, 1, 2] (policy)"),
])
def test_each_mismatching_field_is_one_line_naming_it(field, found, shown):
    labels = {"robot": "robot", "action_dim": "action dim", "horizon": "chunk length",
              "normalizer": "normalisation stats", "pad": "pad rule", "action_index": "action index"}
    with pytest.raises(ActionSpaceMismatchError) as exc:
        aspace.compare(space(), space(**found), what="runs/vae/model", expected_name="policy", found_name="VAE")
    msg = str(exc.value)
    assert msg.startswith(f"runs/vae/model: {labels[field]} mismatch ({field}): "), msg
    assert shown in msg and "\n" not in msg, msg
    # one error class for the checks it replaces: shapes (policy vs VAE) and checkpoints (LeRobot plugin)
    assert isinstance(exc.value, ShapeMismatchError) and isinstance(exc.value, CheckpointError)


def test_normaliser_values_are_both_shown():
    a, b = norm(0), norm(1)
    with pytest.raises(ActionSpaceMismatchError) as exc:
        aspace.compare(space(normalizer=a), space(normalizer=b), what="x")
    msg = str(exc.value)
    assert f"#{aspace.normalizer_digest(b)}" in msg.split(" vs ")[0] and f"#{aspace.normalizer_digest(a)}" in msg
    assert f"min [{a.min[0]:.4g}, " in msg and f"min [{b.min[0]:.4g}, " in msg and "(found)" in msg


def test_first_differing_field_wins_and_agreeing_records_pass():
    s = space()
    aspace.compare(s, s, what="x")
    aspace.compare(s, ActionSpace.from_dict(s.to_dict()), what="x")
    with pytest.raises(ActionSpaceMismatchError, match=r"x: action dim mismatch \(action_dim\)"):
        aspace.compare(s, space(action_dim=4, horizon=16, normalizer=norm(dim=4), action_index=None), what="x")


def test_optional_fields_ignore_and_tolerance():
    s = space()
    # robot / pad / action_index unknown on one side: not compared
    aspace.compare(s, dataclasses.replace(s, robot=None, pad=None, action_index=None), what="x")
    aspace.compare(dataclasses.replace(s, robot=None), space(robot="panda"), what="x")
    # required fields are compared even when one side lacks them, unless ignored
    with pytest.raises(ActionSpaceMismatchError, match="no stats stored"):
        aspace.compare(s, dataclasses.replace(s, normalizer=None), what="x")
    aspace.compare(s, dataclasses.replace(s, normalizer=None, pad="drop"), what="x", ignore=("normalizer", "pad"))
    with pytest.raises(ValueError, match="unknown action-space fields"):
        aspace.compare(s, s, what="x", ignore=("horizn",))
    # stats stored as float32 agree with float64 ones; a larger difference only within a looser tolerance
    d = s.normalizer.to_dict()
    f32 = Normalizer.from_dict({**d, **{k: np.float32(d[k]).tolist() for k in ("min", "max", "mean", "std")}})
    aspace.compare(s, dataclasses.replace(s, normalizer=f32), what="x")
    near = Normalizer.from_dict({**d, "max": (np.asarray(d["max"]) * (1 + 2e-5)).tolist()})
    with pytest.raises(ActionSpaceMismatchError):
        aspace.compare(s, dataclasses.replace(s, normalizer=near), what="x")
    aspace.compare(s, dataclasses.replace(s, normalizer=near), what="x", rtol=1e-4, atol=1e-5)


def test_hint_per_field():
    with pytest.raises(ActionSpaceMismatchError, match=r"H=16 \(found\) vs H=8 \(expected\); retrain with H=8$"):
        aspace.compare(space(), space(horizon=16), what="x", hint={"horizon": "retrain with H=8"})
    with pytest.raises(ActionSpaceMismatchError, match=r"\(expected\)$"):
        aspace.compare(space(), space(pad="drop"), what="x", hint={"horizon": "retrain with H=8"})
    with pytest.raises(ActionSpaceMismatchError, match="; always$"):
        aspace.compare(space(), space(pad="drop"), what="x", hint="always")


# ------------------------------------------------------------------------------------------------ directories
@pytest.fixture(scope="module")
def vae_dirs(tmp_path_factory):
    """Stage 1 + stage 2 on tiny per-episode HDF5 demos (robot attr "ur5e" on the target)."""
    from ate.align.train import AlignConfig, train_stage1, train_stage2

    root = tmp_path_factory.mktemp("aspace")
    src = write_demos(root / "src", "panda", 4, 5, n_eps=4, T=20)
    tgt = write_demos(root / "tgt", "ur5e", 3, 5, n_eps=3, T=20, seed=1)
    cfg = AlignConfig(preset="small", latent_dim=8, horizon=8, steps=3, batch_size=8, progress=False, log_every=10,
                      eval_every=1000, save_every=1000)
    s1 = train_stage1(src, root / "s1", cfg)
    s2 = train_stage2(tgt, root / "s2", s1, dataclasses.replace(cfg, pad="drop"))
    return {"root": root, "src": src, "tgt": tgt, "s1": s1, "s2": s2}


def test_vae_directories_hold_the_record(vae_dirs):
    from ate.align.checkpoint import load_aligned_vae, vae_dir_action_space

    s2 = vae_dirs["s2"]
    for sub in ("last", "model"):  # every checkpoint directory of the run
        rec = aspace.read(s2.parent / sub)
        assert (rec.robot, rec.action_dim, rec.horizon, rec.pad, rec.action_index) == ("ur5e", 3, 8, "drop", None)
    s1 = aspace.read(vae_dirs["s1"])
    assert (s1.robot, s1.action_dim, s1.pad) == ("panda", 4, "repeat")
    bundle = load_aligned_vae(s2)
    assert bundle.action_space == aspace.read(s2) and bundle.action_space.normalizer == bundle.normalizer
    assert vae_dir_action_space(s2.parent) == bundle.action_space  # a run dir resolves to model/


def test_vae_record_that_disagrees_with_its_config_is_refused(vae_dirs, tmp_path):
    import shutil

    from ate.align.checkpoint import load_aligned_vae

    d = tmp_path / "edited"
    shutil.copytree(vae_dirs["s2"], d)
    rec = json.loads((d / "action_space.json").read_text())
    rec["spaces"][0]["horizon"] = 16
    (d / "action_space.json").write_text(json.dumps(rec))
    with pytest.raises(ActionSpaceMismatchError, match=r"action_space.json: chunk length mismatch \(horizon\): H=16 "
                                                       r"\(action_space.json\) vs H=8 \(config.json\)"):
        load_aligned_vae(d)


def test_vae_directory_written_before_the_record(vae_dirs, tmp_path):
    """No action_space.json: the record comes from config.json (no robot), and guidance checks still work."""
    import shutil

    from ate.align.checkpoint import load_aligned_vae, vae_dir_action_space

    old = tmp_path / "old"
    shutil.copytree(vae_dirs["s2"], old)
    (old / "action_space.json").unlink()
    rec = vae_dir_action_space(old)
    assert rec == dataclasses.replace(aspace.read(vae_dirs["s2"]), robot=None)
    assert load_aligned_vae(old).action_space == rec
    assert aspace.load_normalizer(old) == rec.normalizer


def test_policy_directories_hold_one_record_per_robot(vae_dirs, tmp_path):
    from ate.policies import load_policy
    from ate.policies.train import finetune, pretrain

    fast = dict(batch_size=8, lr=1e-3, warmup_steps=1, log_every=10, progress=False)
    pcfg = {"horizon": 8, "state_dim": 8, "down_dims": (16, 32), "cond_dim": 16}
    pretrain([vae_dirs["src"], vae_dirs["tgt"]], tmp_path / "pre", policy="dp", policy_config=pcfg, steps=2,
             save_every=1, **fast)
    for model in (tmp_path / "pre" / "pretrained_model",
                  tmp_path / "pre" / "checkpoints" / "000001" / "pretrained_model"):
        recs = aspace.read_all(model)
        assert [r.robot for r in recs] == ["panda", "ur5e"] and {r.pad for r in recs} == {"repeat"}
        assert [(r.action_dim, r.horizon, r.action_index) for r in recs] == [(4, 8, (0, 1, 2, 3)), (3, 8, (0, 1, 2))]
    policy = load_policy(tmp_path / "pre")
    assert aspace.read(tmp_path / "pre" / "pretrained_model", "ur5e") == policy.action_space("ur5e", pad="repeat")
    # a policy dir as the stats source: the robot's record (several robots: the robot must be named)
    assert aspace.load_normalizer(tmp_path / "pre", "ur5e") == policy.normalizers["ur5e"]["action"]
    with pytest.raises(CheckpointError, match=r"holds robots \['panda', 'ur5e'\]; name one"):
        aspace.load_normalizer(tmp_path / "pre")
    # fine-tuning with the VAE's stats and guidance: the fine-tuned policy records the VAE's space (pad drop here)
    ft = finetune(vae_dirs["tgt"], tmp_path / "ft", init=tmp_path / "pre", guidance="ate", vae=vae_dirs["s2"],
                  normalizer=vae_dirs["s2"], steps=2, pad="drop", **fast)
    got = aspace.read(tmp_path / "ft" / "pretrained_model", "ur5e")
    aspace.compare(got, aspace.read(vae_dirs["s2"]), what="ft")
    assert got == ft.action_space("ur5e", pad="drop")


def test_policy_directory_written_before_the_record(vae_dirs, tmp_path):
    """Old policy dirs (no action_space.json) still give their stats, by robot, from normalizer.json."""
    from ate.policies import load_policy
    from ate.policies.train import pretrain

    fast = dict(batch_size=8, lr=1e-3, warmup_steps=1, log_every=10, progress=False)
    pcfg = {"horizon": 8, "state_dim": 8, "down_dims": (16, 32), "cond_dim": 16}
    pretrain([vae_dirs["src"], vae_dirs["tgt"]], tmp_path / "pre", policy="dp", policy_config=pcfg, steps=1, **fast)
    (tmp_path / "pre" / "pretrained_model" / "action_space.json").unlink()
    policy = load_policy(tmp_path / "pre")
    assert aspace.load_normalizer(tmp_path / "pre", "panda") == policy.normalizers["panda"]["action"]
    with pytest.raises(CheckpointError, match="normalizer.json: holds robots"):
        aspace.load_normalizer(tmp_path / "pre")


def test_check_vae_compares_records_and_warns_on_pad(caplog):
    from ate.policies import make_policy
    from ate.policies.train import check_vae

    p = make_policy("dp", horizon=8, state_dim=8, down_dims=(16, 32), cond_dim=16)
    p.add_robot("ur5e", norm(), norm(1, dim=5))
    vae = StandInVAE(3, 8, p.normalizers["ur5e"]["action"])
    check_vae(p, "ur5e", vae, "vae-dir", pad="repeat")
    vae.chunk = {"horizon": 8, "pad": "drop"}
    with caplog.at_level(logging.WARNING, logger="ate.policies.train"):
        check_vae(p, "ur5e", vae, "vae-dir", pad="repeat")
    assert "pad='drop'" in caplog.text and "pad='repeat'" in caplog.text
    vae.action_space = dataclasses.replace(p.action_space("ur5e"), robot="panda", action_index=None)
    with pytest.raises(ActionSpaceMismatchError, match=r"^vae-dir: robot mismatch \(robot\): 'panda' \(VAE\) vs "
                                                       r"'ur5e' \(policy, robot 'ur5e'\)$"):
        check_vae(p, "ur5e", vae, "vae-dir")
    vae.action_space = None
    vae.normalizer = None
    with pytest.raises(ShapeMismatchError, match=r"normalisation stats mismatch \(normalizer\): no stats stored"):
        check_vae(p, "ur5e", vae, "vae-dir")


def test_load_normalizer_from_files(tmp_path):
    n = norm()
    (tmp_path / "n.json").write_text(json.dumps(n.to_dict()))
    assert aspace.load_normalizer(tmp_path / "n.json") == n
    (tmp_path / "config.json").write_text(json.dumps({"format": "ate.aligned_vae", "normalizer": n.to_dict()}))
    assert aspace.load_normalizer(tmp_path / "config.json") == n  # a VAE checkpoint's config.json
    aspace.write(tmp_path / "d", space(normalizer=n))
    assert aspace.load_normalizer(tmp_path / "d" / "action_space.json") == n
    (tmp_path / "bad.json").write_text(json.dumps({"mode": "minmax"}))
    with pytest.raises(CheckpointError, match=r"bad.json: not a normaliser: Normalizer dict lacks min"):
        aspace.load_normalizer(tmp_path / "bad.json")
    with pytest.raises(CheckpointError, match="no normaliser found"):
        aspace.load_normalizer(tmp_path / "nothing")
