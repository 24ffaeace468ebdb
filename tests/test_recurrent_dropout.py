"""Variational recurrent dropout (``hmask``, one mask per sequence on the recurrent input): the
reference against finite differences, every backend against the reference, the mask's effect,
the arguments' checks, and the layers' ``recurrent_dropout=``."""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import backends
from fastrnn.backends import reference
from fastrnn.backends.contract import KINDS

from _helpers import (assert_close, cell_args, contract_module_of, layer_args, layer_grads, numeric_grad,
                      peephole_weights, random_lengths)
from conftest import contract_modules


def _mask(B, H, dtype, p=0.4, seed=0):
    keep = np.random.default_rng(seed + 17).random((B, H)) >= p
    return (keep / (1 - p)).astype(dtype)


def _run(mod, kind, a, hmask, lengths, reverse, grads, keep=True):
    out = mod.layer_forward(kind, *a.values(), lengths, reverse, keep, hmask=hmask)
    return out, (mod.layer_backward(out[3], *grads) if keep else None)


@pytest.mark.parametrize("kind", ("lstm", "gru", "rnn_tanh", "gru_orig", "lstm_cifg"))
@pytest.mark.parametrize("reverse", [False, True])
def test_reference_gradients_match_finite_differences(kind, reverse):
    T, B, I, H = 4, 3, 2, 3
    a = layer_args(kind, T, B, I, H, np.float64, seed=2)
    m = _mask(B, H, np.float64, seed=2)
    lengths = np.array([4, 1, 3], dtype=np.int64)
    go, gh, gc = layer_grads(kind, T, B, H, np.float64, seed=2)

    def loss():
        out, h_n, c_n, _ = reference.layer_forward(kind, *a.values(), lengths, reverse, False, hmask=m)
        return float(np.sum(out * go) + np.sum(h_n * gh) + (np.sum(c_n * gc) if c_n is not None else 0.0))

    out = reference.layer_forward(kind, *a.values(), lengths, reverse, True, hmask=m)
    g = reference.layer_backward(out[3], go, gh, gc)
    for name in a:
        if a[name] is None:
            continue
        np.testing.assert_allclose(g[name], numeric_grad(loss, a, name), rtol=1e-7, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T,B,I,H,reverse,padded", [
    (1, 1, 1, 1, False, False),
    (7, 3, 5, 9, True, True),
    (30, 40, 7, 20, False, True),   # batch split across threads
    (9, 2, 4, 130, True, True),     # unit split across threads
    (40, 64, 8, 200, True, False),  # backward in chunks
])
def test_backend_matches_reference(contract_module, dtype, kind, T, B, I, H, reverse, padded):
    mod = contract_module_of(contract_module)
    seed = T * 31 + H
    # weights scaled so that the masked recurrence (gain ~ scale * sqrt(H) / (1-p)) is not chaotic:
    # in a chaotic one float32 rounding grows over the steps
    a = layer_args(kind, T, B, I, H, dtype, seed=seed, scale=min(0.5, 0.6 / H ** 0.5))
    m = _mask(B, H, dtype, seed=seed)
    lengths = random_lengths(T, B, seed) if padded else None
    grads = layer_grads(kind, T, B, H, dtype, seed)
    got, got_g = _run(mod, kind, a, m, lengths, reverse, grads)
    want, want_g = _run(reference, kind, a, m, lengths, reverse, grads)
    for name, x, y in zip(("out", "h_n", "c_n"), got[:3], want[:3]):
        assert_close(x, y, name, scaled=True)
    for name in want_g:
        assert_close(got_g[name], want_g[name], f"grad {name}", scaled=True)
    inf = mod.layer_forward(kind, *a.values(), lengths, reverse, False, hmask=m)
    for x, y in zip(inf[:3], got[:3]):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kind", KINDS)
def test_a_mask_of_ones_is_no_mask(backend, kind):
    mod = backends.get_backend(backend)
    T, B, I, H = 6, 5, 3, 8
    a = layer_args(kind, T, B, I, H, np.float64, seed=4)
    grads = layer_grads(kind, T, B, H, np.float64, 4)
    got, got_g = _run(mod, kind, a, np.ones((B, H)), None, False, grads)
    want, want_g = _run(mod, kind, a, None, None, False, grads)
    for x, y in zip(got[:3], want[:3]):
        if y is not None:
            np.testing.assert_array_equal(x, y)  # h * 1 is h: the same products
    for name in want_g:
        assert_close(got_g[name], want_g[name], name)


