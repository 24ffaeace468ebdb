"""What a forward without ``no_grad`` keeps, and for how long.

A cell call keeps what its backward needs while an array it returned (or a
later call that took one as input) is alive; a layer keeps its most recent
forward per thread until the next forward or backward. So an inference loop
that forgets ``no_grad`` and drops its outputs does not grow the process.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import fastrnn

N_CALLS = 5000


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


rss_measurable = pytest.mark.skipif(bool(os.environ.get("FASTRNN_SANITIZED")),
                                    reason="AddressSanitizer's quarantine holds freed memory: RSS is no measure under it")


def _rss_growth(call):
    """RSS growth over N_CALLS calls of ``call`` (after 50 warm-up calls), in bytes."""
    for _ in range(50):
        call()
    gc.collect()
    before = _rss_bytes()
    for _ in range(N_CALLS):
        call()
    gc.collect()
    return _rss_bytes() - before


@rss_measurable
@pytest.mark.parametrize("cls", [fastrnn.LSTMCell, fastrnn.GRUCell, fastrnn.RNNCell])
def test_cell_calls_without_no_grad_stay_flat(backend, cls):
    """The issue's loop (LSTMCell(64, 256) on [32, 64], outputs dropped, no backward: 1.3 GB),
    smaller: one kept step is still >= 8*64*4 bytes, 5000 of them >= 10 MB."""
    cell = cls(16, 64, backend=backend, seed=0)
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    grown = _rss_growth(lambda: cell(x))
    assert grown < 4 << 20, f"RSS grew by {grown / 1e6:.1f} MB over {N_CALLS} calls"
    assert len(cell._tape) <= 1


@rss_measurable
def test_layer_calls_without_no_grad_stay_flat(backend):
    layer = fastrnn.LSTM(4, 16, num_layers=2, backend=backend, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 4, 4)).astype(np.float32)
    grown = _rss_growth(lambda: layer(x))
    assert grown < 4 << 20, f"RSS grew by {grown / 1e6:.1f} MB over {N_CALLS} calls"


def test_cell_step_lives_while_its_output_does(backend):
    cell = fastrnn.LSTMCell(3, 4, backend=backend, dtype=np.float64, seed=0)
    x = np.ones((2, 3))
    h, c = cell(x)
    del h  # c still holds the step
    gc.collect()
    _, (dh, dc) = cell.backward((None, np.ones((2, 4))))
    assert dh.shape == (2, 4)
    h, c = cell(x)
    del h, c
    gc.collect()
    assert len(cell._tape) == 0  # the only step, released: nothing below it to guard
    with pytest.raises(fastrnn.GradientError, match="no recorded"):
        cell.backward((np.ones((2, 4)), None))


def test_released_step_above_a_live_one_blocks_backward(backend):
    """Dropping the newest call's outputs must not let backward silently differentiate an older call."""
    cell = fastrnn.GRUCell(3, 4, backend=backend, dtype=np.float64, seed=0)
    x = np.ones((2, 3))
    kept = cell(x)
    for _ in range(100):
        cell(x)  # outputs dropped
    gc.collect()
    assert len(cell._tape) == 2  # the live call and one marker
    with pytest.raises(fastrnn.GradientError, match="dropped"):
        cell.backward(np.ones((2, 4)))
    cell.clear_tape()
    assert len(cell._tape) == 0 and kept.shape == (2, 4)


def test_long_chain_is_freed_without_deep_recursion(backend):
    """h = cell(x, h) over many steps keeps the chain; dropping its last output frees all of it."""
    cell = fastrnn.RNNCell(2, 3, backend=backend, dtype=np.float64, seed=0)
    x = np.ones((1, 2))
    h = cell(x)
    for _ in range(20000):
        h = cell(x, h)
    assert len(cell._tape) == 20001
    del h
    gc.collect()
    cell(x)  # the next call lets the released steps drop what they held
    gc.collect()
    assert len(cell._tape) <= 2


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_bidirectional_output_is_written_in_place(batch_first):
    """Each direction writes its half of the result, batch-major with batch_first: the forward's peak
    is the result plus the kernels' scratch (a 512 KB projection chunk, x's copy), not the result
    again for a concatenation (and again for a transposition)."""
    if "cpp" not in fastrnn.available_backends():
        pytest.skip("the compiled backend is not installed")
    import tracemalloc

    T, B, I, H = 1000, 16, 2, 64
    layer = fastrnn.LSTM(I, H, bidirectional=True, batch_first=batch_first, dtype=np.float64, backend="cpp", seed=0)
    x = np.random.default_rng(0).standard_normal((B, T, I) if batch_first else (T, B, I))
    with fastrnn.no_grad():
        layer(x)  # warm
        tracemalloc.start()
        try:
            out, _ = layer(x)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert out.flags.c_contiguous and out.shape == ((B, T, 2 * H) if batch_first else (T, B, 2 * H))
    assert peak - out.nbytes < out.nbytes // 4, (peak, out.nbytes)
