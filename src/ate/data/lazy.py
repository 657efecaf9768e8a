"""`LazyArray`: a read-only (N, D) float32 view of an on-disk array (npy memmap, uncompressed npz member,
zarr array) that is read only where it is sliced.

Why a wrapper and not the raw np.memmap / zarr array:
- every read comes back as float32 (zarr buffers are often float64), so callers see one dtype;
- it pickles as "how to reopen" instead of its data (np.memmap pickles its whole content, and a zip
  file handle shared by forked DataLoader workers gives corrupt reads), and it reopens itself in a
  new process;
- a failed read (corrupt zarr chunk, file cut short) raises DataError naming the file and field.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from ate.errors import DataError


class LazyArray:
    """Read-only lazy (N, D) array. `arr[a:b]`, `arr[i]`, `arr.take_rows(rows)` return float32 ndarrays.

    Args:
        opener: picklable zero-argument callable returning the underlying array-like (np.memmap,
            zarr array); called once per process.
        shape: (N, D) of the underlying array.
        source: file / folder shown in error messages.
        field: array name shown in error messages ("action", "data/action").
    """

    dtype = np.dtype(np.float32)

    def __init__(self, opener: Callable[[], Any], shape: tuple[int, ...], source: str, field: str):
        self._opener = opener
        self.shape = tuple(int(s) for s in shape)
        self.source = source
        self.field = field
        self._array = None
        self._pid = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, source={self.source!r}, field={self.field!r})"

    @property
    def array(self):
        """The underlying array, (re)opened in the current process."""
        if self._array is None or self._pid != os.getpid():
            self._array = self._opener()
            self._pid = os.getpid()
        return self._array

    def _read(self, fn: Callable[[Any], Any], what: str) -> np.ndarray:
        try:
            out = fn(self.array)
        except (IndexError, TypeError):
            raise
        except Exception as exc:  # codec errors, short reads, missing chunk files ...
            raise DataError(f"{self.source}: cannot read field '{self.field}' {what}: {exc}") from exc
        return np.asarray(out, dtype=np.float32)

    def __getitem__(self, index) -> np.ndarray:
        return self._read(lambda a: a[index], f"at {index!r}")

    def take_rows(self, rows: np.ndarray) -> np.ndarray:
        """Gather rows by integer index (any order, repeats allowed): (K,) -> (K, D) float32."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.empty((0,) + self.shape[1:], dtype=np.float32)

        def gather(a):
            if isinstance(a, np.ndarray):  # np.memmap: fancy indexing reads only the touched pages
                return a[rows]
            # zarr: orthogonal selection on sorted unique rows decodes each touched chunk once
            uniq, inverse = np.unique(rows, return_inverse=True)
            return np.asarray(a.oindex[uniq])[inverse]

        return self._read(gather, f"rows {int(rows.min())}..{int(rows.max())}")

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_array"] = None
        state["_pid"] = None
        return state


def take_rows(array, rows: np.ndarray) -> np.ndarray:
    """Gather rows (K,) -> (K, D) float32 from an ndarray, a LazyArray or any sliceable array."""
    if isinstance(array, np.ndarray):
        return np.asarray(array[rows], dtype=np.float32)
    if hasattr(array, "take_rows"):
        return array.take_rows(rows)
    if hasattr(array, "oindex"):  # a raw zarr array
        uniq, inverse = np.unique(rows, return_inverse=True)
        return np.asarray(array.oindex[uniq], dtype=np.float32)[inverse]
    return np.stack([np.asarray(array[int(r)], dtype=np.float32) for r in rows])
