"""Finite-difference checks (float64) of every backend's backward, at the contract level."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from fastrnn import backends
from fastrnn.backends.contract import GATES, KINDS



def _random_args(kind, T, B, I, H, bias, rng):
    G = GATES[kind]
    return dict(
        x=rng.standard_normal((T, B, I)),
        h0=rng.standard_normal((B, H)),
        c0=rng.standard_normal((B, H)) if kind == "lstm" else None,
        w_ih=rng.standard_normal((G * H, I)) * 0.6,
        w_hh=rng.standard_normal((G * H, H)) * 0.6,
        b_ih=rng.standard_normal(G * H) * 0.5 if bias else None,
        b_hh=rng.standard_normal(G * H) * 0.5 if bias else None,
    )


def _numeric_grad(f, args, name, eps=1e-6):
    v = args[name]
    g = np.zeros_like(v)
    for idx in np.ndindex(v.shape):
        old = v[idx]
        v[idx] = old + eps
        fp = f()
        v[idx] = old - eps
        fm = f()
        v[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("lengths", [None, [4, 2, 1]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_layer_backward_matches_finite_differences(backend, kind, bias, lengths, reverse):
    be = backends.get_backend(backend)
    rng = np.random.default_rng(zlib.crc32(repr((kind, bias, reverse, lengths)).encode()))
    T, B, I, H = 4, 3, 2, 3
    args = _random_args(kind, T, B, I, H, bias, rng)
    L = None if lengths is None else np.array(lengths, dtype=np.int64)
    go = rng.standard_normal((T, B, H))
    gh = rng.standard_normal((B, H))
    gc = rng.standard_normal((B, H)) if kind == "lstm" else None

    def loss():
        out, h, c, _ = be.layer_forward(kind, *args.values(), L, reverse, False)
        s = np.sum(out * go) + np.sum(h * gh)
        return s + (np.sum(c * gc) if c is not None else 0.0)

    out, h, c, ws = be.layer_forward(kind, *args.values(), L, reverse, True)
    grads = be.layer_backward(ws, go, gh, gc)
    for name, key in [("x", "x"), ("h0", "h0"), ("c0", "c0"), ("w_ih", "w_ih"), ("w_hh", "w_hh"),
                      ("b_ih", "b_ih"), ("b_hh", "b_hh")]:
        if args[name] is None:
            assert grads[key] is None
            continue
        num = _numeric_grad(loss, args, name)
        np.testing.assert_allclose(grads[key], num, rtol=1e-6, atol=1e-7, err_msg=f"{kind} d{name}")
    if L is not None:
        # padded steps get exactly zero gradient into x
        for b, n in enumerate(L):
            assert np.all(grads["x"][n:, b] == 0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_backward_matches_finite_differences(backend, kind, bias):
    be = backends.get_backend(backend)
    rng = np.random.default_rng(7)
    B, I, H = 3, 4, 3
    a = _random_args(kind, 1, B, I, H, bias, rng)
    args = dict(x=a["x"][0], h=a["h0"], c=a["c0"], w_ih=a["w_ih"], w_hh=a["w_hh"], b_ih=a["b_ih"], b_hh=a["b_hh"])
    gh = rng.standard_normal((B, H))
    gc = rng.standard_normal((B, H)) if kind == "lstm" else None

    def loss():
        h, c, _ = be.cell_forward(kind, *args.values(), False)
        return np.sum(h * gh) + (np.sum(c * gc) if c is not None else 0.0)

    _, _, ws = be.cell_forward(kind, *args.values(), True)
    grads = be.cell_backward(ws, gh, gc)
    for name in args:
        if args[name] is None:
            assert grads[name] is None
            continue
        np.testing.assert_allclose(grads[name], _numeric_grad(loss, args, name), rtol=1e-6, atol=1e-7,
                                   err_msg=f"{kind} d{name}")


@pytest.mark.parametrize("kind", KINDS)
def test_float32_computes_in_float32(backend, kind):
    be = backends.get_backend(backend)
    rng = np.random.default_rng(1)
    a = {k: (None if v is None else v.astype(np.float32)) for k, v in _random_args(kind, 3, 2, 2, 2, True, rng).items()}
    out, h, c, ws = be.layer_forward(kind, *a.values(), None, False, True)
    assert out.dtype == h.dtype == np.float32
    g = be.layer_backward(ws, np.ones_like(out), np.zeros_like(h), None if c is None else np.zeros_like(c))
    assert all(v.dtype == np.float32 for v in g.values() if v is not None)
    a64 = {k: (None if v is None else v.astype(np.float64)) for k, v in a.items()}
    out64, *_ = be.layer_forward(kind, *a64.values(), None, False, False)
    np.testing.assert_allclose(out, out64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_equal_running_each_sequence_alone(backend, kind, reverse):
    """A padded batch with lengths gives what each sequence gives when run alone, unpadded."""
    be = backends.get_backend(backend)
    rng = np.random.default_rng(3)
    T, B, I, H = 6, 4, 3, 5
    a = _random_args(kind, T, B, I, H, True, rng)
    lengths = np.array([6, 1, 3, 5], dtype=np.int64)
    out, h, c, _ = be.layer_forward(kind, *a.values(), lengths, reverse, False)
    for b, n in enumerate(lengths):
        ob, hb, cb, _ = be.layer_forward(kind, np.ascontiguousarray(a["x"][:n, b:b + 1]), a["h0"][b:b + 1],
                                         None if a["c0"] is None else a["c0"][b:b + 1], a["w_ih"], a["w_hh"],
                                         a["b_ih"], a["b_hh"], None, reverse, False)
        np.testing.assert_allclose(out[:n, b], ob[:, 0], rtol=1e-12, atol=1e-12)
        assert np.all(out[n:, b] == 0)
        np.testing.assert_allclose(h[b], hb[0], rtol=1e-12, atol=1e-12)
        if c is not None:
            np.testing.assert_allclose(c[b], cb[0], rtol=1e-12, atol=1e-12)
