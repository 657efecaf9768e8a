"""`ate.policies.data`: PolicyDataset on ChunkDataset gives bit for bit the batches of the former in-RAM
implementation (kept below as `Old*`), keeps lazy storage lazy, and fails with one-line errors."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ate.data import LazyArray, Normalizer
from ate.errors import DataError, ShapeMismatchError
from ate.policies import make_policy
from ate.policies.data import Frames, PolicyDataset, fit_normalizers, load_sources, prepare_policy

sys.path.insert(0, str(Path(__file__).parent))
from test_data_memory import rss_anon  # noqa: E402  (one measure of live memory for both tests)

H = 8
TINY = {
    "dp": {"down_dims": (32, 64), "cond_dim": 32},
    "rdt": {"width": 64, "depth": 2, "heads": 4, "cond_dim": 32},
    "pi0": {"width": 64, "depth": 2, "heads": 4, "cond_dim": 32},
}


# ------------------------------------------------------------------ the former implementation (reference)
@dataclass
class OldPolicySource:
    path: str
    robot: str
    actions: np.ndarray
    states: np.ndarray
    episode_ends: np.ndarray
    tasks: list[str]
    names: list[str]


def old_load_sources(paths, robot=None, task=None, action_key="action", state_key="observations/state", format="auto"):
    from ate.data import load_episodes

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out = []
    for path in paths:
        acts = load_episodes(path, format=format, key=action_key)
        states = load_episodes(path, format=format, key=state_key)
        a_all, s_all = np.asarray(acts.actions, dtype=np.float32), np.asarray(states.actions, dtype=np.float32)
        attrs = acts.episode_attrs or [{} for _ in range(acts.num_episodes)]
        name = Path(path).stem
        robots = [str(a.get("robot") or robot or name) for a in attrs]
        tasks = [str(a.get("task") or task or name) for a in attrs]
        ends, starts = acts.episode_ends, acts.episode_starts
        for r in dict.fromkeys(robots):
            eps = [i for i, x in enumerate(robots) if x == r]
            rows = np.concatenate([np.arange(starts[i], ends[i]) for i in eps])
            out.append(OldPolicySource(
                str(path), r, a_all[rows], s_all[rows], np.cumsum([ends[i] - starts[i] for i in eps]),
                [tasks[i] for i in eps], [acts.episode_names[i] for i in eps],
            ))  # fmt: skip
    return out


def old_fit_normalizers(sources, mode):
    out = {}
    for r in dict.fromkeys(s.robot for s in sources):
        acts = np.concatenate([s.actions for s in sources if s.robot == r])
        states = np.concatenate([s.states for s in sources if s.robot == r])
        out[r] = (Normalizer.fit(acts, mode=mode), Normalizer.fit(states, mode=mode))
    return out


class OldPolicyDataset(torch.utils.data.Dataset):
    def __init__(self, policy, sources, pad="repeat"):
        c = policy.config
        self.horizon, self.pad = c.horizon, pad
        acts, states, amask, smask, tasks, ends, win = [], [], [], [], [], [], []
        self.robots = []
        self.num_dropped_episodes = 0
        offset = 0
        for src in sources:
            nrm = policy.normalizers[src.robot]
            a = torch.as_tensor(nrm["action"].normalize(src.actions), dtype=torch.float32)
            s = torch.as_tensor(nrm["state"].normalize(src.states), dtype=torch.float32)
            acts.append(policy.to_policy_space(a, src.robot))
            padded, m = policy.pad_state(s, src.robot)
            states.append(padded)
            smask.append(m)
            amask.append(policy.action_mask(src.robot)[None].expand(len(a), -1))
            self.robots.append(src.robot)
            start = 0
            for e, end in enumerate(src.episode_ends):
                n = int(end - start)
                tasks.append(torch.full((n,), policy.task_id(src.tasks[e]), dtype=torch.long))
                ends.append(torch.full((n,), offset + int(end), dtype=torch.long))
                n_win = n if pad == "repeat" else n - c.horizon + 1
                if n_win <= 0:
                    self.num_dropped_episodes += 1
                else:
                    win.append(offset + start + torch.arange(n_win))
                start = int(end)
            offset += len(a)
        if not win:
            raise DataError(f"no training windows of horizon {c.horizon} in {[s.path for s in sources]}")
        self.actions, self.states = torch.cat(acts), torch.cat(states)
        self.action_masks, self.state_masks = torch.cat(amask), torch.cat(smask)
        self.tasks, self.ends, self.starts = torch.cat(tasks), torch.cat(ends), torch.cat(win)

    def __len__(self):
        return len(self.starts)

    def get_batch(self, idx):
        start = self.starts[idx]
        rows = start[:, None] + torch.arange(self.horizon)
        end = self.ends[start][:, None]
        is_pad = rows >= end
        rows = torch.minimum(rows, end - 1)
        return {
            "action": self.actions[rows], "is_pad": is_pad, "action_mask": self.action_masks[start],
            "state": self.states[start], "state_mask": self.state_masks[start], "task": self.tasks[start],
        }  # fmt: skip


# ------------------------------------------------------------------ datasets
def _episode(rng, t, d, s):
    act = np.cumsum(rng.normal(0, 0.3, (t, d)), 0).astype(np.float32) * np.arange(1, d + 1, dtype=np.float32)
    return act, rng.uniform(-2, 3, (t, s)).astype(np.float32)


def write_hdf5_dir(root: Path, lengths, robots, d, s, seed=0, tasks=None) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for e, (t, r) in enumerate(zip(lengths, robots)):
        act, state = _episode(rng, t, d, s)
        with h5py.File(root / f"ep_{e}.hdf5", "w") as f:
            f["action"] = act
            f["observations/state"] = state
            f.attrs["robot"] = r
            f.attrs["task"] = tasks[e] if tasks else f"task_{e % 2}"
    return root


def write_npy_dir(root: Path, lengths, robots, d, s, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    parts = [_episode(rng, t, d, s) for t in lengths]
    root.mkdir(parents=True)
    np.save(root / "actions.npy", np.concatenate([a for a, _ in parts]))
    np.save(root / "state.npy", np.concatenate([x for _, x in parts]))
    np.save(root / "episode_ends.npy", np.cumsum(lengths).astype(np.int64))
    attrs = [{"robot": r, "task": f"npy_{i % 3}"} for i, r in enumerate(robots)]
    (root / "episodes.json").write_text(json.dumps({"names": [f"ep{i}" for i in range(len(lengths))], "attrs": attrs}))
    return root


def write_zarr(path: Path, lengths, d, s, seed=0) -> Path:
    import zarr

    rng = np.random.default_rng(seed)
    parts = [_episode(rng, t, d, s) for t in lengths]
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    act, state = np.concatenate([a for a, _ in parts]), np.concatenate([x for _, x in parts])
    root.create_array("data/action", shape=act.shape, chunks=(5, d), dtype="f8")[:] = act  # read back as float32
    root.create_array("data/state", shape=state.shape, chunks=(5, s), dtype="f4")[:] = state
    root.create_array("meta/episode_ends", shape=(len(lengths),), dtype="i8")[:] = np.cumsum(lengths)
    return path


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Several robots: interleaved in one folder (same dims), a second robot in another folder and format,
    one robot spread over two datasets, episodes shorter than H, and a store whose episodes are all short."""
    root = tmp_path_factory.mktemp("pdata")
    return {
        "hdf5": [write_hdf5_dir(root / "mixed", [3, 20, 5, 1, 12, 9, 2, 8], ["arm_a", "arm_b", "arm_a", "arm_a",
                                                                             "arm_b", "arm_a", "arm_b", "arm_b"], 4, 6),
                 write_hdf5_dir(root / "ur5e", [16, 4, 10], ["ur5e"] * 3, 3, 5, seed=1)],
        "lazy": [write_npy_dir(root / "npy", [7, 30, 2, 11, 9], ["arm_a", "arm_c", "arm_a", "arm_c", "arm_c"], 4, 6, seed=2),
                 write_zarr(root / "replay.zarr", [9, 25, 3], 4, 6, seed=3),
                 write_zarr(root / "short.zarr", [2, 3, 1], 2, 3, seed=4)],
    }


