"""fastrnn's kernels as torch.library custom operators: opcheck, torch.compile, torch.export."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import fastrnn.torch as ft  # noqa: E402
from fastrnn.backends.contract import has_cell_state  # noqa: E402
from fastrnn.rnn import GATES  # noqa: E402
from fastrnn.torch import _ops  # noqa: E402
from _helpers import compile_matches_eager  # noqa: E402


def _args(kind, dtype, T=4, B=3, I=2, H=3, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype, requires_grad=True)

    G = GATES[kind]
    c = r(B, H) if has_cell_state(kind) else None
    b = (r(G * H), r(G * H)) if bias else (None, None)
    return r(T, B, I), r(B, H), c, r(G * H, I), r(G * H, H), *b


@pytest.mark.parametrize("kind", list(GATES))
def test_opcheck_layer_forward(kind):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = _args(kind, torch.float64, bias=kind != "gru_orig")
    for lengths, reverse in ((None, False), (torch.tensor([4, 1, 3]), True)):
        torch.library.opcheck(ft._ops.layer_forward,
                              (kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, True, ""))


@pytest.mark.parametrize("kind", list(GATES))
def test_opcheck_cell_forward(kind):
    x, h, c, w_ih, w_hh, b_ih, b_hh = _args(kind, torch.float32, bias=kind != "rnn_relu")
    torch.library.opcheck(ft._ops.cell_forward, (kind, x[0], h, c, w_ih, w_hh, b_ih, b_hh, True, ""))


def test_opcheck_backward_ops():
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = _args("lstm", torch.float64)
    with torch.no_grad():
        out, h_n, c_n, handle = ft._ops.layer_forward("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, False, True, "")
    g = [torch.randn_like(t) for t in (out, h_n, c_n)]
    args = (handle, *g, "lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, False, "")
    torch.library.opcheck(ft._ops.layer_backward, [a.detach() if isinstance(a, torch.Tensor) else a for a in args])
    with torch.no_grad():
        h1, c1, handle = ft._ops.cell_forward("gru", x[0], h0, None, w_ih[:9], w_hh[:9], None, None, True, "")
    args = (handle, torch.randn_like(h1), None, "gru", x[0], h0, None, w_ih[:9], w_hh[:9], None, None, "")
    torch.library.opcheck(ft._ops.cell_backward, [a.detach() if isinstance(a, torch.Tensor) else a for a in args])


def test_op_path_gradients_equal_eager_path():
    """The custom operator's autograd (the traced path) and the eager autograd.Function agree,
    with the workspace handed over and with it missing (the recompute fallback)."""
    args = _args("gru", torch.float64, bias=True)
    lengths = torch.tensor([4, 2, 3])

    def grads(run):
        for a in args:
            if a is not None:
                a.grad = None
        out, h_n = run()
        (out.pow(2).sum() + h_n.sum()).backward()
        return [a.grad.clone() for a in args if a is not None]

    eager = grads(lambda: ft._ops.layer("gru", *args, lengths, True, "")[:2])
    op = grads(lambda: ft._ops.layer_forward("gru", *args, lengths, True, True, "")[:2])
    recompute = grads(lambda: ft._ops.layer_forward("gru", *args, lengths, True, False, "")[:2])
    for a, b, c in zip(eager, op, recompute):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(c, a, rtol=1e-12, atol=1e-12)
    assert ft.pending_workspaces() == 0


def test_op_path_double_backward_is_a_clear_error():
    x, h, c, w_ih, w_hh, b_ih, b_hh = _args("lstm", torch.float64)
    h1, c1, _ = ft._ops.cell_forward("lstm", x[0], h, c, w_ih, w_hh, b_ih, b_hh, True, "")
    (gx,) = torch.autograd.grad(h1.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gx.sum().backward()


class _Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = ft.LSTM(3, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.cell = ft.GRUCell(10, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        out, (h, c) = self.rnn(x)
        return self.head(self.cell(out[:, -1], h[-1].repeat(1, 1)[:, :4]))


def test_compile_fullgraph_and_export():
    torch.manual_seed(0)
    model = _Small()
    x = torch.randn(2, 6, 3)
    eager, want = compile_matches_eager(model, x)
    assert ft.pending_workspaces() == 0

    ep = torch.export.export(model, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "fastrnn.layer_forward.default" in targets and "fastrnn.cell_forward.default" in targets
    ops = [n for n in ep.graph.nodes if str(n.target).startswith("fastrnn.")]
    assert all(n.args[-2] is False for n in ops)  # keep=False: the exported graph keeps no workspace
    exported = ep.module()
    model.zero_grad()
    exported.zero_grad()
    got = exported(x)
    torch.testing.assert_close(got, eager, rtol=1e-6, atol=1e-6)
    got.sum().backward()  # differentiating it anyway: the backward operators recompute the forward
    grads = dict(exported.named_parameters())
    for (name, _), w in zip(model.named_parameters(), want):
        torch.testing.assert_close(grads[name].grad, w, rtol=1e-5, atol=1e-6)


def test_tensors_reach_the_kernels_without_copies():
    w = nn.Parameter(torch.randn(12, 3, dtype=torch.float64))
    x = torch.randn(5, 3)
    view = ft._ops._np(x)
    assert view.__array_interface__["data"][0] == x.data_ptr()
    cache = ft._ops.WeightViews()
    (wv,) = cache.get((w,))
    assert wv.__array_interface__["data"][0] == w.data_ptr()
    assert cache.get((w,))[0] is wv  # a Parameter's view is made once
    out = ft._ops._t(view, x)
    assert out.data_ptr() == view.__array_interface__["data"][0]  # results come back as views too


def test_weight_views_follow_every_change_of_a_weight():
    """The cached views are remade for a new tensor and for a replaced .data, even one over the same
    memory with another shape or layout; in-place updates are seen through the same view."""
    w = nn.Parameter(torch.arange(16.0, dtype=torch.float64).reshape(4, 4))
    cache = ft._ops.WeightViews()
    (v,) = cache.get((w,))
    with torch.no_grad():
        w.mul_(2)
    assert cache.get((w,))[0] is v and v[1, 0] == 8.0  # in place: same view, new values
    w.data = w.data.t()  # same memory, transposed: not contiguous, a contiguous copy is made
    (v2,) = cache.get((w,))
    assert v2 is not v and v2[1, 0] == w[1, 0] == 2.0
    w.data = w.data.t().reshape(2, 8)  # same memory and layout, another shape
    assert cache.get((w,))[0].shape == (2, 8)
    other = nn.Parameter(w.detach().clone())
    assert cache.get((other,))[0].__array_interface__["data"][0] == other.data_ptr()
    assert copy.deepcopy(cache).get((other,))[0] is not cache.get((other,))[0]  # a copy starts empty


@pytest.mark.parametrize("cls", ["LSTMCell", "GRU"])
def test_changed_in_place_between_forward_and_backward_is_an_error(cls):
    """The workspace of a forward refers to its inputs' memory: autograd's version check turns an
    in-place change of an input or weight before backward into an error, not a wrong gradient."""
    torch.manual_seed(0)
    mod = getattr(ft, cls)(3, 4, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True) if cls.endswith("Cell") else \
        torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out = mod(x)
    out = out[0] if isinstance(out, tuple) else out
    with torch.no_grad():
        getattr(mod, "weight_hh" if cls.endswith("Cell") else "weight_hh_l0").add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
