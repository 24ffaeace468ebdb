"""Boundary checks of the numba backend: nothing reachable from Python may crash a kernel."""

from __future__ import annotations

import numpy as np

from ..contract import has_cell_state, num_gates

def dtype_of(x):
    dt = getattr(x, "dtype", None)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"the numba backend computes in float32 or float64, got x of dtype {dt}")
    return np.dtype(dt)


def as_array(a, name, dtype, shape):
    """``a`` as a C-contiguous writeable array of ``dtype`` and ``shape`` (no copy when it already is)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype} like x (no silent conversion), got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if not (a.flags.c_contiguous and a.flags.writeable):
        a = np.array(a, order="C")
    return a


def lengths_array(lengths, T, B):
    if lengths is None:
        return np.full(B, T, dtype=np.int64), False
    lengths = np.asarray(lengths)
    if lengths.shape != (B,) or lengths.dtype.kind not in "iu":
        raise ValueError(f"lengths must be integers of shape ({B},), got {lengths.dtype} of shape {lengths.shape}")
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"lengths must be in [1, T={T}], got {lengths.tolist()}")
    return lengths, True


def check_layer(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    G = num_gates(kind)
    dtype = dtype_of(x)
    if x.ndim != 3 or min(x.shape) < 1:
        raise ValueError(f"x must have shape [T, B, I] with T, B, I >= 1, got {getattr(x, 'shape', None)}")
    T, B, I = x.shape
    if getattr(h0, "ndim", 0) != 2 or h0.shape[1] < 1:
        raise ValueError(f"h0 must have shape [B, H], got {getattr(h0, 'shape', None)}")
    H = h0.shape[1]
    x = as_array(x, "x", dtype, (T, B, I))
    h0 = as_array(h0, "h0", dtype, (B, H))
    if has_cell_state(kind):
        if c0 is None:
            raise ValueError(f"c0 is required for kind {kind!r}")
        c0 = as_array(c0, "c0", dtype, (B, H))
    elif c0 is not None:
        raise ValueError(f"c0 must be None for kind {kind!r}")
    w_ih = as_array(w_ih, "w_ih", dtype, (G * H, I))
    w_hh = as_array(w_hh, "w_hh", dtype, (G * H, H))
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be arrays or both be None")
    if b_ih is not None:
        b_ih = as_array(b_ih, "b_ih", dtype, (G * H,))
        b_hh = as_array(b_hh, "b_hh", dtype, (G * H,))
    return x, h0, c0, w_ih, w_hh, b_ih, b_hh, dtype, G

