"""The backend contract (``fastrnn/backends/contract.py``): every place that restates it, and one
suite of its behaviour that every backend runs.

* The kinds and gate counts: the C ABI's ``enum fastrnn_kind`` and
  ``fastrnn_num_gates``, and the tables of the ``_core`` binding, accept
  exactly :data:`contract.KINDS` with :data:`contract.GATES`.
* Each available backend module conforms to :class:`contract.Backend`, with
  the protocol's parameter names, order and defaults.
* On every backend (numpy, numba, cpp) and the C ABI (``fastrnn.capi``):
  shapes and dtypes, lengths, reverse, keep=False, acc, None gradients, the
  one rule of what arrays a backend accepts (the same errors everywhere),
  agreement with the NumPy reference (float64 to 1e-10, float32 to 1e-5) and
  float64 gradients against finite differences.
"""

from __future__ import annotations

import importlib
import inspect
import re
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _helpers import (cell_args, check_cell_against_reference, check_layer_against_reference, contract_module_of,
                      layer_args, layer_grads, numeric_grad, random_lengths, run_layer, tol)
from conftest import DTYPES
from fastrnn import backends
from fastrnn.backends import contract, reference
from fastrnn.backends.contract import CELL_GRAD_KEYS, GATES, KINDS, LAYER_GRAD_KEYS, has_cell_state

# --------------------------------------------------------------------------- the kinds


def test_kind_table_is_consistent():
    assert KINDS == ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_orig", "lstm_cifg")
    assert GATES == {k: len(contract.SPECS[k].gate_names) for k in KINDS}
    assert [k for k in KINDS if contract.has_cell_state(k)] == ["lstm", "lstm_cifg"]
    for bad in ("LSTM", "lstmx", None, 3):
        with pytest.raises(ValueError, match="kind must be one of"):
            contract.num_gates(bad)


def test_c_abi_kind_enum_is_the_contracts():
    capi = pytest.importorskip("fastrnn.capi", reason="the C ABI is not installed", exc_type=ImportError)
    enum = capi.ffi.typeof("enum fastrnn_kind").relements  # name -> value, as the header declares them
    assert {name.removeprefix("FASTRNN_").lower(): code for name, code in enum.items()} == \
        {kind: i for i, kind in enumerate(KINDS)}
    assert capi.KIND_CODES == {kind: i for i, kind in enumerate(KINDS)}
    for kind, code in capi.KIND_CODES.items():
        assert capi.lib.fastrnn_num_gates(code) == GATES[kind], kind
    for code in (-1, len(KINDS), len(KINDS) + 1):
        assert capi.lib.fastrnn_num_gates(code) == -1


def test_source_header_kind_enum_is_the_contracts():
    """The header in a source checkout (what the C++ is built from), whether or not it is installed."""
    header = Path(__file__).resolve().parents[1] / "csrc" / "include" / "fastrnn" / "fastrnn.h"
    if not header.exists():
        pytest.skip("not a source checkout")
    cffi = pytest.importorskip("cffi")
    block = re.search(r"enum fastrnn_kind\s*\{[^}]*\};", header.read_text())
    assert block, f"{header} declares no enum fastrnn_kind"
    ffi = cffi.FFI()
    ffi.cdef(block.group(0))
    enum = ffi.typeof("enum fastrnn_kind").relements
    assert {name.removeprefix("FASTRNN_").lower(): code for name, code in enum.items()} == \
        {kind: i for i, kind in enumerate(KINDS)}


def _core_or_skip():
    core = pytest.importorskip("fastrnn._core", reason="the compiled extension is not installed")
    if not hasattr(core, "layer_forward"):
        pytest.skip("fastrnn._core was built without the recurrent kernels")
    return core


def _binding_args(kind, G, cell):
    B, I, H = 2, 3, 4
    x = np.zeros((B, I) if cell else (2, B, I))
    c = np.zeros((B, H)) if contract.has_cell_state(kind) else None
    return [kind, x, np.zeros((B, H)), c, np.zeros((G * H, I)), np.zeros((G * H, H)), None, None]


@pytest.mark.parametrize("cell", [False, True], ids=["layer", "cell"])
def test_core_binding_accepts_exactly_the_contracts_kinds(cell):
    core = _core_or_skip()
    call = (lambda *a: core.cell_forward(*a, False)) if cell else (lambda *a: core.layer_forward(*a, None, False, False))
    for kind in KINDS:
        call(*_binding_args(kind, GATES[kind], cell))  # accepted with the contract's gate count
        for G in (GATES[kind] - 1, GATES[kind] + 1):
            if G >= 1:
                with pytest.raises(ValueError, match="w_ih"):
                    call(*_binding_args(kind, G, cell))
    with pytest.raises(ValueError, match="kind must be one of") as err:
        call(*_binding_args("not_a_kind", 1, cell))
    listed = re.findall(r"'(\w+)'", str(err.value).split("got")[0])
    assert tuple(listed) == KINDS


