"""Sine-wave data sets for sequence-prediction exercises.

The default reproduces the data of PyTorch's "time sequence prediction"
example (100 waves of 1000 samples, ``sin((t + shift) / 20)`` with an integer
``shift`` drawn from ``[-80, 80)``, float64; waves 0..2 for testing, the rest
for training), with the options time-series users expect on top: number and
length of waves, period (fixed or a range drawn per wave), amplitude range,
phase-shift range, additive Gaussian noise, seed and dtype.

Arrays come in the layout fastrnn's layers take: time-major ``[T, B, 1]`` by
default, ``[B, T, 1]`` with ``batch_first=True``. Inputs are samples
``0 .. L-2`` of each wave and targets the next samples ``1 .. L-1``.

No global random state is touched: randomness comes from a
``numpy.random.Generator`` (or an integer seed for one).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import DTypeLike, NDArray

from .._validate import as_dtype, generator

__all__ = ["SineData", "sine_waves", "make_sine_data", "to_layout", "EXAMPLE_T"]

#: The example's time scale: ``sin(x / 20)``, a period of ``2*pi*20`` (about 125.7) samples.
EXAMPLE_T = 20.0

#: a number, or a (low, high) range each wave draws its own value from
Range = float | tuple[float, float]
#: what seeds a draw: None (fresh entropy), an integer, or a generator used as it is
Seed = int | np.random.Generator | None


def _int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _range(value: object, name: str, positive: bool = False) -> tuple[float, float]:
    """A number or a (low, high) pair as a (low, high) pair of finite floats."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        lo = hi = float(value)
    else:
        try:
            lo, hi = (float(v) for v in value)  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number or a (low, high) pair, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name} range must have low <= high, got {value!r}")
    if positive and lo <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return lo, hi


@dataclass
class SineData:
    """Train/test splits of a sine-wave set, plus what is needed to extend it.

    ``x_train``/``y_train``: inputs and next-sample targets of the training
    waves, ``[L-1, N_train, 1]`` (``[N_train, L-1, 1]`` if ``batch_first``);
    likewise ``x_test``/``y_test``. ``waves`` holds all ``[N, L]`` series as
    observed (with noise), ``clean`` without noise. Per-wave parameters are in
    ``shift``, ``amplitude`` and ``scale`` (the wave is
    ``amplitude * sin((t + shift) / scale)``, ``scale = period / (2*pi)``).
    """

    x_train: NDArray[Any]
    y_train: NDArray[Any]
    x_test: NDArray[Any]
    y_test: NDArray[Any]
    waves: NDArray[Any]
    clean: NDArray[Any]
    shift: NDArray[np.int64]
    amplitude: NDArray[np.float64]
    scale: NDArray[np.float64]
    test_index: NDArray[np.intp]
    train_index: NDArray[np.intp]
    batch_first: bool = False
    dtype: np.dtype[Any] = field(default_factory=lambda: np.dtype(np.float64))

    @property
    def period(self) -> NDArray[np.float64]:
        """Samples per cycle of each wave."""
        return 2 * np.pi * self.scale

    def continuation(self, start: int, steps: int, which: Literal["test", "train", "all"] = "test") -> NDArray[Any]:
        """The noiseless waves from sample ``start`` for ``steps`` samples, in the data's layout.

        ``which``: "test", "train" or "all". With ``start = L - 1`` this is the
        true future of the test inputs (whose last sample is ``L - 2``): what
        an autoregressive forecast started after ``x_test`` should reproduce.
        """
        start = _int(start, "start", 0)
        steps = _int(steps, "steps", 1)
        index = {"test": self.test_index, "train": self.train_index,
                 "all": np.arange(len(self.shift))}.get(which)
        if index is None:
            raise ValueError(f"which must be 'test', 'train' or 'all', got {which!r}")
        w = _evaluate(self.shift[index], self.amplitude[index], self.scale[index], start, steps, self.dtype)
        return to_layout(w, self.batch_first)


def _evaluate(shift: NDArray[Any], amplitude: NDArray[Any], scale: NDArray[Any], start: int, length: int,
              dtype: DTypeLike) -> NDArray[Any]:
    """``amplitude * sin((t + shift) / scale)`` for t in [start, start+length), computed in float64."""
    x = np.empty((len(shift), length), np.float64)
    x[:] = np.arange(start, start + length) + shift.reshape(-1, 1)
    w = np.sin(x / scale.reshape(-1, 1))
    if not np.all(amplitude == 1):
        w *= amplitude.reshape(-1, 1)
    out: NDArray[Any] = w.astype(dtype, copy=False)
    return out


@overload
def sine_waves(n_waves: int = 100, length: int = 1000, *, period: Range | None = None, amplitude: Range = 1.0,
               shift: int | tuple[int, int] = (-80, 80), noise: float = 0.0, seed: Seed = None,
               dtype: DTypeLike = np.float64, return_params: Literal[False] = False) -> NDArray[Any]: ...
@overload
def sine_waves(n_waves: int = 100, length: int = 1000, *, period: Range | None = None, amplitude: Range = 1.0,
               shift: int | tuple[int, int] = (-80, 80), noise: float = 0.0, seed: Seed = None,
               dtype: DTypeLike = np.float64,
               return_params: Literal[True]) -> tuple[NDArray[Any], dict[str, NDArray[Any]]]: ...
