"""Sine-wave data sets (fastrnn.data)."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn.data import EXAMPLE_T, make_sine_data, sine_waves, to_layout


def _example(rng, N=100, L=1000, T=20):
    """The data of PyTorch's time-sequence-prediction example, with the shifts drawn from ``rng``."""
    x = np.empty((N, L), "int64")
    x[:] = np.arange(L) + rng.integers(-4 * T, 4 * T, N).reshape(N, 1)
    return np.sin(x / 1.0 / T).astype("float64")


def test_default_reproduces_the_example_exactly():
    d = make_sine_data(seed=7)
    data = _example(np.random.default_rng(7))
    np.testing.assert_array_equal(d.waves, data)
    # train on waves 3..99, test on 0..2: input data[:, :-1], target data[:, 1:], time-major [T, B, 1]
    assert d.x_train.shape == d.y_train.shape == (999, 97, 1)
    assert d.x_test.shape == d.y_test.shape == (999, 3, 1)
    np.testing.assert_array_equal(d.x_train[:, :, 0], data[3:, :-1].T)
    np.testing.assert_array_equal(d.y_train[:, :, 0], data[3:, 1:].T)
    np.testing.assert_array_equal(d.x_test[:, :, 0], data[:3, :-1].T)
    np.testing.assert_array_equal(d.y_test[:, :, 0], data[:3, 1:].T)
    assert d.x_train.dtype == np.float64 and d.x_train.flags.c_contiguous
    assert np.all((d.shift >= -80) & (d.shift < 80))
    np.testing.assert_allclose(d.period, 2 * np.pi * EXAMPLE_T)


def test_batch_first_dtype_and_continuation():
    d = make_sine_data(8, 50, n_test=2, seed=0, dtype="float32", batch_first=True)
    assert d.x_train.shape == (6, 49, 1) and d.x_test.shape == (2, 49, 1)
    assert d.x_train.dtype == np.float32
    np.testing.assert_array_equal(d.y_test[:, :, 0], d.waves[:2, 1:])
    # the continuation extends the same waves beyond their length
    long = make_sine_data(8, 80, n_test=2, seed=0, dtype="float32", batch_first=True)
    np.testing.assert_array_equal(d.continuation(49, 30)[:, :, 0], long.waves[:2, 49:79])
    assert d.continuation(0, 3, which="train").shape == (6, 3, 1)


def test_options_periods_amplitudes_shift_noise():
    w, p = sine_waves(20, 300, period=(30, 60), amplitude=(0.5, 2.0), shift=(0, 10), seed=1, return_params=True)
    assert np.all((2 * np.pi * p["scale"] >= 30) & (2 * np.pi * p["scale"] <= 60))
    assert np.all((p["amplitude"] >= 0.5) & (p["amplitude"] <= 2.0))
    assert np.all((p["shift"] >= 0) & (p["shift"] < 10))
    np.testing.assert_allclose(np.abs(w).max(axis=1), p["amplitude"], rtol=2e-2)
    t = np.arange(300)
    np.testing.assert_allclose(w[4], p["amplitude"][4] * np.sin((t + p["shift"][4]) * 2 * np.pi / (2 * np.pi * p["scale"][4])),
                               atol=1e-12)
    noisy, q = sine_waves(50, 400, period=40, noise=0.1, shift=0, seed=2, return_params=True)
    assert np.all(q["shift"] == 0)
    assert np.std(noisy - q["clean"]) == pytest.approx(0.1, rel=0.05)
    d = make_sine_data(10, 30, noise=0.2, seed=3)
    assert not np.array_equal(d.waves, d.clean)
    np.testing.assert_allclose(d.continuation(0, 30)[:, :, 0], d.clean[:3].T, atol=1e-15)


def test_seeding_uses_no_global_state():
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    a = sine_waves(5, 20, seed=11)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    np.testing.assert_array_equal(a, sine_waves(5, 20, seed=np.random.default_rng(11)))
    assert not np.array_equal(a, sine_waves(5, 20, seed=12))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(n_waves=0), ValueError, "n_waves"),
    (dict(length=1), ValueError, "length"),
    (dict(period=-3), ValueError, "period"),
    (dict(period=(50, 10)), ValueError, "low <= high"),
    (dict(amplitude="big"), TypeError, "amplitude"),
    (dict(shift=(5, 5)), ValueError, "shift"),
    (dict(shift=(0.5, 3)), TypeError, "shift"),
    (dict(noise=-1), ValueError, "noise"),
    (dict(seed="x"), TypeError, "seed"),
    (dict(dtype="int32"), TypeError, "dtype"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sine_waves(**{"n_waves": 4, "length": 10, **kwargs})


def test_split_errors_and_layout():
    with pytest.raises(ValueError, match="n_test"):
        make_sine_data(3, 10, n_test=3)
    with pytest.raises(ValueError, match="shape"):
        to_layout(np.zeros(5))
    assert to_layout(np.zeros((2, 5))).shape == (5, 2, 1)
