"""Boundary checks of the numba backend: the contract's rule (``backends/_args.py``), then what
Numba itself needs."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._args import check_forward


def writeable(a: Any) -> Any:
    """``a`` (checked), or a copy if it is read-only: Numba types a read-only array apart, and a
    kernel compiled for it would be one more compilation."""
    return a if a is None or a.flags.writeable else a.copy()


def lengths_array(lengths: NDArray[Any] | None, T: int, B: int) -> tuple[NDArray[Any], bool]:
    """The loops' lengths (all T when None) and whether any sequence is padded."""
    if lengths is None:
        return np.full(B, T, dtype=np.int64), False
    return lengths, True


def check_layer(kind: str, x: NDArray[Any], h0: NDArray[Any], c0: NDArray[Any] | None, w_ih: NDArray[Any],
                w_hh: NDArray[Any], b_ih: NDArray[Any] | None, b_hh: NDArray[Any] | None,
                lengths: NDArray[Any] | None, peep: NDArray[Any] | None = None,
                hmask: NDArray[Any] | None = None, w_hr: NDArray[Any] | None = None) -> tuple[Any, ...]:
    """The checked arguments (read-only ones copied) and the dtype and G of the call."""
    dtype, G, *_ = check_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, peep=peep, hmask=hmask,
                                 w_hr=w_hr)
    return tuple(writeable(a) for a in (x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep, hmask, w_hr)) + (dtype, G)
