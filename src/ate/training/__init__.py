"""ate.training: what the VAE trainer (`ate.align.train`) and the policy trainer (`ate.policies.train`) share.

- :func:`resolve_device`: the ``--device auto|cpu|cuda`` rule, one place for both trainers.
- :func:`make_accelerator`: the ``accelerate.Accelerator`` both trainers run on: process group, rank and world
  size under torchrun / ``accelerate launch`` (gloo on the CPU, nccl on GPUs), this process's device, DDP through
  ``prepare``, the collectives, bf16 autocast and the ``--log-to`` trackers.
- :func:`adamw`: the optimiser of both trainers, torch's AdamW with its fused kernel where this torch has one.
- :func:`attention_kernels`: the attention kernels of a bf16 training forward on the CPU (the math kernel).
- :func:`process_group_scope`: around each trainer: the process group its accelerator started is destroyed at
  its end (every rank waits for the others first); :func:`is_main_rank`: rank 0 of a launched run, for the CLI.
- :func:`rank_share`: the weight that turns one rank's masked mean into its part of the global mean.
- :func:`cosine_lr_factor`: the one learning-rate schedule (linear warm-up, cosine decay), a pure function of
  the step, so a resumed run needs no scheduler state to continue exactly. It is diffusers'
  ``get_cosine_schedule_with_warmup`` (what the policy trainer's published results used), plus a floor.
- :class:`MetricsLog`: ``metrics.jsonl`` (+ optional wandb / tensorboard through accelerate's trackers); on resume
  it drops the rows written after the checkpoint it resumes from, so a killed and resumed run has the rows of an
  uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import torch

from ate.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto``: this process's CUDA device when torch sees one (``LOCAL_RANK`` under torchrun), else the CPU.
    ``auto`` or ``cuda`` with more processes on a node (``LOCAL_WORLD_SIZE``) than GPUs: a ConfigError."""
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {DEVICES}, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device (use 'auto' or 'cpu')")
    # one GPU per process: nccl refuses two ranks on one device (and would hang the others at their first
    # collective), so more processes than GPUs on a node is an error, not a silent wrap-around
    per_node, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count()
    if per_node > gpus:
        raise ConfigError(f"device={name!r}: {per_node} processes on this node but torch sees {gpus} CUDA device(s); "
                          f"start at most {gpus} (torchrun --nproc_per_node {gpus}) or train on the CPU with "
                          "--device cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def attention_kernels(device: torch.device, bf16: bool):
    """The context a training forward runs in to pick its scaled-dot-product-attention kernel. On the CPU under
    bf16 autocast: the math kernel (matmuls + softmax), whose backward beats the CPU flash kernel's on the short
    sequences of action chunks (reference VAE, B = 64, H = 16, steps interleaved in one process: 66.7 -> 82.3
    samples/s with 2 threads, 1.30 -> 1.00 s per step with 1; H = 64, 1 thread: 4.5 -> 4.2 s; fp32 is the same
    either way). Elsewhere (GPUs, fp32) torch's own choice."""
    if device.type != "cpu" or not bf16:
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel  # torch >= 2.3
    except ImportError:
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


MIXED_PRECISION = ("no", "bf16")


def make_accelerator(device: str = "auto", mixed_precision: str = "no", log_to: str = "none",
                     out_dir: str | Path | None = None):
    """The ``accelerate.Accelerator`` of one training run.

    ``device``: the :func:`resolve_device` rule; the CPU, or this process's GPU (``LOCAL_RANK`` under torchrun).
    ``mixed_precision``: ``"no"`` or ``"bf16"`` (``prepare`` then runs the model's forward under bf16 autocast
    and returns its outputs in float32); always passed, so an ``ACCELERATE_MIXED_PRECISION`` in the environment
    cannot change a run. ``log_to``: ``"none"``, ``"wandb"`` or ``"tensorboard"`` (accelerate's trackers,
    logging under ``out_dir``; :class:`MetricsLog` starts and feeds them); a missing package fails here, on one
    line, before any work.

    accelerate keeps one configuration per process. A later run in the same process that asks for another
    device or precision (a GPU check's fp32 then bf16 runs, a benchmark's CPU and GPU runs) gets a fresh one,
    where accelerate would refuse (precision, cuda -> cpu) or silently keep the old device (cpu -> cuda); the
    process group of a distributed run is kept (a trainer's :func:`process_group_scope` ends the one it started)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    if mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"mixed_precision must be one of {MIXED_PRECISION}, got {mixed_precision!r}")
    if log_to != "none":
        log_backend(log_to)
    cpu = resolve_device(device).type == "cpu"
    state, acc_state = PartialState._shared_state, AcceleratorState._shared_state
    if state and state.get("device") is not None and (state["device"].type == "cpu") != cpu:
        AcceleratorState._reset_state(reset_partial_state=True)
    elif acc_state and acc_state.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state()
    trackers = {} if log_to == "none" else {"log_with": log_to, "project_dir": None if out_dir is None else str(out_dir)}
    acc = Accelerator(cpu=cpu, mixed_precision=mixed_precision, **trackers)
    if acc.gradient_accumulation_steps != 1:  # the trainers step the optimiser every batch: a divided loss only
        raise ConfigError(f"gradient accumulation ({acc.gradient_accumulation_steps} steps, from the accelerate "
                          "config / ACCELERATE_GRADIENT_ACCUMULATION_STEPS) is not supported; --batch-size is "
                          "the global batch")
    return acc


@contextlib.contextmanager
def process_group_scope():
    """Around one training run (also a decorator): a process group started inside it (by ``make_accelerator``
    under torchrun / ``accelerate launch``) is destroyed at its end, and accelerate's state reset, so a later run
    in the process starts a fresh one. Gloo threads still alive at interpreter exit can abort it (SIGABRT,
    pytorch#190489); a group the caller started is theirs to end. On success every rank first waits for the
    others: what the main process writes last (the exported model) is on disk when any rank returns."""
    import torch.distributed as dist

    ours = not (dist.is_available() and dist.is_initialized())
    ok = False
    try:
        yield
        ok = True
    finally:
        if ours and dist.is_available() and dist.is_initialized():
            from accelerate.state import AcceleratorState

            if ok:  # not after an error: the other ranks may be inside another collective
                dist.barrier()
            dist.destroy_process_group()
            AcceleratorState._reset_state(reset_partial_state=True)


def is_main_rank() -> bool:
    """Rank 0 of a launched run (``RANK``, set by torchrun / accelerate launch), or a process on its own: what
    prints a run's result once, also after :func:`process_group_scope` has ended the group."""
    return int(os.environ.get("RANK", "0")) == 0


def cosine_lr_factor(step: int, total: int, warmup: int = 0, floor: float = 0.0) -> float:
    """The factor of the peak LR for (0-based) optimiser step ``step``: linear warm-up from 0 over ``warmup``
    steps (step/warmup, diffusers' convention), then cosine decay from 1 to ``floor`` at ``total`` steps
    (held there after)."""
    if warmup > 0 and step < warmup:
        return step / warmup
    progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """torch's AdamW, fused where this torch has a fused kernel for the parameters (CPU since torch 2.4, CUDA):
    one pass over each parameter instead of a dozen (the 52 M-parameter reference VAE's bf16 step is 4-16 %
    faster with it on 2 CPU cores: benchmarks/results/core, section 1). Otherwise torch's default
    implementation. Same update rule either way, equal up to float rounding; a resumed optimiser keeps the
    implementation its checkpoint was written with (it is part of the saved param groups)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # torch < 2.4 on the CPU, or a dtype / device without it
        return torch.optim.AdamW(params, **kwargs)


def rank_share(n_local: torch.Tensor, n_global: torch.Tensor, world: int) -> torch.Tensor:
    """Weight for a rank's loss that is a mean over its own ``n_local`` valid elements: (local / global count)
    times ``world``, since DDP averages the gradients. The weighted losses then update like the mean over all
    ``n_global`` elements, however unevenly the valid elements fall across ranks."""
    return n_local * world / n_global.clamp_min(1.0)


def _step_of(line: str) -> float:
    """Step of a metrics line; a line cut short by a killed process (or blank) counts as past any checkpoint."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def log_backend(log_to: str):
    """The --log-to package, or one line saying which package and extra to install."""
    from ate._optional import require

    return require({"wandb": "wandb", "tensorboard": "tensorboard"}[log_to], "log", f"--log-to {log_to}")


class MetricsLog:
    """``<out_dir>/metrics.jsonl``, one JSON row per log step (+ wandb / tensorboard with ``log_to``).

    ``resume_step``: the step of the checkpoint the run starts from (0: a fresh start empties the file). Rows
    after it, written before the process was killed, are dropped: they are about to be written again.
    Disabled (``enabled=False``, e.g. on ranks other than 0) it does nothing.

    ``log_to`` other than ``"none"`` needs ``accelerator``, made by :func:`make_accelerator` with the same
    ``log_to``: wandb gets project ``project``, ``config`` and files under ``out_dir`` and every row, tensorboard
    writes ``out_dir/tb`` with one scalar per number but ``step`` (its x axis). :meth:`close` ends them."""

    def __init__(self, out_dir: Path, resume_step: int = 0, enabled: bool = True, log_to: str = "none",
                 project: str = "ate", config: dict | None = None, accelerator=None):
        self.path, self.enabled, self.log_to = Path(out_dir) / "metrics.jsonl", enabled, log_to
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            keep = [ln for ln in self.path.read_text().splitlines() if _step_of(ln) <= resume_step] \
                if resume_step and self.path.exists() else []
            self.path.write_text("".join(ln + "\n" for ln in keep))
        self.accelerator = None
        if enabled and log_to != "none":
            if accelerator is None or log_to not in {str(getattr(t, "value", t)) for t in accelerator.log_with}:
                raise ValueError(f"MetricsLog(log_to={log_to!r}) needs make_accelerator(..., log_to={log_to!r})")
            self.accelerator = accelerator
            if log_to == "wandb":
                accelerator.init_trackers(project, config=config or {}, init_kwargs={"wandb": {"dir": str(out_dir)}})
            else:  # tensorboard: out_dir/tb, no hparams (their event files and hparams.yml would add a folder per start)
                accelerator.init_trackers("tb")

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.accelerator is not None:
            values = row if self.log_to == "wandb" else {k: v for k, v in row.items() if k != "step"}
            self.accelerator.log(values, step=row["step"])

    def close(self) -> None:
        """End the trackers (wandb's run, tensorboard's writer); metrics.jsonl needs nothing. Not
        ``Accelerator.end_training()``: it also destroys the process group (accelerate 1.x), a caller's own
        too, before the trainer's last barrier (:func:`process_group_scope` ends the group)."""
        if self.accelerator is not None:
            for tracker in self.accelerator.trackers:
                tracker.finish()
            self.accelerator = None
