"""The GPU check (`scripts/gpu_check.sh`): do both trainers run on the device, and what do they cost there?

    python -m ate.bench.gpu_check --out gpu_check.json            # on a GPU machine (device auto = CUDA)
    python -m ate.bench.gpu_check --out x.json --device cpu --tiny  # CI smoke: same code path, tiny sizes

Measures, on one device, with the real trainers (``ate.align.train``, ``ate.policies.train``) on synthetic data:

- ``vae``: stage-1 training samples/s at the ``reference`` preset (52 M params, Z = 512, D = 14, H = 16,
  B = 64), fp32 vs bf16 autocast, then a short stage 2 on a few target episodes;
- ``policies``: per family (dp, rdt, pi0) a short pretraining, then fine-tuning with and without ATE from the
  same checkpoint; the guidance overhead ratio = median step time with ATE / without.

Writes one JSON object (schema ``ate.gpu_check/1``) and prints a one-screen summary. Each part records its
own error instead of stopping the check, so one run on a lent machine reports everything it can.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

SCHEMA = "ate.gpu_check/1"


def _device_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def check_vae(work: Path, device: str, tiny: bool) -> dict:
    from ate.align.train import AlignConfig, train_stage1, train_stage2
    from ate.bench.synthetic import write_toy_npz

    dim, horizon = (3, 8) if tiny else (14, 16)
    src = write_toy_npz(work / "src.npz", 8 if tiny else 200, 40 if tiny else 200, dim, seed=0)
    tgt = write_toy_npz(work / "tgt.npz", 3 if tiny else 5, 20 if tiny else 150, dim, seed=1, domain="target")
    steps, log_every = (4, 2) if tiny else (60, 20)
    common = dict(preset="small" if tiny else "reference", horizon=horizon, batch_size=8 if tiny else 64,
                  device=device, progress=False, log_every=log_every, eval_every=10**9, save_every=10**9,
                  prior_max_samples=2000)
    out: dict = {"preset": common["preset"], "batch_size": common["batch_size"], "steps": steps}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        t0 = time.perf_counter()
        m1 = train_stage1(src, work / f"s1_{name}", AlignConfig(steps=steps, bf16=bf16, **common))
        rows = _rows(work / f"s1_{name}")
        # the first logged window holds the warm-up (cuDNN / allocator); the later ones are steady state
        rates = [r["samples_per_s"] for r in rows[1:]] or [rows[-1]["samples_per_s"]]
        out[name] = {"samples_per_s": statistics.median(rates), "wall_s": time.perf_counter() - t0,
                     "final_loss": rows[-1]["loss"]}
    out["bf16_speedup"] = out["bf16"]["samples_per_s"] / out["fp32"]["samples_per_s"]
    train_stage2(tgt, work / "s2", m1, AlignConfig(steps=steps, bf16=True, **common))
    out["stage2_final_loss"] = _rows(work / "s2")[-1]["loss"]
    return out


def check_policies(work: Path, device: str, tiny: bool, families=("dp", "rdt", "pi0")) -> dict:
    from ate.align.train import AlignConfig, train_stage1, train_stage2
    from ate.bench.synthetic import write_policy_demos
    from ate.policies.train import finetune, pretrain

    src = write_policy_demos(work / "demos", "panda", 7, 12, n_eps=4, T=40)
    horizon = 8 if tiny else 16
    steps = 4 if tiny else 40
    kw = dict(batch_size=8 if tiny else 64, progress=False, device=device, log_every=1, warmup_steps=1,
              mixed_precision="no")
    out: dict = {}
    for fam in families:
        try:
            pre = pretrain(src, work / f"{fam}_pre", policy=fam, policy_config={"horizon": horizon, "state_dim": 12},
                           steps=steps, **kw)
            # the adaptation VAE in the policy's action space (its stats), as `ate bench` trains it
            vcfg = AlignConfig(steps=steps, preset="small", horizon=horizon, batch_size=kw["batch_size"],
                               device=device, progress=False, val_ratio=0, prior_max_samples=2000)
            norm = pre.normalizers["panda"]["action"]
            m1 = train_stage1(src, work / f"{fam}_vae1", vcfg, normalizer=norm)
            vae = train_stage2(src, work / f"{fam}_vae2", m1, vcfg, normalizer=norm)
            times = {}
            for arm, extra in (("off", {"guidance": "off"}), ("ate", {"guidance": "ate", "vae": vae})):
                finetune(src, work / f"{fam}_{arm}", init=work / f"{fam}_pre", steps=steps, **extra, **kw)
                step_s = [r["step_s"] for r in _rows(work / f"{fam}_{arm}")]
                times[arm] = statistics.median(step_s[len(step_s) // 4:])  # skip the warm-up steps
            out[fam] = {"params": pre.param_count(), "step_s_off": times["off"], "step_s_ate": times["ate"],
                        "guidance_overhead": times["ate"] / times["off"]}
        except Exception as exc:  # record and go on: one family's failure must not hide the others
            out[fam] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}
    return out


def run(out_path: str | Path, device: str = "auto", tiny: bool = False, parts=("vae", "policies"),
        families=("dp", "rdt", "pi0")) -> dict:
    from ate.training import resolve_device

    dev = resolve_device(device)
    res: dict = {"schema": SCHEMA, "tiny": tiny, **_device_info(dev), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ate_gpu_check_") as tmp:
        for part in parts:
            (Path(tmp) / part).mkdir()
            try:
                res[part] = (check_vae(Path(tmp) / part, device, tiny) if part == "vae" else
                             check_policies(Path(tmp) / part, device, tiny, families))
            except Exception as exc:
                res[part] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
    res["wall_s"] = time.perf_counter() - t0
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(res, indent=2) + "\n")
    return res


def summary(res: dict) -> str:
    lines = [f"gpu check on {res.get('gpu', res['device'])} (torch {res['torch']}), {res['wall_s']:.0f} s"]
    v = res.get("vae", {})
    if "error" in v:
        lines.append(f"  vae: ERROR {v['error']}")
    elif v:
        lines.append(f"  vae {v['preset']} B={v['batch_size']}: fp32 {v['fp32']['samples_per_s']:.0f} samples/s, "
                     f"bf16 {v['bf16']['samples_per_s']:.0f} samples/s ({v['bf16_speedup']:.2f}x)")
    for fam, p in res.get("policies", {}).items():
        lines.append(f"  {fam}: ERROR {p['error']}" if "error" in p else
                     f"  {fam} ({p['params']:,} params): step {1e3 * p['step_s_off']:.1f} ms, with ATE "
                     f"{1e3 * p['step_s_ate']:.1f} ms ({p['guidance_overhead']:.2f}x)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ate.bench.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    from ate.training import DEVICES

    ap.add_argument("--device", default="auto", choices=DEVICES)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU smoke run of the same code)")
    ap.add_argument("--parts", nargs="+", default=["vae", "policies"], choices=["vae", "policies"])
    args = ap.parse_args(argv)
    res = run(args.out, args.device, args.tiny, tuple(args.parts))
    print(summary(res))
    failed = [k for k in args.parts if "error" in res.get(k, {}) or any("error" in v for v in res.get(k, {}).values()
                                                                       if isinstance(v, dict))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