def both_sources(datasets):
    new = load_sources(datasets["hdf5"]) + load_sources(datasets["lazy"], state_key="state")
    old = old_load_sources(datasets["hdf5"]) + old_load_sources(datasets["lazy"], state_key="state")
    return new, old


def assert_same_batch(new: dict, old: dict):
    assert set(new) == set(old)
    for k in old:
        assert new[k].dtype == old[k].dtype and new[k].shape == old[k].shape, k
        assert torch.equal(new[k], old[k]), k


# ------------------------------------------------------------------ bit-identical to the former implementation
def test_sources_and_normalizers_match_the_former_loader(datasets):
    new, old = both_sources(datasets)
    assert [(s.path, s.robot, s.tasks, s.names) for s in new] == [(s.path, s.robot, s.tasks, s.names) for s in old]
    for n, o in zip(new, old):
        assert np.array_equal(n.episode_ends, o.episode_ends)
        assert np.array_equal(np.asarray(n.actions), o.actions) and np.array_equal(np.asarray(n.states), o.states)
    for mode in ("minmax", "meanstd"):
        fn, fo = fit_normalizers(new, mode), old_fit_normalizers(old, mode)
        assert list(fn) == list(fo) == ["arm_a", "arm_b", "ur5e", "arm_c", "replay", "short"]
        for r in fo:
            for a, b in zip(fn[r], fo[r]):
                for k in ("min", "max", "mean", "std", "scale", "offset"):
                    assert np.array_equal(getattr(a, k), getattr(b, k)), (r, k)


