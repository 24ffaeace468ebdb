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


def flag(value: object, name: str) -> bool:
    """``value`` as a bool (Python's or NumPy's; not an integer)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def fraction(value: object, name: str, *, below_one: bool = False) -> float:
    """``value`` as a float in [0, 1] ([0, 1) with ``below_one``): a dropout probability."""
    p = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else -1.0
    if not 0 <= p <= 1 or (below_one and p == 1):
        raise ValueError(f"{name} must be a number in [0, {'1)' if below_one else '1]'}, got {value!r}")
    return p


def generator(seed: Any, name: str = "seed") -> np.random.Generator:
    """A ``numpy.random.Generator`` from None, a non-negative integer or a Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be None, an integer or a numpy.random.Generator, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {int(seed)}")
    return np.random.default_rng(int(seed))


def thread_count(n: Any, name: str = "n") -> int:
    """A number of threads: an integer of any kind (int, numpy.int64, ...) >= 1, as an int.
    (The upper bound is the kernels' own: the cpp backend refuses what it cannot run.)"""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an integer number of threads, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"{name} must be a positive integer (a number of threads), got {int(n)}")
    return int(n)


def to_numpy(value: Any, name: str = "value") -> NDArray[Any]:
    """A NumPy view of an array-like; torch tensors without importing torch. What NumPy cannot
    hold (a bfloat16 or meta tensor, a ragged list) raises TypeError naming ``name``."""
    try:
        if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
            arr: NDArray[Any] = value.detach().cpu().numpy()
            return arr
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        what = getattr(value, "dtype", type(value).__name__)
        device = getattr(value, "device", None)
        raise TypeError(f"{name} ({what}{'' if device is None else ' on ' + str(device)}) cannot be read as a "
                        f"NumPy array: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                        "convert it first (e.g. tensor.float().cpu())") from None


def float_array(value: Any, name: str, dtype: np.dtype[Any],
                shapes: Sequence[ShapePattern] | None = None) -> NDArray[Any]:
    """``value`` as a C-contiguous array of exactly ``dtype`` (no silent casts).

    ``shapes``: allowed shapes; each may contain None for "any size".
    (On the hot path of every call: the common case costs a few attribute reads.)
    """
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = value if type(value) is np.ndarray else to_numpy(value, name)
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


def checked_array(a: Any, name: str, dtype: Any, shape: Sequence[int], optional: bool = False) -> NDArray[Any] | None:
    """``a`` itself if it is exactly what C code may read through its raw pointer: a NumPy array
    of ``dtype`` (native byte order), ``shape``, C-contiguous and aligned; else a TypeError or
    ValueError naming ``name``. No conversion: a caller that hands a pointer to C checks with this
    (a strided or misaligned array read as if it were dense is garbage or a crash)."""
    if a is None:
        if optional:
            return None
        raise TypeError(f"{name} must be an array of shape {tuple(shape)}, got None")
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:  # a non-native byte order is a different dtype here
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)} (native byte order), got {a.dtype.str}")
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (np.ascontiguousarray({name})), got strides {a.strides}")
    if not a.flags.aligned:
        raise ValueError(f"{name} must be aligned to its dtype")
    return a


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
    arr = to_numpy(lengths, "lengths")
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and not np.all(np.isfinite(arr)):
            raise ValueError("lengths must be finite integers, got non-finite values")
        raise TypeError(f"lengths must be an array of integers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(f"lengths must have shape ({batch},) (one length per sequence), got {tuple(arr.shape)}")
    if arr.size and (arr.min() < 1 or arr.max() > steps):
        raise ValueError(f"lengths must lie in [1, {steps}] (the number of time steps), got min {arr.min()}, max {arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.int64)
