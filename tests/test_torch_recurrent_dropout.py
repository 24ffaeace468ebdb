"""fastrnn.torch's recurrent_dropout: parity with the same equations in PyTorch drawing the same
masks, eval mode, opcheck with a mask, torch.compile."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fastrnn.torch as ft  # noqa: E402

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def _step_equations(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, mask):
    """One step in plain PyTorch ("lstm", "gru" in PyTorch's form, "rnn_tanh"), the recurrent product
    seeing h * mask (the GRU's r * (W_hn (h*mask) + b_hn); its z * h sees h itself): (h', c')."""
    H = h.shape[1]
    gx = x @ w_ih.T + b_ih
    gh = (h * mask) @ w_hh.T + b_hh
    if kind == "lstm":
        a_i, a_f, a_g, a_o = (gx + gh).split(H, dim=1)
        c = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
        return torch.sigmoid(a_o) * torch.tanh(c), c
    if kind == "gru":
        xr, xz, xn = gx.split(H, dim=1)
        hr, hz, hn = gh.split(H, dim=1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        return (1 - z) * torch.tanh(xn + r * hn) + z * h, c
    return torch.tanh(gx + gh), c


def _composition(m, x, masks):
    """The module's forward in plain PyTorch (time-major, zero initial states), each layer and
    direction's product seeing h * its mask."""
    T, B, _ = x.shape
    D = 2 if m.bidirectional else 1
    H = m.hidden_size
    kind = "lstm" if isinstance(m, ft.LSTM) else "gru"
    hs, inp = [], x
    for k in range(m.num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            w_ih, w_hh = getattr(m, "weight_ih" + sfx), getattr(m, "weight_hh" + sfx)
            b_ih, b_hh = getattr(m, "bias_ih" + sfx), getattr(m, "bias_hh" + sfx)
            mask = masks[k * D + d]
            h = x.new_zeros(B, H)
            c = x.new_zeros(B, H)
            out = [None] * T
            for t in (range(T - 1, -1, -1) if d else range(T)):
                h, c = _step_equations(kind, inp[t], h, c, w_ih, w_hh, b_ih, b_hh, mask)
                out[t] = h
            outs.append(torch.stack(out))
            hs.append(h)
        inp = torch.cat(outs, -1)
    return inp, torch.stack(hs)


def _assert_same_with_gradients(out, want, tensors, dtype):
    """``out`` equals ``want``, and so do their gradients into ``tensors`` for one random output gradient."""
    torch.testing.assert_close(out, want, **TOL[dtype])
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(out, tensors, g), torch.autograd.grad(want, tensors, g)):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("cls", [ft.LSTM, ft.GRU])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_matches_the_equations_with_the_same_masks(cls, dtype):
    T, B, I, H, p = 6, 3, 4, 5, 0.3
    torch.manual_seed(0)
    m = cls(I, H, 2, bidirectional=True, recurrent_dropout=p, dtype=dtype)
    assert "recurrent_dropout=0.3" in repr(m)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    torch.manual_seed(7)
    out = m(x)[0]
    torch.manual_seed(7)  # the masks, drawn as the module draws them
    masks = [torch.bernoulli(x.new_full((B, H), 1 - p)).div_(1 - p) for _ in range(4)]
    want, _ = _composition(m, x, masks)
    _assert_same_with_gradients(out, want, [x, *m.parameters()], dtype)
    m.eval()  # no mask: torch.nn's module with the same weights
    ref = (nn.LSTM if cls is ft.LSTM else nn.GRU)(I, H, 2, bidirectional=True, dtype=dtype)
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0], ref(x)[0], **TOL[dtype])


def test_opcheck_with_a_mask_and_compile():
    g = torch.Generator().manual_seed(1)
    T, B, I, H = 4, 3, 2, 3

    def r(*shape, grad=True):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=grad)

    mask = torch.bernoulli(torch.full((B, H), 0.6, dtype=torch.float64), generator=g) / 0.6
    torch.library.opcheck(ft._ops.layer_forward,
                          ("gru", r(T, B, I), r(B, H), None, r(3 * H, I), r(3 * H, H), r(3 * H), r(3 * H), None, False,
                           True, "", None, mask))
    torch.manual_seed(2)
    model = ft.LSTM(3, 4, recurrent_dropout=0.25)
    out = torch.compile(model, fullgraph=True)(torch.randn(5, 2, 3))[0]  # fullgraph: no graph break
    assert out.shape == (5, 2, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert model.weight_hh_l0.grad is not None


@pytest.mark.parametrize("bad", [-0.5, 1.0, True])
def test_bad_recurrent_dropout_is_refused(bad):
    with pytest.raises(ValueError, match="recurrent_dropout"):
        ft.LSTM(3, 4, recurrent_dropout=bad)


# ----------------------------------------------------------------------------
# the cells: recurrent_dropout=, a mask per sequence
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ft.LSTMCell, ft.GRUCell, ft.RNNCell])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_cell_sequence_matches_the_equations_with_one_mask(cls, dtype):
    """A cell stepped over a sequence: the mask drawn at the first step (no hx) serves every step;
    outputs and every gradient as the equations with that mask."""
    T, B, I, H, p = 5, 3, 4, 6, 0.4
    torch.manual_seed(0)
    m = cls(I, H, recurrent_dropout=p, dtype=dtype)
    assert "recurrent_dropout=0.4" in repr(m)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    lstm = cls is ft.LSTMCell
    torch.manual_seed(7)
    hx, outs = None, []
    for t in range(T):
        hx = m(x[t], hx)
        outs.append(hx[0] if lstm else hx)
    out = torch.stack(outs)
    torch.manual_seed(7)  # the mask, drawn as the cell draws it
    mask = torch.bernoulli(x.new_full((B, H), 1 - p)).div_(1 - p)
    assert (mask == 0).any()
    h, c, want = x.new_zeros(B, H), x.new_zeros(B, H), []
    for t in range(T):
        h, c = _step_equations(m._kind, x[t], h, c, m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh, mask)
        want.append(h)
    want = torch.stack(want)
    _assert_same_with_gradients(out, want, [x, *m.parameters()], dtype)
    m.eval()  # no mask: torch.nn's cell with the same weights
    ref = getattr(nn, cls.__name__)(I, H, dtype=dtype)
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m(x[0]) if not lstm else m(x[0])[0], ref(x[0]) if not lstm else ref(x[0])[0],
                                   **TOL[dtype])