@pytest.mark.parametrize("kind", ("lstm", "rnn_tanh", "lstm_cifg"))
def test_the_gradient_is_zero_where_the_mask_is(backend, kind):
    """One step: h0 reaches the output only through the masked product (LSTM, RNN), so its gradient
    is exactly zero where the mask is zero, and nonzero elsewhere."""
    mod = backends.get_backend(backend)
    T, B, I, H = 1, 4, 3, 6
    a = layer_args(kind, T, B, I, H, np.float32, seed=5)
    m = _mask(B, H, np.float32, p=0.5, seed=5)
    assert (m == 0).any() and (m != 0).any()
    out = mod.layer_forward(kind, *a.values(), None, False, True, hmask=m)
    g = mod.layer_backward(out[3], np.ones((T, B, H), np.float32), None, None)
    assert np.all(g["h0"][m == 0] == 0)
    assert np.all(g["h0"][m != 0] != 0)


def test_bad_masks_are_refused():
    T, B, I, H = 3, 2, 4, 5
    for name in contract_modules():
        mod = contract_module_of(name)
        a = layer_args("lstm", T, B, I, H, np.float32)
        with pytest.raises(ValueError, match="hmask"):
            mod.layer_forward("lstm", *a.values(), None, False, True, hmask=np.ones((B, H + 1), np.float32))
        with pytest.raises(TypeError, match="hmask"):
            mod.layer_forward("lstm", *a.values(), None, False, True, hmask=np.ones((B, H), np.float64))


# ----------------------------------------------------------------------------
# the layers: recurrent_dropout=
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls,kw", [(fastrnn.LSTM, {}), (fastrnn.GRU, {}), (fastrnn.RNN, {"nonlinearity": "relu"}),
                                    (fastrnn.GRU, {"linear_before_reset": False}),
                                    (fastrnn.LSTM, {"input_forget": True})])
def test_layer_recurrent_dropout(cls, kw):
    T, B, I, H = 7, 3, 4, 6
    x = np.random.default_rng(0).standard_normal((T, B, I))
    results = []
    for name in backends.available_backends():  # the same seed draws the same masks on every backend
        layer = cls(I, H, num_layers=2, bidirectional=True, recurrent_dropout=0.3, dtype=np.float64, backend=name,
                    seed=3, **kw)
        assert "recurrent_dropout=0.3" in repr(layer)
        out, _ = layer(x, lengths=[7, 4, 6])
        dx, _ = layer.backward(np.ones_like(out))
        results.append([out, dx] + [layer.grads[n] for n, _ in layer.named_parameters()])
        layer.eval()
        plain = cls(I, H, num_layers=2, bidirectional=True, dtype=np.float64, backend=name, seed=3, **kw)
        plain.eval()
        with fastrnn.no_grad():  # eval: no mask, the plain layer's outputs
            np.testing.assert_array_equal(layer(x)[0], plain(x)[0])
            assert not np.allclose(out, plain(x, lengths=[7, 4, 6])[0])  # training mode did drop
    for got in results[1:]:
        for g, w in zip(got, results[0]):
            assert_close(g, w, "backend", scaled=True)


def test_layer_masks_are_fresh_each_forward_and_reproducible():
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    a = fastrnn.LSTM(3, 4, recurrent_dropout=0.5, dtype=np.float64, seed=8)
    b = fastrnn.LSTM(3, 4, recurrent_dropout=0.5, dtype=np.float64, seed=8)
    with fastrnn.no_grad():
        a1, a2 = a(x)[0], a(x)[0]
        b1 = b(x)[0]
    np.testing.assert_array_equal(a1, b1)  # same seed, same masks
    assert not np.array_equal(a1, a2)      # a new mask each forward


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, True, "0.2"])
def test_bad_recurrent_dropout_is_refused(bad):
    with pytest.raises(ValueError, match="recurrent_dropout"):
        fastrnn.LSTM(3, 4, recurrent_dropout=bad)



