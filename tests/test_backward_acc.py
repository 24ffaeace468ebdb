"""``layer_backward(..., acc=(w_ih, w_hh))`` (CONTRACT.md): weight gradients added in place.

On every backend: the result equals the fresh gradients plus what acc held, the
returned arrays are acc's own, a bad acc raises before the workspace is consumed,
and the layers' gradients come out the same whichever path they take.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import backends
from fastrnn.backends.contract import GATES as G

from conftest import tol


def _forward(mod, kind, dtype, T=4, B=3, I=5, H=6, seed=0, lengths=None):
    rng = np.random.default_rng(seed)
    g = G[kind]

    def r(*s):
        return (rng.standard_normal(s) * 0.5).astype(dtype)

    x, h0, w_ih, w_hh = r(T, B, I), r(B, H), r(g * H, I), r(g * H, H)
    c0 = r(B, H) if kind == "lstm" else None
    out = mod.layer_forward(kind, x, h0, c0, w_ih, w_hh, r(g * H), r(g * H), lengths, False, True)
    grads = (r(T, B, H), r(B, H), r(B, H) if kind == "lstm" else None)
    return out[3], grads, (w_ih, w_hh)


@pytest.mark.parametrize("kind", list(G))
def test_acc_adds_in_place(backend, kind, dtype):
    mod = backends.get_backend(backend)
    lengths = np.array([4, 2, 3], dtype=np.int64)
    ws, grads, (w_ih, w_hh) = _forward(mod, kind, dtype, lengths=lengths)
    fresh = mod.layer_backward(ws, *grads)
    ws, grads, _ = _forward(mod, kind, dtype, lengths=lengths)
    rng = np.random.default_rng(1)
    acc = (rng.standard_normal(w_ih.shape).astype(dtype), rng.standard_normal(w_hh.shape).astype(dtype))
    start = (acc[0].copy(), acc[1].copy())
    got = mod.layer_backward(ws, *grads, acc=acc)
    assert got["w_ih"] is acc[0] and got["w_hh"] is acc[1]
    np.testing.assert_allclose(acc[0], start[0] + fresh["w_ih"], **tol(dtype))
    np.testing.assert_allclose(acc[1], start[1] + fresh["w_hh"], **tol(dtype))
    for k in ("x", "h0", "c0", "b_ih", "b_hh"):
        if fresh[k] is None:
            assert got[k] is None
        else:
            np.testing.assert_allclose(got[k], fresh[k], **tol(dtype))


def test_bad_acc_raises_before_consuming(backend):
    mod = backends.get_backend(backend)
    F = np.float32
    ws, grads, (w_ih, w_hh) = _forward(mod, "gru", F)
    good = (np.zeros_like(w_ih), np.zeros_like(w_hh))
    bad = [
        (good[0], TypeError, "acc must be None or a pair"),
        ((good[0],), TypeError, "acc must be None or a pair"),
        ((good[0].astype(np.float64), good[1]), TypeError, "acc\\[0\\] \\(w_ih\\).*float32"),
        ((good[0], np.zeros((w_hh.shape[1], w_hh.shape[0]), F).T), TypeError, "acc\\[1\\] \\(w_hh\\).*C-contiguous"),
        ((good[0], good[1][:-1]), ValueError, "acc\\[1\\] \\(w_hh\\) must have shape"),
        ((good[0], good[0]), ValueError, "acc\\[1\\] \\(w_hh\\) must have shape"),
        ((w_ih, good[1]), ValueError, "acc\\[0\\] \\(w_ih\\) shares memory"),
    ]
    ro = np.zeros_like(w_ih)
    ro.flags.writeable = False
    bad.append(((ro, good[1]), ValueError, "acc\\[0\\] \\(w_ih\\) must be writeable"))
    for acc, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            mod.layer_backward(ws, *grads, acc=acc)
    got = mod.layer_backward(ws, *grads, acc=good)  # still usable after the rejected calls
    assert got["w_ih"] is good[0]
    assert np.abs(good[0]).sum() > 0


def test_acc_sharing_memory_with_a_gradient_argument_rejected(backend):
    mod = backends.get_backend(backend)
    F = np.float64
    ws, grads, (w_ih, w_hh) = _forward(mod, "rnn_tanh", F, T=6, B=6, I=6, H=6)
    go = np.zeros((6, 6, 6), F)
    shared = go[0]  # acc[1] is [6, 6]: a view of grad_out's first step
    with pytest.raises(ValueError, match="acc\\[1\\] \\(w_hh\\) shares memory"):
        mod.layer_backward(ws, go, grads[1], None, acc=(np.zeros_like(w_ih), shared))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_layer_grads_same_on_both_paths(backend, kind):
    """The layer adds into grads in place when it can; a grads array it cannot hand to the
    backend (non-contiguous) takes the old path. Both accumulate the same sums."""
    cls = fastrnn.LSTM if kind == "lstm" else fastrnn.GRU
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3))
    go = rng.standard_normal((5, 2, 8))
    ms = [cls(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, backend=backend, seed=1) for _ in range(2)]
    k = "weight_hh_l1_reverse"
    nc = np.zeros((ms[1].grads[k].shape[1], ms[1].grads[k].shape[0])).T
    ms[1].grads[k] = nc
    for m in ms:
        for _ in range(2):
            m(x)
            m.backward(go)
    assert ms[1].grads[k] is nc
    for name in ms[0].grads:
        np.testing.assert_allclose(ms[1].grads[name], ms[0].grads[name], rtol=1e-12, atol=1e-12, err_msg=name)
    m = cls(3, 4, dtype=np.float64, backend=backend, seed=1)
    m(x)
    m.backward(go[..., :4])
    once = {n: g.copy() for n, g in m.grads.items()}
    m(x)
    m.backward(go[..., :4])
    for name in once:
        np.testing.assert_allclose(m.grads[name], 2 * once[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_tied_gradient_arrays_take_the_fallback(backend):
    """One array for both weight gradients (I == H): the layer cannot hand it to the backend as
    acc (the two would overlap), so it adds fresh gradients as before - both into the one array."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 5))
    go = rng.standard_normal((4, 2, 5))
    ref_m = fastrnn.GRU(5, 5, dtype=np.float64, backend=backend, seed=2)
    ref_m(x)
    ref_m.backward(go)
    m = fastrnn.GRU(5, 5, dtype=np.float64, backend=backend, seed=2)
    tied = np.zeros_like(m.grads["weight_ih_l0"])
    m.grads["weight_ih_l0"] = m.grads["weight_hh_l0"] = tied
    m(x)
    m.backward(go)
    np.testing.assert_allclose(tied, ref_m.grads["weight_ih_l0"] + ref_m.grads["weight_hh_l0"], rtol=1e-12, atol=1e-12)
