"""Per-step overhead of the C ABI called from a user's @njit loop through cffi,
beside the Python-level cell step and PyTorch's cell, on the same weights.

Case: LSTM cell, B=1, I=64, H=128, float32, a loop of STEPS steps carrying the
state (inference). The median of one loop / STEPS is the cost of one step.
Group ``cell-loop/...``; ``extra_info['steps']`` holds STEPS.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn

STEPS = 200
B, I, H = 1, 64, 128
GROUP = f"cell-loop/lstm/B{B}-I{I}-H{H}/steps{STEPS}/float32/1t"

capi = pytest.importorskip("fastrnn.capi", reason="the compiled extension (C ABI) is not installed",
                           exc_type=ImportError)
numba = pytest.importorskip("numba")

@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    cell = fastrnn.LSTMCell(I, H, seed=1)
    xs = rng.standard_normal((STEPS, B, I)).astype(np.float32)
    return cell, xs


def _expected(cell, xs):
    ref = fastrnn.LSTMCell(I, H, dtype=np.float64, backend="numpy")
    ref.load_state_dict(cell.state_dict())
    h = c = np.zeros((B, H))
    with fastrnn.no_grad():
        for t in range(STEPS):
            h, c = ref(xs[t].astype(np.float64), (h, c))
    return h


def _record(benchmark, impl):
    benchmark.group = GROUP
    benchmark.extra_info.update(cell="lstm", mode="cell-loop", B=B, I=I, H=H, T=STEPS, layers=1, dtype="float32",
                                threads=1, impl=impl, steps=STEPS, flops=2 * STEPS * B * 4 * H * (I + H))


def _timed_one_thread(benchmark, run):
    """Time ``run`` with fastrnn's kernels on one thread (the per-step latency case)."""
    run()  # warm-up: JIT compile, caches
    fastrnn.set_num_threads(1)
    try:
        return benchmark(run)
    finally:
        fastrnn.set_num_threads(fastrnn.backends.default_num_threads())


@pytest.mark.bench_quick
def test_cell_loop_njit_cffi(benchmark, data):
    from fastrnn.capi_njit import lstm_loop

    cell, xs = data
    p = cell.state_dict()
    args = [p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]]
    loop = lstm_loop(np.float32)

    def run():
        h = np.zeros((B, H), np.float32)
        c = np.zeros((B, H), np.float32)
        loop(xs, h, c, *args)
        return h

    _record(benchmark, "njit+cffi")
    h = _timed_one_thread(benchmark, run)
    np.testing.assert_allclose(h, _expected(cell, xs), rtol=1e-4, atol=1e-5)
    benchmark.extra_info["verified"] = True


@pytest.mark.bench_quick
@pytest.mark.parametrize("backend", fastrnn.available_backends())
def test_cell_loop_python(benchmark, data, backend):
    cell, xs = data
    c2 = fastrnn.LSTMCell(I, H, backend=backend)
    c2.load_state_dict(cell.state_dict())

    def run():
        h = c = np.zeros((B, H), np.float32)
        with fastrnn.no_grad():
            for t in range(STEPS):
                h, c = c2(xs[t], (h, c))
        return h

    _record(benchmark, f"fastrnn-{backend}")
    h = _timed_one_thread(benchmark, run)
    np.testing.assert_allclose(h, _expected(cell, xs), rtol=1e-4, atol=1e-5)
    benchmark.extra_info["verified"] = True


@pytest.mark.bench_quick
def test_cell_loop_torch(benchmark, data):
    torch = pytest.importorskip("torch")
    cell, xs = data
    tc = torch.nn.LSTMCell(I, H)
    tc.load_state_dict({k: torch.tensor(v) for k, v in cell.state_dict().items()})
    xt = torch.tensor(xs)
    old = torch.get_num_threads()
    torch.set_num_threads(1)

    def run():
        h = c = torch.zeros(B, H)
        with torch.no_grad():
            for t in range(STEPS):
                h, c = tc(xt[t], (h, c))
        return h

    _record(benchmark, "torch")
    try:
        h = benchmark(run)
    finally:
        torch.set_num_threads(old)
    np.testing.assert_allclose(h.numpy(), _expected(cell, xs), rtol=1e-4, atol=1e-5)
    benchmark.extra_info["verified"] = True
