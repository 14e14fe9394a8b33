"""The fused backend's CPU buffer pool: reuse, limit, clear."""

from __future__ import annotations

import pytest
import torch

from hdetach.functional import lstm_layer
from hdetach.ops.fused import buffer_pool
from hdetach.ops.fused.buffer_pool import BufferPool


def test_take_reuses_what_was_given_back_and_counts_bytes():
    pool = BufferPool(max_bytes=1000)
    like = torch.zeros(1)
    first = pool.take((4, 5), like)
    assert first.shape == (4, 5) and first.dtype == like.dtype
    pool.give_back([first])
    assert pool.pooled_bytes == first.nbytes
    assert pool.take((4, 5), like) is first
    assert pool.pooled_bytes == 0
    assert pool.take((4, 5), like) is not first  # empty again: a fresh tensor


def test_a_buffer_given_back_twice_is_handed_out_once():
    pool = BufferPool()
    buffer = torch.empty(3)
    pool.give_back([buffer, buffer])
    assert pool.take((3,), buffer) is buffer
    assert pool.take((3,), buffer) is not buffer


def test_limit_and_clear():
    pool = BufferPool(max_bytes=100)
    small, large = torch.empty(10), torch.empty(30)  # 40 and 120 bytes
    pool.give_back([small, large])
    assert pool.pooled_bytes == small.nbytes  # the large one is over the limit
    pool.set_limit(0)
    assert pool.pooled_bytes == 0
    pool.set_limit(1000)
    pool.give_back([small, large])
    assert pool.pooled_bytes == small.nbytes + large.nbytes
    pool.clear()
    assert pool.pooled_bytes == 0
    with pytest.raises(ValueError, match="max_bytes must be an int >= 0"):
        pool.set_limit(-1)


def test_buffers_come_back_when_the_graph_is_freed():
    buffer_pool.clear()
    x = torch.randn(5, 2, 3)
    weights = [torch.randn(8, 3, requires_grad=True), torch.randn(8, 2, requires_grad=True)]
    zeros = torch.zeros(2, 2)
    out, _, _ = lstm_layer(x, zeros, zeros, *weights, backend="fused")
    assert buffer_pool.pooled_bytes() == 0  # the graph holds them
    out.sum().backward()
    del out
    assert buffer_pool.pooled_bytes() > 0


def test_module_level_settings_apply_to_the_shared_pool():
    previous = buffer_pool.limit()
    try:
        buffer_pool.set_limit(0)
        assert buffer_pool.limit() == 0
        x = torch.randn(5, 2, 3)
        zeros = torch.zeros(2, 2)
        weight = torch.randn(8, 2, requires_grad=True)
        lstm_layer(x, zeros, zeros, torch.randn(8, 3), weight, backend="fused")[0].sum().backward()
        assert buffer_pool.pooled_bytes() == 0  # nothing kept under a zero limit
    finally:
        buffer_pool.set_limit(previous)
    assert buffer_pool.limit() == previous