@pytest.mark.parametrize("pad", ["repeat", "drop"])
@pytest.mark.parametrize("fam", list(TINY))
def test_batches_are_bit_identical_to_the_former_implementation(datasets, fam, pad):
    new, old = both_sources(datasets)
    policy = make_policy(fam, horizon=H, state_dim=8, **TINY[fam])
    prepare_policy(policy, new)
    ds, ref = PolicyDataset(policy, new, pad=pad), OldPolicyDataset(policy, old, pad=pad)
    assert len(ds) == len(ref) and ds.robots == ref.robots
    assert ds.num_dropped_episodes == ref.num_dropped_episodes == (0 if pad == "repeat" else 4 + 1 + 2 + 1 + 3)
    assert_same_batch(ds.get_batch(torch.arange(len(ds))), ref.get_batch(torch.arange(len(ref))))
    gen = torch.Generator().manual_seed(0)
    for b in (1, 2, 64, 257):
        idx = torch.randint(len(ds), (b,), generator=gen)
        assert_same_batch(ds.get_batch(idx), ref.get_batch(idx))
    idx = torch.tensor([-1, 0, -len(ds), 5, 5])
    assert_same_batch(ds.get_batch(idx), ref.get_batch(idx))
    for i in (0, len(ds) // 2, len(ds) - 1):
        item, want = ds[i], ref.get_batch(torch.tensor([i]))
        assert_same_batch({k: v[None] for k, v in item.items()}, want)


def test_one_source_and_drop_of_a_whole_source(datasets, caplog):
    """The usual fine-tuning case (one source, the fast path) and a source with no window under drop."""
    for paths, key, pad in ((datasets["hdf5"][1:], "observations/state", "drop"),
                            (datasets["lazy"][1:], "state", "drop")):
        new, old = load_sources(paths, state_key=key), old_load_sources(paths, state_key=key)
        policy = make_policy("dp", horizon=H, state_dim=8, **TINY["dp"])
        prepare_policy(policy, new)
        with caplog.at_level(logging.WARNING, logger="ate.policies.data"):
            ds, ref = PolicyDataset(policy, new, pad=pad), OldPolicyDataset(policy, old, pad=pad)
        assert "shorter than horizon 8 dropped" in caplog.text
        assert len(ds) == len(ref) and ds.num_dropped_episodes == ref.num_dropped_episodes
        idx = torch.randint(len(ds), (300,), generator=torch.Generator().manual_seed(1))
        assert_same_batch(ds.get_batch(idx), ref.get_batch(idx))


# ------------------------------------------------------------------ laziness
def test_lazy_formats_stay_on_disk(datasets):
    new = load_sources(datasets["lazy"], state_key="state")
    policy = make_policy("dp", horizon=H, state_dim=8, **TINY["dp"])
    prepare_policy(policy, new)
    ds = PolicyDataset(policy, new)
    for src in new:
        for eps in (src.action_eps, src.state_eps):
            assert isinstance(eps.actions, LazyArray)
            kind = type(eps.actions.array)
            assert kind is np.memmap if src.path.endswith("npy") else "zarr" in kind.__module__, kind
        assert isinstance(src.actions, (LazyArray, Frames))  # a robot's share of a dataset is a view, not a copy
    chunks = [p.chunks for p in ds._parts]
    assert all(c.eps is s.action_eps and c.extras["state"] is s.state_eps for c, s in zip(chunks, new))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_200mb_npy_folder_is_not_read_into_memory(tmp_path):
    n, d, s = 1_200_000, 4, 39  # 19 MB of actions + 187 MB of states
    folder = tmp_path / "big"
    folder.mkdir()
    for name, dim in (("actions", d), ("state", s)):
        out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float32, shape=(n, dim))
        for a in range(0, n, 200_000):
            out[a : a + 200_000] = np.cos(np.arange(a, a + 200_000, dtype=np.float32))[:, None] * np.arange(1, dim + 1)
        out.flush()
        del out
    np.save(folder / "episode_ends.npy", np.arange(200, n + 1, 200, dtype=np.int64))
    size = n * (d + s) * 4
    base = rss_anon()
    sources = load_sources(folder, state_key="state")
    policy = make_policy("dp", horizon=16, state_dim=40, **TINY["dp"])
    prepare_policy(policy, sources)  # streaming normaliser fit
    ds = PolicyDataset(policy, sources)
    assert len(ds) == n
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = ds.get_batch(torch.randint(len(ds), (256,), generator=gen))
    assert batch["action"].shape == (256, 16, policy.config.action_dim) and batch["action"].abs().max() <= 1 + 1e-5
    growth = rss_anon() - base
    assert growth < size / 8, f"anonymous memory grew {growth / 1e6:.1f} MB for a {size / 1e6:.0f} MB dataset"


