"""Arrays of rows that need not be dense (``contract.Backend``): the ``out`` argument of
``layer_forward`` and the ``grad_out`` of ``layer_backward``, for the Python backends and
``fastrnn.capi``.

A ``[T, B, H]`` array "has adjacent rows" when each row ``a[t, b]`` is H adjacent values (unit
stride of the last axis) and every stride is a whole number of elements; the T and B strides
are free. The cpp binding checks the same in C++ (``csrc/python/arrays.cpp``: ``check_out``,
``check_rows_arg``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def has_rows(a: np.ndarray[Any, Any]) -> bool:
    """Whether the 3-dimensional array ``a`` has adjacent rows."""
    item = a.itemsize
    return all(s % item == 0 for s in a.strides) and (a.shape[-1] <= 1 or a.strides[-1] == item)


def _rows_disjoint(a: np.ndarray[Any, Any]) -> bool:
    """Whether no two rows of ``a`` (which has adjacent rows) share an element: ordered by stride,
    each axis of length > 1 steps past the whole extent of the one inside it (time-major or
    batch-major rows; no negative strides)."""
    T, B, H = a.shape
    axes = sorted(((n, s // a.itemsize) for n, s in ((T, a.strides[0]), (B, a.strides[1])) if n > 1),
                  key=lambda ax: ax[1])
    extent = H  # elements one step of the next axis must pass
    for n, stride in axes:
        if stride < extent:
            return False
        extent = n * stride
    return True


def _rows_array(a: Any, name: str, shape: tuple[int, ...], dtype: np.dtype[Any], like: str) -> None:
    """Raise unless ``a`` is an ndarray of ``dtype`` (else TypeError) of ``shape`` with adjacent
    rows, aligned (else ValueError naming ``name``)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be None or a numpy array of dtype {dtype}, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} like {like}, got {a.dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")
    if not a.flags.aligned:
        raise ValueError(f"{name} must be an aligned array")
    if not has_rows(a):
        raise ValueError(f"{name} must have adjacent rows ({name}[t, b] H adjacent values), got strides {a.strides}")


def check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype[Any], inputs: Mapping[str, Any]) -> None:
    """Raise unless ``out`` is None or what ``layer_forward`` may write into: an ndarray of
    ``dtype`` (else TypeError) of ``shape``, aligned, writeable, with adjacent rows that do not
    overlap each other and no memory shared with the arrays of ``inputs`` (name -> array or None)
    (else ValueError naming ``out``)."""
    if out is None:
        return
    _rows_array(out, "out", shape, dtype, "x")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    if not _rows_disjoint(out):
        raise ValueError(f"out's rows must not overlap each other (time-major or batch-major rows of H), "
                         f"got strides {out.strides}")
    for name, a in inputs.items():
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"out shares memory with {name}")


def check_rows_arg(a: Any, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    """Raise unless ``a`` (``grad_out``) is None or an ndarray of ``dtype`` (else TypeError) of
    ``shape`` with adjacent rows, aligned (else ValueError naming ``name``)."""
    if a is not None:
        _rows_array(a, name, shape, dtype, "the forward pass")
