"""The compiled backend's own: the raw binding (fastrnn._core), long sequences, threads, other
SIMD paths, the GEMMs. (The contract's behaviour on every backend: tests/test_contract.py.)

* Bad arrays handed straight to ``_core`` raise ValueError / TypeError naming
  the argument, never crash.
* Long sequences (the chunked input projection), every SIMD path and every
  thread count agree with ``fastrnn.backends.reference`` (float64 to 1e-10,
  float32 to 1e-5 of the gradients' scale).
* Results do not depend on the thread count; repeated runs are identical.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

core = pytest.importorskip("fastrnn._core")
if not hasattr(core, "layer_forward"):
    pytest.skip("fastrnn._core was built without the recurrent kernels", allow_module_level=True)

from _helpers import (TOL, assert_close, check_cell_against_reference,  # noqa: E402
                      check_layer_against_reference, layer_args, layer_grads, random_lengths, run_layer)
from conftest import DTYPES  # noqa: E402
from fastrnn.backends import cpp  # noqa: E402
from fastrnn.backends import reference as ref  # noqa: E402
from fastrnn.backends.contract import GATES, KINDS, has_cell_state  # noqa: E402


# --------------------------------------------------------------------------- helpers


def make(kind, T, B, I, H, dtype, bias=True, seed=0):
    """Contract arguments with weights at the layers' initial scale."""
    return layer_args(kind, T, B, I, H, dtype, bias=bias, seed=seed, scale=H ** -0.5)


def check_layer(kind, T, B, I, H, dtype, reverse=False, use_lengths=False, bias=True, seed=0):
    """The cpp backend against the reference (gradients to the tolerance times their scale)."""
    lengths = random_lengths(T, B, seed) if use_lengths else None
    return check_layer_against_reference(cpp, kind, T, B, I, H, dtype, bias=bias, lengths=lengths, reverse=reverse,
                                         seed=seed, scale=H ** -0.5, scaled=True)


# --------------------------------------------------------------------------- parity
# (every kind, dtype, lengths, reverse, keep, cells: tests/test_contract.py)

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
def test_layer_parity_long_sequence(kind, dtype, reverse, use_lengths):
    # T*B*G*H values beyond 2 MB: the input projection runs in chunks of steps
    # and training writes each workspace row once, after the activations
    check_layer(kind, 300, 8, 5, 64, dtype, reverse=reverse, use_lengths=use_lengths)


