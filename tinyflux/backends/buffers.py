"""The big NumPy buffers of a training step: page-aligned, and recycled from one step to the next.

Two things make a big copy slow that have nothing to do with the copy:

- **4K aliasing.** A copy between two buffers runs several times slower when
  the destination starts just past the source modulo 4096 bytes (0 to 64
  bytes): the CPU compares only the low 12 address bits to decide whether a
  load must wait for an earlier store, so every load waits. The allocator
  often places big buffers exactly so (both at the same page offset plus a
  header), which hits the long contiguous copies of ``im2col_pooled``
  hardest. So every big buffer starts on a page boundary, and the offsets
  between source and destination depend only on the geometry.
- **Fresh pages.** glibc gives every block above 32 MiB back to the kernel
  when it is freed (``keep_freed_memory`` in arrays.py cannot raise that
  limit), so the next step's columns arrive as new pages, which the kernel
  zeroes on first touch: every step writes such a buffer twice, once with
  zeros and once with the columns. So buffers from ``RECYCLE_BYTES`` up are
  kept in a pool and handed out again when a later request has the same size
  and nothing uses them any more.

The pool never grows past what one step holds at once: a request that no
free buffer fits first releases every free buffer (the shapes have changed,
as between training and evaluation), then allocates.
"""
from __future__ import annotations

import math
import sys

import numpy as np

PAGE = 4096  # bytes
RECYCLE_BYTES = 32 * 2**20  # buffers from this size up go back to the pool instead of the kernel


def _unused(raw) -> bool:
    """Whether no array uses this pooled buffer. Every view of it (the
    page-aligned array handed out, and any slice or reshape of that) keeps ``raw``
    as its NumPy ``base``, so holds a reference to it; with none, the only
    references are the pool's list, this argument and getrefcount's own argument."""
    return sys.getrefcount(raw) <= 3


class BufferPool:
    """Raw byte buffers (uint8 arrays, a page longer than
    asked) kept for reuse; see the module docstring."""

    def __init__(self):
        self.buffers: list = []

    def take(self, nbytes: int):
        """A raw buffer of at least ``nbytes`` + PAGE bytes that nothing uses."""
        for i in range(len(self.buffers)):
            if self.buffers[i].nbytes == nbytes + PAGE and _unused(self.buffers[i]):
                return self.buffers[i]
        # by index: a loop variable would hold one more reference while _unused counts them
        self.buffers = [self.buffers[i] for i in range(len(self.buffers))
                        if not _unused(self.buffers[i])]
        raw = np.empty(nbytes + PAGE, dtype=np.uint8)
        self.buffers.append(raw)
        return raw


POOL = BufferPool()


def page_aligned(xp, shape: tuple, dtype, zeros: bool = False):
    """A new array (empty, or zero-filled) whose data starts on a 4096-byte page boundary, from the
    pool when it is big. Other array libraries than NumPy (CuPy) get a plain allocation."""
    if xp is not np:
        return xp.zeros(shape, dtype=dtype) if zeros else xp.empty(shape, dtype=dtype)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    raw = POOL.take(nbytes) if nbytes >= RECYCLE_BYTES else np.empty(nbytes + PAGE, dtype=np.uint8)
    start = -raw.ctypes.data % PAGE
    array = raw[start:start + nbytes].view(dtype).reshape(shape)
    if zeros:
        array.fill(0)
    return array
