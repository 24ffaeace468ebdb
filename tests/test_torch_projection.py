"""fastrnn.torch.LSTM(proj_size=): parity with torch.nn.LSTM(proj_size=) (outputs, states and every
gradient), gradcheck, opcheck, torch.compile, torch.export and the NumPy API."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastrnn  # noqa: E402
import fastrnn.torch as ft  # noqa: E402
from _helpers import compile_matches_eager, export_matches_eager  # noqa: E402

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}

# (layers, bidirectional, batch_first, packed, hx given, bias): a spread of the combinations
CONFIGS = [c for i, c in enumerate(itertools.product((1, 2), (False, True), (False, True), (False, True),
                                                     (False, True), (True, False))) if i % 3 == 0]


def _pair(dtype, L, D, bf, bias, proj, seed):
    torch.manual_seed(seed)
    ref = nn.LSTM(4, 7, num_layers=L, bidirectional=D, batch_first=bf, bias=bias, proj_size=proj, dtype=dtype)
    ours = ft.LSTM(4, 7, num_layers=L, bidirectional=D, batch_first=bf, bias=bias, proj_size=proj, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _run(m, x, hx, lengths, bf):
    T = x.shape[1] if bf else x.shape[0]
    if lengths is not None:
        packed = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=False)
        out, (h, c) = m(packed, hx)
        out = pad_packed_sequence(out, batch_first=bf, total_length=T)[0]
    else:
        out, (h, c) = m(x, hx)
    return out, h, c


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("L,D,bf,packed,with_hx,bias", CONFIGS)
def test_matches_torch_lstm_with_projection(dtype, L, D, bf, packed, with_hx, bias):
    seed = 100 * L + 10 * D + 5 * bf + 3 * packed + with_hx
    ref, ours = _pair(dtype, L, D, bf, bias, 3, seed)
    T, B, nd = 6, 3, 2 if D else 1
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn((B, T, 4) if bf else (T, B, 4), generator=g, dtype=dtype)
    hx0 = (torch.randn(L * nd, B, 3, generator=g, dtype=dtype), torch.randn(L * nd, B, 7, generator=g, dtype=dtype))
    lengths = torch.tensor([6, 2, 4]) if packed else None
    results = []
    for m in (ref, ours):
        x = x0.clone().requires_grad_()
        hx = tuple(h.clone().requires_grad_() for h in hx0) if with_hx else None
        out, h, c = _run(m, x, hx, lengths, bf)
        gg = torch.Generator().manual_seed(seed + 1)
        loss = sum((t * torch.randn(t.shape, generator=gg, dtype=dtype)).sum() for t in (out, h, c))
        loss.backward()
        grads = [x.grad] + ([t.grad for t in hx] if with_hx else []) + [p.grad for p in m.parameters()]
        results.append([out, h, c] + grads)
    assert out.shape[-1] == 3 * nd and h.shape[-1] == 3 and c.shape[-1] == 7
    assert len(results[0]) == len(results[1]) == 3 + 1 + 2 * with_hx + len(list(ref.parameters()))
    for (name, _), want, got in zip([("out", 0), ("h", 0), ("c", 0)] + [(f"grad{i}", 0) for i in range(99)],
                                    *results):
        torch.testing.assert_close(got, want, **TOL[dtype], msg=name)
    assert ft.pending_workspaces() == 0


def test_gradcheck():
    torch.manual_seed(1)
    m = ft.LSTM(2, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]

    def f(x, *p):
        out, (h, c) = torch.func.functional_call(m, {n: v for (n, _), v in zip(m.named_parameters(), p)}, (x,))
        return out, h, c

    assert torch.autograd.gradcheck(f, (x, *params))


def test_opcheck_with_projection():
    g = torch.Generator().manual_seed(3)
    T, B, I, H, P = 4, 3, 2, 5, 3

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr = (r(T, B, I), r(B, P), r(B, H), r(4 * H, I), r(4 * H, P), r(4 * H),
                                               r(4 * H), r(P, H))
    torch.library.opcheck(ft._ops.layer_forward, ("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, torch.tensor([4, 1, 3]),
                                                  True, True, "", None, None, w_hr))
    with torch.no_grad():
        out, h_n, c_n, handle = ft._ops.layer_forward("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, False, True,
                                                      "", None, None, w_hr)
    assert out.shape == (T, B, P) and h_n.shape == (B, P) and c_n.shape == (B, H)
    args = (handle, torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n), "lstm", x, h0, c0, w_ih,
            w_hh, b_ih, b_hh, None, False, "", None, None, w_hr)
    torch.library.opcheck(ft._ops.layer_backward, [a.detach() if isinstance(a, torch.Tensor) else a for a in args])


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = ft.LSTM(3, 6, num_layers=2, batch_first=True, bidirectional=True, proj_size=2)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def test_compile_fullgraph_matches_eager():
    torch.manual_seed(4)
    model = _Model()
    compile_matches_eager(model, torch.randn(2, 5, 3))
    assert any("weight_hr" in n for n, _ in model.named_parameters())
    assert ft.pending_workspaces() == 0


def test_export_matches_eager():
    torch.manual_seed(6)
    assert "fastrnn.layer_forward.default" in export_matches_eager(_Model(), torch.randn(2, 5, 3))


def test_state_dict_moves_between_torch_and_the_numpy_api():
    torch.manual_seed(5)
    ref = nn.LSTM(3, 5, 2, bidirectional=True, proj_size=2, dtype=torch.float64)
    m = ft.LSTM(3, 5, 2, bidirectional=True, proj_size=2, dtype=torch.float64)
    assert list(m.state_dict()) == list(ref.state_dict()) and "proj_size=2" in repr(m)
    layer = fastrnn.LSTM(3, 5, 2, bidirectional=True, proj_size=2, dtype=np.float64)
    assert list(layer.state_dict()) == list(ref.state_dict())
    layer.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    m.load_state_dict(ref.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        want, (want_h, want_c) = ref(x)
        out, (h_n, c_n) = m(x)
    with fastrnn.no_grad():
        got, (got_h, got_c) = layer(x.numpy())
    for a, b in ((out, want), (h_n, want_h), (c_n, want_c)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in ((got, want), (got_h, want_h), (got_c, want_c)):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-12)


def test_recurrent_dropout_with_projection_is_reproducible():
    m = ft.LSTM(3, 5, proj_size=2, recurrent_dropout=0.4, dtype=torch.float64)
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    torch.manual_seed(7)
    a, _ = m(x)
    torch.manual_seed(7)
    b, _ = m(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    m.eval()
    with torch.no_grad():
        c, _ = m(x)
    assert a.shape == c.shape == (4, 3, 2) and not torch.allclose(a, c)


def test_bad_states_are_refused():
    m = ft.LSTM(3, 5, proj_size=2)
    x = torch.randn(4, 3, 3)
    with pytest.raises(ValueError, match="h_0"):
        m(x, (torch.zeros(1, 3, 5), torch.zeros(1, 3, 5)))
    with pytest.raises(ValueError, match="c_0"):
        m(x, (torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)))
    with pytest.raises(ValueError, match="proj_size"):
        ft.GRU(3, 5, proj_size=2)
    with pytest.raises(ValueError, match="proj_size"):
        ft.LSTM(3, 5, proj_size=5)  # torch.nn's own check
