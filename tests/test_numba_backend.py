"""The Numba backend against the NumPy reference, at the contract level.

Every kind, both dtypes, with and without bias, unsorted lengths, reverse,
training (keep=True: forward + backward) and inference (keep=False), cells,
and hypothesis-drawn sizes from 1 to 6. Tolerances: float64 1e-10, float32 1e-5.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

import numpy as np
import pytest

from fastrnn.backends import reference as ref

nbb = pytest.importorskip("fastrnn.backends.numba", reason="numba is not installed")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KINDS = ref.KINDS
DTYPES = [np.float64, np.float32]
TOL = {np.dtype(np.float64): dict(rtol=1e-10, atol=1e-10), np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5)}


def _args(kind, T, B, I, H, bias, dtype, rng, scale=0.5):
    G = ref.GATES[kind]

    def r(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(dtype)

    return dict(
        x=r(T, B, I),
        h0=r(B, H),
        c0=r(B, H) if kind == "lstm" else None,
        w_ih=r(G * H, I, s=scale),
        w_hh=r(G * H, H, s=scale),
        b_ih=r(G * H, s=scale) if bias else None,
        b_hh=r(G * H, s=scale) if bias else None,
    )


def _close(a, b, dtype, what):
    if b is None:
        assert a is None, what
        return
    assert a is not None, what
    assert a.dtype == np.dtype(dtype), what
    assert a.shape == b.shape, what
    np.testing.assert_allclose(a, b, err_msg=what, **TOL[np.dtype(dtype)])


def _compare_layer(kind, T, B, I, H, bias, dtype, lengths, reverse, keep, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    a = _args(kind, T, B, I, H, bias, dtype, rng, scale)
    L = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    before = {k: None if v is None else v.copy() for k, v in a.items()}
    got = nbb.layer_forward(kind, a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], L, reverse,
                            keep)
    want = ref.layer_forward(kind, a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], L, reverse,
                             keep)
    for name, g, w in zip(("out", "h_n", "c_n"), got[:3], want[:3]):
        _close(g, w, dtype, f"{kind} forward {name}")
    for k, v in a.items():  # inputs are never modified
        if v is not None:
            np.testing.assert_array_equal(v, before[k], err_msg=f"{k} was modified")
    if not keep:
        assert got[3] is None
        return
    g_out = rng.standard_normal((T, B, H)).astype(dtype)
    g_h = rng.standard_normal((B, H)).astype(dtype)
    g_c = rng.standard_normal((B, H)).astype(dtype) if kind == "lstm" else None
    grads = nbb.layer_backward(got[3], g_out, g_h, g_c)
    want_grads = ref.layer_backward(want[3], g_out, g_h, g_c)
    assert set(grads) == set(want_grads)
    for name in want_grads:
        _close(grads[name], want_grads[name], dtype, f"{kind} backward {name}")
    if L is not None:  # padded steps get zero gradient into x
        for b, n in enumerate(L):
            assert not grads["x"][n:, b].any()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("lengths", [None, [3, 5, 1, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("keep", [True, False], ids=["train", "infer"])
def test_layer_matches_reference(kind, dtype, bias, lengths, reverse, keep):
    seed = abs(hash((kind, bias, reverse, lengths is None, keep))) % 2**32
    _compare_layer(kind, 5, 4, 3, 6, bias, dtype, lengths, reverse, keep, seed)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_layer_larger_sizes(kind, dtype):
    """Sizes where BLAS takes its blocked paths (the tiny ones above may not); weights at the
    layers' initial scale so that float32 rounding is not amplified by an exploding recurrence."""
    _compare_layer(kind, 9, 7, 33, 40, True, dtype, [9, 2, 7, 9, 1, 5, 8], True, True, 7, scale=40**-0.5)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    dtype=st.sampled_from(DTYPES),
    T=st.integers(1, 6),
    B=st.integers(1, 6),
    I=st.integers(1, 6),
    H=st.integers(1, 6),
    bias=st.booleans(),
    reverse=st.booleans(),
    keep=st.booleans(),
    data=st.data(),
)
def test_layer_random_sizes(kind, dtype, T, B, I, H, bias, reverse, keep, data):
    lengths = data.draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B), label="lengths")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    _compare_layer(kind, T, B, I, H, bias, dtype, lengths, reverse, keep, seed)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("keep", [True, False], ids=["train", "infer"])
