"""The C ABI through cffi: same results as the pybind11 path, clear errors, and a
user's own @njit loop calling the C LSTM cell step with no Python in the loop."""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from _helpers import layer_args, layer_grads
from fastrnn.backends.contract import KINDS, has_cell_state

capi = pytest.importorskip("fastrnn.capi", reason="the compiled extension (and its C ABI) is not installed",
                           exc_type=ImportError)
try:
    from fastrnn.backends import cpp
except ImportError:  # pragma: no cover - the extension without kernels
    cpp = None



def test_versions():
    assert capi.abi_version() == 5
    assert capi.ffi.string(capi.lib.fastrnn_version()).decode() == fastrnn.__version__
    for code in range(8):
        assert capi.status_message(code)
    assert capi.status_message(99) == "unknown status code"


@pytest.mark.skipif(cpp is None, reason="the cpp backend is not available")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lengths", [None, [5, 2, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_layer_cffi_equals_pybind11(kind, dtype, lengths, reverse, bias):
    a = layer_args(kind, 5, 3, 4, 6, dtype, bias=bias)
    L = None if lengths is None else np.array(lengths, np.int64)
    out_c, h_c, c_c, ws_c = capi.layer_forward(kind, *a.values(), L, reverse, True)
    out_p, h_p, c_p, ws_p = cpp.layer_forward(kind, *a.values(), L, reverse, True)
    np.testing.assert_array_equal(out_c, out_p)
    np.testing.assert_array_equal(h_c, h_p)
    if has_cell_state(kind):
        np.testing.assert_array_equal(c_c, c_p)
    go, gh, gc = layer_grads(kind, 5, 3, 6, dtype, seed=1)
    g_c = capi.layer_backward(ws_c, go, gh, gc)
    g_p = cpp.layer_backward(ws_p, go, gh, gc)
    for k in g_p:
        if g_p[k] is None:
            assert g_c[k] is None
        else:
            np.testing.assert_array_equal(g_c[k], g_p[k], err_msg=k)
    # and the inference path (no workspace) gives the same forward
    out_i, *_ = capi.layer_forward(kind, *a.values(), L, reverse, False)
    np.testing.assert_array_equal(out_i, out_c)


