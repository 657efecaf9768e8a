"""ate.training: the device rule and the per-step LR schedule both trainers use; CUDA-only checks (skipped
without a GPU; `scripts/gpu_check.sh` runs them on one)."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch

from ate.training import cosine_lr_factor, resolve_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_resolve_device_gives_each_process_its_own_gpu_and_refuses_more_processes_than_gpus(monkeypatch):
    """torchrun's LOCAL_RANK picks the GPU; more processes per node than GPUs is a one-line error (nccl would
    refuse two ranks on one device), for `auto` as for `cuda`. CUDA is faked: this runs on any machine."""
    from ate.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    for name in ("auto", "cuda"):
        with pytest.raises(ConfigError, match=r"4 processes on this node but torch sees 2 CUDA device\(s\).*--device cpu"):
            resolve_device(name)


@pytest.mark.skipif(tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 4), reason="fused CPU AdamW: torch 2.4")
def test_adamw_is_fused_and_takes_torchs_default_steps():
    """Both trainers' optimiser uses the fused kernel (one pass per parameter; most of the reference VAE's CPU
    step went to the default implementation's many passes) and takes the same steps as torch's default AdamW.
    Tolerance: each of the 20 steps moves a weight by at most lr (Adam's normalised step), and the two kernels
    may round each of their ~10 elementwise operations differently, ~1 ulp of the weight each: 20 * 10 * eps_32 *
    max|w| bounds the drift; the check is also far below one step (lr = 1e-2), so a wrong update rule fails."""
    from ate.training import adamw

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    twin = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    groups = lambda ps: [{"params": ps[:2], "weight_decay": 0.1}, {"params": ps[2:], "weight_decay": 0.0}]  # noqa: E731
    fused = adamw(groups(list(net.parameters())), lr=1e-2, betas=(0.95, 0.999))
    plain = torch.optim.AdamW(groups(twin), lr=1e-2, betas=(0.95, 0.999), foreach=False)
    assert all(g["fused"] for g in fused.param_groups)
    x, y = torch.randn(32, 8), torch.randn(32, 3)
    for _ in range(20):
        for opt, ps in ((fused, list(net.parameters())), (plain, twin)):
            out = torch.tanh(x @ ps[0].T + ps[1]) @ ps[2].T + ps[3]
            opt.zero_grad()
            torch.nn.functional.mse_loss(out, y).backward()
            opt.step()
    bound = 20 * 10 * torch.finfo(torch.float32).eps * max(p.abs().max().item() for p in twin)
    for a, b in zip(net.parameters(), twin):
        assert (a - b).abs().max().item() <= bound
    assert bound < 1e-2 / 10


def test_make_accelerator_gives_each_run_its_precision(monkeypatch):
    """accelerate keeps one configuration per process and refuses another precision; both trainers get theirs
    (gpu_check runs the VAE in fp32, then bf16, then the policies), and the environment does not choose it."""
    from ate.training import make_accelerator

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    for mp in ("no", "bf16", "bf16", "no"):
        acc = make_accelerator("cpu", mp)
        assert (acc.mixed_precision, acc.native_amp, acc.device.type) == (mp, mp == "bf16", "cpu")
        assert (acc.num_processes, acc.process_index, acc.is_main_process) == (1, 0, True)
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        make_accelerator("cpu", "fp16")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")  # would divide each loss by 4, never accumulate
    with pytest.raises(ValueError, match="gradient accumulation"):
        make_accelerator("cpu")
    monkeypatch.delenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")
    assert make_accelerator("cpu").gradient_accumulation_steps == 1


def test_bf16_vae_training_runs_in_accelerates_mixed_precision(tmp_path):
    """--bf16 is the Accelerator's mixed precision: the prepared VAE's forward autocasts (bf16 changes the
    weights) and its outputs come back in float32, the losses stay float32."""
    from ate.align.train import AlignConfig, train_stage1
    from ate.bench.synthetic import write_toy_npz
    from ate.checkpoint import load_tensors

    src = write_toy_npz(tmp_path / "src.npz", 12, 30, 3, seed=0)
    common = dict(preset="small", latent_dim=8, horizon=8, batch_size=8, steps=3, progress=False, device="cpu",
                  val_ratio=0)
    runs = {bf16: train_stage1(src, tmp_path / str(bf16), AlignConfig(bf16=bf16, **common)) for bf16 in (False, True)}
    a, b = (load_tensors(runs[k] / "model.safetensors") for k in (False, True))
    assert all(v.dtype == torch.float32 for v in b.values())
    assert max((a[k] - b[k]).abs().max().item() for k in a) > 1e-6


@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_log_to_goes_through_accelerates_trackers(backend, tmp_path, monkeypatch):
    """--log-to: the rows of metrics.jsonl also go to accelerate's tracker (skipped without the package, which
    no default install has); metrics.jsonl is what it is without one."""
    pytest.importorskip(backend)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    from ate.align.train import AlignConfig, train_stage1
    from ate.bench.synthetic import write_toy_npz

    src = write_toy_npz(tmp_path / "src.npz", 12, 30, 3, seed=0)
    common = dict(preset="small", latent_dim=8, horizon=8, batch_size=8, steps=3, log_every=1, eval_every=2,
                  progress=False, device="cpu")
    for log_to in ("none", backend):
        train_stage1(src, tmp_path / log_to, AlignConfig(log_to=log_to, **common))
    rows = {k: [{c: v for c, v in json.loads(ln).items() if c != "samples_per_s"}
                for ln in (tmp_path / k / "metrics.jsonl").read_text().splitlines()] for k in ("none", backend)}
    assert rows["none"] == rows[backend] and len(rows["none"]) == 3
    if backend == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tmp_path / backend / "tb"))
        events.Reload()
        assert "step" not in events.Tags()["scalars"]  # the x axis, not a scalar
        assert [(e.step, e.value) for e in events.Scalars("loss")] == \
            [(r["step"], pytest.approx(r["loss"])) for r in rows["none"]]
    else:
        assert list((tmp_path / backend / "wandb").glob("offline-run-*/*.wandb"))


def test_process_group_scope_ends_only_the_group_it_started(tmp_path):
    """A trainer ends the process group started inside it (gloo threads alive at interpreter exit can abort it,
    pytorch#190489) and keeps one its caller started, through a whole training run too."""
    import torch.distributed as dist

    from ate.align.train import AlignConfig, train_stage1
    from ate.bench.synthetic import write_toy_npz
    from ate.training import process_group_scope

    def start(name):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / name}", rank=0, world_size=1)

    with process_group_scope():
        start("ours")
    assert not dist.is_initialized()
    start("theirs")
    try:
        src = write_toy_npz(tmp_path / "src.npz", 12, 30, 3, seed=0)
        train_stage1(src, tmp_path / "s1", AlignConfig(preset="small", latent_dim=8, horizon=8, batch_size=8,
                                                       steps=2, progress=False, device="cpu"))
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_cosine_lr_factor_warms_up_then_decays_to_the_floor():
    assert [cosine_lr_factor(s, 10, warmup=4) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert cosine_lr_factor(7, 10, warmup=4) == pytest.approx(0.5)  # half way through the decay: cos(π/2) = 0
    assert cosine_lr_factor(10, 10, floor=0.01) == pytest.approx(0.01) and cosine_lr_factor(50, 10) == 0.0
    assert all(math.isfinite(cosine_lr_factor(s, 1)) for s in range(3))  # one-step runs


@pytest.mark.parametrize("warmup,total", [(100, 2000), (5, 12), (2, 6), (0, 10), (1, 1), (3, 3)])
def test_cosine_lr_factor_is_the_policy_trainers_former_diffusers_schedule(warmup, total):
    """The policy trainer used diffusers' get_cosine_schedule_with_warmup (a LambdaLR stepped after each
    optimiser step); the shared factor gives the LR of every step bit for bit ((100, 2000): TrainConfig's
    defaults; (5, 12), (2, 6): the tests' settings; the last two: degenerate warm-ups)."""
    lr = 1e-4
    try:
        from diffusers.optimization import get_cosine_schedule_with_warmup
    except ImportError:  # its closed form: s/W during the warm-up, then ½(1 + cos(π(s − W)/(T − W)))
        before = [lr * (s / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(total - warmup, 1))))
                  for s in range(total)]
    else:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        sched = get_cosine_schedule_with_warmup(opt, warmup, total)
        before = []
        for _ in range(total):  # the LR each optimiser step used, as the loop stepped it
            before.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    # the same float operations in the same order (π·½·2 = π exactly), so equality, not closeness
    assert [lr * cosine_lr_factor(s, total, warmup) for s in range(total)] == before


