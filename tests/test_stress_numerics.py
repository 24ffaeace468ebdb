"""Numerics under stress, and determinism.

- large-magnitude inputs saturate the gates without producing NaN where the
  reference gives none;
- NaN and Inf propagate where the reference propagates them;
- float32 over T = 10 000 steps stays within a stated tolerance of float64;
- the same inputs give bitwise-identical outputs and gradients on repeated
  runs; across thread counts forwards are bitwise identical and gradients
  equal up to float rounding (the large GEMMs run in a threaded BLAS).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn

CLASSES = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn_tanh": fastrnn.RNN}


def _pair(kind, backend, dtype, **kw):
    layer = CLASSES[kind](3, 5, backend=backend, dtype=dtype, seed=0, **kw)
    ref = CLASSES[kind](3, 5, backend="numpy", dtype=dtype, seed=0, **kw)
    return layer, ref


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("scale", [1e4, 1e30, "max"])
def test_large_inputs_saturate_without_nan(backend, dtype, kind, scale):
    layer, ref = _pair(kind, backend, dtype)
    big = np.finfo(dtype).max if scale == "max" else scale
    x = (np.random.default_rng(0).standard_normal((6, 2, 3)) * 1.0).astype(dtype)
    x = np.where(x > 0, dtype.type(big), dtype.type(-big)).astype(dtype)
    with np.errstate(all="ignore"):
        out, _ = layer(x)
        out_ref, _ = ref(x)
        dx, _ = layer.backward(np.ones_like(out))
        dx_ref, _ = ref.backward(np.ones_like(out))
    assert np.array_equal(np.isnan(out), np.isnan(out_ref))
    if not np.isnan(out_ref).any():
        assert np.isfinite(out).all()
        assert np.all(np.abs(out) <= 1)  # saturated gates: states stay bounded
        np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-5)
    assert np.array_equal(np.isnan(dx), np.isnan(dx_ref))


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_propagate_like_reference(backend, dtype, kind, bad):
    layer, ref = _pair(kind, backend, dtype)
    x = np.random.default_rng(1).standard_normal((5, 3, 3)).astype(dtype)
    x[2, 1, 0] = bad
    with np.errstate(all="ignore"):
        out, h = layer(x)
        out_ref, h_ref = ref(x)
    h, h_ref = (h[0], h_ref[0]) if kind == "lstm" else (h, h_ref)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(out_ref))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(out_ref))
    np.testing.assert_array_equal(np.isnan(h), np.isnan(h_ref))
    ok = np.isfinite(out_ref)
    np.testing.assert_allclose(out[ok], out_ref[ok], rtol=1e-5, atol=1e-5)
    # other sequences of the batch are untouched by the bad value
    assert np.isfinite(out[:, [0, 2]]).all()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_float32_accumulation_over_long_sequences(backend, kind):
    """T = 10 000: float32 stays within 1e-3 of float64 (outputs and the summed gradients, relative)."""
    if backend == "numpy":
        pytest.skip("the reference is the float64 side of this comparison")
    T = 10_000
    x64 = np.random.default_rng(2).standard_normal((T, 2, 3))
    l32 = CLASSES[kind](3, 8, backend=backend, dtype=np.float32, seed=5)
    l64 = CLASSES[kind](3, 8, backend="numpy", dtype=np.float64, seed=5)
    l64.load_state_dict(l32.state_dict())
    out32, _ = l32(x64.astype(np.float32))
    out64, _ = l64(x64)
    assert np.max(np.abs(out32 - out64)) < 1e-3
    l32.backward(np.ones_like(out32))
    l64.backward(np.ones_like(out64))
    for name in l64.grads:
        g32, g64 = l32.grads[name], l64.grads[name]
        assert np.max(np.abs(g32 - g64)) <= 1e-3 * max(1.0, np.max(np.abs(g64))), name


@pytest.mark.parametrize("kind", list(CLASSES))
def test_repeated_runs_are_bitwise_identical(backend, kind):
    layer = CLASSES[kind](4, 16, num_layers=2, bidirectional=True, backend=backend, seed=3)
    x = np.random.default_rng(3).standard_normal((25, 5, 4)).astype(np.float32)
    runs = []
    for _ in range(3):
        layer.zero_grad()
        out, h = layer(x, lengths=[25, 3, 17, 25, 9])
        dx, dh = layer.backward(np.ones_like(out))
        runs.append([out, dx] + [g.copy() for g in layer.grads.values()])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", list(CLASSES))
def test_thread_count_does_not_change_results(backend, kind):
    layer = CLASSES[kind](16, 64, backend=backend, seed=4)
    x = np.random.default_rng(4).standard_normal((30, 8, 16)).astype(np.float32)
    results = []
    try:
        for n in (1, 2):
            fastrnn.set_num_threads(n)
            layer.zero_grad()
            out, _ = layer(x)
            dx, _ = layer.backward(np.ones_like(out))
            results.append((out, dx, {k: v.copy() for k, v in layer.grads.items()}))
    finally:
        fastrnn.set_num_threads(fastrnn.backends.default_num_threads())
    (o1, dx1, g1), (o2, dx2, g2) = results
    np.testing.assert_array_equal(o1, o2)  # forwards: bitwise
    if backend == "cpp":  # its own GEMM splits work so that sums never change order: bitwise too
        np.testing.assert_array_equal(dx1, dx2)
        for k in g1:
            np.testing.assert_array_equal(g1[k], g2[k])
        return
    np.testing.assert_allclose(dx1, dx2, rtol=1e-5, atol=1e-6)  # BLAS threads may reorder sums
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-5, atol=1e-5)