# ----------------------------------------------------------------------------
# cells: cell_forward(..., hmask=) and the cells' recurrent_dropout=
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind,with_peep", [(k, False) for k in KINDS] + [("lstm", True), ("lstm_cifg", True)])
@pytest.mark.parametrize("B,I,H", [(1, 3, 5), (2, 128, 130), (9, 4, 17)])  # units path (one part, parts), batch path
@pytest.mark.parametrize("threads", [1, 2])
def test_cell_step_is_a_masked_layer_step(contract_module, dtype, kind, with_peep, B, I, H, threads):
    """A cell step with hmask equals one step of the reference layer with that mask: outputs and
    every gradient (on 2 threads the C++ units path splits B=2 H=130 into parts)."""
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(threads)
    try:
        _check_cell_step(contract_module_of(contract_module), dtype, kind, with_peep, B, I, H)
    finally:
        fastrnn.set_num_threads(before)


def _check_cell_step(mod, dtype, kind, with_peep, B, I, H):
    a = layer_args(kind, 1, B, I, H, dtype, seed=B + H, scale=min(0.5, 0.6 / H ** 0.5))
    peep = peephole_weights(H, dtype, seed=H) if with_peep else None
    m = _mask(B, H, dtype, seed=H)
    _, gh, gc = layer_grads(kind, 1, B, H, dtype, seed=H)
    h, c, ws = mod.cell_forward(kind, a["x"][0], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], True,
                                peep, hmask=m)
    g = mod.cell_backward(ws, gh, gc)
    out, h_n, c_n, lws = reference.layer_forward(kind, *a.values(), None, False, True, peep=peep, hmask=m)
    want = reference.layer_backward(lws, None, gh, gc)
    assert_close(h, h_n, "h", scaled=True)
    if c_n is not None:
        assert_close(c, c_n, "c", scaled=True)
    for got, name in ((g["x"][None], "x"), (g["h"], "h0"), (g["c"], "c0"), (g["w_ih"], "w_ih"), (g["w_hh"], "w_hh"),
                      (g["b_ih"], "b_ih"), (g["b_hh"], "b_hh"), (g["peep"], "peep")):
        if want[name] is None:
            assert got is None, name
        else:
            assert_close(got, want[name], f"grad {name}", scaled=True)
    inf = mod.cell_forward(kind, a["x"][0], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], False,
                           peep, hmask=m)
    np.testing.assert_array_equal(inf[0], h)  # inference computes what training does


@pytest.mark.parametrize("kind", KINDS)
def test_cell_mask_of_ones_is_no_mask(contract_module, kind):
    mod = contract_module_of(contract_module)
    a = cell_args(kind, 3, 4, 6, np.float64, seed=6)
    got_h, got_c, got_ws = mod.cell_forward(kind, *a.values(), True, None, np.ones((3, 6)))
    want_h, want_c, want_ws = mod.cell_forward(kind, *a.values(), True, None)
    np.testing.assert_array_equal(got_h, want_h)  # h * 1 is h: the same products
    if want_c is not None:
        np.testing.assert_array_equal(got_c, want_c)
    grad_c = np.ones((3, 6)) if want_c is not None else None
    got, want = mod.cell_backward(got_ws, np.ones((3, 6)), grad_c), mod.cell_backward(want_ws, np.ones((3, 6)), grad_c)
    for name in want:
        assert_close(got[name], want[name], name)


@pytest.mark.parametrize("kind", ("lstm", "rnn_relu", "lstm_cifg"))
def test_cell_mask_is_the_masked_state(contract_module, kind):
    """h reaches h' only through the masked product (LSTM, RNN): the step with hmask is the plain
    step from h * hmask, and h's gradient is that step's times hmask (so exactly zero where the mask
    is)."""
    mod = contract_module_of(contract_module)
    B, H = 4, 6
    a = cell_args(kind, B, 3, H, np.float64, seed=5)
    if kind == "rnn_relu":
        a["b_ih"] = a["b_ih"] + 5  # every unit active: relu passes the gradient
    m = _mask(B, H, np.float64, p=0.5, seed=5)
    assert (m == 0).any() and (m != 0).any()
    gh = np.random.default_rng(5).standard_normal((B, H))
    gc = gh[::-1].copy() if a["c"] is not None else None
    h, c, ws = mod.cell_forward(kind, *a.values(), True, None, m)
    g = mod.cell_backward(ws, gh, gc)
    plain_args = dict(a, h=a["h"] * m)
    h_p, c_p, ws_p = mod.cell_forward(kind, *plain_args.values(), True)
    g_p = mod.cell_backward(ws_p, gh, gc)
    np.testing.assert_array_equal(h, h_p)
    assert_close(g["h"], g_p["h"] * m, "grad h")
    assert np.all(g["h"][m == 0] == 0)
    for name in g_p:
        if name != "h":
            assert_close(g[name], g_p[name], f"grad {name}")