# --------------------------------------------------------------------------- the Backend protocol

PROTOCOL_FUNCTIONS = ("layer_forward", "layer_backward", "cell_forward", "cell_backward")


def _params(sig):
    """(name, kind, has default, default) of each parameter, without the protocol's ``self``."""
    return [(p.name, p.kind, p.default is not p.empty, None if p.default is p.empty else p.default)
            for p in sig.parameters.values() if p.name != "self"]


def _signature(func):
    """The signature of a Python function, or of a pybind11 function from the first line of its
    docstring (pybind11 writes ``name(arg: type, arg: type = default) -> ret`` there)."""
    try:
        return inspect.signature(func)
    except ValueError:
        head = func.__doc__.splitlines()[0]
        args = head[head.index("(") + 1: head.rindex(") ->")]
        names = []
        for part in re.split(r",\s*(?![^\[]*\])", args) if args else []:
            name, _, rest = part.partition(":")
            default = rest.partition("=")[2].strip()
            names.append(f"{name.strip()}={default}" if default else name.strip())
        scope: dict = {}
        exec(f"def f({', '.join(names)}): pass", scope)  # noqa: S102 - the binding's own parameter list
        return inspect.signature(scope["f"])


@pytest.mark.parametrize("name", backends.PREFERENCE)
def test_backend_module_conforms_to_the_protocol(name):
    if name not in backends.available_backends():
        pytest.skip(f"backend {name} is not available: {backends.unavailable_backends().get(name)}")
    mod = importlib.import_module(backends._MODULES[name])
    assert isinstance(mod, contract.Backend)
    assert mod.NAME == name
    assert mod.KINDS == KINDS
    for fn in PROTOCOL_FUNCTIONS:
        assert _params(_signature(getattr(mod, fn))) == _params(inspect.signature(getattr(contract.Backend, fn))), fn
    if hasattr(mod, "set_num_threads"):
        assert isinstance(mod, contract.ThreadedBackend)
        assert _params(_signature(mod.set_num_threads)) == \
            _params(inspect.signature(contract.ThreadedBackend.set_num_threads))


def test_signature_check_can_fail():
    """The conformance check above sees a renamed parameter, a lost default and a missing function."""
    ref = importlib.import_module("fastrnn.backends.reference")
    want = _params(inspect.signature(contract.Backend.layer_backward))

    def renamed(ws, grad_out, grad_h, grad_c_n, acc=None):
        pass

    def no_default(ws, grad_out, grad_h_n, grad_c_n, acc):
        pass

    assert _params(_signature(ref.layer_backward)) == want
    assert _params(_signature(renamed)) != want
    assert _params(_signature(no_default)) != want
    assert not isinstance(object(), contract.Backend)


# --------------------------------------------------------------------------- the suite every backend runs
# The backends of this install, and the C ABI through fastrnn.capi where the compiled extension has it
# (it has no ``acc``: the tests of acc skip it).

@pytest.fixture
def impl(contract_module):
    """A module that implements the contract: a backend, or ``fastrnn.capi`` (conftest.contract_modules)."""
    return contract_module_of(contract_module)


