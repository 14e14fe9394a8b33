"""Reuse of the fused op's private CPU buffers from one minibatch to the next.

Why: PyTorch's CPU allocator hands large blocks straight back to the OS when they
are freed, so each minibatch would page-fault its activations back in, zero-filled,
one 4 KiB page at a time. For pixel-MNIST shapes that costs more than all of the
gate arithmetic. CUDA has its own caching allocator, so only CPU buffers are pooled.

A buffer goes back to the pool when the autograd node that owns it is freed (after
its backward, or when the graph is dropped), never earlier: nothing else holds it.

The pool keeps at most ``limit()`` bytes (1 GiB unless ``set_limit`` says otherwise);
``clear()`` frees everything it holds.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor

DEFAULT_LIMIT_BYTES = 2**30


def _poolable(tensor: Tensor) -> bool:
    """Plain CPU tensors only: one made under a torch.func transform belongs to it, and
    none while torch.compile traces (its graph owns its memory)."""
    if torch.compiler.is_compiling():
        return False
    return tensor.device.type == "cpu" and not is_functorch_wrapped_tensor(tensor)


class BufferPool:
    def __init__(self, max_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._free: dict[tuple, list[Tensor]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def pooled_bytes(self) -> int:
        return self._bytes

    def take(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device."""
        if _poolable(like):
            with self._lock:
                free = self._free.get((tuple(shape), like.dtype))
                if free:
                    buffer = free.pop()
                    self._bytes -= buffer.nbytes
                    return buffer
        return like.new_empty(shape)

    def give_back(self, buffers: Iterable[Tensor]) -> None:
        """Keep CPU ``buffers`` for reuse, up to the limit; a buffer already kept is ignored."""
        with self._lock:
            for buffer in buffers:
                if not _poolable(buffer) or self._bytes + buffer.nbytes > self.max_bytes:
                    continue
                free = self._free.setdefault((tuple(buffer.shape), buffer.dtype), [])
                if any(kept is buffer for kept in free):
                    continue  # returned twice (e.g. by two owners): must not be handed out twice
                free.append(buffer)
                self._bytes += buffer.nbytes

    def give_back_when_freed(self, owner: object, buffers: list[Tensor]) -> None:
        """Return ``buffers`` to the pool once ``owner`` is garbage.

        Not while torch.compile traces: nothing is pooled then (``_poolable``), and tracing
        ``weakref.finalize`` iterates its registry, which a garbage collection during the
        trace can change under it ("dictionary changed size during iteration").
        """
        if torch.compiler.is_compiling():
            return
        weakref.finalize(owner, self.give_back, buffers)

    def set_limit(self, max_bytes: int) -> None:
        """Keep at most ``max_bytes``; buffers beyond the new limit are freed now."""
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        with self._lock:
            self.max_bytes = max_bytes
            for free in self._free.values():
                while free and self._bytes > max_bytes:
                    self._bytes -= free.pop().nbytes

    def clear(self) -> None:
        """Drop every pooled buffer (frees the memory)."""
        with self._lock:
            self._free.clear()
            self._bytes = 0


POOL = BufferPool()


def set_limit(max_bytes: int) -> None:
    """Keep at most ``max_bytes`` of the fused backend's CPU buffers for reuse (0: none)."""
    POOL.set_limit(max_bytes)


def limit() -> int:
    """The most bytes the fused backend keeps for reuse on the CPU."""
    return POOL.max_bytes


def pooled_bytes() -> int:
    """Bytes the fused backend holds for reuse on the CPU right now."""
    return POOL.pooled_bytes


def clear() -> None:
    """Free the memory that the fused backend keeps for reuse on the CPU."""
    POOL.clear()


__all__ = ["POOL", "BufferPool", "clear", "limit", "pooled_bytes", "set_limit"]
