"""fastrnn's layers and cells, loaded with a PyTorch module's state_dict, give
PyTorch's outputs and gradients (all parameters, inputs, initial states)."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

import fastrnn
from _helpers import tol
from conftest import torch_or_skip

torch = torch_or_skip()


@pytest.fixture(autouse=True)
def _float64_by_default():
    """PyTorch modules built here default to float64; the setting is process-wide, so restore it."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

LAYERS = {
    "lstm": (fastrnn.LSTM, torch.nn.LSTM, {}),
    "gru": (fastrnn.GRU, torch.nn.GRU, {}),
    "rnn_tanh": (fastrnn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (fastrnn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
}

# (num_layers, bidirectional, batch_first, bias, give_h0, lengths)
CONFIGS = [
    (1, False, False, True, False, None),
    (1, False, True, True, True, None),
    (2, False, False, False, True, None),
    (2, True, False, True, True, None),
    (3, True, True, True, False, None),
    (1, False, False, True, True, [5, 2, 7, 1]),
    (2, True, False, True, True, [7, 3, 7, 5]),
    (2, True, True, False, False, [4, 6, 2, 7]),
]


def _ids(c):
    L, bi, bf, bias, h0, lengths = c
    return f"L{L}{'-bi' if bi else ''}{'-bf' if bf else ''}{'' if bias else '-nobias'}{'-h0' if h0 else ''}{'-len' if lengths else ''}"


def _t(a, dtype, grad=False):
    t = torch.tensor(np.asarray(a), dtype=TORCH_DTYPE[np.dtype(dtype)])
    return t.requires_grad_(grad)


def _run_torch(tmod, x, hx, lengths, batch_first):
    if lengths is None:
        return tmod(x, hx)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                                     enforce_sorted=False)
    out_p, hn = tmod(packed, hx)
    T = x.shape[1] if batch_first else x.shape[0]
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, batch_first=batch_first, total_length=T)
    return out, hn


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_layer_matches_torch(backend, dtype, kind, config):
    L, bi, bf, bias, give_h0, lengths = config
    fcls, tcls, kw = LAYERS[kind]
    I, H, T, B = 3, 5, 7, 4
    torch.manual_seed(zlib.crc32(repr((kind, config)).encode()))
    tmod = tcls(I, H, num_layers=L, bias=bias, batch_first=bf, bidirectional=bi, **kw).to(TORCH_DTYPE[dtype])
    fmod = fcls(I, H, num_layers=L, bias=bias, batch_first=bf, bidirectional=bi, dtype=dtype, backend=backend, **kw)
    fmod.load_state_dict(tmod.state_dict())

    rng = np.random.default_rng(0)
    D = 2 if bi else 1
    x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, H)).astype(dtype) if give_h0 else None
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype) if give_h0 else None
    go = rng.standard_normal((B, T, D * H) if bf else (T, B, D * H)).astype(dtype)
    if lengths is not None:  # PyTorch's padded output is zero there: no gradient to compare
        for b, n in enumerate(lengths):
            (go[b, n:] if bf else go[n:, b])[...] = 0
    ghn = rng.standard_normal((L * D, B, H)).astype(dtype)
    gcn = rng.standard_normal((L * D, B, H)).astype(dtype)

    xt = _t(x, dtype, True)
    h0t = _t(h0, dtype, True) if give_h0 else None
    c0t = _t(c0, dtype, True) if give_h0 else None
    lstm = kind == "lstm"
    hx_t = ((h0t, c0t) if give_h0 else None) if lstm else h0t
    out_t, hn_t = _run_torch(tmod, xt, hx_t, lengths, bf)
    loss = (out_t * _t(go, dtype)).sum()
    if lstm:
        loss = loss + (hn_t[0] * _t(ghn, dtype)).sum() + (hn_t[1] * _t(gcn, dtype)).sum()
    else:
        loss = loss + (hn_t * _t(ghn, dtype)).sum()
    loss.backward()

    hx = ((h0, c0) if give_h0 else None) if lstm else h0
    out, hn = fmod(x, hx, lengths=lengths)
    k = tol(dtype)
    np.testing.assert_allclose(out, out_t.detach().numpy(), **k, err_msg="output")
    if lstm:
        np.testing.assert_allclose(hn[0], hn_t[0].detach().numpy(), **k, err_msg="h_n")
        np.testing.assert_allclose(hn[1], hn_t[1].detach().numpy(), **k, err_msg="c_n")
        dx, (dh0, dc0) = fmod.backward(go, (ghn, gcn))
    else:
        np.testing.assert_allclose(hn, hn_t.detach().numpy(), **k, err_msg="h_n")
        dx, dh0 = fmod.backward(go, ghn)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **k, err_msg="dx")
    if give_h0:
        np.testing.assert_allclose(dh0, h0t.grad.numpy(), **k, err_msg="dh0")
        if lstm:
            np.testing.assert_allclose(dc0, c0t.grad.numpy(), **k, err_msg="dc0")
    names = [n for n, _ in tmod.named_parameters()]
    assert names == [n for n, _ in fmod.named_parameters()]
    for name, p in tmod.named_parameters():
        np.testing.assert_allclose(fmod.grads[name], p.grad.numpy(), **k, err_msg=name)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_unbatched_matches_torch(backend, kind):
    fcls, tcls, kw = LAYERS[kind]
    torch.manual_seed(1)
    tmod = tcls(2, 3, num_layers=2, bidirectional=True, **kw)
    fmod = fcls(2, 3, num_layers=2, bidirectional=True, dtype=np.float64, backend=backend, **kw)
    fmod.load_state_dict(tmod.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 2))
    xt = _t(x, np.float64, True)
    out_t, hn_t = tmod(xt)
    out_t.sum().backward()
    out, hn = fmod(x)
    assert out.shape == (5, 6)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-10)
    if kind == "lstm":
        assert hn[0].shape == hn[1].shape == (4, 3)
        dx, (dh0, dc0) = fmod.backward(np.ones_like(out))
        assert dc0.shape == (4, 3)
    else:
        assert hn.shape == (4, 3)
        dx, dh0 = fmod.backward(np.ones_like(out))
    assert dx.shape == x.shape and dh0.shape == (4, 3)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)