def test_cell_mask_lasts_until_reset_and_opcheck():
    torch.manual_seed(3)
    m = ft.GRUCell(3, 4, recurrent_dropout=0.5, dtype=torch.float64)
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    with torch.no_grad():
        a = m(x, h)
        torch.testing.assert_close(m(x, h), a, rtol=0, atol=0)  # one sequence: one mask
        m.reset_dropout_mask()
        assert not torch.equal(m(x, h), a)
        with pytest.raises(ValueError, match="reset_dropout_mask"):
            m(x[:1], h[:1])
    mask = torch.bernoulli(torch.full((2, 4), 0.6, dtype=torch.float64)) / 0.6
    w = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in ((12, 3), (12, 4), (12,), (12,))]
    torch.library.opcheck(ft._ops.cell_forward, ("gru", x.requires_grad_(), h.requires_grad_(), None, *w, True, "",
                                                 None, mask))


@pytest.mark.parametrize("bad", [-0.5, 1.0, True])
def test_bad_cell_recurrent_dropout_is_refused(bad):
    with pytest.raises(ValueError, match="recurrent_dropout"):
        ft.LSTMCell(3, 4, recurrent_dropout=bad)


def test_cell_recurrent_dropout_compiles_without_a_graph_break():
    class Stepped(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = ft.LSTMCell(3, 4, recurrent_dropout=0.3)

        def forward(self, x):
            hx, outs = None, []
            for t in range(x.shape[0]):
                hx = self.cell(x[t], hx)
                outs.append(hx[0])
            return torch.stack(outs)

    torch.manual_seed(4)
    model = Stepped()
    out = torch.compile(model, fullgraph=True)(torch.randn(5, 2, 3))  # fullgraph: no graph break
    assert out.shape == (5, 2, 4) and torch.isfinite(out).all()
    assert model.cell._hmask is not None and model.cell._hmask.shape == (2, 4)
    out.sum().backward()
    assert model.cell.weight_hh.grad.abs().sum() > 0
