"""Variational recurrent dropout (``hmask``, one mask per sequence on the recurrent input): the
reference against finite differences, every backend against the reference, the mask's effect,
the arguments' checks, and the layers' ``recurrent_dropout=``."""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import backends
from fastrnn.backends import reference
from fastrnn.backends.contract import KINDS

from _helpers import assert_close, contract_module_of, layer_args, layer_grads, numeric_grad, random_lengths
from conftest import contract_modules


def _mask(B, H, dtype, p=0.4, seed=0):
    keep = np.random.default_rng(seed + 17).random((B, H)) >= p
    return (keep / (1 - p)).astype(dtype)


def _run(mod, kind, a, hmask, lengths, reverse, grads, keep=True):
    out = mod.layer_forward(kind, *a.values(), lengths, reverse, keep, hmask=hmask)
    return out, (mod.layer_backward(out[3], *grads) if keep else None)


@pytest.mark.parametrize("kind", ("lstm", "gru", "rnn_tanh", "gru_orig", "lstm_cifg"))
@pytest.mark.parametrize("reverse", [False, True])
def test_reference_gradients_match_finite_differences(kind, reverse):
    T, B, I, H = 4, 3, 2, 3
    a = layer_args(kind, T, B, I, H, np.float64, seed=2)
    m = _mask(B, H, np.float64, seed=2)
    lengths = np.array([4, 1, 3], dtype=np.int64)
    go, gh, gc = layer_grads(kind, T, B, H, np.float64, seed=2)

    def loss():
        out, h_n, c_n, _ = reference.layer_forward(kind, *a.values(), lengths, reverse, False, hmask=m)
        return float(np.sum(out * go) + np.sum(h_n * gh) + (np.sum(c_n * gc) if c_n is not None else 0.0))

    out = reference.layer_forward(kind, *a.values(), lengths, reverse, True, hmask=m)
    g = reference.layer_backward(out[3], go, gh, gc)
    for name in a:
        if a[name] is None:
            continue
        np.testing.assert_allclose(g[name], numeric_grad(loss, a, name), rtol=1e-7, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T,B,I,H,reverse,padded", [
    (1, 1, 1, 1, False, False),
    (7, 3, 5, 9, True, True),
    (30, 40, 7, 20, False, True),   # batch split across threads
    (9, 2, 4, 130, True, True),     # unit split across threads
    (40, 64, 8, 200, True, False),  # backward in chunks
])
def test_backend_matches_reference(contract_module, dtype, kind, T, B, I, H, reverse, padded):
    mod = contract_module_of(contract_module)
    seed = T * 31 + H
    # weights scaled so that the masked recurrence (gain ~ scale * sqrt(H) / (1-p)) is not chaotic:
    # in a chaotic one float32 rounding grows over the steps
    a = layer_args(kind, T, B, I, H, dtype, seed=seed, scale=min(0.5, 0.6 / H ** 0.5))
    m = _mask(B, H, dtype, seed=seed)
    lengths = random_lengths(T, B, seed) if padded else None
    grads = layer_grads(kind, T, B, H, dtype, seed)
    got, got_g = _run(mod, kind, a, m, lengths, reverse, grads)
    want, want_g = _run(reference, kind, a, m, lengths, reverse, grads)
    for name, x, y in zip(("out", "h_n", "c_n"), got[:3], want[:3]):
        assert_close(x, y, name, scaled=True)
    for name in want_g:
        assert_close(got_g[name], want_g[name], f"grad {name}", scaled=True)
    inf = mod.layer_forward(kind, *a.values(), lengths, reverse, False, hmask=m)
    for x, y in zip(inf[:3], got[:3]):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kind", KINDS)
def test_a_mask_of_ones_is_no_mask(backend, kind):
    mod = backends.get_backend(backend)
    T, B, I, H = 6, 5, 3, 8
    a = layer_args(kind, T, B, I, H, np.float64, seed=4)
    grads = layer_grads(kind, T, B, H, np.float64, 4)
    got, got_g = _run(mod, kind, a, np.ones((B, H)), None, False, grads)
    want, want_g = _run(mod, kind, a, None, None, False, grads)
    for x, y in zip(got[:3], want[:3]):
        if y is not None:
            np.testing.assert_array_equal(x, y)  # h * 1 is h: the same products
    for name in want_g:
        assert_close(got_g[name], want_g[name], name)


