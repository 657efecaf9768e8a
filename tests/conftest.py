"""Fixtures shared by several test modules."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def single_torch_thread():
    """One intra-op thread for a whole module: the CI box is shared (no oversubscription stalls), and CLI
    subprocesses run with OMP_NUM_THREADS=1, so in-process results use the same kernels and sums."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pretrained(demos, tmp_path_factory):
    """A tiny diffusion policy pretrained by `ate policy pretrain` on `demos["src"]`, from the requesting
    module's own `demos` fixture (each CLI module writes its demos); one per module."""
    from cli_helpers import ate, ok

    out = tmp_path_factory.mktemp("pre") / "run"
    cfg = json.dumps({"horizon": 8, "state_dim": 8, "down_dims": [16, 32], "cond_dim": 16})
    ok(ate("policy", "pretrain", "--data", demos["src"], "--out", out, "--policy-config", cfg, "--steps", 2,
           "--batch-size", 8, "--no-progress"))
    return out