@pytest.mark.parametrize("kind", ("gru_orig", "lstm"))
def test_bad_cell_masks_are_refused(kind):
    B, I, H = 2, 4, 5
    for name in contract_modules():
        mod = contract_module_of(name)
        a = cell_args(kind, B, I, H, np.float32)
        for bad in (np.ones((B + 1, H), np.float32), np.ones((B, H + 1), np.float32), np.ones(B * H, np.float32)):
            with pytest.raises(ValueError, match="hmask"):
                mod.cell_forward(kind, *a.values(), True, None, bad)
        for bad in (np.ones((B, H), np.float64), np.ones((H, B), np.float32).T, [[1.0] * H] * B):
            with pytest.raises((TypeError, ValueError), match="hmask"):
                mod.cell_forward(kind, *a.values(), True, None, bad)


_CELL_LAYER = [(fastrnn.LSTMCell, fastrnn.LSTM, {}), (fastrnn.GRUCell, fastrnn.GRU, {}),
               (fastrnn.RNNCell, fastrnn.RNN, {"nonlinearity": "relu"}),
               (fastrnn.GRUCell, fastrnn.GRU, {"linear_before_reset": False}),
               (fastrnn.LSTMCell, fastrnn.LSTM, {"input_forget": True, "peepholes": True})]


@pytest.mark.parametrize("cell_cls,layer_cls,kw", _CELL_LAYER)
def test_cell_loop_is_the_layer_with_recurrent_dropout(backend, cell_cls, layer_cls, kw):
    """A cell stepped over a sequence with recurrent_dropout=p is the layer with the same p: the
    same seed gives the same weights and the same mask, drawn once and kept for every step."""
    T, B, I, H = 6, 3, 4, 5
    x = np.random.default_rng(0).standard_normal((T, B, I))
    cell = cell_cls(I, H, recurrent_dropout=0.4, dtype=np.float64, backend=backend, seed=3, **kw)
    layer = layer_cls(I, H, recurrent_dropout=0.4, dtype=np.float64, backend=backend, seed=3, **kw)
    assert "recurrent_dropout=0.4" in repr(cell)
    lstm = cell_cls is fastrnn.LSTMCell
    hx, hs = None, []
    for t in range(T):
        hx = cell(x[t], hx)
        hs.append(hx[0] if lstm else hx)
    out, _ = layer(x)
    assert_close(np.stack(hs), out, "outputs")
    gout = np.random.default_rng(1).standard_normal(out.shape)
    dx_layer, _ = layer.backward(gout)
    dh, dc, dxs = np.zeros((B, H)), None, [None] * T
    for t in reversed(range(T)):  # the cell's tape runs back from the last step
        if lstm:
            dxs[t], (dh, dc) = cell.backward((gout[t] + dh, dc))
        else:
            dxs[t], dh = cell.backward(gout[t] + dh)
    assert_close(np.stack(dxs), dx_layer, "dx")
    for name, _ in cell.named_parameters():
        assert_close(cell.grads[name], layer.grads[name + "_l0"], name)


