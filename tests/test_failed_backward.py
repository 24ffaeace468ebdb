"""A backward that fails leaves its forward usable, or says why it cannot be retried.

A backward can fail for want of resources (no memory for a scratch buffer or an
output, a worker thread that cannot start) after every argument check passed.
Then either nothing of its gradients reached the caller and the forward record
is intact (a retry gives exactly the gradients a clean backward gives), or
part of them did (the cpp binding's ``acc``: the weight gradients are added in
place) and the error says so (``contract.PartialBackwardError``; the layers
then refuse a retry with a GradientError) -- never a silently wrong retry.

Failures are injected at every resource event of a backward in turn: the
compiled kernels' allocation and thread-pool hooks (``_core._inject_failure``),
and for the Python backends a MemoryError from one of their products.
"""

from __future__ import annotations

import contextlib
import copy
import threading

import numpy as np
import pytest

import fastrnn
from conftest import BACKENDS
from fastrnn.backends.contract import PartialBackwardError

needs_cpp = pytest.mark.skipif("cpp" not in BACKENDS, reason="the compiled backend is not available")
EVENTS = {"cpp": ("allocation", "pool"), "numpy": ("product",), "numba": ("product",)}
RESOURCE_ERRORS = (MemoryError, RuntimeError)  # RuntimeError: a thread that cannot start


@pytest.fixture(autouse=True)
def _two_threads():
    """The kernels' parallel paths (and so their thread pool) need more than one thread."""
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(2)
    yield
    fastrnn.set_num_threads(before)


@contextlib.contextmanager
def failing(backend, event, n, monkeypatch):
    """The ``n``-th ``event`` of ``backend`` from now fails; yields a callable telling whether it did."""
    if backend == "cpp":
        from fastrnn import _core

        state = {}

        def fired():
            if "left" not in state:  # still armed: read the countdown and put it back
                left = _core._inject_failure(event, 0)
                _core._inject_failure(event, left)
                return left == 0
            return state["left"] == 0

        _core._inject_failure(event, n)
        try:
            yield fired
        finally:
            state["left"] = _core._inject_failure(event, 0)
        return
    # the Python backends: their products (reference: one call per step; numba: the large products)
    if backend == "numpy":
        from fastrnn.backends import reference as mod

        name = "_step_backward"
    else:
        from fastrnn.backends.numba import _layer as mod

        name = "at_b"
    real = getattr(mod, name)
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise MemoryError(f"{name}: no memory (injected)")
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(mod, name, wrapped)
        yield lambda: calls[0] >= n


def _grads(m):
    return {k: v.copy() for k, v in m.grads.items()}


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def _flat(result):
    """The arrays of a layer's or cell's backward result ``dx, dh`` / ``dx, (dh, dc)``."""
    dx, states = result
    return [dx] + (list(states) if isinstance(states, tuple) else [states])


def _explore(backend, monkeypatch, make, forward, grad):
    """Fail each event of a backward in turn; check the rule of the module docstring for each.
    Returns how often a failure left the forward retryable and how often it consumed it."""
    clean = make()
    clean.zero_grad()
    out = forward(clean)
    want = _flat(clean.backward(grad(out)))
    want_grads = _grads(clean)
    outcomes = {"retried": 0, "refused": 0}
    for event in EVENTS[backend]:
        for n in range(1, 200):
            m = make()
            m.zero_grad()
            out = forward(m)
            before = _grads(m)
            with failing(backend, event, n, monkeypatch) as fired:
                try:
                    got = _flat(m.backward(grad(out)))
                except RESOURCE_ERRORS as exc:
                    error = exc
                else:
                    error = None
            if error is None:
                assert not fired(), f"{event} {n}: the injected failure was swallowed"
                assert _same(_grads(m), want_grads)
                assert all(np.array_equal(a, b) for a, b in zip(got, want))
                break
            assert fired(), f"{event} {n}: {error!r} without an injected failure"
            if _same(_grads(m), before) and not isinstance(error, PartialBackwardError):
                got = _flat(m.backward(grad(out)))  # the retry differentiates the same forward
                assert _same(_grads(m), want_grads), f"{event} {n}: retry after {error!r}"
                assert all(np.array_equal(a, b) for a, b in zip(got, want))
                outcomes["retried"] += 1
            else:  # part of the gradients went in: no retry
                with pytest.raises(fastrnn.GradientError, match="failed part way"):
                    m.backward(grad(out))
                outcomes["refused"] += 1
        else:
            pytest.fail(f"{backend}: more than 200 {event} events in one backward?")
    return outcomes


@pytest.mark.parametrize("cls", [fastrnn.LSTM, fastrnn.GRU])
def test_layer_backward_failing_at_each_event(backend, cls, monkeypatch):
    """A 2-layer bidirectional stack (four backend calls, weight gradients added in place on cpp)."""

    def make():
        return cls(24, 48, num_layers=2, bidirectional=True, dtype=np.float64, backend=backend, seed=1)

    x = np.random.default_rng(0).standard_normal((12, 16, 24))
    outcomes = _explore(backend, monkeypatch, make, lambda m: m(x)[0], np.ones_like)
    assert outcomes["retried"] > 0  # failures before anything reached the gradients: retried
    assert outcomes["refused"] > 0  # after the first layer's backward went in: refused


