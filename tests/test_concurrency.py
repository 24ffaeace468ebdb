"""The kernels release the GIL: threads running at once must give what they
give one by one. A layer shared between threads is safe: each thread's
backward differentiates its own most recent forward, and gradients
accumulate under a lock."""

from __future__ import annotations

import copy
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastrnn

N_TASKS = 12


def _task(backend, i, layer=None):
    rng = np.random.default_rng(i)
    lstm = layer or fastrnn.LSTM(6, 16, num_layers=2, bidirectional=True, backend=backend, seed=i)
    x = rng.standard_normal((30, 3, 6)).astype(np.float32)
    out, (h, c) = lstm(x, lengths=[30, 11, 25])
    g = rng.standard_normal(out.shape).astype(np.float32)
    dx, (dh0, dc0) = lstm.backward(g, (h, None))
    return out, h, dx, dh0


@pytest.mark.parametrize("threads", [1, 2])
def test_separate_layers_in_threads_equal_sequential(backend, threads):
    fastrnn.set_num_threads(threads)
    try:
        seq = [_task(backend, i) for i in range(N_TASKS)]
        with ThreadPoolExecutor(max_workers=6) as pool:
            par = list(pool.map(lambda i: _task(backend, i), range(N_TASKS)))
    finally:
        fastrnn.set_num_threads(fastrnn.backends.default_num_threads())
    for a, b in zip(seq, par):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)  # bitwise: same inputs, same kernels


def test_shared_layer_between_threads_is_safe(backend):
    shared = fastrnn.LSTM(6, 16, num_layers=2, bidirectional=True, backend=backend, seed=0)
    solo = copy.deepcopy(shared)
    with ThreadPoolExecutor(max_workers=6) as pool:
        par = list(pool.map(lambda i: _task(backend, i, shared), range(N_TASKS)))
    seq = [_task(backend, i, solo) for i in range(N_TASKS)]
    for a, b in zip(seq, par):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)  # each thread got its own forward's gradients
    for name in solo.grads:  # all N_TASKS contributions accumulated (order may differ: float rounding only)
        np.testing.assert_allclose(shared.grads[name], solo.grads[name], rtol=1e-5, atol=1e-5)


def test_shared_cell_tapes_are_per_thread(backend):
    cell = fastrnn.GRUCell(4, 8, backend=backend, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 4))

    def work(i):
        h = np.zeros((2, 8))
        for t in range(5):
            h = cell(x[t] * (i + 1), h)
        dh = np.ones((2, 8))
        for _ in range(5):
            _, dh = cell.backward(dh)
        return dh

    with ThreadPoolExecutor(max_workers=4) as pool:
        par = list(pool.map(work, range(8)))
    ref = fastrnn.GRUCell(4, 8, backend=backend, dtype=np.float64, seed=0)
    cell, saved = ref, cell
    seq = [work(i) for i in range(8)]
    for a, b in zip(seq, par):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(fastrnn.GradientError):  # the main thread recorded nothing on the shared cell
        saved.backward(np.ones((2, 8)))


def test_layers_copy_and_pickle():
    gru = fastrnn.GRU(3, 4, seed=0, dtype=np.float64)
    x = np.ones((2, 1, 3))
    for clone in (copy.deepcopy(gru), pickle.loads(pickle.dumps(gru))):
        np.testing.assert_array_equal(clone(x)[0], gru(x)[0])
        clone.backward(np.ones((2, 1, 4)))


def _barrier_task(module, x, barrier):
    """Forward, wait until every thread has run its forward, then backward: each thread's
    backward must differentiate its own forward, not the last one any thread ran."""
    y = module(x)
    barrier.wait()
    dx = module.backward(np.ones_like(y))
    return y, dx


@pytest.mark.parametrize("which", ["Linear", "SequenceModel", "LSTM", "GRUCell"])
def test_every_module_with_a_forward_record_is_per_thread(which, backend):
    import threading

    n = 4
    rng = np.random.default_rng(0)
    if which == "Linear":
        make = lambda: fastrnn.nn.Linear(3, 2, dtype=np.float64, seed=0)  # noqa: E731
        xs = [rng.standard_normal((5, 3)) * (i + 1) for i in range(n)]
    elif which == "SequenceModel":
        make = lambda: fastrnn.nn.SequenceModel(2, 4, num_layers=1, dtype=np.float64, backend=backend, seed=0)  # noqa: E731
        xs = [rng.standard_normal((6, 2, 2)) * (i + 1) for i in range(n)]
    elif which == "LSTM":
        make = lambda: fastrnn.LSTM(3, 4, dtype=np.float64, backend=backend, seed=0)  # noqa: E731
        xs = [rng.standard_normal((6, 2, 3)) * (i + 1) for i in range(n)]
    else:
        make = lambda: fastrnn.GRUCell(3, 4, dtype=np.float64, backend=backend, seed=0)  # noqa: E731
        xs = [rng.standard_normal((2, 3)) * (i + 1) for i in range(n)]

    def unpack(m, x):
        y = m(x)
        return y[0] if isinstance(y, tuple) else y

    class Wrap:  # forward returns one array; backward takes its gradient
        def __init__(self, m):
            self.m = m

        def __call__(self, x):
            return unpack(self.m, x)

        def backward(self, g):
            r = self.m.backward(g)
            return r[0] if isinstance(r, tuple) else r

    shared = make()
    barrier = threading.Barrier(n)
    with ThreadPoolExecutor(max_workers=n) as pool:
        par = list(pool.map(lambda x: _barrier_task(Wrap(shared), x, barrier), xs))
    solo = make()
    for x, (y, dx) in zip(xs, par):
        y_ref = unpack(solo, x)
        r = Wrap(solo).backward(np.ones_like(y_ref))
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, r, rtol=1e-12, atol=1e-12)
    for name in solo.grads:
        np.testing.assert_allclose(shared.grads[name], solo.grads[name], rtol=1e-10, atol=1e-10, err_msg=name)
