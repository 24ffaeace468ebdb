"""What is the Numba backend's own: strided and read-only inputs, its boundary errors, its
threads, its compilation, its sigmoid/tanh. The contract's behaviour (agreement with the NumPy
reference for every kind, dtype, lengths, reverse, keep, cells, gradients) is tests/test_contract.py,
which runs on every backend."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import numpy as np
import pytest

from _helpers import assert_close, layer_args, tol
from conftest import DTYPES
from fastrnn.backends import reference as ref

nbb = pytest.importorskip("fastrnn.backends.numba", reason="numba is not installed")


def test_readonly_inputs_accepted_strided_refused():
    """The contract's array rule (backends/_args.py): read-only arrays are arrays like any other
    (Numba gets a copy); a strided one is refused, as on every backend."""
    rng = np.random.default_rng(5)
    a = layer_args("lstm", 4, 3, 2, 5, np.float64, rng=rng)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        nbb.layer_forward("lstm", np.asfortranarray(a["x"]), a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"],
                          a["b_hh"], None, False, True)
    x = a["x"].copy()
    x.setflags(write=False)
    w_hh = a["w_hh"].copy()
    w_hh.setflags(write=False)
    got = nbb.layer_forward("lstm", x, a["h0"], a["c0"], a["w_ih"], w_hh, a["b_ih"], a["b_hh"], None, False, True)
    want = ref.layer_forward("lstm", a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], None,
                             False, True)
    assert_close(got[0], want[0], "out")
    g = np.ones((4, 3, 5))
    g.setflags(write=False)
    grads = nbb.layer_backward(got[3], g, np.zeros((3, 5)), np.zeros((3, 5)))
    want_grads = ref.layer_backward(want[3], g, np.zeros((3, 5)), np.zeros((3, 5)))
    assert_close(grads["w_hh"], want_grads["w_hh"], "w_hh")


def test_boundary_errors():
    rng = np.random.default_rng(0)
    a = layer_args("gru", 3, 2, 2, 4, np.float64, rng=rng)
    args = [a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]]
    with pytest.raises(ValueError, match="kind"):
        nbb.layer_forward("lstmx", *args, None, False, False)
    with pytest.raises(TypeError, match="h0 must have dtype float64"):
        nbb.layer_forward("gru", a["x"], a["h0"].astype(np.float32), *args[2:], None, False, False)
    with pytest.raises(TypeError, match="x must be a numpy.ndarray of dtype float32 or float64"):
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
            np.testing.assert_allclose(g, w, **tol(dtype))


def test_import_compiles_nothing():
    """Importing the backend is cheap: kernels compile (or load from cache) on first call."""
    code = (
        "import sys\n"
        "import fastrnn.backends.numba\n"
        "mods = [m for name, m in sys.modules.items() if name.startswith('fastrnn.backends.numba.')]\n"
        "ks = [v for m in mods for v in vars(m).values() if hasattr(v, 'signatures') and hasattr(v, 'py_func')]\n"
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

    from fastrnn.backends.numba import _math as nb_math

    @numba.njit
    def sig(a, out):
        for i in range(a.shape[0]):
            out[i] = nb_math.sigmoid(a[i])

    @numba.njit
    def tanh(a, out):
        for i in range(a.shape[0]):
            out[i] = nb_math.tanh(a[i])

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
    from fastrnn.backends.numba import _layer

    real = _layer.forward_loop

    def spy(*args):
        seen.append([lib.get_num_threads() for lib in libs])
        return real(*args)

    monkeypatch.setattr(_layer, "forward_loop", spy)
    a = layer_args("lstm", 5, 3, 4, 6, np.float64, rng=np.random.default_rng(0))
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
        monkeypatch.setattr(_layer, "forward_loop", lambda *args: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            nbb.layer_forward("lstm", a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                              None, False, True)
        assert [lib.get_num_threads() for lib in libs] == before