def _with_acc(impl):
    if not hasattr(impl, "NAME"):
        pytest.skip("the C ABI's layer_backward has no acc")
    return impl


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("lengths", [None, [3, 5, 1, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("keep", [True, False], ids=["train", "infer"])
def test_layer_matches_reference(impl, kind, dtype, bias, lengths, reverse, keep):
    L = None if lengths is None else np.array(lengths, dtype=np.int64)
    seed = zlib.crc32(repr((kind, bias, reverse, lengths, keep)).encode())
    check_layer_against_reference(impl, kind, 5, 4, 3, 6, dtype, bias=bias, lengths=L, reverse=reverse, keep=keep,
                                  seed=seed)


# sizes where the kernels take their vector paths and tails and BLAS its blocked ones (T, B, I, H)
LARGER = [(1, 1, 1, 1), (5, 3, 4, 7), (7, 6, 5, 33), (4, 9, 3, 70), (3, 2, 8, 130), (9, 7, 33, 40)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", LARGER, ids=lambda s: "T%d-B%d-I%d-H%d" % s)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
def test_layer_matches_reference_at_larger_sizes(impl, kind, dtype, shape, reverse, use_lengths):
    """Weights at the layers' initial scale, so that float32 rounding is not amplified by an
    exploding recurrence."""
    T, B, I, H = shape
    L = random_lengths(T, B) if use_lengths else None
    check_layer_against_reference(impl, kind, T, B, I, H, dtype, lengths=L, reverse=reverse, scale=H ** -0.5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), dtype=st.sampled_from(DTYPES), T=st.integers(1, 6), B=st.integers(1, 6),
       I=st.integers(1, 9), H=st.integers(1, 40), bias=st.booleans(), reverse=st.booleans(), keep=st.booleans(),
       data=st.data())
def test_layer_matches_reference_random_sizes(impl, kind, dtype, T, B, I, H, bias, reverse, keep, data):
    lengths = data.draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B), label="lengths")
    L = None if lengths is None else np.array(lengths, dtype=np.int64)
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    check_layer_against_reference(impl, kind, T, B, I, H, dtype, bias=bias, lengths=L, reverse=reverse, keep=keep,
                                  seed=seed, scale=min(0.5, H ** -0.5))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("B,I,H", [(1, 1, 1), (3, 4, 5), (3, 5, 7), (1, 64, 128), (4, 9, 33), (7, 3, 20), (16, 8, 40)])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("keep", [True, False], ids=["train", "infer"])
def test_cell_matches_reference(impl, kind, dtype, B, I, H, bias, keep):
    check_cell_against_reference(impl, kind, B, I, H, dtype, bias=bias, keep=keep, seed=11, scale=min(0.5, H ** -0.5))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_keep_false_keeps_nothing_and_computes_the_same(impl, kind, dtype):
    """Inference: no workspace, and bit for bit the outputs of the training forward."""
    a = layer_args(kind, 6, 4, 5, 12, dtype)
    L = random_lengths(6, 4)
    (out, h, c, ws), _ = run_layer(impl, kind, a, L, False, keep=False)
    assert ws is None
    (out2, h2, c2, ws2), _ = run_layer(impl, kind, a, L, False, keep=True)
    assert ws2 is not None
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(h, h2)
    if has_cell_state(kind):
        np.testing.assert_array_equal(c, c2)
    else:
        assert c is None and c2 is None
    h_new, c_new, cws = impl.cell_forward(kind, a["x"][0], a["h0"], a["c0"], *list(a.values())[3:], False)
    assert cws is None
    np.testing.assert_array_equal(h_new, impl.cell_forward(kind, a["x"][0], a["h0"], a["c0"],
                                                           *list(a.values())[3:], True)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_keep_false_stores_nothing_for_backward(impl, kind):
    """What a forward leaves allocated besides its outputs (NumPy reports its arrays, and the compiled
    backend its blocks, to tracemalloc): a few hundred bytes with keep=False, at least the T*B*H
    hidden states with keep=True."""
    T, B, I, H = 200, 8, 4, 32
    a = layer_args(kind, T, B, I, H, np.float64)
    impl.layer_forward(kind, *a.values(), None, False, True)  # compiled and warm
    retained = {}
    for keep in (False, True):
        tracemalloc.start()
        try:
            result = impl.layer_forward(kind, *a.values(), None, False, keep)
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        retained[keep] = held - sum(r.nbytes for r in result[:3] if r is not None)
        del result
    assert retained[False] < 16 * 1024, retained
    assert retained[True] >= T * B * H * 8, retained


@pytest.mark.parametrize("kind", KINDS)
def test_each_dtype_computes_in_itself(impl, kind):
    """float32 in, float32 out (forward, every gradient, cells), and close to the float64 result."""
    a64 = layer_args(kind, 3, 2, 2, 2, np.float64, seed=1)
    a32 = {k: None if v is None else v.astype(np.float32) for k, v in a64.items()}
    results = {}
    for dtype, a in ((np.float32, a32), (np.float64, a64)):
        (out, h, c, ws), g = run_layer(impl, kind, a, None, False, True, layer_grads(kind, 3, 2, 2, dtype))
        assert out.dtype == h.dtype == dtype
        assert c is None or c.dtype == dtype
        assert all(v.dtype == dtype for v in g.values() if v is not None)
        h_new, c_new, cws = impl.cell_forward(kind, a["x"][0], *list(a.values())[1:], True)
        assert h_new.dtype == dtype and (c_new is None or c_new.dtype == dtype)
        cg = impl.cell_backward(cws, np.ones_like(h_new), None if c_new is None else np.ones_like(c_new))
        assert all(v.dtype == dtype for v in cg.values() if v is not None)
        results[np.dtype(dtype)] = out
    np.testing.assert_allclose(results[np.dtype(np.float32)], results[np.dtype(np.float64)], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_lengths_equal_running_each_sequence_alone(impl, kind, reverse):
    """A padded batch with lengths gives what each sequence gives when run alone, unpadded: the
    state is carried over padded steps, their output is zero, reverse starts at each sequence's end."""
    T, B, I, H = 6, 4, 3, 5
    a = layer_args(kind, T, B, I, H, np.float64, seed=3, scale=0.6)
    lengths = np.array([6, 1, 3, 5], dtype=np.int64)
    out, h, c, _ = impl.layer_forward(kind, *a.values(), lengths, reverse, False)
    for b, n in enumerate(lengths):
        ob, hb, cb, _ = impl.layer_forward(kind, np.ascontiguousarray(a["x"][:n, b:b + 1]), a["h0"][b:b + 1].copy(),
                                           None if a["c0"] is None else a["c0"][b:b + 1].copy(), a["w_ih"],
                                           a["w_hh"], a["b_ih"], a["b_hh"], None, reverse, False)
        np.testing.assert_allclose(out[:n, b], ob[:, 0], rtol=1e-12, atol=1e-12)
        assert np.all(out[n:, b] == 0)
        np.testing.assert_allclose(h[b], hb[0], rtol=1e-12, atol=1e-12)
        if c is not None:
            np.testing.assert_allclose(c[b], cb[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_nan_and_inf_propagate_like_the_reference(impl, kind, dtype):
    a = layer_args(kind, 4, 3, 5, 6, dtype, seed=3)
    a["x"][1, 0, 2] = np.nan
    a["x"][2, 1, 0] = np.inf
    a["x"][0, 2, 1] = -np.inf
    with np.errstate(all="ignore"):
        want = reference.layer_forward(kind, *a.values(), None, False, False)
        got = impl.layer_forward(kind, *a.values(), None, False, False)
    for g, w in zip(got[:3], want[:3]):
        if w is not None:
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
            np.testing.assert_allclose(g, w, equal_nan=True, **tol(dtype))
    assert np.isnan(got[0][1:, 0]).all()  # a NaN input poisons the rest of its sequence


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("lengths", [None, [4, 2, 1]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_layer_gradient_matches_finite_differences(impl, kind, bias, lengths, reverse):
    T, B, I, H = 4, 3, 2, 3
    args = layer_args(kind, T, B, I, H, np.float64, bias=bias, scale=0.6,
                      seed=zlib.crc32(repr((kind, bias, reverse, lengths)).encode()))
    L = None if lengths is None else np.array(lengths, dtype=np.int64)
    go, gh, gc = layer_grads(kind, T, B, H, np.float64, seed=1)

    def loss():
        out, h, c, _ = impl.layer_forward(kind, *args.values(), L, reverse, False)
        return np.sum(out * go) + np.sum(h * gh) + (np.sum(c * gc) if c is not None else 0.0)

    _, _, _, ws = impl.layer_forward(kind, *args.values(), L, reverse, True)
    grads = impl.layer_backward(ws, go, gh, gc)
    assert set(grads) == set(LAYER_GRAD_KEYS)
    for name in LAYER_GRAD_KEYS:
        if args.get(name) is None:  # no bias, c0 of other kinds; no peepholes (tests/test_peepholes.py)
            assert grads[name] is None, name
            continue
        np.testing.assert_allclose(grads[name], numeric_grad(loss, args, name), rtol=1e-6, atol=1e-7,
                                   err_msg=f"{kind} d{name}")
    if L is not None:  # padded steps get exactly zero gradient into x
        for b, n in enumerate(L):
            assert np.all(grads["x"][n:, b] == 0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_gradient_matches_finite_differences(impl, kind, bias):
    B, I, H = 3, 4, 3
    args = cell_args(kind, B, I, H, np.float64, bias=bias, seed=7, scale=0.6)
    rng = np.random.default_rng(8)
    gh = rng.standard_normal((B, H))
    gc = rng.standard_normal((B, H)) if has_cell_state(kind) else None

    def loss():
        h, c, _ = impl.cell_forward(kind, *args.values(), False)
        return np.sum(h * gh) + (np.sum(c * gc) if c is not None else 0.0)

    _, _, ws = impl.cell_forward(kind, *args.values(), True)
    grads = impl.cell_backward(ws, gh, gc)
    assert set(grads) == set(CELL_GRAD_KEYS)
    for name in CELL_GRAD_KEYS:
        if args.get(name) is None:  # no bias, c of other kinds; no peepholes (tests/test_peepholes.py)
            assert grads[name] is None, name
            continue
        np.testing.assert_allclose(grads[name], numeric_grad(loss, args, name), rtol=1e-6, atol=1e-7,
                                   err_msg=f"{kind} d{name}")


def _acc_forward(impl, kind, dtype, T=4, B=3, I=5, H=6, lengths=None):
    a = layer_args(kind, T, B, I, H, dtype)
    ws = impl.layer_forward(kind, *a.values(), lengths, False, True)[3]
    return ws, layer_grads(kind, T, B, H, dtype), (a["w_ih"], a["w_hh"])


@pytest.mark.parametrize("kind", KINDS)
def test_acc_adds_in_place(impl, kind, dtype):
    impl = _with_acc(impl)
    lengths = np.array([4, 2, 3], dtype=np.int64)
    ws, grads, (w_ih, w_hh) = _acc_forward(impl, kind, dtype, lengths=lengths)
    fresh = impl.layer_backward(ws, *grads)
    ws, grads, _ = _acc_forward(impl, kind, dtype, lengths=lengths)
    rng = np.random.default_rng(1)
    acc = (rng.standard_normal(w_ih.shape).astype(dtype), rng.standard_normal(w_hh.shape).astype(dtype))
    start = (acc[0].copy(), acc[1].copy())
    got = impl.layer_backward(ws, *grads, acc=acc)
    assert got["w_ih"] is acc[0] and got["w_hh"] is acc[1]
    np.testing.assert_allclose(acc[0], start[0] + fresh["w_ih"], **tol(dtype))
    np.testing.assert_allclose(acc[1], start[1] + fresh["w_hh"], **tol(dtype))
    for k in ("x", "h0", "c0", "b_ih", "b_hh"):
        if fresh[k] is None:
            assert got[k] is None
        else:
            np.testing.assert_allclose(got[k], fresh[k], **tol(dtype))


def test_bad_acc_raises_before_consuming(impl):
    impl = _with_acc(impl)
    F = np.float32
    ws, grads, (w_ih, w_hh) = _acc_forward(impl, "gru", F)
    good = (np.zeros_like(w_ih), np.zeros_like(w_hh))
    bad = [
        (good[0], TypeError, "acc must be None or a pair"),
        ((good[0],), TypeError, "acc must be None or a pair"),
        ((good[0].astype(np.float64), good[1]), TypeError, "acc\\[0\\] \\(w_ih\\).*float32"),
        ((good[0], np.zeros((w_hh.shape[1], w_hh.shape[0]), F).T), TypeError, "acc\\[1\\] \\(w_hh\\).*C-contiguous"),
        ((good[0], good[1][:-1]), ValueError, "acc\\[1\\] \\(w_hh\\) must have shape"),
        ((good[0], good[0]), ValueError, "acc\\[1\\] \\(w_hh\\) must have shape"),
        ((w_ih, good[1]), ValueError, "acc\\[0\\] \\(w_ih\\) shares memory"),
    ]
    ro = np.zeros_like(w_ih)
    ro.flags.writeable = False
    bad.append(((ro, good[1]), ValueError, "acc\\[0\\] \\(w_ih\\) must be writeable"))
    for acc, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            impl.layer_backward(ws, *grads, acc=acc)
    got = impl.layer_backward(ws, *grads, acc=good)  # still usable after the rejected calls
    assert got["w_ih"] is good[0]
    assert np.abs(good[0]).sum() > 0


def test_acc_sharing_memory_with_a_gradient_argument_rejected(impl):
    impl = _with_acc(impl)
    F = np.float64
    ws, grads, (w_ih, w_hh) = _acc_forward(impl, "rnn_tanh", F, T=6, B=6, I=6, H=6)
    go = np.zeros((6, 6, 6), F)
    shared = go[0]  # acc[1] is [6, 6]: a view of grad_out's first step
    with pytest.raises(ValueError, match="acc\\[1\\] \\(w_hh\\) shares memory"):
        impl.layer_backward(ws, go, grads[1], None, acc=(np.zeros_like(w_ih), shared))


# --------------------------------------------------------------------------- None gradients
# A None gradient argument means a zero gradient, on every backend (contract.Backend.layer_backward).


@pytest.mark.parametrize("kind", KINDS)
def test_none_gradients_mean_zero(impl, kind):
    a = cell_args(kind, 2, 4, 5, np.float64, seed=0)
    zeros = np.zeros((2, 5))
    g = impl.cell_backward(impl.cell_forward(kind, *a.values(), True)[2], None, None)
    g0 = impl.cell_backward(impl.cell_forward(kind, *a.values(), True)[2], zeros,
                            zeros if has_cell_state(kind) else None)
    for k in ("x", "h", "w_ih", "w_hh", "b_ih", "b_hh"):
        np.testing.assert_array_equal(g[k], g0[k], err_msg=f"cell {k}")
    T, B, I, H = 3, 2, 4, 5
    a = layer_args(kind, T, B, I, H, np.float64, seed=1)
    g = impl.layer_backward(impl.layer_forward(kind, *a.values(), None, False, True)[3], None, None, None)
    g0 = impl.layer_backward(impl.layer_forward(kind, *a.values(), None, False, True)[3], np.zeros((T, B, H)),
                             np.zeros((B, H)), np.zeros((B, H)) if has_cell_state(kind) else None)
    for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"):
        np.testing.assert_array_equal(g[k], g0[k], err_msg=f"layer {k}")


def test_cell_backward_errors_name_the_cell_arguments(impl):
    a = cell_args("lstm", 2, 4, 5, np.float64, seed=0)
    with pytest.raises(ValueError, match="grad_h"):
        impl.cell_backward(impl.cell_forward("lstm", *a.values(), True)[2], np.zeros((7, 7)), None)
    with pytest.raises(ValueError, match="grad_c"):
        impl.cell_backward(impl.cell_forward("lstm", *a.values(), True)[2], None, np.zeros((7, 7)))


# --------------------------------------------------------------------------- the array rule
# One rule for what a backend accepts (contract.py, "Arrays"; backends/_args.py and the cpp
# binding's arrays.h): the same exception type, naming the same argument, on every backend.


def _misaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    m = buf[1:].view(a.dtype).reshape(a.shape)
    m[...] = a
    return m


def _swapped(a):
    return a.astype(a.dtype.newbyteorder())


# (name, argument, how to spoil it, exception): layer_forward of an lstm in float64
BAD_LAYER_ARGS = [
    ("list", "x", lambda a: a.tolist(), TypeError),
    ("int", "x", lambda a: a.astype(np.int64), TypeError),
    ("byteswapped", "x", _swapped, TypeError),
    ("strided", "x", lambda a: np.repeat(a, 2, axis=2)[:, :, ::2], ValueError),
    ("misaligned", "x", _misaligned, ValueError),
    ("other-dtype", "h0", lambda a: a.astype(np.float32), TypeError),
    ("byteswapped", "h0", _swapped, TypeError),
    ("list", "c0", lambda a: a.tolist(), TypeError),
    ("none", "c0", lambda a: None, ValueError),
    ("fortran", "w_ih", np.asfortranarray, ValueError),
    ("misaligned", "w_hh", _misaligned, ValueError),
    ("shape", "w_hh", lambda a: a[:-1], ValueError),
    ("other-dtype", "b_ih", lambda a: a.astype(np.float32), TypeError),
    ("strided", "b_hh", lambda a: np.repeat(a, 2)[::2], ValueError),
    ("int32", "lengths", lambda a: a.astype(np.int32), TypeError),
    ("float", "lengths", lambda a: a.astype(np.float64), TypeError),
    ("strided", "lengths", lambda a: np.repeat(a, 2)[::2], ValueError),
    ("range", "lengths", lambda a: a + 10, ValueError),
]


@pytest.mark.parametrize("case, arg, spoil, exc", BAD_LAYER_ARGS, ids=[f"{c[1]}-{c[0]}" for c in BAD_LAYER_ARGS])
def test_every_backend_refuses_the_same_arrays(impl, case, arg, spoil, exc):
    a = layer_args("lstm", 3, 4, 5, 6, np.float64)
    a["lengths"] = np.array([3, 1, 2, 3], dtype=np.int64)
    a[arg] = spoil(a[arg])
    with pytest.raises(exc, match=rf"\b{arg}\b"):
        impl.layer_forward("lstm", *a.values(), False, True)


BAD_GRADS = [
    ("strided", "grad_out", lambda g: np.repeat(g, 2, axis=2)[:, :, ::2], ValueError),  # rows not adjacent
    ("other-dtype", "grad_out", lambda g: g.astype(np.float32), TypeError),
    ("list", "grad_h_n", lambda g: g.tolist(), TypeError),
    ("fortran", "grad_c_n", np.asfortranarray, ValueError),
    ("shape", "grad_c_n", lambda g: g[:, :-1], ValueError),
]


@pytest.mark.parametrize("case, arg, spoil, exc", BAD_GRADS, ids=[f"{c[1]}-{c[0]}" for c in BAD_GRADS])
def test_every_backend_refuses_the_same_gradient_arrays(impl, case, arg, spoil, exc):
    T, B, I, H = 3, 4, 5, 6
    ws = impl.layer_forward("lstm", *layer_args("lstm", T, B, I, H, np.float64).values(), None, False, True)[3]
    grads = dict(zip(("grad_out", "grad_h_n", "grad_c_n"), layer_grads("lstm", T, B, H, np.float64)))
    grads[arg] = spoil(grads[arg])
    with pytest.raises(exc, match=rf"\b{arg}\b"):
        impl.layer_backward(ws, *grads.values())
    good = dict(zip(("grad_out", "grad_h_n", "grad_c_n"), layer_grads("lstm", T, B, H, np.float64)))
    impl.layer_backward(ws, *good.values())  # a refused call consumed nothing


def test_every_backend_accepts_read_only_arrays(impl):
    a = layer_args("gru", 3, 4, 5, 6, np.float64)
    want = impl.layer_forward("gru", *a.values(), None, False, False)[0]
    for v in a.values():
        if v is not None:
            v.flags.writeable = False
    np.testing.assert_array_equal(impl.layer_forward("gru", *a.values(), None, False, False)[0], want)


@pytest.mark.parametrize("kind", KINDS)
def test_cell_workspace_holds_copies_of_the_inputs(impl, kind):
    """contract.Backend.cell_forward: writing into x, h, c after the call changes nothing of its
    backward (the layers rely on it and copy nothing themselves)."""
    a = cell_args(kind, 2, 4, 5, np.float64, seed=3)
    g = (np.ones((2, 5)), np.ones((2, 5)) if has_cell_state(kind) else None)
    want = impl.cell_backward(impl.cell_forward(kind, *a.values(), True)[2], *g)
    _, _, ws = impl.cell_forward(kind, *a.values(), True)
    for name in ("x", "h", "c"):
        if a[name] is not None:
            a[name] *= -3.0
    got = impl.cell_backward(ws, *g)
    for k in CELL_GRAD_KEYS:
        if want[k] is not None:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# --------------------------------------------------------------------------- out and grad_out at row strides
# Layouts of layer_forward's ``out`` and layer_backward's ``grad_out`` [T, B, H]: a view into a larger
# buffer filled with NaN, so that a write outside the view shows.

def _row_views(T, B, H, dtype):
    """(name, buffer, [T, B, H] view of it) for each layout the layers use."""
    def buf(*shape):
        return np.full(shape, np.nan, dtype=dtype)

    dense, bi, bf, bf_bi = buf(T, B, H), buf(T, B, 2 * H), buf(B, T, H), buf(B, T, 2 * H)
    return [("dense", dense, dense), ("bidir-forward-half", bi, bi[:, :, :H]), ("bidir-reverse-half", bi, bi[:, :, H:]),
            ("batch-first", bf, bf.transpose(1, 0, 2)), ("batch-first-bidir-half", bf_bi, bf_bi.transpose(1, 0, 2)[:, :, H:])]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lengths", [None, [5, 2, 1, 5]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_out_and_grad_out_at_row_strides(impl, kind, dtype, lengths, reverse):
    """layer_forward writes exactly the view it is given (the same object comes back, every element of
    it written, nothing around it), bit for bit what it returns without ``out``; layer_backward reads a
    strided grad_out as it reads the same values dense."""
    T, B, I, H = 5, 4, 3, 6
    a = layer_args(kind, T, B, I, H, dtype, seed=5)
    L = None if lengths is None else np.array(lengths, dtype=np.int64)
    grads = layer_grads(kind, T, B, H, dtype, seed=5)
    for keep in (False, True):
        want, want_h, want_c, ws = impl.layer_forward(kind, *a.values(), L, reverse, keep)
        want_g = impl.layer_backward(ws, *grads) if keep else None
        for name, buf, view in _row_views(T, B, H, dtype):
            buf[...] = np.nan
            got, h, c, ws = impl.layer_forward(kind, *a.values(), L, reverse, keep, out=view)
            assert got is view, name
            np.testing.assert_array_equal(view, want, err_msg=name)
            assert np.isnan(buf).sum() == buf.size - view.size, f"{name}: written outside out"
            np.testing.assert_array_equal(h, want_h, err_msg=name)
            if want_c is not None:
                np.testing.assert_array_equal(c, want_c, err_msg=name)
            if keep:
                buf[...] = np.nan
                view[...] = grads[0]  # the same gradient, at this layout's strides
                got_g = impl.layer_backward(ws, view, *grads[1:])
                for k, v in want_g.items():
                    if v is None:
                        assert got_g[k] is None
                    else:
                        np.testing.assert_array_equal(got_g[k], v, err_msg=f"{name} d{k}")


def test_grad_out_rows_may_repeat(impl):
    """grad_out is only read: a broadcast one (stride 0 over T) is the same as its dense copy."""
    kind, T, B, I, H = "gru", 4, 3, 2, 5
    a = layer_args(kind, T, B, I, H, np.float64, seed=2)
    row = np.random.default_rng(0).standard_normal((B, H))
    grads = []
    for go in (np.broadcast_to(row, (T, B, H)), np.ascontiguousarray(np.broadcast_to(row, (T, B, H)))):
        ws = impl.layer_forward(kind, *a.values(), None, False, True)[3]
        grads.append(impl.layer_backward(ws, go, None, None))
    for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"):
        np.testing.assert_array_equal(grads[0][k], grads[1][k], err_msg=k)


def test_bad_out_raises_naming_it(impl):
    """A bad ``out`` raises before anything is computed: TypeError for a wrong type or dtype,
    ValueError naming out otherwise (shape, read-only, rows not adjacent, rows overlapping, memory
    shared with an input, misaligned)."""
    kind, T, B, I, H = "lstm", 4, 3, 6, 6
    a = layer_args(kind, T, B, I, H, np.float64, seed=1)
    before = {k: v.copy() for k, v in a.items()}
    wide = np.zeros((T, B, 2 * H))
    ro = np.zeros((T, B, H))
    ro.flags.writeable = False
    raw = np.zeros(T * B * H * 8 + 1, dtype=np.uint8)
    bad = [
        ("out", TypeError, "out must"),
        (np.zeros((T, B, H), np.float32), TypeError, "out must have dtype float64"),
        (np.zeros((T, B, H + 1)), ValueError, "out must have shape"),
        (np.zeros((B, T, H)), ValueError, "out must have shape"),
        (ro, ValueError, "out must be writeable"),
        (wide[:, :, ::2], ValueError, "out must have adjacent rows"),
        (np.lib.stride_tricks.as_strided(wide, (T, B, H), (0, 8 * H, 8)), ValueError, "out's rows must not overlap"),
        (np.lib.stride_tricks.as_strided(wide, (T, B, H), (8 * H, 8 * 2, 8)), ValueError, "out's rows must not overlap"),
        (np.zeros((T, B, H))[::-1], ValueError, "out's rows must not overlap"),
        (a["x"], ValueError, "out shares memory with x"),
        (raw[1:].view(np.float64).reshape(T, B, H), ValueError, "out must be an aligned array"),
    ]
    for out, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            impl.layer_forward(kind, *a.values(), None, False, True, out=out)
    for k, v in a.items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} was modified")
    w_hh = a["w_hh"].reshape(-1)[: T * B * H].reshape(T, B, H)  # a view of another input
    with pytest.raises(ValueError, match="out shares memory with w_hh"):
        impl.layer_forward(kind, *a.values(), None, False, True, out=w_hh)
    np.testing.assert_array_equal(a["w_hh"], before["w_hh"])


def test_bad_grad_out_raises_before_consuming(impl):
    kind, T, B, I, H = "gru_orig", 4, 3, 2, 5
    a = layer_args(kind, T, B, I, H, np.float32, seed=1)
    ws = impl.layer_forward(kind, *a.values(), None, False, True)[3]
    wide = np.zeros((T, B, 2 * H), np.float32)
    bad = [
        ([[0.0]], TypeError, "grad_out must be None or a numpy array"),
        (np.zeros((T, B, H)), TypeError, "grad_out must have dtype float32"),
        (wide[:, :, ::2], ValueError, "grad_out must have adjacent rows"),
    ]
    for go, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            impl.layer_backward(ws, go, None, None)
    got = impl.layer_backward(ws, wide[:, :, H:], None, None)  # still usable after the rejected calls
    assert got["x"].shape == (T, B, I)
