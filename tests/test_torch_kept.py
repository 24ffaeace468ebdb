"""fastrnn.torch: a tensor backward needs (input, state, weight), changed in place between
forward and backward, is caught by torch's version counter, as with torch.nn -- never a silently
different gradient. And a backward that fails for want of resources can be retried."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastrnn.torch as ft  # noqa: E402
from conftest import BACKENDS  # noqa: E402

MODULES = {"LSTM": ft.LSTM, "GRU": ft.GRU, "RNN": ft.RNN, "LSTMCell": ft.LSTMCell, "GRUCell": ft.GRUCell,
           "RNNCell": ft.RNNCell}
INPLACE = "modified by an inplace operation"


def _setup(name, backend):
    torch.manual_seed(0)
    m = MODULES[name](5, 7, dtype=torch.float64, backend=backend)
    cell = name.endswith("Cell")
    x = torch.randn((3, 5) if cell else (4, 3, 5), dtype=torch.float64, requires_grad=True)
    h = torch.randn((3, 7) if cell else (1, 3, 7), dtype=torch.float64, requires_grad=True)
    hx = (h, torch.randn_like(h).requires_grad_()) if name.startswith("LSTM") else h
    return m, x, hx


def _loss(m, x, hx):
    out = m(x, hx)
    out = out[0] if isinstance(out, tuple) else out
    return (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum()


def _grads(m, x, hx):
    hs = hx if isinstance(hx, tuple) else (hx,)
    return [t.grad.clone() for t in (x, *hs, *m.parameters())]


@pytest.mark.parametrize("backend", [b for b in BACKENDS])
@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("target", ["input", "state", "weight"])
def test_in_place_change_before_backward_raises(name, backend, target):
    m, x, hx = _setup(name, backend)
    loss = _loss(m, x, hx)
    t = {"input": x, "state": hx[0] if isinstance(hx, tuple) else hx, "weight": m.weight_hh_l0 if hasattr(
        m, "weight_hh_l0") else m.weight_hh}[target]
    with torch.no_grad():
        t.mul_(-3.0)  # a leaf that requires grad: changed in place outside autograd (bumps its version)
    with pytest.raises(RuntimeError, match=INPLACE):
        loss.backward()


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the compiled backend is not available")
@pytest.mark.parametrize("name", ["LSTM", "GRUCell"])
def test_failed_backward_can_be_retried(name):
    """A backward that fails (an injected scratch-allocation failure in the kernel) leaves the
    workspace on the autograd context: a retry gives the same gradients. (Torch frees a graph's
    saved tensors in a backward even when it fails, unless retain_graph=True -- torch.nn's rule.)"""
    from fastrnn import _core

    m, x, hx = _setup(name, "cpp")
    _loss(m, x, hx).backward()
    want = _grads(m, x, hx)
    m, x, hx = _setup(name, "cpp")
    loss = _loss(m, x, hx)
    _core._inject_failure("allocation", 1)
    try:
        with pytest.raises(MemoryError):
            loss.backward(retain_graph=True)
    finally:
        left = _core._inject_failure("allocation", 0)
    assert left == 0
    for p in m.parameters():  # the failed backward accumulated nothing
        assert p.grad is None
    loss.backward()
    for a, b in zip(_grads(m, x, hx), want):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
