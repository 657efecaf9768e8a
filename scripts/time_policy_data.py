"""PolicyDataset.get_batch time, the former in-RAM implementation (tests/test_policies_data.py) vs the
ChunkDataset-based one: 500 episodes x 200 frames, D=4, S=39, as HDF5 (in RAM), an npy folder
(memory-mapped) and the same npy folder with two robots interleaved (two sources). One torch thread.

    PYTHONPATH=src python scripts/time_policy_data.py
"""
import sys, time, pathlib, tempfile, numpy as np, torch, h5py
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import test_policies_data as T
from ate.policies import make_policy
torch.set_num_threads(1)
tmp = pathlib.Path(tempfile.mkdtemp())
E, L, d, s = 500, 200, 4, 39
rng = np.random.default_rng(0)
act = rng.normal(size=(E * L, d)).astype(np.float32); st = rng.normal(size=(E * L, s)).astype(np.float32)
npy = tmp / "npy"; npy.mkdir()
np.save(npy / "actions.npy", act); np.save(npy / "state.npy", st)
np.save(npy / "episode_ends.npy", np.arange(L, E * L + 1, L, dtype=np.int64))
import json, shutil
npy2 = tmp / "npy2"; shutil.copytree(npy, npy2)
(npy2 / "episodes.json").write_text(json.dumps({"attrs": [{"robot": f"r{e % 2}", "task": "t"} for e in range(E)]}))
h5 = tmp / "h5"; h5.mkdir()
for e in range(E):
    with h5py.File(h5 / f"ep_{e}.hdf5", "w") as f:
        f["action"] = act[e * L:(e + 1) * L]; f["observations/state"] = st[e * L:(e + 1) * L]
        f.attrs["robot"] = "panda"; f.attrs["task"] = "t"
def bench(ds, b, reps=300):
    gen = torch.Generator().manual_seed(0)
    idx = [torch.randint(len(ds), (b,), generator=gen) for _ in range(reps)]
    ts = []
    for i in idx:
        t0 = time.perf_counter(); ds.get_batch(i); ts.append(time.perf_counter() - t0)
    return np.median(ts) * 1e6, np.min(ts) * 1e6
for fam, kw in (("dp", {}), ("rdt", T.TINY["rdt"])):
    for name, path, key in (("hdf5", h5, "observations/state"), ("npy", npy, "state"), ("npy2", npy2, "state")):
        new = T.load_sources(path, state_key=key); old = T.old_load_sources(path, state_key=key)
        pol = make_policy(fam, horizon=16, state_dim=64, **kw)
        T.prepare_policy(pol, new)
        dn, do = T.PolicyDataset(pol, new), T.OldPolicyDataset(pol, old)
        for b in (64, 256):
            r = {}
            for _ in range(2):  # interleave, keep the better round (shared machine)
                for k, ds in (("old", do), ("new", dn)):
                    m = bench(ds, b)
                    r[k] = min(r.get(k, (1e9, 1e9)), m)
            print(f"{fam:3s} D={pol.config.action_dim:3d} {name:5s} B={b:3d}: old median {r['old'][0]:7.0f} us (min {r['old'][1]:6.0f}), "
                  f"new median {r['new'][0]:7.0f} us (min {r['new'][1]:6.0f}), new/old {r['new'][0] / r['old'][0]:.2f}x", flush=True)