def test_stage2_lr_no_longer_collapses_on_a_few_demos(tmp_path):
    """5 short toy demos give ~5 steps per epoch at batch 16: the reference 0.95-per-epoch decay has lost
    ~80 % of the LR by step 200, the per-step cosine is at half its peak at mid-run."""
    from ate.align.train import AlignConfig, train_stage1, train_stage2
    from ate.bench.synthetic import write_toy_npz

    src = write_toy_npz(tmp_path / "src.npz", 20, 40, 3, seed=0)
    tgt = write_toy_npz(tmp_path / "tgt.npz", 5, 20, 3, seed=1, domain="target")
    common = dict(preset="small", latent_dim=8, horizon=8, batch_size=16, log_every=1, eval_every=1000,
                  progress=False, val_ratio=0)
    m1 = train_stage1(src, tmp_path / "s1", AlignConfig(steps=2, **common))
    n = 200
    for schedule in ("epoch_decay", "cosine"):
        out = train_stage2(tgt, tmp_path / schedule, m1, AlignConfig(steps=n, lr_schedule=schedule, **common))
        lrs = [json.loads(x)["lr"] for x in (out.parent / "metrics.jsonl").read_text().splitlines()]
        if schedule == "epoch_decay":
            per_epoch = json.loads((out.parent / "run.json").read_text())["train_chunks"] // 16
            assert lrs[-1] == pytest.approx(1e-4 * 0.95 ** ((n - 1) // per_epoch))
            assert lrs[-1] < 0.2e-4
        else:
            # row i logs the LR of step i: 0.01 + 0.99·½(1 + cos(π·i/n)) of the peak (floor min_lr / lr = 0.01)
            assert lrs == pytest.approx([1e-4 * cosine_lr_factor(i, n, floor=0.01) for i in range(n)])
            assert lrs[n // 2] == pytest.approx(0.505e-4)


@cuda
@pytest.mark.parametrize("fam", ["dp", "rdt", "pi0"])
def test_policy_ate_finetune_on_cuda(fam, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_policies_helpers import StandInVAE, write_demos

    from ate.policies.train import finetune, pretrain

    src = write_demos(tmp_path / "src", "panda", 4, 6, n_eps=3, T=16)
    cfg = {"horizon": 8, "state_dim": 8}
    kw = dict(steps=4, batch_size=8, progress=False, device="cuda", mixed_precision="bf16", warmup_steps=1)
    pre = pretrain(src, tmp_path / "pre", policy=fam, policy_config=cfg, **kw)
    vae = StandInVAE(4, 8, pre.normalizers["panda"]["action"])
    ft = finetune(src, tmp_path / "ate", init=tmp_path / "pre", guidance="ate", vae=vae, **kw)
    assert next(ft.parameters()).device.type == "cuda"
    rec = json.loads((tmp_path / "ate" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["guidance_norm"] > 0 and math.isfinite(rec["loss"])


@cuda
def test_make_accelerator_moves_between_cpu_and_cuda():
    """Alone, accelerate keeps the first run's device: a CUDA run after a CPU one trained on the CPU."""
    from ate.training import make_accelerator

    assert [make_accelerator(d).device.type for d in ("cpu", "cuda", "cpu", "auto")] == ["cpu", "cuda", "cpu", "cuda"]


@cuda
def test_align_stages_on_cuda(tmp_path):
    from ate.align import load_aligned_vae
    from ate.align.train import AlignConfig, train_stage1, train_stage2
    from ate.bench.synthetic import write_toy_npz

    src = write_toy_npz(tmp_path / "src.npz", 20, 40, 3, seed=0)
    tgt = write_toy_npz(tmp_path / "tgt.npz", 5, 20, 3, seed=1, domain="target")
    common = dict(preset="small", horizon=8, batch_size=16, progress=False, device="cuda", bf16=True)
    m1 = train_stage1(src, tmp_path / "s1", AlignConfig(steps=5, **common))
    m2 = train_stage2(tgt, tmp_path / "s2", m1, AlignConfig(steps=5, **common))
    assert load_aligned_vae(m2).prior is not None


def test_gpu_check_smoke_on_cpu(tmp_path):
    """The GPU check's code path at tiny sizes on the CPU (the real run is scripts/gpu_check.sh on a GPU)."""
    from ate.bench import gpu_check

    res = gpu_check.run(tmp_path / "gc.json", device="cpu", tiny=True, families=("pi0",))
    assert json.loads((tmp_path / "gc.json").read_text())["schema"] == gpu_check.SCHEMA
    assert res["vae"]["fp32"]["samples_per_s"] > 0 and res["vae"]["bf16_speedup"] > 0
    assert res["policies"]["pi0"]["guidance_overhead"] > 0, res["policies"]
    assert "pi0" in gpu_check.summary(res)


def test_budget_rule_scales_steps_with_data(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_policies_helpers import write_demos

    from ate.policies.train import TrainConfig, pretrain

    cfg = TrainConfig(epochs=2.0, batch_size=16, min_steps=3, max_steps=50)
    assert cfg.resolve_steps(100).steps == 13 and cfg.resolve_steps(1).steps == 3 and cfg.resolve_steps(10**4).steps == 50
    assert TrainConfig(steps=7).resolve_steps(10**6).steps == 7  # no epochs: steps as given
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    data = write_demos(tmp_path / "d", "panda", 3, 4, n_eps=2, T=12)  # 24 windows (pad repeat)
    pretrain(data, tmp_path / "run", policy="pi0", policy_config={"horizon": 4, "state_dim": 4, "width": 16, "depth": 1,
             "heads": 2, "cond_dim": 16}, epochs=2.0, batch_size=8, progress=False, warmup_steps=1)
    rec = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert rec["num_windows"] == 24 and rec["resolved_steps"] == 6
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6


@pytest.mark.parametrize("fam", ["dp", "pi0"])
def test_lora_finetune_trains_low_rank_updates_and_saves_a_plain_policy(fam, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_policies_helpers import write_demos

    from ate.policies import load_policy
    from ate.policies.lora import lora_targets
    from ate.policies.train import finetune, pretrain

    data = write_demos(tmp_path / "d", "panda", 3, 4, n_eps=2, T=12)
    cfg = {"horizon": 4, "state_dim": 4}
    kw = dict(batch_size=8, progress=False, warmup_steps=1, lr=1e-2, ema_decay=0.5)
    pretrain(data, tmp_path / "pre", policy=fam, policy_config=cfg, steps=2, **kw)
    tuned = finetune(data, tmp_path / "lora", init=tmp_path / "pre", adapter="lora", lora_rank=2, steps=5, **kw)
    init, loaded = load_policy(tmp_path / "pre"), load_policy(tmp_path / "lora")
    a, b = init.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() == tuned.state_dict().keys()  # merged: no adapter left, loads as a plain policy
    targets = lora_targets(init)
    moved = 0
    for name in targets:
        w0, w1 = a[f"{name}.weight"], b[f"{name}.weight"]
        delta = (w1 - w0).reshape(w0.shape[0], -1).double()
        # B·A has rank <= r = 2 (the EMA averages A and B separately: still a product of rank-2 factors);
        # singular values beyond the 2nd are float32 rounding of |w| ~ 1 (<= 1e-5), the adapted ones >> that
        sv = torch.linalg.svdvals(delta)
        assert (sv[2:] < 1e-5).all(), (name, sv[:4])
        moved += int(sv[0] > 1e-4)
        if f"{name}.bias" in a:
            assert torch.equal(a[f"{name}.bias"], b[f"{name}.bias"])  # bias="none": base biases stay frozen
    assert moved > len(targets) // 2
    assert json.loads((tmp_path / "lora" / "train_config.json").read_text())["lora"]["rank"] == 2


def test_the_cpu_bf16_attention_kernel_is_the_same_function_and_only_there():
    """The VAE trainer's bf16 forward on the CPU runs attention on the math kernel (faster backward than the CPU
    flash kernel at action-chunk lengths). The swap must not change the function: in float64, where both kernels
    round at ~1e-16 per operation, the VAE's outputs and input gradient agree to 1e-10 relative (a 9-layer
    network's few hundred accumulated roundings stay many orders below that; a wrong kernel is off at O(1)).
    Elsewhere (fp32, GPUs) the context changes nothing."""
    from ate.align.vae import ActionVAE, VAEConfig
    from ate.training import attention_kernels

    assert isinstance(attention_kernels(torch.device("cpu"), False), type(contextlib.nullcontext()))
    assert isinstance(attention_kernels(torch.device("cuda"), True), type(contextlib.nullcontext()))
    torch.manual_seed(0)
    vae = ActionVAE(VAEConfig(action_dim=5, horizon=8, latent_dim=32, num_layers=3, num_heads=4, ff_dim=64)).double()
    a = torch.randn(6, 8, 5, dtype=torch.float64)
    noise = torch.randn(6, 32, dtype=torch.float64)

    def run():
        x = a.clone().requires_grad_(True)
        recon, z, mu, logvar = vae(x, noise=noise)
        (recon.square().sum() + z.sum()).backward()
        return recon.detach(), mu.detach(), x.grad

    def kernels(prof):
        return {e.key for e in prof.key_averages() if "attention" in e.key}

    with torch.profiler.profile() as prof:
        base = run()
    assert any("flash" in k for k in kernels(prof))  # torch's own choice here: so the comparison means something
    with attention_kernels(torch.device("cpu"), True), torch.profiler.profile() as prof:
        assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()
        swapped = run()
    assert not any("flash" in k for k in kernels(prof))
    assert torch.backends.cuda.flash_sdp_enabled()  # restored
    for u, v in zip(base, swapped):
        assert (u - v).abs().max() <= 1e-10 * u.abs().max()