# ------------------------------------------------------------------ Frames
def test_frames_view_reads_like_the_concatenated_rows(datasets):
    from ate.data import load_episodes

    eps = load_episodes(datasets["lazy"][0])  # npy, lazy
    chosen = np.array([0, 2, 3])
    view = Frames.of_episodes(eps, chosen)
    full = np.asarray(eps.actions)
    want = np.concatenate([full[eps.episode_starts[i] : eps.episode_ends[i]] for i in chosen])
    assert view.shape == want.shape and len(view.segments) == 2  # episodes 2 and 3 are one run
    assert np.array_equal(np.asarray(view), want)
    for a, b in ((0, 3), (5, 9), (6, 7), (8, 20), (0, 100), (15, 10)):
        assert np.array_equal(view[a:b], want[a:b]), (a, b)
    assert np.array_equal(view[::3], want[::3]) and np.array_equal(view[-1], want[-1])
    rows = np.array([19, 0, 7, 7, -2])
    assert np.array_equal(view[rows], want[rows]) and view[3].dtype == np.float32
    both = Frames.concat([view, eps.actions])
    assert np.array_equal(np.asarray(both), np.concatenate([want, full]))
    assert np.array_equal(both.take_rows([0, len(want), len(both) - 1]), np.stack([want[0], full[0], full[-1]]))
    assert Frames.of_episodes(eps, np.arange(eps.num_episodes)) is eps.actions
    with pytest.raises(IndexError):
        view[len(want)]


# ------------------------------------------------------------------ errors
def test_bad_inputs_give_one_line_errors(datasets, tmp_path):
    bad = write_hdf5_dir(tmp_path / "bad", [10, 10], ["r", "r"], 3, 4)
    with h5py.File(bad / "ep_1.hdf5", "a") as f:
        del f["observations/state"]
        f["observations/state"] = np.zeros((9, 4), np.float32)
    with pytest.raises(DataError, match="bad: 'action' and 'observations/state' have different episode lengths"):
        load_sources(bad)
    with pytest.raises(DataError, match="no dataset paths"):
        load_sources([])

    short = load_sources(datasets["lazy"][2], state_key="state")
    policy = make_policy("dp", horizon=H, state_dim=8, **TINY["dp"])
    prepare_policy(policy, short)
    with pytest.raises(DataError, match=r"no training windows of horizon 8 \(pad='drop'\) in \[.*short.zarr"):
        PolicyDataset(policy, short, pad="drop")
    with pytest.raises(ValueError, match="pad must be"):
        PolicyDataset(policy, short, pad="edge")

    # a robot registered with other dims than the data: the error names the dataset and the field
    other = load_sources(datasets["hdf5"][1])  # ur5e: 3 action dims, 5 state dims
    other[0].robot = "short"
    with pytest.raises(ShapeMismatchError, match="ur5e: field 'action' has 3 dims .* robot 'short' with action_dim=2"):
        PolicyDataset(policy, other)
    with pytest.raises(ShapeMismatchError, match="unknown robot 'ur5e'"):
        PolicyDataset(policy, load_sources(datasets["hdf5"][1]))

    ds = PolicyDataset(policy, short)
    with pytest.raises(IndexError, match="out of range for 6 windows"):
        ds.get_batch(torch.tensor([0, 6]))