def test_cell_mask_lasts_until_reset():
    I, H = 3, 4
    x = np.random.default_rng(2).standard_normal((2, I))
    cell = fastrnn.GRUCell(I, H, recurrent_dropout=0.5, dtype=np.float64, seed=1)
    h = np.random.default_rng(3).standard_normal((2, H))
    plain = fastrnn.GRUCell(I, H, dtype=np.float64, seed=1)
    with fastrnn.no_grad():  # training mode: the mask applies without gradients too
        a, b = cell(x, h), cell(x, h)
        np.testing.assert_array_equal(a, b)  # one sequence: one mask
        assert not np.allclose(a, plain(x, h))  # and it drops units
        cell.reset_dropout_mask()
        c = cell(x, h)
        assert not np.array_equal(a, c)  # a new sequence: a new mask
        np.testing.assert_array_equal(cell(x, h), c)
        cell(x)  # no hx: a sequence's first step, a new mask
        e = cell(x, h)
        assert not np.array_equal(e, c)
        np.testing.assert_array_equal(cell(x, h), e)  # the steps after it share it
        with pytest.raises(ValueError, match="reset_dropout_mask"):
            cell(x[:1], h[:1])  # a batch that is not the sequence's
        cell.reset_dropout_mask()
        assert cell(x[0], h[0]).shape == (H,)  # unbatched: a mask of one row
        cell.eval()
        np.testing.assert_array_equal(cell(x, h), plain(x, h))  # eval: no mask


@pytest.mark.parametrize("cls", [fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell])
@pytest.mark.parametrize("bad", [-0.1, 1.0, True, "0.2"])
def test_bad_cell_recurrent_dropout_is_refused(cls, bad):
    with pytest.raises(ValueError, match="recurrent_dropout"):
        cls(3, 4, recurrent_dropout=bad)


def test_c_abi_masked_cell_status_codes():
    """fastrnn_cell_{forward,backward}_masked_*: every kind takes a mask; peepholes only the LSTM
    kinds (else FASTRNN_ERR_UNSUPPORTED); backward with peep needs dpeep (else a NULL-pointer
    status); the results equal fastrnn.capi.cell_forward's."""
    capi = pytest.importorskip("fastrnn.capi", reason="the C ABI is not installed", exc_type=ImportError)
    ffi, lib = capi.ffi, capi.lib
    assert capi.abi_version() >= 5
    B, I, H = 2, 3, 4

    def buf(a):
        return ffi.NULL if a is None else ffi.from_buffer("double[]", a)

    m = _mask(B, H, np.float64, seed=9)
    for kind in KINDS:
        a = cell_args(kind, B, I, H, np.float64, seed=9)
        lstm = a["c"] is not None
        peep = np.zeros(3 * H)
        h_new, c_new = np.empty((B, H)), np.empty((B, H))
        ws = np.empty(int(lib.fastrnn_cell_workspace_size(capi.KIND_CODES[kind], B, H)))

        def forward(peep_arg):
            return lib.fastrnn_cell_forward_masked_f64(
                capi.KIND_CODES[kind], B, I, H, buf(a["x"]), buf(a["h"]), buf(a["c"]), buf(a["w_ih"]),
                buf(a["w_hh"]), buf(a["b_ih"]), buf(a["b_hh"]), peep_arg, buf(m), buf(h_new),
                buf(c_new if lstm else None), buf(ws))

        assert forward(buf(peep)) == (lib.FASTRNN_OK if lstm else lib.FASTRNN_ERR_UNSUPPORTED), kind
        assert forward(ffi.NULL) == lib.FASTRNN_OK, kind
        want = capi.cell_forward(kind, *a.values(), True, None, m)
        np.testing.assert_array_equal(h_new, want[0])
        if lstm:
            g = {k: np.empty_like(v) for k, v in dict(x=a["x"], h=a["h"], w_ih=a["w_ih"], w_hh=a["w_hh"]).items()}
            status = lib.fastrnn_cell_backward_masked_f64(
                capi.KIND_CODES[kind], B, I, H, buf(a["x"]), buf(a["h"]), buf(a["c"]), buf(c_new), buf(a["w_ih"]),
                buf(a["w_hh"]), buf(peep), buf(m), buf(ws), buf(np.ones((B, H))), ffi.NULL, buf(g["x"]),
                buf(g["h"]), buf(np.empty((B, H))), buf(g["w_ih"]), buf(g["w_hh"]), ffi.NULL, ffi.NULL, ffi.NULL)
            assert status == lib.FASTRNN_ERR_NULL_POINTER, kind  # peep without dpeep
