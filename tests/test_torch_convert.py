"""fastrnn.torch.convert: swap torch.nn's recurrent modules for fastrnn's in an existing model."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fastrnn.torch as ft  # noqa: E402


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 6, num_layers=2, batch_first=True)
        self.gru = nn.GRU(6, 5, bidirectional=True, batch_first=True)
        self.proj = nn.LSTM(10, 4, proj_size=2, batch_first=True)
        self.cells = nn.ModuleList([nn.LSTMCell(2, 3), nn.RNNCell(3, 3, nonlinearity="relu")])
        self.low = nn.GRUCell(2, 2)  # bfloat16: fastrnn cannot serve it either
        self.head = nn.Linear(2, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        out, _ = self.gru(out)
        out, _ = self.proj(out)
        h, c = self.cells[0](out[:, -1])
        h = self.cells[1](h)
        return self.head(out[:, -1]) + h.sum(-1, keepdim=True)


def test_convert_mixed_model():
    torch.manual_seed(0)
    model = Mixed().double()
    model.low.to(torch.bfloat16)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    want = model(x)
    want.sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = ft.convert(model)
    msgs = [str(w.message) for w in caught if "fastrnn.torch.convert" in str(w.message)]
    assert len(msgs) == 1 and "low (GRUCell" in msgs[0] and "proj" not in msgs[0]
    assert type(new.lstm) is ft.LSTM and type(new.gru) is ft.GRU and type(new.proj) is ft.LSTM
    assert new.proj.proj_size == 2
    assert type(new.cells[0]) is ft.LSTMCell and type(new.cells[1]) is ft.RNNCell
    assert new.cells[1].nonlinearity == "relu"
    assert type(new.low) is nn.GRUCell and type(new.head) is nn.Linear
    assert type(model.lstm) is nn.LSTM  # inplace=False left the original alone
    assert list(new.state_dict()) == list(model.state_dict())

    got = new(x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    got.sum().backward()
    assert {n for n, p in new.named_parameters() if p.grad is not None} == set(ref_grads)
    for n, p in new.named_parameters():
        if n not in ref_grads:
            continue
        torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-10, atol=1e-10, msg=n)


def test_convert_inplace_keeps_parameters_and_mode():
    model = nn.Sequential(nn.GRU(2, 3, batch_first=True, dropout=0.0))
    model.eval()
    params = list(model.parameters())
    out = ft.convert(model, inplace=True)
    assert out is model and type(model[0]) is ft.GRU and not model[0].training
    assert all(a is b for a, b in zip(model.parameters(), params))  # optimizers keep working


def test_convert_a_bare_module_and_bad_argument():
    m = ft.convert(nn.LSTMCell(2, 3))
    assert type(m) is ft.LSTMCell
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ft.convert("not a model")
