"""Fuzzing the boundary: random shapes, strides, dtypes, byte orders, read-only
arrays, lengths and states handed to the layer API and to the raw bindings.

Every case either matches the NumPy reference or raises ValueError/TypeError;
none may crash (a crash takes pytest down with it), hang or write outside its
output (the inputs are checked unchanged afterwards).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastrnn
from _helpers import layer_args
from fastrnn.backends import reference
from fastrnn.backends.contract import GATES, KINDS, has_cell_state

try:
    from fastrnn import _core as core
except ImportError:  # pure-Python install
    core = None

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_, np.complex64, object]
LAYERS = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn_tanh": fastrnn.RNN}


@st.composite
def mangled(draw, base):
    """``base`` (a good float array) or a variation of it: other dtype, byte order,
    strides (non-contiguous, negative, Fortran), read-only, a list, a scalar, wrong shape."""
    how = draw(st.sampled_from(["same", "dtype", "byteorder", "noncontig", "negative", "fortran", "readonly",
                                "list", "scalar", "reshape", "zero", "transpose"]))
    a = base.copy()
    if how == "dtype":
        dt = draw(st.sampled_from(DTYPES))
        a = a.astype(dt)
    elif how == "byteorder":
        a = a.astype(a.dtype.newbyteorder())
    elif how == "noncontig":
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif how == "negative":
        a = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    elif how == "fortran":
        a = np.asfortranarray(a)
    elif how == "readonly":
        a.flags.writeable = False
    elif how == "list":
        a = a.tolist()
    elif how == "scalar":
        a = a.dtype.type(1)
    elif how == "reshape":
        a = a.reshape(-1)
    elif how == "zero":
        a = np.zeros((0,) + a.shape[1:], a.dtype)
    elif how == "transpose":
        a = a.T
    return how, a


@st.composite
def layer_case(draw):
    kind = draw(st.sampled_from(list(LAYERS)))
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    T, B, I, H = (draw(st.integers(1, 5)) for _ in range(4))
    L = draw(st.integers(1, 2))
    bi = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((T, B, I)).astype(dtype)
    which = draw(st.sampled_from(["x", "h0", "lengths", "none"]))
    lengths = None
    if draw(st.booleans()):
        lengths = rng.integers(1, T + 1, size=B)
    if which == "lengths":
        lengths = draw(st.one_of(
            st.lists(st.integers(-3, T + 3), min_size=0, max_size=B + 1),
            st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=B, max_size=B),
            st.just([2**63 - 1] * B), st.just([-(2**63)] * B), st.just("abc"), st.just(3),
        ))
    return kind, dtype, T, B, I, H, L, bi, x, which, lengths, rng


@SETTINGS
@given(case=layer_case(), data=st.data())
def test_layer_api_fuzz(case, data):
    kind, dtype, T, B, I, H, L, bi, x, which, lengths, rng = case
    D = 2 if bi else 1
    h0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    how = "same"
    if which == "x":
        how, x = data.draw(mangled(x))
    elif which == "h0":
        how, h0 = data.draw(mangled(h0))
    hx = (h0, h0) if has_cell_state(kind) else h0
    kwargs = {"nonlinearity": "tanh"} if kind == "rnn_tanh" else {}
    ref = LAYERS[kind](I, H, num_layers=L, bidirectional=bi, dtype=dtype, backend="numpy", seed=1, **kwargs)
    snapshot = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in (x, h0)]
    for name in fastrnn.available_backends():
        layer = LAYERS[kind](I, H, num_layers=L, bidirectional=bi, dtype=dtype, backend=name, seed=1, **kwargs)
        try:
            out, _ = layer(x, hx, lengths=lengths)
        except (ValueError, TypeError) as e:
            err = type(e)
            with pytest.raises(err):
                ref(x, hx, lengths=lengths)  # the reference refuses it the same way
            continue
        out_ref, _ = ref(x, hx, lengths=lengths)
        tol = 1e-10 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(out, out_ref, rtol=tol, atol=tol, err_msg=f"{name} {how}")
        g = np.ones_like(out)
        dx, _ = layer.backward(g)
        dx_ref, _ = ref.backward(g)
        np.testing.assert_allclose(dx, dx_ref, rtol=tol * 10, atol=tol * 10, err_msg=f"{name} {how}")
    for before, after in zip(snapshot, (x, h0)):  # inputs are never written
        if isinstance(before, np.ndarray):
            np.testing.assert_array_equal(before, after)


@st.composite
def binding_case(draw):
    kind = draw(st.sampled_from(KINDS))
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    T, B, I, H = (draw(st.integers(1, 4)) for _ in range(4))
    args = layer_args(kind, T, B, I, H, dtype, seed=draw(st.integers(0, 2**32 - 1)), scale=1.0)
    target = draw(st.sampled_from(list(args) + ["lengths", "none"]))
    lengths = None
    if target == "lengths":
        lengths = np.array(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=0, max_size=B + 1)), np.int64)
    elif target != "none" and args[target] is not None:
        _, args[target] = draw(mangled(args[target]))
    elif target != "none":
        args[target] = draw(st.sampled_from([np.zeros((B, H), dtype), "c", 0]))
    return kind, args, lengths, draw(st.booleans()), draw(st.booleans())


@st.composite
def variant_case(draw):
    """Arguments of layer_forward with the variants' arrays (peepholes, the recurrent-dropout mask,
    the projection) where the kind takes them, and at most one thing wrong: one of them spoiled, or
    given to a kind that does not take it (peep, w_hr: the LSTM kinds' only)."""
    kind = draw(st.sampled_from(KINDS))
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    T, B, I, H = (draw(st.integers(1, 4)) for _ in range(4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    P = draw(st.integers(1, H)) if has_cell_state(kind) and draw(st.booleans()) else None  # a projection's units
    args = layer_args(kind, T, B, I, H, dtype, rng=rng, scale=0.6, P=P)
    extra = {} if P is None else {"w_hr": args.pop("w_hr")}
    P = H if P is None else P
    if has_cell_state(kind) and draw(st.booleans()):
        extra["peep"] = (rng.standard_normal(3 * H) * 0.5).astype(dtype)
    if draw(st.booleans()):
        extra["hmask"] = ((rng.random((B, P)) > 0.3) / 0.7).astype(dtype)
    wrong = draw(st.sampled_from(["none", "spoil", "kind"]))
    if wrong == "spoil" and extra:
        name = draw(st.sampled_from(sorted(extra)))
        _, extra[name] = draw(mangled(extra[name]))
    elif wrong == "kind" and not has_cell_state(kind):
        which = draw(st.sampled_from(["peep", "w_hr"]))
        extra[which] = {"peep": np.zeros(3 * H, dtype), "w_hr": np.zeros((H, H), dtype)}[which]
    return kind, args, extra, draw(st.booleans()), draw(st.booleans())


@pytest.mark.skipif(core is None or not hasattr(core, "layer_forward"), reason="compiled kernels not installed")
@SETTINGS
@given(case=variant_case())
def test_raw_binding_variants_fuzz(case):
    """peep, hmask and w_hr straight to the binding: it refuses what the reference refuses (the same
    error type) and otherwise equals the reference, gradients included."""
    kind, args, extra, reverse, keep = case
    try:
        out_r, h_r, c_r, ws_r = reference.layer_forward(kind, *args.values(), None, reverse, True, **extra)
    except (ValueError, TypeError) as e:
        with pytest.raises(type(e)):
            core.layer_forward(kind, *args.values(), None, reverse, keep, **extra)
        return
    out, h, c, ws = core.layer_forward(kind, *args.values(), None, reverse, keep, **extra)
    tol = 1e-10 if out.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out, out_r, rtol=tol, atol=tol)
    if keep:
        gc = None if c is None else np.ones_like(c)
        g = core.layer_backward(ws, np.ones_like(out), np.ones_like(h), gc)
        g_r = reference.layer_backward(ws_r, np.ones_like(out), np.ones_like(h), gc)
        for k in g_r:
            if g_r[k] is None:
                assert g[k] is None, k
            else:
                np.testing.assert_allclose(g[k], g_r[k], rtol=tol * 10, atol=tol * 10, err_msg=k)


@pytest.mark.skipif(core is None or not hasattr(core, "cell_forward"), reason="compiled kernels not installed")
@SETTINGS
@given(case=variant_case())
def test_raw_binding_cell_variants_fuzz(case):
    """peep and hmask straight to the cell binding (the cases without a projection, which is the
    layers' only): it refuses what the reference refuses and otherwise equals it, gradients included."""
    kind, args, extra, _, keep = case
    assume("w_hr" not in extra)
    a = (args["x"][0], args["h0"], args["c0"], args["w_ih"], args["w_hh"], args["b_ih"], args["b_hh"])
    try:
        h_r, c_r, ws_r = reference.cell_forward(kind, *a, True, **extra)
    except (ValueError, TypeError) as e:
        with pytest.raises(type(e)):
            core.cell_forward(kind, *a, keep, **extra)
        return
    h, c, ws = core.cell_forward(kind, *a, keep, **extra)
    tol = 1e-10 if h.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(h, h_r, rtol=tol, atol=tol)
    if keep:
        gc = None if c is None else np.ones_like(c)
        g, g_r = core.cell_backward(ws, np.ones_like(h), gc), reference.cell_backward(ws_r, np.ones_like(h), gc)
        for k in g_r:
            if g_r[k] is None:
                assert g[k] is None, k
            else:
                np.testing.assert_allclose(g[k], g_r[k], rtol=tol * 10, atol=tol * 10, err_msg=k)


@pytest.mark.skipif(core is None or not hasattr(core, "layer_forward"), reason="compiled kernels not installed")
@SETTINGS
@given(case=binding_case())
def test_raw_binding_fuzz(case):
    """Arrays handed straight to the binding: the binding's result equals the reference, or it raises."""
    kind, args, lengths, reverse, keep = case
    try:
        out, h, c, ws = core.layer_forward(kind, *args.values(), lengths, reverse, keep)
    except (ValueError, TypeError):
        return
    # accepted: then the arguments were valid and the result must be the reference's
    out_r, h_r, c_r, ws_r = reference.layer_forward(kind, *args.values(), lengths, reverse, True)
    tol = 1e-10 if out.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out, out_r, rtol=tol, atol=tol)
    np.testing.assert_allclose(h, h_r, rtol=tol, atol=tol)
    if keep:
        g = core.layer_backward(ws, np.ones_like(out), np.zeros_like(h), None if c is None else np.zeros_like(c))
        g_r = reference.layer_backward(ws_r, np.ones_like(out), np.zeros_like(h), None if c is None else np.zeros_like(c))
        np.testing.assert_allclose(g["x"], g_r["x"], rtol=tol * 10, atol=tol * 10)


@SETTINGS
@given(data=st.data())
def test_load_state_dict_fuzz(data):
    """Mismatched parameter shapes and dtypes through load_state_dict: refused, nothing changed."""
    gru = fastrnn.GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
    before = gru.state_dict()
    sd = gru.state_dict()
    name = data.draw(st.sampled_from(list(sd)))
    shape = data.draw(st.lists(st.integers(0, 13), min_size=0, max_size=3).map(tuple))
    dt = data.draw(st.sampled_from(DTYPES))
    sd[name] = np.zeros(shape, dtype=dt)
    ok_shape = shape == before[name].shape
    ok_dtype = np.dtype(dt).kind in "fiu"
    if ok_shape and ok_dtype:
        gru.load_state_dict(sd)
        assert np.all(gru.state_dict()[name] == 0)
        return
    with pytest.raises((ValueError, TypeError)):
        gru.load_state_dict(sd)
    for k, v in gru.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def _capi():
    try:
        from fastrnn import capi
    except ImportError:
        return None
    return capi


@st.composite
def capi_case(draw):
    """A valid call of a ``fastrnn.capi`` helper with at most one array mangled: any dtype, byte
    order or strides (negative, non-contiguous, Fortran, transposed), or not an array at all."""
    kind = draw(st.sampled_from(KINDS))
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    T, B, I, H = (draw(st.integers(1, 4)) for _ in range(4))
    G = GATES[kind]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cell = draw(st.booleans())
    x_shape = (B, I) if cell else (T, B, I)
    args = dict(
        x=rng.standard_normal(x_shape).astype(dtype),
        h=rng.standard_normal((B, H)).astype(dtype),
        c=rng.standard_normal((B, H)).astype(dtype) if has_cell_state(kind) else None,
        w_ih=rng.standard_normal((G * H, I)).astype(dtype),
        w_hh=rng.standard_normal((G * H, H)).astype(dtype),
        b_ih=rng.standard_normal(G * H).astype(dtype),
        b_hh=rng.standard_normal(G * H).astype(dtype),
    )
    lengths = None if cell else rng.integers(1, T + 1, size=B).astype(np.int64)
    grads = dict(out=None if cell else rng.standard_normal((T, B, H)).astype(dtype),
                 h=rng.standard_normal((B, H)).astype(dtype),
                 c=rng.standard_normal((B, H)).astype(dtype) if has_cell_state(kind) else None)
    names = [k for k, v in args.items() if v is not None] + (["lengths"] if lengths is not None else []) \
        + ["grad_" + k for k, v in grads.items() if v is not None] + ["none"]
    target = draw(st.sampled_from(names))
    how = "same"
    if target == "lengths":
        how, lengths = draw(mangled(lengths))
    elif target.startswith("grad_"):
        how, grads[target[5:]] = draw(mangled(grads[target[5:]]))
    elif target != "none":
        how, args[target] = draw(mangled(args[target]))
    return kind, cell, args, lengths, grads, target, how


@pytest.mark.skipif(_capi() is None, reason="the compiled extension (and its C ABI) is not installed")
@SETTINGS
@given(case=capi_case(), reverse=st.booleans())
def test_capi_helpers_fuzz(case, reverse):
    """The cffi helpers hand raw pointers to C: every array they accept must be what C reads,
    so each call either equals the reference (forward and backward) or raises ValueError/TypeError."""
    capi = _capi()
    kind, cell, args, lengths, grads, target, how = case
    snapshot = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in args.items()}
    a = list(args.values())
    try:
        if cell:
            h, c, ws = capi.cell_forward(kind, *a, True)
        else:
            out, h, c, ws = capi.layer_forward(kind, *a, lengths, reverse, True)
        g = capi.cell_backward(ws, grads["h"], grads["c"]) if cell else \
            capi.layer_backward(ws, grads["out"], grads["h"], grads["c"])
    except (ValueError, TypeError):
        assert how != "same", f"a valid call was refused ({target})"
        return
    ok = {k: np.ascontiguousarray(v) for k, v in snapshot.items() if isinstance(v, np.ndarray)}
    ok.update({k: None for k, v in snapshot.items() if v is None})
    r = [ok[k] for k in args]
    tol = 1e-10 if r[0].dtype == np.float64 else 1e-5
    gr = {k: None if v is None else np.ascontiguousarray(v, dtype=r[0].dtype) for k, v in grads.items()}
    if cell:
        h_r, c_r, ws_r = reference.cell_forward(kind, *r, True)
        g_r = reference.cell_backward(ws_r, gr["h"], np.zeros_like(h_r) if gr["c"] is None and has_cell_state(kind)
                                      else gr["c"])
    else:
        out_r, h_r, c_r, ws_r = reference.layer_forward(kind, *r, np.ascontiguousarray(lengths, np.int64),
                                                        reverse, True)
        np.testing.assert_allclose(out, out_r, rtol=tol, atol=tol, err_msg=f"{target} {how}")
        g_r = reference.layer_backward(ws_r, gr["out"], gr["h"], gr["c"])
    np.testing.assert_allclose(h, h_r, rtol=tol, atol=tol, err_msg=f"{target} {how}")
    for key in ("x", "w_ih", "w_hh"):
        np.testing.assert_allclose(g[key], g_r[key], rtol=tol * 100, atol=tol * 100, err_msg=f"{target} {how} d{key}")
    for k, v in snapshot.items():  # inputs are never written
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(args[k], v)