def test_cell_ws_keeps_own_copy_of_c_new():
    p = make("lstm", 1, 2, 3, 5, np.float64)
    args = ("lstm", p["x"][0], p["h0"], p["c0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], True)
    h, c, ws = cpp.cell_forward(*args)
    gh = np.ones_like(h)
    gc = np.ones_like(c)
    expected = cpp.cell_backward(cpp.cell_forward(*args)[2], gh, gc)
    c[...] = 123.0  # the caller may reuse the returned array
    got = cpp.cell_backward(ws, gh, gc)
    for k in expected:
        if expected[k] is not None:
            np.testing.assert_array_equal(got[k], expected[k])


# --------------------------------------------------------------------------- threads, determinism

THREAD_SHAPES = [(5, 1, 6, 300), (500, 16, 8, 64), (3, 3, 8, 130), (400, 40, 7, 45), (2, 2, 4, 520)]


@pytest.fixture
def restore_threads():
    n = core.get_num_threads()
    yield
    core.set_num_threads(n)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", THREAD_SHAPES, ids=lambda s: "T%d-B%d-I%d-H%d" % s)
def test_thread_count_does_not_change_results(kind, dtype, shape, restore_threads):
    T, B, I, H = shape
    p = make(kind, T, B, I, H, dtype)
    lengths = random_lengths(T, B)
    grads = layer_grads(kind, T, B, H, dtype)
    results = []
    for n in (1, 2, 3, 1):
        core.set_num_threads(n)
        assert core.get_num_threads() == n
        results.append(run_layer(cpp, kind, p, lengths, True, True, grads))
    (o0, h0, c0, _), g0 = results[0]
    for (o, h, c, _), g in results[1:]:
        np.testing.assert_array_equal(o, o0)
        np.testing.assert_array_equal(h, h0)
        if c0 is not None:
            np.testing.assert_array_equal(c, c0)
        for k in g0:
            if g0[k] is None:
                assert g[k] is None
            else:
                # the large GEMMs run in SciPy's BLAS, whose own threads may
                # reorder sums: equal up to float rounding
                np.testing.assert_allclose(g[k], g0[k], rtol=TOL[np.dtype(dtype)], atol=TOL[np.dtype(dtype)])
    check_layer(kind, T, B, I, H, dtype, reverse=True, use_lengths=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("B, H", [(1, 128), (3, 77), (4, 200)])
def test_cell_thread_count_does_not_change_results(kind, dtype, B, H, restore_threads):
    """Cells of B <= 4 split their hidden units between threads from 64K multiply-adds: the
    same bits whatever the thread count, and the reference's values."""
    rng = np.random.default_rng(3)
    G = GATES[kind]
    I = 64
    x, h, c = (rng.standard_normal(s).astype(dtype) for s in ((B, I), (B, H), (B, H)))
    w_ih = (rng.standard_normal((G * H, I)) * 0.2).astype(dtype)
    w_hh = (rng.standard_normal((G * H, H)) * 0.2).astype(dtype)
    b_ih, b_hh = (rng.standard_normal(G * H).astype(dtype) for _ in range(2))
    c = c if has_cell_state(kind) else None
    got = []
    for n in (1, 2, 3, 1):
        core.set_num_threads(n)
        got.append(core.cell_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, True))
    for h_new, c_new, _ in got[1:]:
        np.testing.assert_array_equal(h_new, got[0][0])
        if c is not None:
            np.testing.assert_array_equal(c_new, got[0][1])
    want_h, want_c, _ = ref.cell_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, False)
    np.testing.assert_allclose(got[0][0], want_h, rtol=TOL[np.dtype(dtype)], atol=TOL[np.dtype(dtype)])
    if c is not None:
        np.testing.assert_allclose(got[0][1], want_c, rtol=TOL[np.dtype(dtype)], atol=TOL[np.dtype(dtype)])


def test_set_num_threads_rejects_nonpositive(restore_threads):
    with pytest.raises(ValueError):
        core.set_num_threads(0)
    with pytest.raises(ValueError):
        core.set_num_threads(10**6)
    with pytest.raises((TypeError, ValueError, OverflowError)):
        core.set_num_threads(10**30)
    with pytest.raises((TypeError, ValueError)):
        core.set_num_threads("two")
    cpp.set_num_threads(1)
    assert cpp.get_num_threads() == 1


def test_simd_path_and_gemm_reported():
    assert core.simd_path() in ("avx512", "avx2", "generic")
    assert core.blas_info() in ("scipy.linalg.cython_blas", "built-in")


def test_import_error_without_kernels(monkeypatch):
    """The backend module refuses to import when _core lacks the kernels."""
    import types

    import fastrnn

    fake = types.ModuleType("fastrnn._core")
    monkeypatch.setitem(sys.modules, "fastrnn._core", fake)
    monkeypatch.setattr(fastrnn, "_core", fake, raising=False)
    monkeypatch.delitem(sys.modules, "fastrnn.backends.cpp")
    with pytest.raises(ImportError, match="lacks the recurrent kernels"):
        importlib.import_module("fastrnn.backends.cpp")
    monkeypatch.undo()
    importlib.import_module("fastrnn.backends.cpp")


# --------------------------------------------------------------------------- special values


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
def test_nan_inf_propagate_like_reference(kind, dtype):
    p = make(kind, 4, 3, 5, 6, dtype)
    p["x"][1, 0, 2] = np.nan
    p["x"][2, 1, 0] = np.inf
    p["x"][0, 2, 1] = -np.inf
    with np.errstate(all="ignore"):
        (r_out, r_h, r_c, _), _ = run_layer(ref, kind, p, None, False, keep=False)
    (c_out, c_h, c_c, _), _ = run_layer(cpp, kind, p, None, False, keep=False)
    np.testing.assert_array_equal(np.isnan(c_out), np.isnan(r_out))
    np.testing.assert_array_equal(np.isnan(c_h), np.isnan(r_h))
    fin = np.isfinite(r_out)
    np.testing.assert_allclose(c_out[fin], r_out[fin], rtol=TOL[np.dtype(dtype)], atol=TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_activations_accurate(dtype):
    x = np.concatenate([np.linspace(-40, 40, 200001), np.linspace(-1, 1, 20001),
                        np.geomspace(1e-20, 80, 20001), -np.geomspace(1e-20, 80, 20001)]).astype(dtype)
    ex = x.astype(np.longdouble)
    expected = {"sigmoid": 1 / (1 + np.exp(-ex)), "tanh": np.tanh(ex), "exp": np.exp(np.minimum(ex, 80))}
    for which, want in expected.items():
        arg = np.minimum(x, 80).astype(dtype) if which == "exp" else x
        got = core._activation(which, arg).astype(np.longdouble)
        ulp = np.spacing(np.abs(want.astype(dtype))).astype(np.longdouble)
        ok = want != 0
        assert np.max(np.abs(got - want)[ok] / ulp[ok]) <= 4, which
    special = np.array([np.nan, np.inf, -np.inf, 0.0, 1e4, -1e4], dtype=dtype)
    np.testing.assert_array_equal(core._activation("sigmoid", special), [np.nan, 1, 0, 0.5, 1, 0])
    np.testing.assert_array_equal(core._activation("tanh", special), [np.nan, 1, -1, 0, 1, -1])
    np.testing.assert_array_equal(core._activation("exp", special), [np.nan, np.inf, 0, 1, np.inf, 0])


# --------------------------------------------------------------------------- bad input to the raw binding


def binding_kwargs(kind="lstm", dtype=np.float32, T=3, B=2, I=4, H=5):
    p = make(kind, T, B, I, H, dtype)
    return dict(kind=kind, x=p["x"], h0=p["h0"], c0=p["c0"], w_ih=p["w_ih"], w_hh=p["w_hh"], b_ih=p["b_ih"],
                b_hh=p["b_hh"], lengths=None, reverse=False, keep=True)


def call_layer(**kw):
    a = binding_kwargs()
    a.update(kw)
    return core.layer_forward(a["kind"], a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                              a["lengths"], a["reverse"], a["keep"])


def test_good_call_works():
    out, h, c, ws = call_layer()
    assert out.shape == (3, 2, 5) and h.shape == (2, 5) and c.shape == (2, 5)
    assert type(ws).__name__ == "LayerWorkspace"


A = binding_kwargs()

BAD_LAYER = [
    # (override, exception, message fragment)
    (dict(kind="lstmx"), ValueError, "kind"),
    (dict(x=A["x"].astype(np.float64)), TypeError, "h0"),
    (dict(h0=A["h0"].astype(np.float64)), TypeError, "h0"),
    (dict(c0=A["c0"].astype(np.float64)), TypeError, "c0"),
    (dict(w_ih=A["w_ih"].astype(np.float64)), TypeError, "w_ih"),
    (dict(w_hh=A["w_hh"].astype(np.float16)), TypeError, "w_hh"),
    (dict(b_ih=A["b_ih"].astype(np.float64)), TypeError, "b_ih"),
    (dict(b_hh=A["b_hh"].astype(np.float64)), TypeError, "b_hh"),
    (dict(x=A["x"].astype(np.int32), h0=A["h0"].astype(np.int32)), TypeError, "x"),
    (dict(x=A["x"].astype(np.float16)), TypeError, "x"),
    (dict(x=A["x"].tolist()), TypeError, "x"),
    (dict(x=None), TypeError, "x"),
    (dict(w_hh="weights"), TypeError, "w_hh"),
    (dict(x=np.asfortranarray(A["x"])), ValueError, "x must be C-contiguous"),
    (dict(w_ih=A["w_ih"].T.copy().T), ValueError, "w_ih must be C-contiguous"),
    (dict(h0=A["h0"][:, ::2]), ValueError, "h0"),
    (dict(x=A["x"][0]), ValueError, "x"),
    (dict(x=np.zeros((0, 2, 4), np.float32)), ValueError, "x"),
    (dict(x=np.zeros((3, 0, 4), np.float32), h0=np.zeros((0, 5), np.float32)), ValueError, "x"),
    (dict(h0=A["h0"][:1].copy()), ValueError, "h0"),
    (dict(h0=np.zeros((2, 0), np.float32)), ValueError, "h0"),
    (dict(h0=A["h0"][None]), ValueError, "h0"),
    (dict(c0=None), ValueError, "c0"),
    (dict(c0=A["c0"][:, :4].copy()), ValueError, "c0"),
    (dict(w_ih=A["w_ih"][:, :3].copy()), ValueError, "w_ih"),
    (dict(w_ih=A["w_ih"][:15].copy()), ValueError, "w_ih"),
    (dict(w_hh=A["w_hh"][:, :4].copy()), ValueError, "w_hh"),
    (dict(w_hh=A["w_hh"].ravel()), ValueError, "w_hh"),
    (dict(b_ih=None), ValueError, "b_ih and b_hh"),
    (dict(b_hh=None), ValueError, "b_ih and b_hh"),
    (dict(b_ih=A["b_ih"][:5].copy()), ValueError, "b_ih"),
    (dict(b_hh=A["b_hh"][None]), ValueError, "b_hh"),
    (dict(lengths=np.array([3, 0], np.int64)), ValueError, "lengths"),
    (dict(lengths=np.array([4, 1], np.int64)), ValueError, "lengths"),
    (dict(lengths=np.array([-1, 1], np.int64)), ValueError, "lengths"),
    (dict(lengths=np.array([3, 1, 2], np.int64)), ValueError, "lengths"),
    (dict(lengths=np.array([[3, 1]], np.int64)), ValueError, "lengths"),
    (dict(lengths=np.array([3, 1], np.int32)), TypeError, "lengths"),
    (dict(lengths=np.array([3.0, 1.0])), TypeError, "lengths"),
    (dict(lengths=[3, 1]), TypeError, "lengths"),
    (dict(lengths=np.array([3, 3, 1, 1], np.int64)[::2]), ValueError, "lengths must be C-contiguous"),
]


@pytest.mark.parametrize("override,exc,msg", BAD_LAYER, ids=[str(i) for i in range(len(BAD_LAYER))])
def test_layer_forward_bad_input(override, exc, msg):
    with pytest.raises(exc, match=msg):
        call_layer(**override)


def test_c0_must_be_none_for_gru():
    a = binding_kwargs("gru")
    with pytest.raises(ValueError, match="c0"):
        core.layer_forward("gru", a["x"], a["h0"], a["h0"].copy(), a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                           None, False, False)


def test_unaligned_array_rejected():
    a = binding_kwargs()
    buf = np.zeros(a["x"].size * 4 + 1, np.uint8)
    x = np.frombuffer(buf.data, dtype=np.float32, count=a["x"].size, offset=1).reshape(a["x"].shape)
    assert not x.flags.aligned
    with pytest.raises(ValueError, match="aligned"):
        call_layer(x=x)


def test_read_only_inputs_accepted():
    a = binding_kwargs()
    for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"):
        a[k] = a[k].copy()
        a[k].flags.writeable = False
    out, h, c, ws = call_layer(**{k: a[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")})
    assert np.isfinite(out).all()


def test_lengths_and_byte_order_spellings():
    """The same data under other names: np.longlong lengths (64-bit here), native byte order
    spelled explicitly; a foreign byte order is refused, not misread."""
    out0 = call_layer(lengths=np.array([3, 1], dtype=np.int64))[0]
    np.testing.assert_array_equal(call_layer(lengths=np.array([3, 1], dtype=np.longlong))[0], out0)
    a = binding_kwargs()
    native = "<" if sys.byteorder == "little" else ">"
    foreign = ">" if native == "<" else "<"
    x = a["x"].astype(np.dtype(native + "f4"))
    np.testing.assert_array_equal(call_layer(x=x)[0], call_layer()[0])
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        call_layer(x=a["x"].astype(np.dtype(foreign + "f4")))


def test_layer_backward_bad_input():
    a = binding_kwargs()
    out, h, c, ws = call_layer()
    go, gh, gc = np.zeros_like(out), np.zeros_like(h), np.zeros_like(c)
    with pytest.raises(TypeError, match="grad_out"):
        core.layer_backward(ws, go.astype(np.float64), gh, gc)
    with pytest.raises(TypeError, match="grad_h_n"):
        core.layer_backward(ws, go, gh.tolist(), gc)
    with pytest.raises(ValueError, match="grad_out"):
        core.layer_backward(ws, go[:2].copy(), gh, gc)
    with pytest.raises(ValueError, match="grad_c_n"):
        core.layer_backward(ws, go, gh, gc[:, :2].copy())
    with pytest.raises(ValueError, match="grad_h_n must be C-contiguous"):
        core.layer_backward(ws, go, np.zeros((5, 2), np.float32).T, gc)
    with pytest.raises(TypeError, match="ws"):
        core.layer_backward({"not": "a workspace"}, go, gh, gc)
    with pytest.raises(TypeError, match="ws"):
        core.layer_backward(None, go, gh, gc)
    g = core.layer_backward(ws, go, gh, gc)  # still usable after the failed calls
    assert g["x"].shape == a["x"].shape
    with pytest.raises(ValueError, match="already"):
        core.layer_backward(ws, go, gh, gc)
    # a float64 workspace refuses float32 gradients
    b = binding_kwargs(dtype=np.float64)
    _, _, _, ws64 = core.layer_forward("lstm", b["x"], b["h0"], b["c0"], b["w_ih"], b["w_hh"], b["b_ih"],
                                       b["b_hh"], None, False, True)
    with pytest.raises(TypeError):
        core.layer_backward(ws64, go, gh, gc)
    # gru has no cell state
    r = binding_kwargs("gru")
    o, hh, _, wsg = core.layer_forward("gru", r["x"], r["h0"], None, r["w_ih"], r["w_hh"], r["b_ih"], r["b_hh"],
                                       None, False, True)
    with pytest.raises(ValueError, match="grad_c_n"):
        core.layer_backward(wsg, np.zeros_like(o), np.zeros_like(hh), np.zeros_like(hh))
    assert core.layer_backward(wsg, np.zeros_like(o), np.zeros_like(hh), None)["c0"] is None


def test_cell_bad_input():
    p = make("gru", 1, 2, 3, 4, np.float32)
    x, h = p["x"][0], p["h0"]
    args = [x, h, None, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"]]
    core.cell_forward("gru", *args, False)
    bad = [
        (0, x.astype(np.float64), TypeError, "h"),
        (1, h.astype(np.float64), TypeError, "h"),
        (1, h[:, :3].copy(), ValueError, "h"),
        (0, x[None], ValueError, "x"),
        (0, np.zeros((3, 2), np.float32).T, ValueError, "x must be C-contiguous"),
        (2, h.copy(), ValueError, "c"),
        (3, p["w_ih"][:, :2].copy(), ValueError, "w_ih"),
        (5, None, ValueError, "b_ih and b_hh"),
        (6, p["b_hh"].astype(np.float64), TypeError, "b_hh"),
        (3, "w", TypeError, "w_ih"),
    ]
    for i, val, exc, msg in bad:
        a = list(args)
        a[i] = val
        with pytest.raises(exc, match=msg):
            core.cell_forward("gru", *a, False)
    with pytest.raises(ValueError, match="kind"):
        core.cell_forward("GRU", *args, False)
    with pytest.raises(ValueError, match="c"):
        core.cell_forward("lstm", x, h, None, np.zeros((16, 3), np.float32), np.zeros((16, 4), np.float32),
                          None, None, False)
    hn, cn, ws = core.cell_forward("gru", *args, True)
    with pytest.raises(ValueError, match="grad_h"):
        core.cell_backward(ws, hn[:1].copy(), None)
    with pytest.raises(TypeError, match="grad_h"):
        core.cell_backward(ws, hn.astype(np.float64), None)
    with pytest.raises(ValueError, match="grad_c"):
        core.cell_backward(ws, hn, hn)
    with pytest.raises(TypeError, match="ws"):
        core.cell_backward("ws", hn, None)
    core.cell_backward(ws, hn, None)
    with pytest.raises(ValueError, match="already"):
        core.cell_backward(ws, hn, None)


# --------------------------------------------------------------------------- other SIMD paths

_SIMD_SCRIPT = r"""
import sys
sys.path.insert(0, {testdir!r})
import numpy as np
import test_cpp_binding as t
from fastrnn import _core
assert _core.simd_path() == {isa!r}, _core.simd_path()
for dtype in t.DTYPES:
    t.test_activations_accurate(dtype)
    for kind in t.KINDS:
        for shape in [(1, 1, 1, 1), (5, 3, 4, 7), (4, 9, 3, 70), (3, 13, 5, 33)]:
            t.check_layer(kind, *shape, dtype, reverse=True, use_lengths=True)
            t.check_layer(kind, *shape, dtype)
        t.check_cell_against_reference(t.cpp, kind, 3, 5, 7, dtype, bias=True, scale=7 ** -0.5, scaled=True)
        t.check_cell_against_reference(t.cpp, kind, 7, 3, 20, dtype, bias=False, scale=20 ** -0.5, scaled=True)
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_other_simd_paths_agree(isa):
    """The copies of the kernels for narrower instruction sets (chosen with
    FASTRNN_SIMD, never beyond what the CPU has) agree with the reference too."""
    import os
    import subprocess

    if isa == "avx2" and core.simd_path() == "generic":
        pytest.skip("this CPU has no AVX2")
    testdir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, FASTRNN_SIMD=isa)
    r = subprocess.run([sys.executable, "-c", _SIMD_SCRIPT.format(testdir=testdir, isa=isa)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("ok")


def test_scipy_blas_gemm_agrees():
    """The large products through SciPy's BLAS (cython_blas function pointers)
    give the same results as the built-in GEMM."""
    pytest.importorskip("scipy.linalg.cython_blas")
    try:
        core.set_gemm("scipy")
        assert core.blas_info() == "scipy.linalg.cython_blas"
        for dtype in DTYPES:
            for kind in KINDS:
                check_layer(kind, 7, 9, 5, 33, dtype, reverse=True, use_lengths=True)
                check_layer(kind, 3, 12, 4, 20, dtype, bias=False)
    finally:
        core.set_gemm("builtin")
    assert core.blas_info() == "built-in"
    with pytest.raises(ValueError, match="builtin"):
        core.set_gemm("mkl")


def test_matmul_matches_numpy():
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        for M, N, K in [(1, 1, 1), (7, 33, 5), (70, 65, 300), (13, 200, 1100)]:
            for ta in (False, True):
                for tb in (False, True):
                    a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
                    b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
                    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
                    got = core._matmul(a, b, ta, tb)
                    np.testing.assert_allclose(got, want, rtol=TOL[np.dtype(dtype)] * 10,
                                               atol=TOL[np.dtype(dtype)] * 10 * np.sqrt(K))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_long_inference_matches_training_forward(kind, dtype, reverse, restore_threads):
    """Inference on long sequences computes the input projection in chunks
    (per thread, just before use); it agrees with the training forward, which
    projects all steps at once, and with the reference."""
    T, B, I, H = 400, 24, 5, 40
    p = make(kind, T, B, I, H, dtype)
    lengths = random_lengths(T, B)
    (r_out, r_h, r_c, _), _ = run_layer(ref, kind, p, lengths, reverse, keep=False)
    for n in (1, 2):
        core.set_num_threads(n)
        (out, h, c, _), _ = run_layer(cpp, kind, p, lengths, reverse, keep=False)
        (out_k, h_k, c_k, _), _ = run_layer(cpp, kind, p, lengths, reverse, keep=True)
        np.testing.assert_array_equal(out, out_k)
        np.testing.assert_array_equal(h, h_k)
        assert_close(out, r_out, "out", scaled=True)
        assert_close(h, r_h, "h_n", scaled=True)
        assert_close(c, r_c, "c_n", scaled=True)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_threads_survive_fork(restore_threads):
    """The kernels' task pool starts afresh in a forked child (no hang)."""
    import os

    core.set_num_threads(2)
    p = make("lstm", 200, 64, 8, 64, np.float32)
    (a, _, _, _), _ = run_layer(cpp, "lstm", p, None, False, keep=False)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            (c, _, _, _), _ = run_layer(cpp, "lstm", p, None, False, keep=False)
            os._exit(0 if np.array_equal(a, c) else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    (b, _, _, _), _ = run_layer(cpp, "lstm", p, None, False, keep=False)
    np.testing.assert_array_equal(a, b)
