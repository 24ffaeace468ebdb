"""The layers' use of ``layer_backward(..., acc=(w_ih, w_hh))``: their gradients come out the same
whichever path they take, on every backend (acc's own semantics: tests/test_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_layer_grads_same_on_both_paths(backend, kind):
    """The layer adds into grads in place when it can; a grads array it cannot hand to the
    backend (non-contiguous) gets fresh gradients added afterwards. Both accumulate the same sums."""
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
    acc (the two would overlap), so it adds fresh gradients afterwards - both into the one array."""
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