@pytest.mark.skipif(cpp is None, reason="the cpp backend is not available")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_cell_cffi_equals_pybind11(kind, dtype):
    """(Agreement with the reference: tests/test_contract.py runs its suite on fastrnn.capi too.)"""
    a = layer_args(kind, 1, 4, 3, 5, dtype)
    args = (a["x"][0], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    h_c, c_c, ws_c = capi.cell_forward(kind, *args, True)
    h_p, c_p, ws_p = cpp.cell_forward(kind, *args, True)
    np.testing.assert_array_equal(h_c, h_p)
    if c_p is not None:
        np.testing.assert_array_equal(c_c, c_p)
    rng = np.random.default_rng(2)
    gh = rng.standard_normal((4, 5)).astype(dtype)
    gc = rng.standard_normal((4, 5)).astype(dtype) if has_cell_state(kind) else None
    g_c = capi.cell_backward(ws_c, gh, gc)
    g_p = cpp.cell_backward(ws_p, gh, gc)
    for k in g_p:
        if g_p[k] is None:
            assert g_c[k] is None
        else:
            np.testing.assert_array_equal(g_c[k], g_p[k], err_msg=k)


def test_error_codes_not_crashes():
    lib, ffi = capi.lib, capi.ffi
    x = np.zeros((2, 3)); h = np.zeros((2, 4)); w = np.zeros((4, 3)); u = np.zeros((4, 4)); out = np.zeros((2, 4))
    P = lambda a: ffi.cast("double *", a.ctypes.data)  # noqa: E731
    N = ffi.NULL
    f = lib.fastrnn_cell_forward_f64
    assert f(lib.FASTRNN_RNN_TANH, 2, 3, 4, P(x), P(h), N, P(w), P(u), N, N, P(out), N, N) == lib.FASTRNN_OK
    assert f(9, 2, 3, 4, P(x), P(h), N, P(w), P(u), N, N, P(out), N, N) == lib.FASTRNN_ERR_BAD_KIND
    assert f(lib.FASTRNN_RNN_TANH, 0, 3, 4, P(x), P(h), N, P(w), P(u), N, N, P(out), N, N) == lib.FASTRNN_ERR_BAD_SIZE
    assert f(lib.FASTRNN_RNN_TANH, -5, 3, 4, P(x), P(h), N, P(w), P(u), N, N, P(out), N, N) == lib.FASTRNN_ERR_BAD_SIZE
    assert f(lib.FASTRNN_RNN_TANH, 2**40, 2**40, 4, P(x), P(h), N, P(w), P(u), N, N, P(out), N, N) == lib.FASTRNN_ERR_BAD_SIZE
    assert f(lib.FASTRNN_RNN_TANH, 2, 3, 4, N, P(h), N, P(w), P(u), N, N, P(out), N, N) == lib.FASTRNN_ERR_NULL_POINTER
    assert f(lib.FASTRNN_RNN_TANH, 2, 3, 4, P(x), P(h), N, P(w), P(u), P(h), N, P(out), N, N) == lib.FASTRNN_ERR_BAD_BIAS
    assert f(lib.FASTRNN_LSTM, 2, 3, 1, P(x), P(h), N, P(w), P(u), N, N, P(out), N, N) == lib.FASTRNN_ERR_NULL_POINTER
    lengths = np.array([3, 0], np.int64)
    xs = np.zeros((3, 2, 3)); outs = np.zeros((3, 2, 4))
    g = lib.fastrnn_layer_forward_f64
    st = g(lib.FASTRNN_RNN_TANH, 3, 2, 3, 4, P(xs), P(h), N, P(w), P(u), N, N,
           ffi.cast("int64_t *", lengths.ctypes.data), 0, P(outs), P(out), N, N)
    assert st == lib.FASTRNN_ERR_BAD_LENGTHS
    assert lib.fastrnn_num_gates(7) == -1 and lib.fastrnn_layer_workspace_size(2, 0, 1, 1) == -1
    with pytest.raises(ValueError, match="lengths must lie in \\[1, T=3\\]"):  # the contract's check, before C
        capi.layer_forward("rnn_tanh", xs, h, None, w, u, None, None, lengths, False, False)
    with pytest.raises(ValueError, match="w_hh must have shape \\(4, 4\\)"):
        capi.cell_forward("rnn_tanh", x, h, None, w, np.zeros((4, 5)), None, None, False)
    with pytest.raises(TypeError, match="dtype float64"):
        capi.cell_forward("rnn_tanh", x, h, None, w.astype(np.float32), u, None, None, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        capi.cell_forward("rnn_tanh", x, h, None, np.zeros((3, 4)).T, u, None, None, False)
    with pytest.raises(ValueError, match="kind must be one of"):
        capi.cell_forward("lstmx", x, h, None, w, u, None, None, False)


# --- the documented example: a user's own @njit loop over the C LSTM cell step ---------


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_njit_loop_over_c_cell_matches_layer_api(dtype):
    pytest.importorskip("numba")
    from fastrnn.capi_njit import lstm_loop

    lstm = fastrnn.LSTM(3, 4, dtype=dtype, seed=0, backend="numpy")
    xs = np.random.default_rng(0).standard_normal((20, 2, 3)).astype(dtype)
    with fastrnn.no_grad():
        out, (h_n, c_n) = lstm(xs)
    h = np.zeros((2, 4), dtype)
    c = np.zeros((2, 4), dtype)
    p = lstm.state_dict()
    hs = lstm_loop(dtype)(xs, h, c, p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"])
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hs, out, **tol)
    np.testing.assert_allclose(h, h_n[0], **tol)
    np.testing.assert_allclose(c, c_n[0], **tol)
    with pytest.raises(TypeError):
        lstm_loop(np.int32)


@pytest.mark.parametrize("bad", ["w_ih_cols", "xs_strided", "h_dtype", "b_short", "c_readonly"])
def test_njit_loop_checks_every_array(bad):
    """lstm_loop hands raw pointers to C: a wrong shape, stride or dtype is refused, not read out of bounds."""
    pytest.importorskip("numba")
    from fastrnn.capi_njit import lstm_loop

    B, I, H = 2, 4, 5
    a = dict(xs=np.ones((3, B, I)), h=np.zeros((B, H)), c=np.zeros((B, H)), w_ih=np.ones((4 * H, I)),
             w_hh=np.ones((4 * H, H)), b_ih=np.ones(4 * H), b_hh=np.ones(4 * H))
    if bad == "w_ih_cols":
        a["w_ih"] = np.ones((4 * H, 1))
    elif bad == "xs_strided":
        a["xs"] = np.ones((3, B, 2 * I))[:, :, ::2]
    elif bad == "h_dtype":
        a["h"] = a["h"].astype(np.float32)
    elif bad == "b_short":
        a["b_hh"] = np.ones(H)
    else:
        a["c"].flags.writeable = False
    with pytest.raises((ValueError, TypeError), match=bad.split("_")[0]):
        lstm_loop(np.float64)(*a.values())
    assert lstm_loop(np.float64).njit is not None
