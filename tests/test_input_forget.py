"""The LSTM with coupled input and forget gates (kind ``lstm_cifg``, ``LSTM(input_forget=True)``,
ONNX's ``input_forget=1``): f = 1 - i. Checked against an independent statement of the same
equations (f = 1 - sigmoid(a) = sigmoid(-a): the plain LSTM whose forget rows are the negated
input rows), finite differences, every implementation, and ONNX Runtime (tests/test_onnx.py).
The contract suite (tests/test_contract.py) runs every kind, this one included, on every
implementation; here are the variants' combinations and the layers."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn import backends
from fastrnn.backends import reference

from _helpers import (assert_close, contract_module_of, layer_args, layer_grads, lstm_layer_matches_finite_differences,
                      numeric_grad, peephole_weights, random_lengths, same_on_one_and_two_threads)


def _tied(a, H, peep=None):
    """The plain LSTM's arguments that compute ``a``'s CIFG: the f rows (and p_f) are the negated
    i rows, so sigmoid(a_f) = 1 - sigmoid(a_i)."""
    t = dict(a)
    for k in ("w_ih", "w_hh", "b_ih", "b_hh"):
        if t[k] is not None:
            t[k] = t[k].copy()
            t[k][H:2 * H] = -t[k][:H]
    if peep is not None:
        peep = peep.copy()
        peep[H:2 * H] = -peep[:H]
    return t, peep


@pytest.mark.parametrize("peepholes", [False, True], ids=["plain", "peep"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_reference_is_the_plain_lstm_with_tied_forget_rows(peepholes, reverse):
    """The spec against the plain LSTM's spec: outputs equal, and the CIFG's gradient of the i rows
    is the tied LSTM's i-row gradient minus its f-row one (a_f = -a_i); the f rows get zero."""
    T, B, I, H = 5, 3, 4, 6
    a = layer_args("lstm_cifg", T, B, I, H, np.float64, seed=2)
    peep = peephole_weights(H, np.float64, 2) if peepholes else None
    lengths = np.array([5, 2, 4], np.int64)
    grads = layer_grads("lstm_cifg", T, B, H, np.float64, seed=2)
    got = reference.layer_forward("lstm_cifg", *a.values(), lengths, reverse, True, peep=peep)
    t, tpeep = _tied(a, H, peep)
    want = reference.layer_forward("lstm", *t.values(), lengths, reverse, True, peep=tpeep)
    for x, y in zip(got[:3], want[:3]):
        np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-13)
    g = reference.layer_backward(got[3], *grads)
    w = reference.layer_backward(want[3], *grads)
    for k in ("x", "h0", "c0"):
        np.testing.assert_allclose(g[k], w[k], rtol=1e-12, atol=1e-12, err_msg=k)
    for k in ("w_ih", "w_hh", "b_ih", "b_hh") + (("peep",) if peepholes else ()):
        i_rows = w[k][:H] - w[k][H:2 * H]
        np.testing.assert_allclose(g[k][:H], i_rows, rtol=1e-12, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(g[k][2 * H:], w[k][2 * H:], rtol=1e-12, atol=1e-12, err_msg=k)
        assert not np.any(g[k][H:2 * H]), k


@pytest.mark.parametrize("peepholes", [False, True], ids=["plain", "peep"])
@pytest.mark.parametrize("proj", [False, True], ids=["noproj", "proj"])
def test_gradients_match_finite_differences(contract_module, peepholes, proj):
    """Every implementation, with peepholes and a projection, against finite differences
    (float64); the forget rows' gradients are exactly zero."""
    mod = contract_module_of(contract_module)
    T, B, I, H = 4, 3, 2, 4
    P = 3 if proj else None
    a = layer_args("lstm_cifg", T, B, I, H, np.float64, seed=5, P=P)
    kw = {}
    if peepholes:
        kw["peep"] = peephole_weights(H, np.float64, 5)
    if proj:
        kw["w_hr"] = a.pop("w_hr")
    lengths = np.array([4, 1, 3], np.int64)
    go, gh, gc = layer_grads("lstm_cifg", T, B, H, np.float64, seed=5, P=P)
    params = {**a, **kw}

    def loss():
        out, h_n, c_n, _ = mod.layer_forward("lstm_cifg", *(params[k] for k in a), lengths, True, False,
                                             **{k: params[k] for k in kw})
        return float(np.sum(out * go) + np.sum(h_n * gh) + np.sum(c_n * gc))

    ws = mod.layer_forward("lstm_cifg", *a.values(), lengths, True, True, **kw)[3]
    g = mod.layer_backward(ws, go, gh, gc)
    for name in params:
        num = numeric_grad(loss, params, name)
        np.testing.assert_allclose(g[name], num, rtol=1e-6, atol=1e-7, err_msg=name)
        if name in ("w_ih", "w_hh", "b_ih", "b_hh", "peep"):
            assert not np.any(g[name][H:2 * H]), name


@pytest.mark.parametrize("T,B,I,H,P", [(7, 3, 5, 6, None), (9, 16, 33, 51, None), (6, 1, 64, 128, None),
                                         (5, 4, 8, 40, 17), (4, 2, 3, 130, None)])
@pytest.mark.parametrize("peepholes", [False, True], ids=["plain", "peep"])
def test_backend_matches_reference(contract_module, dtype, T, B, I, H, P, peepholes):
    """Every implementation against the reference: batch and units splits (B = 1), lengths,
    reverse, peepholes and a projection."""
    mod = contract_module_of(contract_module)
    a = layer_args("lstm_cifg", T, B, I, H, dtype, seed=T + H, P=P)
    kw = dict(peep=peephole_weights(H, dtype, H) if peepholes else None, w_hr=a.pop("w_hr", None))
    grads = layer_grads("lstm_cifg", T, B, H, dtype, seed=H, P=P)
    lengths = random_lengths(T, B, seed=H)
    for reverse in (False, True):
        got = mod.layer_forward("lstm_cifg", *a.values(), lengths, reverse, True, **kw)
        want = reference.layer_forward("lstm_cifg", *a.values(), lengths, reverse, True, **kw)
        for x, y, name in zip(got[:3], want[:3], ("out", "h_n", "c_n")):
            assert_close(x, y, name)
        g, w = mod.layer_backward(got[3], *grads), reference.layer_backward(want[3], *grads)
        assert set(g) == set(w)
        for name in w:
            assert_close(g[name], w[name], f"grad {name}", scaled=True)
        inf = mod.layer_forward("lstm_cifg", *a.values(), lengths, reverse, False, **kw)
        for x, y in zip(inf[:3], got[:3]):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("B,H", [(64, 200), (1, 256)], ids=["batch-split", "units-split"])
def test_results_do_not_depend_on_the_thread_count(B, H):
    if "cpp" not in backends.available_backends():
        pytest.skip("the compiled backend is not installed")
    mod = backends.get_backend("cpp")
    T, I = 12, 8
    a = layer_args("lstm_cifg", T, B, I, H, np.float32, seed=9)
    peep = peephole_weights(H, np.float32, 9)
    grads = layer_grads("lstm_cifg", T, B, H, np.float32, 9)
    lengths = random_lengths(T, B, 9)

    def run():
        out = mod.layer_forward("lstm_cifg", *a.values(), lengths, True, True, peep=peep)
        return out, mod.layer_backward(out[3], *grads)

    same_on_one_and_two_threads(run)


@pytest.mark.parametrize("B,I,H", [(1, 64, 128), (3, 5, 9)])
def test_cell_matches_reference(contract_module, dtype, B, I, H):
    mod = contract_module_of(contract_module)
    a = layer_args("lstm_cifg", 1, B, I, H, dtype, seed=B + H)
    args = (a["x"][0], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    peep = peephole_weights(H, dtype, B)
    rng = np.random.default_rng(H)
    gh, gc = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    for p in (None, peep):
        got = mod.cell_forward("lstm_cifg", *args, True, p)
        want = reference.cell_forward("lstm_cifg", *args, True, p)
        for x, y, name in zip(got[:2], want[:2], ("h_new", "c_new")):
            assert_close(x, y, name)
        g, w = mod.cell_backward(got[2], gh, gc), reference.cell_backward(want[2], gh, gc)
        for name in w:
            assert_close(g[name], w[name], f"cell grad {name}", scaled=True)
        assert not np.any(g["w_ih"][H:2 * H]) and not np.any(g["w_hh"][H:2 * H])


def test_c_abi_kind_code_and_sizes():
    """Kind FASTRNN_LSTM_CIFG (ABI version 4): its code, gate count and workspace sizes (a projected
    one's too) are the LSTM's. (The functions themselves: test_capi.py and test_contract.py run
    every kind through them.)"""
    capi = pytest.importorskip("fastrnn.capi", reason="the C ABI is not installed", exc_type=ImportError)
    assert capi.abi_version() >= 4 and capi.KIND_CODES["lstm_cifg"] == capi.lib.FASTRNN_LSTM_CIFG == 5
    assert capi.lib.fastrnn_num_gates(capi.LSTM_CIFG) == 4
    for T, B, H, P in ((3, 2, 5, 5), (4, 3, 6, 2)):
        assert capi.lib.fastrnn_layer_workspace_size_proj(capi.LSTM_CIFG, T, B, H, P) == \
            capi.lib.fastrnn_layer_workspace_size_proj(capi.LSTM, T, B, H, P)
    assert capi.lib.fastrnn_cell_workspace_size(capi.LSTM_CIFG, 2, 5) == capi.lib.fastrnn_cell_workspace_size(
        capi.LSTM, 2, 5)


# ----------------------------------------------------------------------------
# the layers: fastrnn.LSTM(input_forget=True), LSTMCell(input_forget=True)
# ----------------------------------------------------------------------------


def test_layer_parameters_state_dict_and_repr():
    import fastrnn

    plain = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=7)
    layer = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, input_forget=True, seed=7)
    assert layer.kind == "lstm_cifg" and layer.input_forget and not plain.input_forget
    assert layer.mode == "LSTM"
    for name, value in plain.state_dict().items():  # the same parameters, names and initial values
        np.testing.assert_array_equal(layer.state_dict()[name], value)
    assert layer.state_dict().keys() == plain.state_dict().keys()
    assert "input_forget=True" in repr(layer) and "input_forget" not in repr(plain)
    cell = fastrnn.LSTMCell(3, 4, input_forget=True, peepholes=True)
    assert cell.kind == "lstm_cifg" and "input_forget=True" in repr(cell)
    with pytest.raises(TypeError, match="input_forget must be a bool"):
        fastrnn.LSTM(3, 4, input_forget=1)
    with pytest.raises(TypeError, match="input_forget must be a bool"):
        fastrnn.LSTMCell(3, 4, input_forget="yes")
    with pytest.raises(TypeError, match="input_forget"):
        fastrnn.GRU(3, 4, input_forget=True)


