"""Reuse of the fused op's private CPU buffers from one minibatch to the next.

Why: PyTorch's CPU allocator hands large blocks straight back to the OS when they
are freed, so each minibatch would page-fault its activations back in, zero-filled,
one 4 KiB page at a time. For pixel-MNIST shapes that costs more than all of the
gate arithmetic. CUDA has its own caching allocator, so only CPU buffers are pooled.

A buffer goes back to the pool when the autograd node that owns it is freed (after
its backward, or when the graph is dropped), never earlier: nothing else holds it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable

from torch import Tensor

MAX_POOLED_BYTES = 2**30


class BufferPool:
    def __init__(self, max_bytes: int = MAX_POOLED_BYTES) -> None:
        self.max_bytes = max_bytes
        self._free: dict[tuple, list[Tensor]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device."""
        if like.device.type == "cpu":
            with self._lock:
                free = self._free.get((tuple(shape), like.dtype))
                if free:
                    buffer = free.pop()
                    self._bytes -= buffer.nbytes
                    return buffer
        return like.new_empty(shape)

    def give_back(self, buffers: Iterable[Tensor]) -> None:
        with self._lock:
            for buffer in buffers:
                if buffer.device.type != "cpu" or self._bytes + buffer.nbytes > self.max_bytes:
                    continue
                self._free.setdefault((tuple(buffer.shape), buffer.dtype), []).append(buffer)
                self._bytes += buffer.nbytes

    def give_back_when_freed(self, owner: object, buffers: list[Tensor]) -> None:
        """Return ``buffers`` to the pool once ``owner`` is garbage."""
        weakref.finalize(owner, self.give_back, buffers)

    def clear(self) -> None:
        """Drop every pooled buffer (frees the memory)."""
        with self._lock:
            self._free.clear()
            self._bytes = 0


POOL = BufferPool()


def release_cached_buffers() -> None:
    """Free the memory that the fused backend keeps for reuse on the CPU."""
    POOL.clear()


__all__ = ["POOL", "BufferPool", "release_cached_buffers"]