CELLS = {
    "lstm": (fastrnn.LSTMCell, torch.nn.LSTMCell, {}),
    "gru": (fastrnn.GRUCell, torch.nn.GRUCell, {}),
    "rnn_tanh": (fastrnn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (fastrnn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "relu"}),
}


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_cell_loop_matches_torch(backend, dtype, kind, bias, unbatched):
    """A Python loop of cell steps, back-propagated step by step (LIFO), gives torch's gradients."""
    fcls, tcls, kw = CELLS[kind]
    I, H, B, T = 4, 3, 2, 5
    torch.manual_seed(2)
    tcell = tcls(I, H, bias=bias, **kw).to(TORCH_DTYPE[dtype])
    fcell = fcls(I, H, bias=bias, dtype=dtype, backend=backend, **kw)
    fcell.load_state_dict(tcell.state_dict())
    rng = np.random.default_rng(5)
    lead = () if unbatched else (B,)
    xs = rng.standard_normal((T,) + lead + (I,)).astype(dtype)
    h0 = rng.standard_normal(lead + (H,)).astype(dtype)
    c0 = rng.standard_normal(lead + (H,)).astype(dtype)
    gs = rng.standard_normal((T,) + lead + (H,)).astype(dtype)
    lstm = kind == "lstm"

    xt = _t(xs, dtype, True)
    ht, ct = _t(h0, dtype, True), _t(c0, dtype, True)
    h, c = ht, ct
    loss = 0
    for t in range(T):
        if lstm:
            h, c = tcell(xt[t], (h, c))
        else:
            h = tcell(xt[t], h)
        loss = loss + (h * _t(gs[t], dtype)).sum()
    loss.backward()

    h, c = h0, c0
    hs = []
    for t in range(T):
        if lstm:
            h, c = fcell(xs[t], (h, c))
        else:
            h = fcell(xs[t], h)
        hs.append(h)
    k = tol(dtype)
    dh, dc = np.zeros_like(h0), np.zeros_like(c0)
    dxs = np.zeros_like(xs)
    for t in range(T - 1, -1, -1):
        if lstm:
            dxs[t], (dh, dc) = fcell.backward((dh + gs[t], dc))
        else:
            dxs[t], dh = fcell.backward(dh + gs[t])
    np.testing.assert_allclose(dxs, xt.grad.numpy(), **k, err_msg="dx")
    np.testing.assert_allclose(dh, ht.grad.numpy(), **k, err_msg="dh")
    if lstm:
        np.testing.assert_allclose(dc, ct.grad.numpy(), **k, err_msg="dc")
    for name, p in tcell.named_parameters():
        np.testing.assert_allclose(fcell.grads[name], p.grad.numpy(), **k, err_msg=name)
    with pytest.raises(fastrnn.GradientError):
        fcell.backward(np.zeros_like(h0) if not lstm else (None, None))


def test_state_dict_round_trip_into_torch():
    """fastrnn's state_dict loads into PyTorch (names, shapes, layout) and gives the same outputs."""
    f = fastrnn.GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    t = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True)
    t.load_state_dict({k: torch.tensor(v) for k, v in f.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    np.testing.assert_allclose(f(x)[0], t(torch.tensor(x))[0].detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN])
def test_initialisation_range(cls):
    f = cls(10, 25, num_layers=2, seed=np.random.default_rng(3))
    bound = 1 / np.sqrt(25)
    for name, p in f.named_parameters():
        assert p.dtype == np.float32
        assert np.all(np.abs(p) <= bound)
        assert p.std() > bound / 3  # spread over the range, not a constant
    assert list(itertools.islice((n for n, _ in f.named_parameters()), 4)) == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