def test_cell_matches_reference(kind, dtype, bias, keep):
    rng = np.random.default_rng(11)
    B, I, H = 3, 4, 5
    a = _args(kind, 1, B, I, H, bias, dtype, rng)
    x = a["x"][0]
    got = nbb.cell_forward(kind, x, a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], keep)
    want = ref.cell_forward(kind, x, a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], keep)
    _close(got[0], want[0], dtype, "h_new")
    _close(got[1], want[1], dtype, "c_new")
    if not keep:
        assert got[2] is None
        return
    g_h = rng.standard_normal((B, H)).astype(dtype)
    g_c = rng.standard_normal((B, H)).astype(dtype) if kind == "lstm" else None
    grads = nbb.cell_backward(got[2], g_h, g_c)
    want_grads = ref.cell_backward(want[2], g_h, g_c)
    assert set(grads) == set(want_grads)
    for name in want_grads:
        _close(grads[name], want_grads[name], dtype, f"{kind} cell backward {name}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_nan_and_inf_propagate_like_the_reference(kind, dtype):
    rng = np.random.default_rng(3)
    a = _args(kind, 4, 3, 2, 3, True, dtype, rng)
    a["x"][1, 0, 0] = np.nan
    a["x"][2, 1, 1] = np.inf
    a["x"][0, 2, 0] = -np.inf
    args = (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], None, False, False)
    with np.errstate(invalid="ignore", over="ignore"):
        got = nbb.layer_forward(kind, *args)
        want = ref.layer_forward(kind, *args)
        for g, w in zip(got[:3], want[:3]):
            if w is not None:
                np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
                np.testing.assert_allclose(g, w, equal_nan=True, **TOL[np.dtype(dtype)])
    assert np.isnan(got[0][1:, 0]).all()  # a NaN input poisons the rest of its sequence


def test_strided_and_readonly_inputs():
    rng = np.random.default_rng(5)
    a = _args("lstm", 4, 3, 2, 5, True, np.float64, rng)
    x = np.asfortranarray(a["x"])
    w_hh = a["w_hh"].copy()
    w_hh.setflags(write=False)
    got = nbb.layer_forward("lstm", x, a["h0"], a["c0"], a["w_ih"], w_hh, a["b_ih"], a["b_hh"], None, False, True)
    want = ref.layer_forward("lstm", a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], None,
                             False, True)
    _close(got[0], want[0], np.float64, "out")
    g = np.ones((4, 3, 5))
    g.setflags(write=False)
    grads = nbb.layer_backward(got[3], g, np.zeros((3, 5)), np.zeros((3, 5)))
    want_grads = ref.layer_backward(want[3], g, np.zeros((3, 5)), np.zeros((3, 5)))
    _close(grads["w_hh"], want_grads["w_hh"], np.float64, "w_hh")


def test_boundary_errors():
    rng = np.random.default_rng(0)
    a = _args("gru", 3, 2, 2, 4, True, np.float64, rng)
    args = [a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]]
    with pytest.raises(ValueError, match="kind"):
        nbb.layer_forward("lstmx", *args, None, False, False)
    with pytest.raises(ValueError, match="dtype"):
        nbb.layer_forward("gru", a["x"], a["h0"].astype(np.float32), *args[2:], None, False, False)
    with pytest.raises(ValueError, match="dtype"):
        nbb.layer_forward("gru", a["x"].astype(np.int64), *args[1:], None, False, False)
    with pytest.raises(ValueError, match="shape"):
        nbb.layer_forward("gru", a["x"], a["h0"], None, a["w_ih"][:-1], *args[4:], None, False, False)
    with pytest.raises(ValueError, match="lengths"):
        nbb.layer_forward("gru", *args, np.array([0, 3]), False, False)
    with pytest.raises(ValueError, match="lengths"):
        nbb.layer_forward("gru", *args, np.array([4, 3]), False, False)
    with pytest.raises(ValueError, match="both"):
        nbb.layer_forward("gru", *args[:6], None, None, False, False)
    with pytest.raises(ValueError, match="c0"):
        nbb.layer_forward("lstm", a["x"], a["h0"], None, *args[3:], None, False, False)
    with pytest.raises(ValueError, match="ws"):
        nbb.layer_backward(None, np.zeros((3, 2, 4)), np.zeros((2, 4)), None)
    _, _, _, ws = nbb.layer_forward("gru", *args, None, False, True)
    with pytest.raises(ValueError, match="grad_out"):
        nbb.layer_backward(ws, np.zeros((3, 2, 5)), np.zeros((2, 4)), None)
    nbb.layer_backward(ws, np.zeros((3, 2, 4)), np.zeros((2, 4)), None)
    with pytest.raises(ValueError, match="consumed"):  # backward frees ws
        nbb.layer_backward(ws, np.zeros((3, 2, 4)), np.zeros((2, 4)), None)
    _, _, cws = nbb.cell_forward("gru", a["x"][0], a["h0"], None, *args[3:], True)
    nbb.cell_backward(cws, np.ones((2, 4)), None)
    with pytest.raises(ValueError, match="consumed"):
        nbb.cell_backward(cws, np.ones((2, 4)), None)