def sine_waves(n_waves: int = 100, length: int = 1000, *, period: Range | None = None, amplitude: Range = 1.0,
               shift: int | tuple[int, int] = (-80, 80), noise: float = 0.0, seed: Seed = None,
               dtype: DTypeLike = np.float64,
               return_params: bool = False) -> NDArray[Any] | tuple[NDArray[Any], dict[str, NDArray[Any]]]:
    """``[n_waves, length]`` sine waves ``amplitude * sin((t + shift) * 2*pi / period) + noise``.

    - ``period``: samples per cycle; a number, or a ``(low, high)`` range from
      which each wave draws its own period uniformly. None (default) is the
      example's ``sin(x / 20)``, computed exactly as there (period ``2*pi*20``).
    - ``amplitude``: a number or a ``(low, high)`` range drawn per wave.
    - ``shift``: integer phase shift in samples, drawn per wave from the
      half-open ``[low, high)``; default ``(-80, 80)`` (the example's
      ``randint(-4*T, 4*T)``). A single integer fixes every wave's shift.
    - ``noise``: standard deviation of additive Gaussian noise (0: none).
    - ``seed``: None, an integer or a ``numpy.random.Generator``.
    - ``return_params``: also return ``dict(shift, amplitude, scale, clean)``.

    The draws are made in the order shift, period, amplitude, noise, each only
    when needed, so the default uses the generator exactly like the example
    uses ``randint``.
    """
    n_waves = _int(n_waves, "n_waves", 1)
    length = _int(length, "length", 2)
    dt = as_dtype(dtype)
    rng = generator(seed)

    if isinstance(shift, numbers.Integral) and not isinstance(shift, bool):
        shifts = np.full(n_waves, int(shift), dtype=np.int64)
    else:
        try:
            lo, hi = shift  # type: ignore[misc]  # an integer (numbers.Integral) is handled above
        except (TypeError, ValueError):
            raise TypeError(f"shift must be an integer or a (low, high) pair of integers, got {shift!r}") from None
        if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in (lo, hi)):
            raise TypeError(f"shift range must be integers, got {shift!r}")
        if lo >= hi:
            raise ValueError(f"shift range [low, high) must have low < high, got {shift!r}")
        shifts = rng.integers(int(lo), int(hi), n_waves)

    if period is None:
        scale = np.full(n_waves, EXAMPLE_T)
    else:
        plo, phi = _range(period, "period", positive=True)
        periods = np.full(n_waves, plo) if plo == phi else rng.uniform(plo, phi, n_waves)
        scale = periods / (2 * np.pi)

    alo, ahi = _range(amplitude, "amplitude")
    amps = np.full(n_waves, alo) if alo == ahi else rng.uniform(alo, ahi, n_waves)

    if (isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise)
            or float(noise) < 0):
        raise ValueError(f"noise must be a finite number >= 0 (a standard deviation), got {noise!r}")

    clean = _evaluate(shifts, amps, scale, 0, length, np.float64)
    waves = clean + rng.normal(0.0, float(noise), clean.shape) if noise > 0 else clean.copy()
    waves = waves.astype(dt, copy=False)
    if return_params:
        return waves, dict(shift=shifts, amplitude=amps, scale=scale, clean=clean.astype(dt, copy=False))
    return waves


def to_layout(waves: NDArray[Any], batch_first: bool = False) -> NDArray[Any]:
    """``[N, L]`` series as ``[L, N, 1]`` (time-major) or ``[N, L, 1]`` (``batch_first``), contiguous."""
    w = np.asarray(waves)
    if w.ndim != 2:
        raise ValueError(f"waves must have shape [N, L], got {w.shape}")
    w = w[:, :, None]
    if not batch_first:
        w = w.transpose(1, 0, 2)
    return np.ascontiguousarray(w)


def make_sine_data(n_waves: int = 100, length: int = 1000, *, n_test: int = 3, period: Range | None = None,
                   amplitude: Range = 1.0, shift: int | tuple[int, int] = (-80, 80), noise: float = 0.0,
                   seed: Seed = None, dtype: DTypeLike = np.float64, batch_first: bool = False) -> SineData:
    """Sine waves split into train and test sets of inputs and next-sample targets.

    Waves ``0 .. n_test-1`` are the test set, the others the training set (as
    in the example: train on waves 3..99, test on 0..2). For each wave of
    ``length`` samples the input is samples ``0 .. length-2`` and the target
    samples ``1 .. length-1``. Other arguments are those of :func:`sine_waves`.
    Returns a :class:`SineData`.
    """
    n_waves = _int(n_waves, "n_waves", 1)
    n_test = _int(n_test, "n_test", 0)
    if n_test >= n_waves:
        raise ValueError(f"n_test must be smaller than n_waves (some waves must be left to train on), "
                         f"got n_test={n_test}, n_waves={n_waves}")
    dt = as_dtype(dtype)
    waves, p = sine_waves(n_waves, length, period=period, amplitude=amplitude, shift=shift, noise=noise,
                          seed=seed, dtype=dt, return_params=True)
    test, train = np.arange(n_test), np.arange(n_test, n_waves)
    bf = bool(batch_first)
    return SineData(
        x_train=to_layout(waves[train, :-1], bf), y_train=to_layout(waves[train, 1:], bf),
        x_test=to_layout(waves[test, :-1], bf), y_test=to_layout(waves[test, 1:], bf),
        waves=waves, clean=p["clean"], shift=p["shift"], amplitude=p["amplitude"], scale=p["scale"],
        test_index=test, train_index=train, batch_first=bf, dtype=dt,
    )
