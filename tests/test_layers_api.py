"""Behaviour of the layer API that PyTorch users rely on: modes, no_grad, dropout, backends."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastrnn


def test_no_grad_keeps_nothing_and_matches(backend):
    lstm = fastrnn.LSTM(3, 4, backend=backend, dtype=np.float64, seed=1)
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    with fastrnn.no_grad():
        assert not fastrnn.is_grad_enabled()
        out1, (h1, c1) = lstm(x)
    assert fastrnn.is_grad_enabled()
    out2, (h2, c2) = lstm(x)
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(c1, c2)

    @fastrnn.no_grad()
    def infer():
        return fastrnn.is_grad_enabled()

    assert infer() is False and fastrnn.is_grad_enabled()


def test_grad_mode_is_per_thread_and_nests():
    import threading

    seen = {}

    def other():
        seen["fresh thread"] = fastrnn.is_grad_enabled()  # a thread that never entered no_grad
        with fastrnn.no_grad():
            seen["inside"] = fastrnn.is_grad_enabled()
        seen["after"] = fastrnn.is_grad_enabled()

    with fastrnn.no_grad():
        t = threading.Thread(target=other)
        t.start()
        t.join()
        with fastrnn.no_grad():
            assert fastrnn.is_grad_enabled() is False
        assert fastrnn.is_grad_enabled() is False  # the inner exit restores the outer mode
    assert fastrnn.is_grad_enabled() is True
    assert seen == {"fresh thread": True, "inside": False, "after": True}


def test_eval_only_switches_dropout_off(backend):
    rnn = fastrnn.GRU(3, 8, num_layers=3, dropout=0.5, backend=backend, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    out_train, _ = rnn(x)
    rnn.eval()
    out_eval, _ = rnn(x)
    out_eval2, _ = rnn(x)
    np.testing.assert_array_equal(out_eval, out_eval2)
    assert not np.allclose(out_train, out_eval)
    rnn.backward(np.ones_like(out_eval))  # eval keeps state for backward (unlike no_grad)
    one = fastrnn.GRU(3, 8, num_layers=1, dropout=0.5, backend=backend, dtype=np.float64, seed=0)
    a, _ = one(x)
    one.eval()
    np.testing.assert_array_equal(a, one(x)[0])  # no dropout after the last layer


def test_dropout_gradient_matches_finite_differences(backend):
    rnn = fastrnn.LSTM(2, 3, num_layers=2, dropout=0.4, bidirectional=True, backend=backend, dtype=np.float64, seed=3)
    x = np.random.default_rng(1).standard_normal((4, 2, 2))
    g = np.random.default_rng(2).standard_normal((4, 2, 6))
    rng_state = copy.deepcopy(rnn._rng)

    def loss(xv):
        rnn._rng = copy.deepcopy(rng_state)  # same dropout masks every call
        with fastrnn.no_grad():
            return np.sum(rnn(xv)[0] * g)

    rnn._rng = copy.deepcopy(rng_state)
    out, _ = rnn(x)
    dx, _ = rnn.backward(g)
    num = np.zeros_like(x)
    eps = 1e-6
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num[idx] = (loss(xp) - loss(xm)) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


def test_gradients_accumulate_and_zero_grad(backend):
    rnn = fastrnn.RNN(2, 3, backend=backend, dtype=np.float64, seed=0)
    x = np.ones((3, 1, 2))
    out, _ = rnn(x)
    rnn.backward(np.ones_like(out))
    first = {k: v.copy() for k, v in rnn.grads.items()}
    out, _ = rnn(x)
    rnn.backward(np.ones_like(out))
    for k in first:
        np.testing.assert_allclose(rnn.grads[k], 2 * first[k])
    rnn.zero_grad()
    assert all(not v.any() for v in rnn.grads.values())


def test_every_backend_gives_the_same_results():
    """Every input through every backend: results and raised errors agree."""
    x = np.random.default_rng(4).standard_normal((7, 3, 2))
    results = {}
    for name in fastrnn.available_backends():
        gru = fastrnn.GRU(2, 5, num_layers=2, bidirectional=True, dtype=np.float64, backend=name, seed=9)
        out, h = gru(x, lengths=[7, 2, 5])
        dx, dh = gru.backward(np.ones_like(out))
        with pytest.raises(ValueError) as err:
            gru(x, lengths=[7, 0, 5])
        results[name] = (out, h, dx, dh, gru.grads["weight_hh_l1_reverse"].copy(), str(err.value))
    ref = results["numpy"]
    for name, res in results.items():
        for a, b in zip(res[:-1], ref[:-1]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=name)
        assert res[-1] == ref[-1]


def test_backend_selection(monkeypatch):
    assert "numpy" in fastrnn.available_backends()
    assert fastrnn.available_backends()[0] == fastrnn.get_backend("auto").NAME
    fastrnn.set_backend("numpy")
    try:
        assert fastrnn.get_backend().NAME == "numpy"
        assert fastrnn.get_backend("reference").NAME == "numpy"
    finally:
        fastrnn.set_backend(None)
    monkeypatch.setenv("FASTRNN_BACKEND", "numpy")
    assert fastrnn.get_backend().NAME == "numpy"
    layer = fastrnn.LSTM(2, 2, backend="numpy")
    assert layer.backend == "numpy"


def test_backend_env_is_read_at_every_call(monkeypatch):
    import fastrnn.backends as b

    fastrnn.set_backend(None)
    auto = fastrnn.get_backend("auto").NAME
    monkeypatch.setenv("FASTRNN_BACKEND", "numpy")
    assert fastrnn.get_backend().NAME == "numpy"
    os.environ["FASTRNN_BACKEND"] = auto  # a plain assignment, as a user's script would do it
    assert fastrnn.get_backend().NAME == auto
    os.environ["FASTRNN_BACKEND"] = "reference"
    assert fastrnn.get_backend().NAME == "numpy"
    monkeypatch.delenv("FASTRNN_BACKEND")
    assert fastrnn.get_backend().NAME == auto
    # where os.environ is not CPython's (no _data dict), the reader falls back to os.environ.get
    monkeypatch.setattr(os, "environ", {"FASTRNN_BACKEND": "numpy"})
    read = b._env_reader("FASTRNN_BACKEND")
    assert read() == "numpy"
    os.environ.pop("FASTRNN_BACKEND")
    assert read() is None


def test_missing_backend_error_lists_available():
    code = (
        "import sys, fastrnn.backends as b\n"
        "b._errors['numba'] = 'hidden for the test'\n"
        "b._loaded.pop('numba', None)\n"
        "try:\n    b.check_backend('numba')\nexcept ValueError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir()).stdout
    assert "not available" in out and "available backends: [" in out and "'numpy'" in out


def test_env_backend_error_is_clear():
    env = dict(os.environ, FASTRNN_BACKEND="nope")
    code = "import numpy as np, fastrnn\nfastrnn.GRU(2, 2)(np.zeros((2, 1, 2), np.float32))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    assert r.returncode != 0 and "unknown backend 'nope'" in r.stderr


def test_repr_and_parameter_access():
    gru = fastrnn.GRU(3, 4, num_layers=2, batch_first=True, linear_before_reset=False)
    assert "GRU(3, 4, num_layers=2" in repr(gru) and "linear_before_reset=False" in repr(gru)
    assert gru.weight_ih_l1.shape == (12, 4)
    gru.weight_ih_l1 = np.ones((12, 4))
    assert gru.weight_ih_l1.dtype == np.float32 and gru.weight_ih_l1[0, 0] == 1
    with pytest.raises(ValueError, match="weight_ih_l1"):
        gru.weight_ih_l1 = np.ones((3, 3))
