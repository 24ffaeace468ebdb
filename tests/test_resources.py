"""Resources: long sequences, bounded training memory, no leaks, MemoryError
instead of a crash when an allocation cannot be satisfied."""

from __future__ import annotations

import gc
import os
import tracemalloc

import numpy as np
import pytest

import fastrnn


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.parametrize("cls", [fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN])
def test_very_long_sequence(backend, cls):
    """T = 100 000 steps (small H): no stack overflow, no quadratic cost, finite results."""
    T = 100_000
    layer = cls(2, 4, backend=backend, seed=0)
    x = np.random.default_rng(0).standard_normal((T, 1, 2)).astype(np.float32)
    out, _ = layer(x)
    assert out.shape == (T, 1, 4) and np.isfinite(out).all()
    dx, _ = layer.backward(np.ones_like(out))
    assert np.isfinite(dx).all()


def test_large_batch(backend):
    layer = fastrnn.GRU(3, 8, backend=backend, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 20_000, 3)).astype(np.float32)
    with fastrnn.no_grad():
        out, h = layer(x)
    assert np.isfinite(out).all() and h.shape == (1, 20_000, 8)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_training_memory_is_the_workspace(backend, kind):
    """Peak NumPy memory of a training forward + backward is a small multiple of
    what the layer must keep (outputs, gates, states), not more."""
    T, B, I, H = 400, 8, 16, 64
    cls = fastrnn.LSTM if kind == "lstm" else fastrnn.GRU
    layer = cls(I, H, backend=backend, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    layer(x)
    layer.backward(np.ones((T, B, H), np.float32))  # warm-up (JIT, caches)
    gc.collect()
    G = 4 if kind == "lstm" else 3
    itemsize = 4
    # kept for backward: gates (G or 4 blocks of H) + state entering each step + cell (lstm), plus out
    # and the input projection [T, B, G*H]
    needed = T * B * H * itemsize * (4 + 1 + (1 if kind == "lstm" else 0) + 1 + G)
    tracemalloc.start()
    try:
        out, _ = layer(x)
        layer.backward(np.ones_like(out))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 2.5 * needed + (1 << 20), f"peak {peak / 1e6:.1f} MB vs workspace {needed / 1e6:.1f} MB"
    # and the measure sees the arrays at all (the output and the kept states)
    assert peak >= T * B * H * itemsize * 2, f"peak {peak / 1e6:.1f} MB: the arrays were not traced"


def test_repeated_calls_do_not_grow_memory(backend):
    """Thousands of forward/backward calls: the process does not grow (native workspaces are freed)."""
    if backend == "numpy":
        pytest.skip("the reference holds no native memory of its own; the compiled backends are the ones at risk")
    if os.environ.get("FASTRNN_SANITIZED"):
        pytest.skip("AddressSanitizer's quarantine holds freed memory: RSS is no measure under it")
    rounds = 1500 if backend == "cpp" else 500
    layer = fastrnn.LSTM(8, 16, num_layers=2, bidirectional=True, backend=backend, seed=0)
    cell = fastrnn.GRUCell(8, 16, backend=backend, seed=0)
    x = np.random.default_rng(0).standard_normal((10, 4, 8)).astype(np.float32)

    def round_():
        out, _ = layer(x, lengths=[10, 5, 3, 10])
        layer.backward(np.ones_like(out))
        h = cell(x[0])
        cell.backward(np.ones_like(h))
        with fastrnn.no_grad():
            layer(x)

    for _ in range(100):
        round_()
    gc.collect()
    before = _rss_bytes()
    for _ in range(rounds):
        round_()
    gc.collect()
    grown = _rss_bytes() - before
    # a leak of even one small workspace per round (>= 5 KB) would exceed this
    assert grown < 4 << 20, f"RSS grew by {grown / 1e6:.1f} MB over {rounds} rounds"


def test_impossible_allocation_raises_memory_error(backend):
    """Outputs of ~256 GB: MemoryError (or a clear ValueError on sizes), never a crash."""
    layer = fastrnn.RNN(1, 4096, backend=backend, seed=0)
    x = np.zeros((1 << 24, 1, 1), np.float32)
    with pytest.raises((MemoryError, ValueError)):
        with fastrnn.no_grad():
            layer(x)
    out, _ = layer(x[:3])  # and the layer still works afterwards
    assert out.shape == (3, 1, 4096)


def test_huge_constructor_raises_memory_error():
    with pytest.raises(MemoryError):
        fastrnn.LSTM(1 << 20, 1 << 20)
