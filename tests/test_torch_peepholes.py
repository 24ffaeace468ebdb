"""fastrnn.torch's LSTM and LSTMCell with peepholes: parity with the same equations written in
PyTorch (autograd gives their gradients), gradcheck, opcheck, torch.compile, and the NumPy API."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fastrnn  # noqa: E402
import fastrnn.torch as ft  # noqa: E402
from _helpers import compile_matches_eager, export_matches_eager  # noqa: E402

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}
#: The LSTM variants the gradcheck, model and state_dict tests run (input_forget:
#: tests/test_torch_input_forget.py's).
VARIANTS = [dict(peepholes=True), dict(peepholes=True, input_forget=True)]
VARIANT_IDS = ["peep", "peep-cifg"]


def _step(x, h, c, w_ih, w_hh, b_ih, b_hh, peep):
    """One peephole LSTM step in plain PyTorch: i, f see c; o sees the new c."""
    H = h.shape[-1]
    g = x @ w_ih.T + h @ w_hh.T
    if b_ih is not None:
        g = g + b_ih + b_hh
    a_i, a_f, a_g, a_o = g.split(H, dim=-1)
    p_i, p_f, p_o = peep.split(H)
    i = torch.sigmoid(a_i + p_i * c)
    f = torch.sigmoid(a_f + p_f * c)
    c = f * c + i * torch.tanh(a_g)
    o = torch.sigmoid(a_o + p_o * c)
    return o * torch.tanh(c), c


def _composition(m, x, hx, lengths=None):
    """The layer's forward in plain PyTorch: time-major x [T, B, I], hx (h0, c0) [L*D, B, H]."""
    T, B = x.shape[:2]
    D = 2 if m.bidirectional else 1
    h0, c0 = hx
    hs, cs, inp = [], [], x
    valid = None if lengths is None else (torch.arange(T)[:, None] < lengths[None, :])[..., None]  # [T, B, 1]
    for k in range(m.num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            w = [getattr(m, n + sfx) for n in ("weight_ih", "weight_hh")]
            b = [getattr(m, n + sfx) for n in ("bias_ih", "bias_hh")] if m.bias else [None, None]
            peep = getattr(m, "weight_peep" + sfx)
            h, c = h0[k * D + d], c0[k * D + d]
            out = [None] * T
            for t in (range(T - 1, -1, -1) if d else range(T)):
                hn, cn = _step(inp[t], h, c, *w, *b, peep)
                if valid is not None:
                    hn, cn = torch.where(valid[t], hn, h), torch.where(valid[t], cn, c)
                    out[t] = torch.where(valid[t], hn, torch.zeros_like(hn))
                else:
                    out[t] = hn
                h, c = hn, cn
            outs.append(torch.stack(out))
            hs.append(h)
            cs.append(c)
        inp = torch.cat(outs, -1)
    return inp, (torch.stack(hs), torch.stack(cs))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layers,bidirectional,batch_first,packed,bias", [
    (1, False, False, False, True), (2, True, True, False, True), (2, True, False, True, True),
    (1, False, True, True, False)])
def test_layer_matches_the_equations_in_pytorch(dtype, layers, bidirectional, batch_first, packed, bias):
    torch.manual_seed(layers * 10 + bidirectional)
    T, B, I, H = 6, 4, 3, 5
    D = 2 if bidirectional else 1
    m = ft.LSTM(I, H, layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional, peepholes=True,
                dtype=dtype)
    assert m.weight_peep_l0.shape == (3 * H,) and m.weight_peep_l0.dtype == dtype
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    hx = tuple(torch.randn(layers * D, B, H, dtype=dtype, requires_grad=True) for _ in range(2))
    lengths = torch.tensor([6, 2, 5, 3]) if packed else None
    inp = x.transpose(0, 1) if batch_first else x
    if packed:
        inp = nn.utils.rnn.pack_padded_sequence(inp, lengths, batch_first=batch_first, enforce_sorted=False)
    out, (h_n, c_n) = m(inp, hx)
    if packed:
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    if batch_first:
        out = out.transpose(0, 1)
    want_out, (want_h, want_c) = _composition(m, x, hx, lengths)
    for got, want in ((out, want_out), (h_n, want_h), (c_n, want_c)):
        torch.testing.assert_close(got, want, **TOL[dtype])
    g = [torch.randn_like(t) for t in (want_out, want_h, want_c)]
    tensors = [x, *hx, *m.parameters()]
    got = torch.autograd.grad((out, h_n, c_n), tensors, g)
    want = torch.autograd.grad((want_out, want_h, want_c), tensors, g)
    names = ["x", "h0", "c0"] + [n for n, _ in m.named_parameters()]
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=name)


