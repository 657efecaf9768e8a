"""Fixtures shared by several test modules."""

from __future__ import annotations

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
