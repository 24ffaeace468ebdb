"""The LSTM's projection (``w_hr``, PyTorch's ``proj_size``) in the backend contract: the reference
against finite differences, every implementation against the reference, the arguments' checks and
the C ABI's version 3; and ``fastrnn.LSTM(proj_size=)``."""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import backends
from fastrnn.backends import reference
from fastrnn.backends.contract import PEEPHOLES

from _helpers import (assert_close, contract_module_of, layer_args, layer_grads, lstm_layer_matches_finite_differences,
                      numeric_grad, random_lengths, same_on_one_and_two_threads)


def _args(T, B, I, H, P, dtype, seed=0, scale=0.5, bias=True):
    """layer_forward's arrays of an LSTM with a projection of P units, w_hr last."""
    return layer_args("lstm", T, B, I, H, dtype, seed=seed, scale=scale, bias=bias, P=P)


def _grads(T, B, H, P, dtype, seed=0):
    return layer_grads("lstm", T, B, H, dtype, seed, P=P)


_PLAIN = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")


def _run(mod, a, lengths, reverse, grads=None, keep=True, **variants):
    out = mod.layer_forward("lstm", *(a[k] for k in _PLAIN), lengths, reverse, keep, w_hr=a["w_hr"], **variants)
    return out, (None if grads is None else mod.layer_backward(out[3], *grads))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_reference_gradients_match_finite_differences(reverse, padded):
    T, B, I, H, P = 4, 3, 2, 4, 2
    a = _args(T, B, I, H, P, np.float64, seed=1)
    lengths = np.array([4, 2, 3], dtype=np.int64) if padded else None
    go, gh, gc = _grads(T, B, H, P, np.float64, seed=1)

    def loss():
        out, h_n, c_n, _ = _run(reference, a, lengths, reverse, keep=False)[0]
        return float(np.sum(out * go) + np.sum(h_n * gh) + np.sum(c_n * gc))

    g = _run(reference, a, lengths, reverse, (go, gh, gc))[1]
    assert g["w_hr"].shape == (P, H) and g["h0"].shape == (B, P) and g["w_hh"].shape == (4 * H, P)
    for name in a:
        np.testing.assert_allclose(g[name], numeric_grad(loss, a, name), rtol=1e-7, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_match_finite_differences(contract_module, reverse):
    """Every implementation's float64 gradients, the projection's included, with peepholes and
    padding, against finite differences."""
    mod = contract_module_of(contract_module)
    T, B, I, H, P = 4, 3, 2, 5, 3
    a = _args(T, B, I, H, P, np.float64, seed=3)
    a["peep"] = (np.random.default_rng(33).standard_normal(PEEPHOLES * H) * 0.5)
    lengths = np.array([4, 1, 3], dtype=np.int64)
    go, gh, gc = _grads(T, B, H, P, np.float64, seed=3)

    def loss():
        out, h_n, c_n, _ = _run(mod, a, lengths, reverse, keep=False, peep=a["peep"])[0]
        return float(np.sum(out * go) + np.sum(h_n * gh) + np.sum(c_n * gc))

    g = _run(mod, a, lengths, reverse, (go, gh, gc), peep=a["peep"])[1]
    for name in a:
        np.testing.assert_allclose(g[name], numeric_grad(loss, a, name), rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("T,B,I,H,P,reverse,padded,bias,variants", [
    (1, 1, 1, 1, 1, False, False, True, ""),
    (7, 3, 5, 9, 4, False, False, True, ""),
    (7, 3, 5, 9, 9, True, True, True, "peep"),      # P = H
    (12, 5, 3, 17, 1, False, True, False, "hmask"),
    (6, 16, 8, 33, 20, True, False, True, "peep,hmask"),
    (30, 40, 7, 20, 7, False, True, True, "hmask"),   # batch split across threads
    (9, 1, 4, 256, 128, True, True, True, ""),        # units split across threads
    (9, 2, 4, 1024, 20, False, True, True, "hmask"),  # units split, one panel of the projection
    (40, 64, 8, 200, 70, False, True, True, "peep"),  # backward in 3 chunks
    (40, 64, 8, 200, 70, True, False, True, "hmask"),
])
def test_backend_matches_reference(contract_module, dtype, T, B, I, H, P, reverse, padded, bias, variants):
    mod = contract_module_of(contract_module)
    seed = T * 31 + H
    scale = min(0.5, 2 / H ** 0.5)  # a wide layer with N(0, 0.5^2) weights is chaotic: rounding would grow
    a = _args(T, B, I, H, P, dtype, seed=seed, scale=scale, bias=bias)
    rng = np.random.default_rng(seed + 1)
    kw = {}
    if "peep" in variants:
        kw["peep"] = (rng.standard_normal(PEEPHOLES * H) * scale).astype(dtype)
    if "hmask" in variants:
        kw["hmask"] = ((rng.random((B, P)) > 0.3) / 0.7).astype(dtype)
    before = {k: v.copy() for k, v in a.items() if v is not None}
    lengths = random_lengths(T, B, seed) if padded else None
    grads = _grads(T, B, H, P, dtype, seed)
    got, got_g = _run(mod, a, lengths, reverse, grads, **kw)
    want, want_g = _run(reference, a, lengths, reverse, grads, **kw)
    for name, x, y in zip(("out", "h_n", "c_n"), got[:3], want[:3]):
        assert_close(x, y, name, scaled=True)
    for k, v in before.items():
        np.testing.assert_array_equal(a[k], v, err_msg=k)
    assert set(got_g) == set(want_g)
    for name in want_g:
        assert_close(got_g[name], want_g[name], f"grad {name}", scaled=True)
    inf = _run(mod, a, lengths, reverse, keep=False, **kw)[0]  # inference gives the training forward's results
    for x, y in zip(inf[:3], got[:3]):
        np.testing.assert_array_equal(x, y)


def test_projection_gradient_with_acc(backend, dtype):
    """With ``acc`` (the layers' running weight gradients, w_hh's [4H, P]) the projection's gradient
    is still returned."""
    mod = backends.get_backend(backend)
    T, B, I, H, P = 6, 4, 3, 10, 4
    a = _args(T, B, I, H, P, dtype, seed=5)
    grads = _grads(T, B, H, P, dtype, 5)
    want_g = _run(reference, a, None, False, grads)[1]
    out = _run(mod, a, None, False)[0]
    acc = (np.zeros_like(a["w_ih"]), np.zeros_like(a["w_hh"]))
    g = mod.layer_backward(out[3], *grads, acc=acc)
    assert g["w_hh"] is acc[1]
    for k in ("w_hh", "w_hr", "h0"):
        assert_close(g[k], want_g[k], k, scaled=True)


def test_out_with_strides(contract_module):
    """``out`` as one direction's half of a bidirectional buffer: P units a row."""
    mod = contract_module_of(contract_module)
    T, B, I, H, P = 5, 3, 2, 6, 4
    a = _args(T, B, I, H, P, np.float64, seed=8)
    buf = np.full((T, B, 2 * P), np.nan)
    out = _run(mod, a, None, False, keep=False)[0][0]
    got = mod.layer_forward("lstm", *(a[k] for k in _PLAIN), None, False, False, out=buf[:, :, P:],
                            w_hr=a["w_hr"])[0]
    assert np.shares_memory(got, buf)
    np.testing.assert_array_equal(buf[:, :, P:], out)
    assert np.isnan(buf[:, :, :P]).all()


@pytest.mark.parametrize("B,H,P,reverse,variants", [
    (64, 200, 70, False, ""),  # rows split across threads
    (64, 200, 70, True, "peep,hmask"),
    (1, 256, 100, False, ""),  # units split: the team meets before each product of the projection
    (2, 256, 37, True, "peep,hmask"),
    (2, 1024, 20, False, "hmask"),  # one panel of the projection: one thread has none
])
def test_results_do_not_depend_on_the_thread_count(B, H, P, reverse, variants):
    """The compiled backend's results are bitwise the same on 1 and 2 threads."""
    if "cpp" not in backends.available_backends():
        pytest.skip("the compiled backend is not installed")
    mod = backends.get_backend("cpp")
    T, I = 20, 8
    a = _args(T, B, I, H, P, np.float32, seed=9, scale=0.1)
    rng = np.random.default_rng(19)
    kw = {}
    if "peep" in variants:
        kw["peep"] = (rng.standard_normal(PEEPHOLES * H) * 0.1).astype(np.float32)
    if "hmask" in variants:
        kw["hmask"] = ((rng.random((B, P)) > 0.3) / 0.7).astype(np.float32)
    grads = _grads(T, B, H, P, np.float32, 9)
    lengths = random_lengths(T, B, 9)
    same_on_one_and_two_threads(lambda: _run(mod, a, lengths, reverse, grads, **kw))


def test_bad_projections_are_refused(contract_module):
    mod = contract_module_of(contract_module)
    T, B, I, H, P = 3, 2, 4, 5, 3
    a = _args(T, B, I, H, P, np.float32)
    plain = [a[k] for k in _PLAIN]

    def fwd(w_hr, kind="lstm", args=plain):
        return mod.layer_forward(kind, *args, None, False, True, w_hr=w_hr)

    with pytest.raises(ValueError, match="w_hr"):
        fwd(np.zeros((P + 1, H), np.float32))
    with pytest.raises(ValueError, match="w_hr"):
        fwd(np.zeros(P * H, np.float32))
    with pytest.raises(TypeError, match="w_hr"):
        fwd(a["w_hr"].astype(np.float64))
    with pytest.raises(TypeError, match="w_hr"):
        fwd(a["w_hr"].tolist())
    with pytest.raises(ValueError, match="w_hr"):
        fwd(np.asfortranarray(np.zeros((P, H), np.float32)))
    with pytest.raises(ValueError, match="w_hh"):  # w_hh must have P columns with a projection
        fwd(a["w_hr"], args=plain[:4] + [np.zeros((4 * H, H), np.float32)] + plain[5:])
    wide = [a["x"], np.zeros((B, H + 1), np.float32), a["c0"], a["w_ih"], np.zeros((4 * H, H + 1), np.float32),
            a["b_ih"], a["b_hh"]]
    with pytest.raises(ValueError, match="w_hr"):  # more projected units than hidden ones
        fwd(np.zeros((H + 1, H), np.float32), args=wide)
    g = [a["x"], a["h0"], None, np.zeros((3 * H, I), np.float32), np.zeros((3 * H, P), np.float32),
         None, None]
    with pytest.raises(ValueError, match="w_hr"):
        fwd(a["w_hr"], kind="gru", args=g)


def test_c_abi_version_3():
    capi = pytest.importorskip("fastrnn.capi", reason="the C ABI is not installed", exc_type=ImportError)
    lib, ffi = capi.lib, capi.ffi
    assert capi.abi_version() >= 3
    T, B, I, H, P = 2, 1, 1, 3, 2
    assert lib.fastrnn_layer_workspace_size_proj(capi.KIND_CODES["lstm"], T, B, H, P) == T * B * (4 * H + P + H)
    assert lib.fastrnn_layer_workspace_size_proj(capi.KIND_CODES["lstm"], T, B, H, H) == \
        lib.fastrnn_layer_workspace_size(capi.KIND_CODES["lstm"], T, B, H)
    assert lib.fastrnn_layer_workspace_size_proj(capi.KIND_CODES["lstm"], T, B, H, H + 1) == -1
    out, h_n, c_n = (np.empty(s) for s in ((T, B, P), (B, P), (B, H)))
    q = {k: ffi.from_buffer("double[]", v) for k, v in dict(out=out, h_n=h_n, c_n=c_n).items()}
    a = _args(T, B, I, H, P, np.float64)
    p = {k: ffi.from_buffer("double[]", v) for k, v in a.items()}

    def forward(kind, Pn, w_hr):
        return lib.fastrnn_layer_forward_proj_f64(
            capi.KIND_CODES[kind], T, B, I, H, Pn, p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], p["b_ih"],
            p["b_hh"], ffi.NULL, ffi.NULL, w_hr, ffi.NULL, 0, q["out"], q["h_n"], q["c_n"], ffi.NULL)

    assert forward("lstm", P, p["w_hr"]) == lib.FASTRNN_OK
    np.testing.assert_allclose(out, _run(reference, a, None, False, keep=False)[0][0], rtol=1e-12, atol=1e-12)
    assert forward("gru", P, p["w_hr"]) == lib.FASTRNN_ERR_UNSUPPORTED
    assert "w_hr" in capi.status_message(lib.FASTRNN_ERR_UNSUPPORTED)
    assert forward("lstm", H + 1, p["w_hr"]) == lib.FASTRNN_ERR_BAD_SIZE
    assert forward("lstm", 0, p["w_hr"]) == lib.FASTRNN_ERR_BAD_SIZE
    assert forward("lstm", P, ffi.NULL) == lib.FASTRNN_ERR_BAD_SIZE  # no projection: P must be H
    assert forward("lstm", -1, p["w_hr"]) == lib.FASTRNN_ERR_BAD_SIZE
    assert lib.fastrnn_layer_workspace_size_proj(capi.KIND_CODES["gru"], T, B, H, P) == -1

    ws = np.empty(lib.fastrnn_layer_workspace_size_proj(capi.KIND_CODES["lstm"], T, B, H, P))
    pw = ffi.from_buffer("double[]", ws)
    assert lib.fastrnn_layer_forward_proj_f64(
        capi.KIND_CODES["lstm"], T, B, I, H, P, p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], p["b_ih"],
        p["b_hh"], ffi.NULL, ffi.NULL, p["w_hr"], ffi.NULL, 0, q["out"], q["h_n"], q["c_n"], pw) == lib.FASTRNN_OK
    g = {k: np.empty_like(v) for k, v in a.items()}
    d = {k: ffi.from_buffer("double[]", v) for k, v in g.items()}

    def backward(Pn, w_hr, dw_hr):
        return lib.fastrnn_layer_backward_proj_f64(
            capi.KIND_CODES["lstm"], T, B, I, H, Pn, p["x"], p["c0"], p["w_ih"], p["w_hh"], ffi.NULL, ffi.NULL,
            w_hr, ffi.NULL, 0, pw, ffi.NULL, ffi.NULL, ffi.NULL, d["x"], d["h0"], d["c0"], d["w_ih"], d["w_hh"],
            d["b_ih"], d["b_hh"], ffi.NULL, dw_hr)

    assert backward(P, p["w_hr"], ffi.NULL) == lib.FASTRNN_ERR_NULL_POINTER
    assert backward(P, ffi.NULL, ffi.NULL) == lib.FASTRNN_ERR_BAD_SIZE
    assert backward(H + 1, p["w_hr"], d["w_hr"]) == lib.FASTRNN_ERR_BAD_SIZE
    assert backward(P, p["w_hr"], d["w_hr"]) == lib.FASTRNN_OK
    want = _run(reference, a, None, False, (None, None, None))[1]
    for k in a:
        np.testing.assert_allclose(g[k], want[k], rtol=1e-12, atol=1e-12, err_msg=k)