def test_layer_gradients_match_finite_differences(backend):
    import fastrnn

    layer = fastrnn.LSTM(2, 3, num_layers=2, bidirectional=True, peepholes=True, input_forget=True, dtype="float64",
                         backend=backend, seed=5)
    x = np.random.default_rng(5).standard_normal((4, 3, 2))
    lstm_layer_matches_finite_differences(layer, x, np.array([4, 2, 3]))
    for name, g in layer.grads.items():
        if name.startswith(("weight_ih", "weight_hh", "bias", "weight_peep")):
            assert not np.any(g[3:6]), name


def test_layer_is_the_plain_layer_with_tied_forget_rows(backend, dtype):
    """The layer API end to end (layers, directions, batch_first, lengths) against the plain LSTM
    whose forget rows are the negated input rows."""
    import fastrnn

    H = 5
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, dtype=dtype, backend=backend)
    cifg = fastrnn.LSTM(3, H, input_forget=True, seed=1, **kw)
    plain = fastrnn.LSTM(3, H, seed=2, **kw)
    state = {k: v.copy() for k, v in cifg.state_dict().items()}
    for k, v in state.items():
        v[H:2 * H] = -v[:H]
    plain.load_state_dict(state)
    x = np.random.default_rng(3).standard_normal((4, 6, 3)).astype(dtype)
    lengths = np.array([6, 3, 5, 1])
    with fastrnn.no_grad():
        got, (h, c) = cifg(x, lengths=lengths)
        want, (wh, wc) = plain(x, lengths=lengths)
    for a, b in ((got, want), (h, wh), (c, wc)):
        assert_close(a, b, "output")


def test_cell_steps_are_the_layer(backend, dtype):
    import fastrnn

    T, B, I, H = 5, 3, 4, 6
    layer = fastrnn.LSTM(I, H, input_forget=True, peepholes=True, dtype=dtype, backend=backend, seed=3)
    cell = fastrnn.LSTMCell(I, H, input_forget=True, peepholes=True, dtype=dtype, backend=backend, seed=4)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = np.random.default_rng(6).standard_normal((T, B, I)).astype(dtype)
    with fastrnn.no_grad():
        out, (h_n, c_n) = layer(x)
        state = None
        for t in range(T):
            state = cell(x[t], state)
            assert_close(state[0], out[t], f"step {t}")
    assert_close(state[1], c_n[0], "c_n")


def test_sequence_model_names_the_cell():
    """fastrnn.nn.SequenceModel around a CIFG layer is an LSTM model (its cell is 'lstm')."""
    from fastrnn.nn import Linear, SequenceModel

    import fastrnn

    model = SequenceModel.from_modules(fastrnn.LSTM(1, 4, input_forget=True), Linear(4, 1))
    assert model.cell == "lstm"