def test_set_num_threads_does_not_start_numbas_thread_pool():
    """The kernels are serial: setting fastrnn's thread count must not launch Numba's threading layer
    (its OpenMP pool slowed PyTorch's OpenMP ops in the same process 8x). Fresh process: the pool
    cannot be stopped once started."""
    code = (
        "import numba.np.ufunc.parallel as p\n"
        "import fastrnn\n"
        "from fastrnn.backends import numba as nbb\n"
        "import numpy as np\n"
        "nbb.set_num_threads(2); fastrnn.set_num_threads(2)\n"
        "fastrnn.LSTM(3, 4, backend='numba')(np.ones((5, 2, 3), np.float32))\n"
        "assert not p._is_initialized, 'numba threading layer was launched'\n"
        "for bad in (0, -1, 1.5, True):\n"
        "    try:\n"
        "        nbb.set_num_threads(bad)\n"
        "    except (ValueError, TypeError):\n"
        "        pass\n"
        "    else:\n"
        "        raise AssertionError(bad)\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("ok")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_layers_on_numba_match_numpy(dtype):
    """The public layers, stacked and bidirectional with lengths, agree across the two backends."""
    import fastrnn

    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 3, 4)).astype(dtype)
    for cls in (fastrnn.LSTM, fastrnn.GRU):
        results = []
        for backend in ("numba", "numpy"):
            m = cls(4, 5, num_layers=2, bidirectional=True, dtype=dtype, backend=backend, seed=1)
            out, _ = m(x, lengths=[6, 2, 4])
            dx, _ = m.backward(np.ones_like(out))
            results.append((out, dx, m.grads["weight_hh_l0_reverse"].copy()))
        for g, w in zip(*results):
            np.testing.assert_allclose(g, w, **TOL[np.dtype(dtype)])


def test_import_compiles_nothing():
    """Importing the backend is cheap: kernels compile (or load from cache) on first call."""
    code = (
        "import fastrnn.backends.numba as m\n"
        "ks = [v for v in vars(m).values() if hasattr(v, 'signatures') and hasattr(v, 'py_func')]\n"
        "assert len(ks) >= 8, ks\n"
        "assert all(not k.signatures for k in ks), [k for k in ks if k.signatures]\n"
    )
    # outside the source tree, so that the child imports what the tests run on (the install)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tempfile.gettempdir())


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_sigmoid_and_tanh_are_accurate(dtype):
    """The kernels' own vectorizable sigmoid/tanh: a few ulp over the whole range (results in the
    normal range; below it an absolute error under the smallest normal), NaN/Inf handled."""
    numba = pytest.importorskip("numba")
    from scipy.special import expit

    @numba.njit
    def sig(a, out):
        for i in range(a.shape[0]):
            out[i] = nbb._sigmoid(a[i])

    @numba.njit
    def tanh(a, out):
        for i in range(a.shape[0]):
            out[i] = nbb._tanh(a[i])

    rng = np.random.default_rng(0)
    n = 50_000
    x = np.concatenate([
        rng.uniform(-1, 1, n), rng.uniform(-40, 40, n), rng.uniform(-800, 800, n),
        10.0 ** rng.uniform(-40, 3, n) * rng.choice([-1, 1], n),
    ]).astype(dtype)
    tiny = np.finfo(dtype).tiny
    for f, exact in ((sig, expit(x.astype(np.longdouble).astype(np.float64)).astype(np.longdouble)),
                     (tanh, np.tanh(x.astype(np.longdouble)))):
        got = np.empty_like(x)
        f(x, got)
        err = np.abs(got.astype(np.longdouble) - exact)
        normal = np.abs(exact) >= tiny
        ulps = err[normal] / np.spacing(np.abs(exact[normal]).astype(dtype)).astype(np.longdouble)
        assert ulps.max() <= 4, (f, ulps.max())
        assert np.all(err[~normal] <= tiny)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=dtype)
    got = np.empty_like(special)
    sig(special, got)
    np.testing.assert_array_equal(got, [np.nan, 1, 0, 0.5, 0.5])
    tanh(special, got)
    np.testing.assert_array_equal(got, [np.nan, 1, -1, 0, 0])


def test_time_loops_run_openblas_single_threaded_and_restore_it(monkeypatch):
    """While a jitted time loop runs, OpenBLAS is set to 1 thread; afterwards (also after an error and
    with loops running concurrently) every library has its previous thread count again."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    ctl = threadpoolctl.ThreadpoolController()
    libs = [lib for lib in ctl.lib_controllers if lib.internal_api == "openblas"]
    if not libs:
        pytest.skip("no OpenBLAS loaded")
    seen = []
    real = nbb._fwd_lstm

    def spy(*args):
        seen.append([lib.get_num_threads() for lib in libs])
        return real(*args)

    monkeypatch.setattr(nbb, "_fwd_lstm", spy)
    a = _args("lstm", 5, 3, 4, 6, True, np.float64, np.random.default_rng(0))
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = [lib.get_num_threads() for lib in libs]
        nbb.layer_forward("lstm", a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                          None, False, True)
        assert seen[-1] == [1] * len(libs)
        assert [lib.get_num_threads() for lib in libs] == before
        # a cell (one step) is left alone
        nbb.cell_forward("lstm", a["x"][0], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], False)
        assert seen[-1] == before
        # restored after an error inside the loop too
        monkeypatch.setattr(nbb, "_fwd_lstm", lambda *args: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            nbb.layer_forward("lstm", a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                              None, False, True)
        assert [lib.get_num_threads() for lib in libs] == before