# ----------------------------------------------------------------------------
# the layer: fastrnn.LSTM(proj_size=)
# ----------------------------------------------------------------------------


def test_layer_parameters_and_repr():
    layer = fastrnn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, seed=7)
    names = [n for n, _ in layer.named_parameters()]
    assert names == [f"{w}_l{k}{s}" for k in range(2) for s in ("", "_reverse")
                     for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")]  # torch's order
    assert layer.weight_hr_l1_reverse.shape == (2, 6)
    assert layer.weight_hh_l0.shape == (24, 2) and layer.weight_ih_l1.shape == (24, 4)
    assert np.abs(layer.weight_hr_l0).max() <= 1 / 6 ** 0.5
    assert "proj_size=2" in repr(layer) and "proj_size" not in repr(fastrnn.LSTM(3, 6))
    out, (h_n, c_n) = layer(np.zeros((5, 4, 3), np.float32))
    assert out.shape == (5, 4, 4) and h_n.shape == (4, 4, 2) and c_n.shape == (4, 4, 6)


@pytest.mark.parametrize("value,words", [(6, "smaller than hidden_size"), (7, "smaller than hidden_size"),
                                         (-1, "integer >= 0"), (1.5, "integer >= 0"), (True, "integer >= 0"),
                                         ("2", "integer >= 0")])
def test_bad_proj_size(value, words):
    with pytest.raises(ValueError, match=f"proj_size.*{words}"):
        fastrnn.LSTM(3, 6, proj_size=value)


def test_layer_state_shapes_are_checked():
    layer = fastrnn.LSTM(3, 6, proj_size=2, dtype=np.float64)
    x = np.zeros((4, 2, 3))
    with pytest.raises(ValueError, match="h_0"):
        layer(x, (np.zeros((1, 2, 6)), np.zeros((1, 2, 6))))  # h_0 has proj_size units
    with pytest.raises(ValueError, match="c_0"):
        layer(x, (np.zeros((1, 2, 2)), np.zeros((1, 2, 2))))  # c_0 has hidden_size units
    out, (h_n, c_n) = layer(x, (np.zeros((1, 2, 2)), np.zeros((1, 2, 6))))
    with pytest.raises(ValueError, match="grad_output"):
        layer.backward(np.zeros((4, 2, 6)))
    dx, (dh, dc) = layer.backward(np.ones_like(out), (None, np.ones_like(c_n)))
    assert dh.shape == (1, 2, 2) and dc.shape == (1, 2, 6)


def test_layer_gradients_match_finite_differences(backend):
    """Two layers, both directions, padded, batch-first: every parameter's gradient, the
    projections' included."""
    layer = fastrnn.LSTM(2, 4, num_layers=2, bidirectional=True, batch_first=True, proj_size=3,
                         dtype=np.float64, backend=backend, seed=4)
    x = np.random.default_rng(4).standard_normal((3, 4, 2))
    lstm_layer_matches_finite_differences(layer, x, np.array([4, 2, 3]))


def test_layer_with_recurrent_dropout_masks_the_projected_state(backend):
    """In training each layer and direction draws a [B, proj_size] mask; eval draws none."""
    layer = fastrnn.LSTM(3, 5, proj_size=2, recurrent_dropout=0.5, dtype=np.float64, backend=backend, seed=1)
    x = np.random.default_rng(1).standard_normal((6, 4, 3))
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    assert np.isfinite(layer.grads["weight_hr_l0"]).all() and np.abs(layer.grads["weight_hr_l0"]).max() > 0
    layer.eval()
    with fastrnn.no_grad():
        plain, _ = layer(x)
    assert out.shape == plain.shape == (6, 4, 2) and not np.allclose(out, plain)


def test_onnx_export_refuses_a_projection(tmp_path):
    pytest.importorskip("onnx")
    import fastrnn.onnx

    with pytest.raises(ValueError, match="proj_size=2.*no projection"):
        fastrnn.onnx.export(fastrnn.LSTM(3, 4, proj_size=2), tmp_path / "m.onnx")


@pytest.mark.parametrize("layers,bidirectional,batch_first,padded,bias",
                         [(1, False, False, False, True), (2, True, False, True, True), (2, False, True, True, False),
                          (1, True, True, False, True)])
def test_layer_matches_torch(backend, dtype, layers, bidirectional, batch_first, padded, bias):
    """fastrnn.LSTM(proj_size=) loaded with torch.nn.LSTM(proj_size=)'s state_dict: outputs, final
    states and every gradient (packed sequences on torch's side where padded)."""
    torch = pytest.importorskip("torch")
    tdt = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}[np.dtype(dtype)]
    tol = dict(rtol=1e-10, atol=1e-10) if tdt == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    I, H, P, T, B = 4, 7, 3, 6, 3
    torch.manual_seed(layers * 10 + bidirectional)
    ref = torch.nn.LSTM(I, H, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias,
                        proj_size=P, dtype=tdt)
    ours = fastrnn.LSTM(I, H, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias,
                        proj_size=P, dtype=dtype, backend=backend)
    ours.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    D = 2 if bidirectional else 1
    rng = np.random.default_rng(layers)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    h0, c0 = rng.standard_normal((layers * D, B, P)).astype(dtype), rng.standard_normal((layers * D, B, H)).astype(dtype)
    lengths = np.array([6, 2, 4]) if padded else None
    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    if padded:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first,
                                                         enforce_sorted=False)
        yp, (hn, cn) = ref(packed, (h0t, c0t))
        y = torch.nn.utils.rnn.pad_packed_sequence(yp, batch_first=batch_first, total_length=T)[0]
    else:
        y, (hn, cn) = ref(xt, (h0t, c0t))
    go, gh, gc = (rng.standard_normal(tuple(t.shape)).astype(dtype) for t in (y, hn, cn))
    ((y * torch.tensor(go)).sum() + (hn * torch.tensor(gh)).sum() + (cn * torch.tensor(gc)).sum()).backward()
    out, (h_n, c_n) = ours(x, (h0, c0), lengths=lengths)
    dx, (dh0, dc0) = ours.backward(go, (gh, gc))
    for name, got, want in [("out", out, y), ("h_n", h_n, hn), ("c_n", c_n, cn), ("dx", dx, xt.grad),
                            ("dh0", dh0, h0t.grad), ("dc0", dc0, c0t.grad)] + \
            [(k, ours.grads[k], p.grad) for k, p in ref.named_parameters()]:
        np.testing.assert_allclose(got, want.detach().numpy(), **tol, err_msg=name)
