"""LoRA fine-tuning of the reference policies through `peft` (the peer baseline to full fine-tuning and ATE).

`add_lora` injects peft's LoRA layers into every Linear / Conv1d of a policy in place and freezes the rest,
except embedding tables: a new target task adds a row to the task table, and a frozen random row would
handicap the baseline for a reason unrelated to LoRA. `merge_lora` folds the adapters into the base weights
(peft's own merge) and puts the plain layers back, so a LoRA-fine-tuned policy is saved, loaded and sampled
exactly like any other: nothing of peft is needed at inference.
"""

from __future__ import annotations

import copy

from torch import nn


def lora_targets(policy: nn.Module) -> list[str]:
    """Names of the Linear / Conv1d layers LoRA adapts. nn.MultiheadAttention's out_proj is left out: its
    fused fast path reads the weight directly and would bypass an adapter."""
    inside_mha = {f"{n}.out_proj" for n, m in policy.named_modules() if isinstance(m, nn.MultiheadAttention)}
    return [n for n, m in policy.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv1d)) and n and n not in inside_mha]


def add_lora(policy: nn.Module, rank: int = 8, alpha: float | None = None) -> dict:
    """Inject LoRA (rank r, scale alpha / r; alpha defaults to 2r) in place. Returns a summary dict."""
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    alpha = float(2 * rank if alpha is None else alpha)
    targets = lora_targets(policy)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                                       bias="none"), policy)
    for m in policy.modules():
        if isinstance(m, nn.Embedding):
            m.weight.requires_grad_(True)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    return {"rank": rank, "alpha": alpha, "layers": len(targets), "trainable_params": trainable,
            "total_params": sum(p.numel() for p in policy.parameters())}


def merge_lora(policy: nn.Module, copy_first: bool = True) -> nn.Module:
    """The policy with every LoRA adapter merged into its base layer and the base layer put back in its place
    (a copy unless copy_first=False); a policy without adapters is returned as it is."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(n, m) for n, m in policy.named_modules() if isinstance(m, BaseTunerLayer)]
    if not layers:
        return policy
    out = copy.deepcopy(policy) if copy_first else policy
    for name, _ in layers:
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        layer = getattr(parent, child)
        layer.merge()
        base = layer.get_base_layer()
        base.requires_grad_(True)
        setattr(parent, child, base)
    return out
