"""LSTM peepholes (``peep``, ONNX's ``P``): the reference against finite differences, every backend
against the reference, and the arguments' checks."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn import backends
from fastrnn.backends import reference
from fastrnn.backends.contract import PEEPHOLES

from _helpers import (assert_close, contract_module_of, layer_args, layer_grads, lstm_layer_matches_finite_differences,
                      numeric_grad, peephole_weights, random_lengths, same_on_one_and_two_threads)


def _run(mod, a, peep, lengths, reverse, grads):
    out = mod.layer_forward("lstm", *a.values(), lengths, reverse, True, peep=peep)
    return out, mod.layer_backward(out[3], *grads)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_reference_gradients_match_finite_differences(reverse, padded):
    T, B, I, H = 4, 3, 2, 3
    a = layer_args("lstm", T, B, I, H, np.float64, seed=1)
    a["peep"] = peephole_weights(H, np.float64, seed=1)
    lengths = np.array([4, 2, 3], dtype=np.int64) if padded else None
    go, gh, gc = layer_grads("lstm", T, B, H, np.float64, seed=1)

    def loss():
        out, h_n, c_n, _ = reference.layer_forward("lstm", *list(a.values())[:7], lengths, reverse, False,
                                                   peep=a["peep"])
        return float(np.sum(out * go) + np.sum(h_n * gh) + np.sum(c_n * gc))

    peep = a["peep"]
    args = {k: v for k, v in a.items() if k != "peep"}
    out = reference.layer_forward("lstm", *args.values(), lengths, reverse, True, peep=peep)
    g = reference.layer_backward(out[3], go, gh, gc)
    for name, key in [("x", "x"), ("h0", "h0"), ("c0", "c0"), ("w_ih", "w_ih"), ("w_hh", "w_hh"), ("b_ih", "b_ih"),
                      ("b_hh", "b_hh"), ("peep", "peep")]:
        np.testing.assert_allclose(g[key], numeric_grad(loss, a, name), rtol=1e-7, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_match_finite_differences(contract_module, reverse):
    """Every implementation's float64 gradients, the peepholes' included, against finite differences."""
    mod = contract_module_of(contract_module)
    T, B, I, H = 4, 3, 2, 3
    a = layer_args("lstm", T, B, I, H, np.float64, seed=3)
    a["peep"] = peephole_weights(H, np.float64, seed=3)
    lengths = np.array([4, 1, 3], dtype=np.int64)
    go, gh, gc = layer_grads("lstm", T, B, H, np.float64, seed=3)
    plain = [k for k in a if k != "peep"]

    def loss():
        out, h_n, c_n, _ = mod.layer_forward("lstm", *(a[k] for k in plain), lengths, reverse, False,
                                             peep=a["peep"])
        return float(np.sum(out * go) + np.sum(h_n * gh) + np.sum(c_n * gc))

    out = mod.layer_forward("lstm", *(a[k] for k in plain), lengths, reverse, True, peep=a["peep"])
    g = mod.layer_backward(out[3], go, gh, gc)
    for name in a:
        np.testing.assert_allclose(g[name], numeric_grad(loss, a, name), rtol=1e-6, atol=1e-7, err_msg=name)


def test_zero_peepholes_are_the_plain_lstm(dtype):
    T, B, I, H = 5, 3, 4, 6
    a = layer_args("lstm", T, B, I, H, dtype, seed=2)
    grads = layer_grads("lstm", T, B, H, dtype, seed=2)
    got, got_g = _run(reference, a, np.zeros(PEEPHOLES * H, dtype), None, False, grads)
    want = reference.layer_forward("lstm", *a.values(), None, False, True)
    want_g = reference.layer_backward(want[3], *grads)
    for x, y in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(x, y)
    assert want_g["peep"] is None
    for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"):
        assert_close(got_g[k], want_g[k], k)
    assert got_g["peep"].shape == (PEEPHOLES * H,) and np.abs(got_g["peep"]).max() > 0


@pytest.mark.parametrize("T,B,I,H,reverse,padded,bias", [
    (1, 1, 1, 1, False, False, True),
    (7, 3, 5, 9, False, False, True),
    (7, 3, 5, 9, True, True, True),
    (12, 5, 3, 17, False, True, False),
    (6, 16, 8, 33, True, False, True),
    (30, 40, 7, 20, False, True, True),     # batch split across threads
    (9, 2, 4, 130, True, True, True),       # unit split across threads, several panels
    (40, 64, 8, 200, False, True, True),    # backward in 3 chunks, the peepholes' sum across the pool
    (40, 64, 8, 200, True, False, True),
])
def test_backend_matches_reference(contract_module, dtype, T, B, I, H, reverse, padded, bias):
    mod = contract_module_of(contract_module)
    seed = T * 31 + H
    scale = min(0.5, 2 / H ** 0.5)  # a wide layer with N(0, 0.5^2) weights is chaotic: rounding would grow
    a = layer_args("lstm", T, B, I, H, dtype, seed=seed, bias=bias, scale=scale)
    peep = peephole_weights(H, dtype, seed, scale)
    peep_before = peep.copy()
    lengths = random_lengths(T, B, seed) if padded else None
    grads = layer_grads("lstm", T, B, H, dtype, seed)
    got, got_g = _run(mod, a, peep, lengths, reverse, grads)
    want, want_g = _run(reference, a, peep, lengths, reverse, grads)
    for name, x, y in zip(("out", "h_n", "c_n"), got[:3], want[:3]):
        assert_close(x, y, name, scaled=True)
    np.testing.assert_array_equal(peep, peep_before)
    assert set(got_g) == set(want_g)
    for name in want_g:
        assert_close(got_g[name], want_g[name], f"grad {name}", scaled=True)
    # inference gives the training forward's results
    inf = mod.layer_forward("lstm", *a.values(), lengths, reverse, False, peep=peep)
    for x, y in zip(inf[:3], got[:3]):
        np.testing.assert_array_equal(x, y)


def test_backend_peephole_gradient_accumulates_with_acc(backend, dtype):
    """With ``acc`` (the layers' running weight gradients) the peepholes' gradient is still returned."""
    mod = backends.get_backend(backend)
    T, B, I, H = 6, 4, 3, 10
    a = layer_args("lstm", T, B, I, H, dtype, seed=5)
    peep = peephole_weights(H, dtype, 5)
    grads = layer_grads("lstm", T, B, H, dtype, 5)
    want, want_g = _run(reference, a, peep, None, False, grads)
    out = mod.layer_forward("lstm", *a.values(), None, False, True, peep=peep)
    acc = (np.zeros_like(a["w_ih"]), np.zeros_like(a["w_hh"]))
    g = mod.layer_backward(out[3], *grads, acc=acc)
    assert g["w_ih"] is acc[0]
    assert_close(g["peep"], want_g["peep"], "peep", scaled=True)


def test_bad_peepholes_are_refused(contract_module):
    mod = contract_module_of(contract_module)
    T, B, I, H = 3, 2, 4, 5
    a = layer_args("lstm", T, B, I, H, np.float32)
    with pytest.raises(ValueError, match="peep"):
        mod.layer_forward("lstm", *a.values(), None, False, True, peep=np.zeros(4 * H, np.float32))
    with pytest.raises(ValueError, match="peep"):
        mod.layer_forward("lstm", *a.values(), None, False, True, peep=np.zeros((3, H), np.float32))
    with pytest.raises(TypeError, match="peep"):
        mod.layer_forward("lstm", *a.values(), None, False, True, peep=np.zeros(3 * H, np.float64))
    with pytest.raises(TypeError, match="peep"):
        mod.layer_forward("lstm", *a.values(), None, False, True, peep=[0.0] * (3 * H))
    with pytest.raises(ValueError, match="peep"):
        mod.layer_forward("lstm", *a.values(), None, False, True, peep=np.zeros(6 * H, np.float32)[::2])
    g = layer_args("gru", T, B, I, H, np.float32)
    with pytest.raises(ValueError, match="peep"):
        mod.layer_forward("gru", *g.values(), None, False, True, peep=np.zeros(3 * H, np.float32))


def test_c_abi_refuses_what_a_kind_does_not_take():
    capi = pytest.importorskip("fastrnn.capi", reason="the C ABI is not installed", exc_type=ImportError)
    T, B, I, H = 2, 1, 1, 2
    out, h_n, c_n = (np.empty(s) for s in ((T, B, H), (B, H), (B, H)))
    q = {k: capi.ffi.from_buffer("double[]", v) for k, v in dict(out=out, h_n=h_n, c_n=c_n).items()}
    peep = capi.ffi.from_buffer("double[]", np.zeros(3 * H))
    mask = capi.ffi.from_buffer("double[]", np.ones((B, H)))
    # peepholes are the LSTM kinds'; a recurrent-dropout mask every kind takes (gru_orig since version 4)
    for kind, peep_arg, mask_arg, want in (("gru", peep, capi.ffi.NULL, capi.lib.FASTRNN_ERR_UNSUPPORTED),
                                           ("gru_orig", capi.ffi.NULL, mask, capi.lib.FASTRNN_OK)):
        a = layer_args(kind, T, B, I, H, np.float64)
        p = {k: capi.ffi.NULL if v is None else capi.ffi.from_buffer("double[]", v) for k, v in a.items()}
        status = capi.lib.fastrnn_layer_forward_ex_f64(
            capi.KIND_CODES[kind], T, B, I, H, p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"],
            peep_arg, mask_arg, capi.ffi.NULL, 0, q["out"], q["h_n"], q["c_n"], capi.ffi.NULL)
        assert status == want, kind
    assert "does not take" in capi.status_message(capi.lib.FASTRNN_ERR_UNSUPPORTED)
    assert capi.abi_version() >= 4


# ----------------------------------------------------------------------------
# the layer: fastrnn.LSTM(peepholes=True)
# ----------------------------------------------------------------------------


def test_layer_parameters_and_repr():
    import fastrnn

    plain = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=7)
    layer = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, peepholes=True, seed=7)
    assert not plain.peepholes and layer.peepholes
    names = [n for n, _ in layer.named_parameters()]
    assert [n for n in names if "peep" in n] == ["weight_peep_l0", "weight_peep_l0_reverse", "weight_peep_l1",
                                                  "weight_peep_l1_reverse"]
    assert not any("peep" in n for n, _ in plain.named_parameters())
    for name, value in plain.state_dict().items():  # a seed gives the same other weights
        np.testing.assert_array_equal(layer.state_dict()[name], value)
    assert layer.weight_peep_l1.shape == (12,) and np.abs(layer.weight_peep_l1).max() <= 0.5
    assert "peepholes=True" in repr(layer) and "peepholes" not in repr(plain)
    copy = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, peepholes=True, seed=8)
    copy.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(copy.weight_peep_l0_reverse, layer.weight_peep_l0_reverse)
    with pytest.raises(TypeError, match="peepholes must be a bool"):
        fastrnn.LSTM(3, 4, peepholes=1)
    with pytest.raises(TypeError, match="peepholes"):
        fastrnn.GRU(3, 4, peepholes=True)


def test_layer_gradients_match_finite_differences(backend):
    """Two layers, both directions, padded: every parameter's gradient, the peepholes' included."""
    import fastrnn

    layer = fastrnn.LSTM(2, 3, num_layers=2, bidirectional=True, batch_first=True, peepholes=True,
                         dtype=np.float64, backend=backend, seed=4)
    x = np.random.default_rng(4).standard_normal((3, 4, 2))
    lstm_layer_matches_finite_differences(layer, x, np.array([4, 2, 3]))


def test_layer_backends_agree(dtype):
    import fastrnn

    results = {}
    for name in backends.available_backends():
        layer = fastrnn.LSTM(5, 8, num_layers=2, bidirectional=True, peepholes=True, dtype=dtype, backend=name,
                             seed=5)
        x = np.random.default_rng(5).standard_normal((7, 3, 5)).astype(dtype)
        out, (h_n, c_n) = layer(x, lengths=np.array([7, 3, 5]))
        dx, _ = layer.backward(np.ones_like(out))
        results[name] = [out, h_n, c_n, dx] + [layer.grads[n] for n, _ in layer.named_parameters()]
    want = results["numpy"]
    for name, got in results.items():
        for g, w in zip(got, want):
            assert_close(g, w, name, scaled=True)


@pytest.mark.parametrize("reverse", [False, True])
def test_results_do_not_depend_on_the_thread_count(reverse):
    """The compiled backend's results, the peepholes' gradient (summed by unit blocks across
    the pool) included, are bitwise the same on 1 and 2 threads."""
    if "cpp" not in backends.available_backends():
        pytest.skip("the compiled backend is not installed")
    mod = backends.get_backend("cpp")
    T, B, I, H = 20, 64, 8, 200
    a = layer_args("lstm", T, B, I, H, np.float32, seed=9)
    peep = peephole_weights(H, np.float32, 9)
    grads = layer_grads("lstm", T, B, H, np.float32, 9)
    lengths = random_lengths(T, B, 9)
    same_on_one_and_two_threads(lambda: _run(mod, a, peep, lengths, reverse, grads))


# ----------------------------------------------------------------------------
# one step: cell_forward(peep=...) and LSTMCell(peepholes=True)
# ----------------------------------------------------------------------------


def _cell_args(B, I, H, dtype, seed):
    a = layer_args("lstm", 1, B, I, H, dtype, seed=seed)
    return dict(x=a["x"][0], h=a["h0"], c=a["c0"], w_ih=a["w_ih"], w_hh=a["w_hh"], b_ih=a["b_ih"], b_hh=a["b_hh"])


@pytest.mark.parametrize("B,I,H", [(1, 1, 1), (1, 64, 128), (3, 5, 9), (7, 6, 20)])  # units path and rows path
def test_cell_matches_reference(contract_module, dtype, B, I, H):
    mod = contract_module_of(contract_module)
    a = _cell_args(B, I, H, dtype, seed=B + H)
    peep = peephole_weights(H, dtype, B + H)
    rng = np.random.default_rng(H)
    gh, gc = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    got = mod.cell_forward("lstm", *a.values(), True, peep)
    want = reference.cell_forward("lstm", *a.values(), True, peep)
    for x, y, name in zip(got[:2], want[:2], ("h_new", "c_new")):
        assert_close(x, y, name)
    got_g, want_g = mod.cell_backward(got[2], gh, gc), reference.cell_backward(want[2], gh, gc)
    assert set(got_g) == set(want_g) and want_g["peep"].shape == (3 * H,)
    for name in want_g:
        assert_close(got_g[name], want_g[name], f"cell grad {name}", scaled=True)
    inf = mod.cell_forward("lstm", *a.values(), False, peep)
    for x, y in zip(inf[:2], got[:2]):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="peep"):
        mod.cell_forward("lstm", *a.values(), True, np.zeros(2 * H, dtype))


def test_cell_gradients_match_finite_differences(contract_module):
    mod = contract_module_of(contract_module)
    B, I, H = 2, 3, 4
    a = _cell_args(B, I, H, np.float64, seed=12)
    a["peep"] = peephole_weights(H, np.float64, 12)
    rng = np.random.default_rng(12)
    gh, gc = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    plain = [k for k in a if k != "peep"]

    def loss():
        h, c, _ = mod.cell_forward("lstm", *(a[k] for k in plain), False, a["peep"])
        return float(np.sum(h * gh) + np.sum(c * gc))

    g = mod.cell_backward(mod.cell_forward("lstm", *(a[k] for k in plain), True, a["peep"])[2], gh, gc)
    for name, key in zip(a, ("x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh", "peep")):
        np.testing.assert_allclose(g[key], numeric_grad(loss, a, name), rtol=1e-6, atol=1e-7, err_msg=name)


def test_cell_steps_are_the_layer(backend, dtype):
    """LSTMCell(peepholes=True) stepped over a sequence gives the LSTM layer's outputs and, back-propagated
    step by step, its gradients."""
    import fastrnn

    T, B, I, H = 6, 3, 4, 5
    layer = fastrnn.LSTM(I, H, peepholes=True, dtype=dtype, backend=backend, seed=3)
    cell = fastrnn.LSTMCell(I, H, peepholes=True, dtype=dtype, backend=backend, seed=4)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})  # weight_ih_l0 -> weight_ih
    assert repr(cell).endswith("peepholes=True, dtype=" + str(np.dtype(dtype)) + ")")
    x = np.random.default_rng(3).standard_normal((T, B, I)).astype(dtype)
    out, (h_n, c_n) = layer(x)
    layer.backward(np.ones_like(out))
    state, outs = None, []
    for t in range(T):
        state = cell(x[t], state)
        outs.append(state)
    for t in range(T):
        assert_close(outs[t][0], out[t], f"h[{t}]", scaled=True)
    dh, dc = np.zeros((B, H), dtype), np.zeros((B, H), dtype)
    for t in reversed(range(T)):
        _, (dh, dc) = cell.backward((dh + 1, dc))
    for name, g in cell.grads.items():
        assert_close(g, layer.grads[name + "_l0"], name, scaled=True)