@pytest.mark.parametrize("cls", [fastrnn.LSTMCell, fastrnn.GRUCell, fastrnn.RNNCell])
def test_cell_backward_failing_at_each_event(backend, cls, monkeypatch):
    """A cell's backward writes only fresh arrays: every failure leaves the call retryable."""

    def make():
        return cls(64, 256, dtype=np.float64, backend=backend, seed=1)

    x = np.random.default_rng(0).standard_normal((4, 64))

    def grad(out):
        return tuple(np.ones_like(o) for o in out) if isinstance(out, tuple) else np.ones_like(out)

    outcomes = _explore(backend, monkeypatch, make, lambda m: m(x), grad)
    assert outcomes["retried"] > 0 and outcomes["refused"] == 0


def _layer_ws(kind="lstm", T=12, B=16, I=24, H=48, seed=0):
    from fastrnn.backends import cpp

    rng = np.random.default_rng(seed)
    G = 4 if kind == "lstm" else 3
    args = (rng.standard_normal((T, B, I)), rng.standard_normal((B, H)),
            rng.standard_normal((B, H)) if kind == "lstm" else None,
            rng.standard_normal((G * H, I)) * 0.2, rng.standard_normal((G * H, H)) * 0.2,
            rng.standard_normal(G * H), rng.standard_normal(G * H))
    out = cpp.layer_forward(kind, *args, None, False, True)
    return out[0], out[3], args


@needs_cpp
@pytest.mark.parametrize("event", ["allocation", "pool"])
@pytest.mark.parametrize("use_acc", [False, True], ids=["fresh", "acc"])
def test_cpp_binding_consumes_the_workspace_only_on_success(event, use_acc, monkeypatch):
    """The binding itself: a failure leaves ws usable and acc bitwise unchanged, or (acc only)
    raises PartialBackwardError and consumes ws; a retry after the former is exact."""
    from fastrnn.backends import cpp

    dims = dict(T=20, B=16, I=32, H=64)  # products large enough to run on the pool
    out, ws, args = _layer_ws(**dims)
    go = np.ones_like(out)
    want = cpp.layer_backward(ws, go, None, None)
    seen = set()
    for n in range(1, 200):
        out, ws, args = _layer_ws(**dims)
        acc = (np.full_like(args[3], 0.5), np.full_like(args[4], -0.5)) if use_acc else None
        acc0 = None if acc is None else tuple(a.copy() for a in acc)
        with failing("cpp", event, n, monkeypatch) as fired:
            try:
                got = cpp.layer_backward(ws, go, None, None, acc)
            except PartialBackwardError as exc:
                assert use_acc and "acc may hold part" in str(exc)
                with pytest.raises(ValueError, match="already used"):
                    cpp.layer_backward(ws, go, None, None, acc0)
                seen.add("partial")
                continue
            except RESOURCE_ERRORS:
                assert acc is None or all(np.array_equal(a, b) for a, b in zip(acc, acc0))
                got = cpp.layer_backward(ws, go, None, None, acc)
                seen.add("retried")
            else:
                assert not fired()
                seen.add("ok")
        for k in want:
            expect = want[k] if not use_acc or k not in ("w_ih", "w_hh") else \
                want[k] + acc0[0 if k == "w_ih" else 1]
            if expect is None:
                assert got[k] is None
            else:
                np.testing.assert_allclose(got[k], expect, rtol=0, atol=0 if not use_acc else 1e-12, err_msg=k)
        if "ok" in seen:
            break
    assert "retried" in seen and "ok" in seen
    if use_acc:
        assert "partial" in seen  # a failure between the dw_ih and dw_hh products


@needs_cpp
def test_cpp_workspace_in_use_by_another_thread_is_refused():
    """Two threads differentiating one workspace at once: exactly one succeeds; the other is
    refused (in use, or already used) -- the workspace is no longer marked consumed before the
    kernel runs, so it is marked busy instead."""
    from fastrnn.backends import cpp

    out, ws, _ = _layer_ws(T=200, B=32, I=64, H=128)
    go = np.ones_like(out)
    results, barrier = [], threading.Barrier(2)

    def run():
        barrier.wait()
        try:
            cpp.layer_backward(ws, go, None, None)
            results.append("ok")
        except ValueError as exc:
            assert "in use" in str(exc) or "already used" in str(exc)
            results.append("refused")

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok", "refused"]


@needs_cpp
@pytest.mark.parametrize("event", ["allocation", "pool"])
def test_c_abi_backward_failure_leaves_the_workspace_intact(event, monkeypatch):
    """The C ABI's backward only reads its ws (const) and writes the outputs: a failed call
    (an error status) may be repeated and gives the same result."""
    capi = pytest.importorskip("fastrnn.capi")
    rng = np.random.default_rng(0)
    T, B, I, H = 12, 16, 24, 48
    args = (rng.standard_normal((T, B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H)),
            rng.standard_normal((4 * H, I)) * 0.2, rng.standard_normal((4 * H, H)) * 0.2, None, None)
    out, _, _, state = capi.layer_forward("lstm", *args, None, False, True)
    go = np.ones_like(out)
    want = capi.layer_backward(state, go, None, None)
    failures = 0
    for n in range(1, 200):
        with failing("cpp", event, n, monkeypatch) as fired:
            try:
                capi.layer_backward(state, go, None, None)
            except (MemoryError, capi.FastrnnCError):
                failures += 1
                continue
        assert not fired()
        break
    assert failures > 0
    got = capi.layer_backward(state, go, None, None)
    for k in want:
        if want[k] is not None:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
