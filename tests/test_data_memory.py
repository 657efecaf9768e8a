"""Iterating windows of a large lazy dataset must not materialise it.

Memory-mapped pages that are read show up in RSS as *file-backed* pages (shared, dropped by the kernel
under pressure), so the check uses the process's anonymous memory (RssAnon: heap, numpy buffers, Python
objects), which is what reading the dataset into RAM would grow.
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from ate.data import ChunkDataset, LazyArray, Normalizer, load_episodes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")

FRAMES, DIM = 2_000_000, 8  # 64 MB of float32


def rss_anon() -> int:
    """Live anonymous memory; malloc_trim first so freed-but-cached heap blocks (glibc raises its mmap
    threshold after big frees) do not count as growth."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon")


def write_big_memmap(folder):
    folder.mkdir()
    out = np.lib.format.open_memmap(folder / "actions.npy", mode="w+", dtype=np.float32, shape=(FRAMES, DIM))
    step = 250_000
    for a in range(0, FRAMES, step):
        out[a : a + step] = np.sin(np.arange(a, a + step, dtype=np.float32))[:, None] * np.arange(1, DIM + 1)
    out.flush()
    del out
    lengths = np.random.default_rng(0).integers(50, 400, size=FRAMES // 100)
    ends = np.cumsum(lengths)
    ends = ends[ends < FRAMES]
    np.save(folder / "episode_ends.npy", np.append(ends, FRAMES).astype(np.int64))


def test_iterating_windows_of_2m_frame_memmap_stays_small(tmp_path):
    write_big_memmap(tmp_path / "big")
    size = FRAMES * DIM * 4
    base = rss_anon()
    peak = base

    eps = load_episodes(tmp_path / "big")  # includes the block-wise NaN/Inf validation
    assert isinstance(eps.actions, LazyArray) and len(eps) == FRAMES
    peak = max(peak, rss_anon())
    norm = Normalizer.fit(eps, mode="minmax")  # streaming
    peak = max(peak, rss_anon())
    ds = ChunkDataset(eps, horizon=16, normalizer=norm, pad="repeat")
    assert len(ds) == FRAMES

    for i in range(0, len(ds), len(ds) // 3000):  # single items spread over the whole file
        item = ds[i]
    assert item["action"].shape == (16, DIM)
    peak = max(peak, rss_anon())
    sampler = BatchSampler(RandomSampler(ds, num_samples=256 * 40), 256, drop_last=True)
    n = 0
    for batch in DataLoader(ds, sampler=sampler, batch_size=None):
        n += len(batch["action"])
        assert batch["action"].abs().max() <= 1.0 + 1e-5
        peak = max(peak, rss_anon())
    assert n == 256 * 40

    growth, peak_growth = rss_anon() - base, peak - base
    assert growth < size / 8, f"anonymous memory grew {growth / 1e6:.1f} MB for a {size / 1e6:.0f} MB dataset"
    assert peak_growth < size / 2, f"peak anonymous growth {peak_growth / 1e6:.1f} MB for {size / 1e6:.0f} MB"