@pytest.mark.parametrize("kind", ("lstm", "rnn_tanh", "lstm_cifg"))
def test_the_gradient_is_zero_where_the_mask_is(backend, kind):
    """One step: h0 reaches the output only through the masked product (LSTM, RNN), so its gradient
    is exactly zero where the mask is zero, and nonzero elsewhere."""
    mod = backends.get_backend(backend)
    T, B, I, H = 1, 4, 3, 6
    a = layer_args(kind, T, B, I, H, np.float32, seed=5)
    m = _mask(B, H, np.float32, p=0.5, seed=5)
    assert (m == 0).any() and (m != 0).any()
    out = mod.layer_forward(kind, *a.values(), None, False, True, hmask=m)
    g = mod.layer_backward(out[3], np.ones((T, B, H), np.float32), None, None)
    assert np.all(g["h0"][m == 0] == 0)
    assert np.all(g["h0"][m != 0] != 0)


def test_bad_masks_are_refused():
    T, B, I, H = 3, 2, 4, 5
    for name in contract_modules():
        mod = contract_module_of(name)
        a = layer_args("lstm", T, B, I, H, np.float32)
        with pytest.raises(ValueError, match="hmask"):
            mod.layer_forward("lstm", *a.values(), None, False, True, hmask=np.ones((B, H + 1), np.float32))
        with pytest.raises(TypeError, match="hmask"):
            mod.layer_forward("lstm", *a.values(), None, False, True, hmask=np.ones((B, H), np.float64))


# ----------------------------------------------------------------------------
# the layers: recurrent_dropout=
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls,kw", [(fastrnn.LSTM, {}), (fastrnn.GRU, {}), (fastrnn.RNN, {"nonlinearity": "relu"}),
                                    (fastrnn.GRU, {"linear_before_reset": False}),
                                    (fastrnn.LSTM, {"input_forget": True})])
def test_layer_recurrent_dropout(cls, kw):
    T, B, I, H = 7, 3, 4, 6
    x = np.random.default_rng(0).standard_normal((T, B, I))
    results = []
    for name in backends.available_backends():  # the same seed draws the same masks on every backend
        layer = cls(I, H, num_layers=2, bidirectional=True, recurrent_dropout=0.3, dtype=np.float64, backend=name,
                    seed=3, **kw)
        assert "recurrent_dropout=0.3" in repr(layer)
        out, _ = layer(x, lengths=[7, 4, 6])
        dx, _ = layer.backward(np.ones_like(out))
        results.append([out, dx] + [layer.grads[n] for n, _ in layer.named_parameters()])
        layer.eval()
        plain = cls(I, H, num_layers=2, bidirectional=True, dtype=np.float64, backend=name, seed=3, **kw)
        plain.eval()
        with fastrnn.no_grad():  # eval: no mask, the plain layer's outputs
            np.testing.assert_array_equal(layer(x)[0], plain(x)[0])
            assert not np.allclose(out, plain(x, lengths=[7, 4, 6])[0])  # training mode did drop
    for got in results[1:]:
        for g, w in zip(got, results[0]):
            assert_close(g, w, "backend", scaled=True)


def test_layer_masks_are_fresh_each_forward_and_reproducible():
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    a = fastrnn.LSTM(3, 4, recurrent_dropout=0.5, dtype=np.float64, seed=8)
    b = fastrnn.LSTM(3, 4, recurrent_dropout=0.5, dtype=np.float64, seed=8)
    with fastrnn.no_grad():
        a1, a2 = a(x)[0], a(x)[0]
        b1 = b(x)[0]
    np.testing.assert_array_equal(a1, b1)  # same seed, same masks
    assert not np.array_equal(a1, a2)      # a new mask each forward


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, True, "0.2"])
def test_bad_recurrent_dropout_is_refused(bad):
    with pytest.raises(ValueError, match="recurrent_dropout"):
        fastrnn.LSTM(3, 4, recurrent_dropout=bad)