def test_cell_matches_the_equations_and_gradcheck():
    torch.manual_seed(1)
    cell = ft.LSTMCell(3, 4, peepholes=True, dtype=torch.float64)
    assert "peepholes=True" in repr(cell)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h, c = (torch.randn(2, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    got = cell(x, (h, c))
    want = _step(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, cell.weight_peep)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[torch.float64])
    unbatched = cell(x[0], (h[0], c[0]))
    torch.testing.assert_close(unbatched[0], got[0][0], **TOL[torch.float64])
    params = tuple(cell.parameters())
    assert torch.autograd.gradcheck(lambda x, h, c, *p: cell(x, (h, c)), (x, h, c, *params))


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_layer_gradcheck(variant):
    torch.manual_seed(2)
    m = ft.LSTM(2, 3, 2, bidirectional=True, dtype=torch.float64, **variant)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    params = list(m.parameters())

    def f(x, *p):
        out, (h, c) = torch.func.functional_call(m, {n: v for (n, _), v in zip(m.named_parameters(), p)}, (x,))
        return out, h, c

    assert torch.autograd.gradcheck(f, (x, *params))


def test_opcheck_with_peepholes():
    g = torch.Generator().manual_seed(3)
    T, B, I, H = 4, 3, 2, 3

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep = r(T, B, I), r(B, H), r(B, H), r(4 * H, I), r(4 * H, H), r(4 * H), \
        r(4 * H), r(3 * H)
    torch.library.opcheck(ft._ops.layer_forward,
                          ("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, torch.tensor([4, 1, 3]), True, True, "", peep))
    torch.library.opcheck(ft._ops.cell_forward, ("lstm", x[0], h0, c0, w_ih, w_hh, b_ih, b_hh, True, "", peep))
    with torch.no_grad():
        out, h_n, c_n, handle = ft._ops.layer_forward("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, False, True,
                                                      "", peep)
    args = (handle, torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n), "lstm", x, h0, c0, w_ih,
            w_hh, b_ih, b_hh, None, False, "", peep)
    torch.library.opcheck(ft._ops.layer_backward, [a.detach() if isinstance(a, torch.Tensor) else a for a in args])


class _Model(nn.Module):
    def __init__(self, **variant):
        super().__init__()
        variant = variant or VARIANTS[0]
        self.rnn = ft.LSTM(3, 5, num_layers=2, batch_first=True, bidirectional=True, **variant)
        self.cell = ft.LSTMCell(10, 4, **variant)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        h, _ = self.cell(out[:, -1])
        return self.head(h)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_compile_fullgraph_matches_eager(variant):
    torch.manual_seed(4)
    model = _Model(**variant)
    compile_matches_eager(model, torch.randn(2, 6, 3))
    assert any("peep" in n for n, _ in model.named_parameters())
    assert ft.pending_workspaces() == 0


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_state_dict_moves_to_the_numpy_api(variant):
    torch.manual_seed(5)
    m = ft.LSTM(3, 4, 2, bidirectional=True, dtype=torch.float64, **variant)
    assert all(f"{k}=True" in repr(m) for k in variant)
    layer = fastrnn.LSTM(3, 4, 2, bidirectional=True, dtype=np.float64, **variant)
    layer.load_state_dict(m.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        out, (h_n, c_n) = m(x)
    with fastrnn.no_grad():
        want, (want_h, want_c) = layer(x.numpy())
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c_n.numpy(), want_c, rtol=1e-12, atol=1e-12)
    plain = ft.LSTM(3, 4)
    assert not plain.peepholes and not any("peep" in n for n in plain.state_dict())
    with pytest.raises(TypeError, match="peepholes must be a bool"):
        ft.LSTM(3, 4, peepholes="yes")


def test_export_matches_eager():
    torch.manual_seed(6)
    targets = export_matches_eager(_Model(), torch.randn(2, 6, 3))
    assert "fastrnn.layer_forward.default" in targets and "fastrnn.cell_forward.default" in targets
