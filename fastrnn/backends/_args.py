"""The arguments of the backend contract (``contract.Backend``), checked once for every Python
implementation of it: the reference, the Numba backend and ``fastrnn.capi``.

The rule (``contract.py``, "Arrays"): every array is a ``numpy.ndarray`` of float32 or float64
in native byte order, the dtype of ``x``, of the contract's shape, C-contiguous and aligned
(``fastrnn._validate.checked_array``; ``out`` and ``grad_out``, which need only adjacent rows,
are checked in ``_rows.py``); ``lengths`` is None or an int64 array ``[B]`` with values
in [1, T]. Nothing is converted: anything else raises TypeError (not an array, another dtype) or
ValueError (shape, layout, values) naming the argument. The cpp binding applies the same rule in
C++ (``csrc/python/arrays.h``); ``tests/test_contract.py`` holds every backend to the same errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import FLOAT_DTYPES, checked_array
from .contract import PEEPHOLES, has_cell_state, num_gates

INT64 = np.dtype(np.int64)


def call_dtype(x: Any) -> np.dtype[Any]:
    """The dtype of a call: x's, float32 or float64 in native byte order."""
    dt = getattr(x, "dtype", None)
    if not isinstance(x, np.ndarray) or dt not in FLOAT_DTYPES or not dt.isnative:
        raise TypeError(f"x must be a numpy.ndarray of dtype float32 or float64 (native byte order), got "
                        f"{dt.str if isinstance(dt, np.dtype) else type(x).__name__}")
    dtype: np.dtype[Any] = x.dtype
    return dtype


def check_forward(kind: str, x: Any, h: Any, c: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any,
                  lengths: Any = None, *, cell: bool = False, peep: Any = None,
                  hmask: Any = None, w_hr: Any = None) -> tuple[np.dtype[Any], int, int, int, int]:
    """Check the arguments of ``layer_forward`` (``cell``: ``cell_forward``, states named h, c
    instead of h0, c0, no lengths). Returns ``(dtype, G, B, I, H)``: H the hidden units (the
    state h has ``h.shape[1]`` = P of them with a projection ``w_hr``, else H)."""
    G = num_gates(kind)
    dt = call_dtype(x)
    ndim = 2 if cell else 3
    if x.ndim != ndim or min(x.shape) < 1:
        raise ValueError(f"x must have shape {'(B, I)' if cell else '(T, B, I)'} with every size >= 1, got {x.shape}")
    B, I = x.shape[-2:]
    checked_array(x, "x", dt, x.shape)
    hname, cname = ("h", "c") if cell else ("h0", "c0")
    P = h.shape[1] if isinstance(h, np.ndarray) and h.ndim == 2 and h.shape[1] >= 1 else -1
    checked_array(h, hname, dt, (B, P))
    H = P
    if w_hr is not None:  # the projection's array first (a wrong dtype is a TypeError), then the kind
        H = w_hr.shape[1] if isinstance(w_hr, np.ndarray) and w_hr.ndim == 2 and w_hr.shape[1] >= 1 else -1
        checked_array(w_hr, "w_hr", dt, (P, H))
        if not has_cell_state(kind):
            raise ValueError(f"w_hr must be None for kind {kind!r} (projections are the LSTM's)")
        if P > H:
            raise ValueError(f"w_hr must have no more rows (projected units, {P}) than columns (hidden units, {H})")
    if has_cell_state(kind):
        if c is None:
            raise ValueError(f"{cname} must be an array of shape ({B}, {H}) for kind {kind!r}, got None")
        checked_array(c, cname, dt, (B, H))
    elif c is not None:
        raise ValueError(f"{cname} must be None for kind {kind!r}")
    checked_array(w_ih, "w_ih", dt, (G * H, I))
    checked_array(w_hh, "w_hh", dt, (G * H, P))
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be arrays or both be None")
    checked_array(b_ih, "b_ih", dt, (G * H,), optional=True)
    checked_array(b_hh, "b_hh", dt, (G * H,), optional=True)
    # the variants' arrays: the array first (a wrong dtype is a TypeError, as the binding's), then the kind
    if peep is not None:
        checked_array(peep, "peep", dt, (PEEPHOLES * H,))
        if not has_cell_state(kind):
            raise ValueError(f"peep must be None for kind {kind!r} (peepholes are the LSTM's)")
    if hmask is not None:
        checked_array(hmask, "hmask", dt, (B, P))
    if lengths is not None:
        checked_array(lengths, "lengths", INT64, (B,))
        if lengths.min() < 1 or lengths.max() > x.shape[0]:
            raise ValueError(f"lengths must lie in [1, T={x.shape[0]}], got min {lengths.min()}, max {lengths.max()}")
    return dt, G, B, I, H


def check_gradients(dtype: np.dtype[Any], **grads: tuple[Any, tuple[int, ...]]) -> None:
    """Each gradient argument (name=(array or None, shape)) None or an array of ``dtype`` and shape."""
    for name, (a, shape) in grads.items():
        checked_array(a, name, dtype, shape, optional=True)
