"""Checks of user input: each failure names the argument and what was expected."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

#: an allowed shape: each entry a size or None for any size
ShapePattern = Sequence["int | None"]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_dtype(dtype: DTypeLike | object, name: str = "dtype") -> np.dtype[Any]:
    """float32 or float64 from anything NumPy understands (or a torch dtype's name)."""
    if dtype is None:
        return np.dtype(np.float32)
    if not isinstance(dtype, (str, type, np.dtype)):
        dtype = str(dtype).replace("torch.", "")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def positive_int(value: object, name: str, allow_zero: bool = False) -> int:
    """``value`` as an int >= 1 (>= 0 with ``allow_zero``); bools are not integers here."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else 'a positive integer'}, got {value}")
    return int(value)


def to_numpy(value: Any) -> NDArray[Any]:
    """A NumPy view of an array-like; torch tensors without importing torch."""
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        arr: NDArray[Any] = value.detach().cpu().numpy()
        return arr
    return np.asarray(value)


def float_array(value: Any, name: str, dtype: np.dtype[Any],
                shapes: Sequence[ShapePattern] | None = None) -> NDArray[Any]:
    """``value`` as a C-contiguous array of exactly ``dtype`` (no silent casts).

    ``shapes``: allowed shapes; each may contain None for "any size".
    (On the hot path of every call: the common case costs a few attribute reads.)
    """
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = value if type(value) is np.ndarray else to_numpy(value)
    dt = arr.dtype
    if dt is not dtype and dt != dtype:
        if dt.kind != "f":
            raise TypeError(f"{name} must be a floating-point array of dtype {dtype}, got dtype {dt}")
        raise TypeError(
            f"{name} has dtype {dt} but the layer computes in {dtype}; convert it explicitly (x.astype(np.{dtype}))"
        )
    if shapes is not None:
        shape = arr.shape
        if shape not in shapes:  # exact shapes: one C-level comparison
            for pattern in shapes:
                if _shape_matches(shape, pattern):
                    break
            else:
                raise ValueError(f"{name} must have shape {' or '.join(_fmt(s) for s in shapes)}, got {tuple(shape)}")
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def _shape_matches(shape: tuple[int, ...], pattern: ShapePattern) -> bool:
    if len(shape) != len(pattern):
        return False
    for s, p in zip(shape, pattern):
        if p is not None and p != s:
            return False
    return True


def _fmt(pattern: ShapePattern) -> str:
    return "(" + ", ".join("*" if p is None else str(p) for p in pattern) + (",)" if len(pattern) == 1 else ")")


def lengths_array(lengths: Any, batch: int, steps: int) -> NDArray[np.int64]:
    """Validate ``lengths`` of a padded batch: integers in [1, steps], one per sequence."""
    arr = to_numpy(lengths)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and not np.all(np.isfinite(arr)):
            raise ValueError("lengths must be finite integers, got non-finite values")
        raise TypeError(f"lengths must be an array of integers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(f"lengths must have shape ({batch},) (one length per sequence), got {tuple(arr.shape)}")
    if arr.size and (arr.min() < 1 or arr.max() > steps):
        raise ValueError(f"lengths must lie in [1, {steps}] (the number of time steps), got min {arr.min()}, max {arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.int64)
