"""fastrnn.torch's LSTM and LSTMCell with ``input_forget=True`` (f = 1 - i): parity with
``torch.nn.LSTM`` whose forget rows are the negated input rows (sigmoid(-a) = 1 - sigmoid(a); every
gradient through autograd), the cell's gradcheck, and the flag (the layer's gradcheck, torch.compile,
torch.export and the move to the NumPy API: tests/test_torch_peepholes.py runs them for this variant
too)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastrnn.torch as ft  # noqa: E402

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def _tied_copy(m, ref):
    """Load ``m``'s parameters into the plain ``ref`` with the forget rows set to minus the input rows."""
    H = m.hidden_size
    with torch.no_grad():
        for name, p in m.named_parameters():
            q = p.detach().clone()
            q[H:2 * H] = -q[:H]
            getattr(ref, name).copy_(q)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layers,bidirectional,batch_first,packed", [
    (1, False, False, False), (2, True, True, False), (2, True, False, True)])
def test_layer_matches_tied_torch_lstm(dtype, layers, bidirectional, batch_first, packed):
    torch.manual_seed(layers + 2 * bidirectional + 4 * packed)
    I, H, B, T = 3, 5, 4, 6
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, dtype=dtype)
    m = ft.LSTM(I, H, input_forget=True, **kw)
    ref = nn.LSTM(I, H, **kw)
    _tied_copy(m, ref)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    lengths = torch.tensor([6, 3, 5, 1])

    def run(mod, inp):
        if packed:
            out, (h, c) = mod(pack_padded_sequence(inp, lengths, batch_first=batch_first, enforce_sorted=False))
            out = pad_packed_sequence(out, batch_first=batch_first, total_length=T)[0]
        else:
            out, (h, c) = mod(inp)
        return out, h, c

    got, want = run(m, xa), run(ref, xb)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[dtype])
    g = [torch.randn_like(t) for t in got]
    sum((a * w).sum() for a, w in zip(got, g)).backward()
    sum((a * w).sum() for a, w in zip(want, g)).backward()
    torch.testing.assert_close(xa.grad, xb.grad, **TOL[dtype])
    for name, p in m.named_parameters():
        r = getattr(ref, name).grad
        torch.testing.assert_close(p.grad[:H], r[:H] - r[H:2 * H], **TOL[dtype], msg=name)
        torch.testing.assert_close(p.grad[2 * H:], r[2 * H:], **TOL[dtype], msg=name)
        assert not p.grad[H:2 * H].any(), name


def test_cell_matches_tied_cell_and_gradcheck():
    torch.manual_seed(1)
    cell = ft.LSTMCell(3, 4, input_forget=True, dtype=torch.float64)
    assert "input_forget=True" in repr(cell) and cell.input_forget
    ref = nn.LSTMCell(3, 4, dtype=torch.float64)
    _tied_copy(cell, ref)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h, c = (torch.randn(2, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    for a, b in zip(cell(x, (h, c)), ref(x, (h, c))):
        torch.testing.assert_close(a, b, **TOL[torch.float64])
    params = tuple(cell.parameters())
    assert torch.autograd.gradcheck(lambda x, h, c, *p: cell(x, (h, c)), (x, h, c, *params))


def test_the_flag_is_the_kind():
    """(Layer gradcheck, compile, export and the move to the NumPy API: tests/test_torch_peepholes.py's
    VARIANTS.)"""
    m = ft.LSTM(3, 4, input_forget=True)
    assert m.input_forget and "input_forget=True" in repr(m) and "input_forget" not in repr(ft.LSTM(3, 4))
    with pytest.raises(AttributeError):  # the kind says it, once
        m.input_forget = False
    with pytest.raises(TypeError, match="input_forget must be a bool"):
        ft.LSTM(3, 4, input_forget="yes")
    with pytest.raises(TypeError, match="input_forget must be a bool"):
        ft.LSTMCell(3, 4, input_forget=1)
