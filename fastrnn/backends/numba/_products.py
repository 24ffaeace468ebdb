"""The products outside the time loops: the transposed recurrent weights the loops stream, and
the weight gradients' ``a.T @ b`` over all T*B rows."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._math import jit


def transposed(w: NDArray[Any], steps: int) -> NDArray[Any]:
    """``w.T`` as a C-contiguous copy: the layout the step's ``h @ W_hh.T`` streams best (BLAS 'N').
    Copied in blocks of 64 rows, several times faster than ``np.ascontiguousarray(w.T)`` for
    the weight matrices of real layers (which do not fit in L1/L2). For one step (a cell) the
    copy would cost more than it saves: the view itself (Fortran order, BLAS 'T') is used."""
    if steps == 1:
        view: NDArray[Any] = w.T
        return view
    n, k = w.shape
    out = np.empty((k, n), dtype=w.dtype)
    for j in range(0, n, 64):
        out[:, j:j + 64] = w[j:j + 64].T
    return out


@jit
def _small_tn(a: NDArray[Any], b: NDArray[Any], out: NDArray[Any]) -> None:
    """out = a.T @ b for few rows (a [R, N], b [R, K], R small: a cell's batch): rank-R updates,
    k innermost so each row of out is one vectorized pass. For so few rows NumPy's matmul takes
    a slow generic loop (R = 1) and a BLAS call costs more than this loop."""
    R, N = a.shape
    K = b.shape[1]
    for n in range(N):
        o = out[n]
        a0 = a[0, n]
        for k in range(K):
            o[k] = a0 * b[0, k]
        for r in range(1, R):
            ar = a[r, n]
            br = b[r]
            for k in range(K):
                o[k] += ar * br[k]


def at_b(a: NDArray[Any], b: NDArray[Any], out: NDArray[Any] | None = None) -> NDArray[Any]:
    """a.T @ b (a [R, N], b [R, K]) into ``out`` or a new array."""
    if out is None:
        out = np.empty((a.shape[1], b.shape[1]), dtype=a.dtype)
    if a.shape[0] <= 16:
        _small_tn(a, b, out)
    else:
        np.matmul(a.T, b, out=out)
    return out
