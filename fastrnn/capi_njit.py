"""The C ABI inside Numba nopython code: an LSTM over a sequence, one fused C
cell step at a time, with no Python in the loop.

This is the pattern for users who write their own simulation, control or RL
loops in Numba (the README shows it); the tests check it against
``fastrnn.LSTM`` and ``bench/test_bench_capi.py`` times its per-step cost.

``lstm_loop(dtype)`` returns the jitted loop for float32 or float64::

    run = lstm_loop(np.float64)
    hs = run(xs, h, c, w_ih, w_hh, b_ih, b_hh)   # xs [T, B, I]; h, c [B, H] updated in place

C cannot see an array's extent, so the function ``lstm_loop`` returns checks
every array (dtype, shape, C order, alignment: ``fastrnn._validate.checked_array``)
before the loop runs; ``run.njit`` is the unchecked jitted loop itself, to call
from other nopython code that guarantees those facts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ._optional import require

numba = require("numba", extra="numba,capi", feature="fastrnn.capi_njit (the C ABI inside @njit code)")

from ._validate import checked_array  # noqa: E402
from .capi import LSTM, ffi, lib  # noqa: E402 - after the numba check, whose message names both extras

_LSTM = int(LSTM)

#: run(xs, h, c, w_ih, w_hh, b_ih, b_hh) -> hs
LSTMLoop = Callable[[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]],
                    NDArray[Any]]


def _make(step: Any, dtype: type[Any]) -> LSTMLoop:
    @numba.njit(nogil=True)  # type: ignore[untyped-decorator]  # numba has no type information
    def run(xs: NDArray[Any], h: NDArray[Any], c: NDArray[Any], w_ih: NDArray[Any], w_hh: NDArray[Any],
            b_ih: NDArray[Any], b_hh: NDArray[Any]) -> NDArray[Any]:
        T, B, I = xs.shape
        H = h.shape[1]
        hs = np.empty((T, B, H), dtype)
        h_new = np.empty_like(h)
        c_new = np.empty_like(c)
        ws = np.empty(B * 4 * H, dtype)  # fastrnn_cell_workspace_size(LSTM, B, H): the step's gates
        for t in range(T):
            status = step(_LSTM, B, I, H, ffi.from_buffer(xs[t]), ffi.from_buffer(h), ffi.from_buffer(c),
                          ffi.from_buffer(w_ih), ffi.from_buffer(w_hh), ffi.from_buffer(b_ih),
                          ffi.from_buffer(b_hh), ffi.from_buffer(h_new), ffi.from_buffer(c_new),
                          ffi.from_buffer(ws))
            if status != 0:
                raise ValueError("fastrnn cell step failed (see fastrnn.capi.status_message)")
            h[:] = h_new
            c[:] = c_new
            hs[t] = h
        return hs

    def checked(xs: Any, h: Any, c: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any) -> NDArray[Any]:
        """``run`` after checking every array it hands to C (see the module docstring)."""
        dt = np.dtype(dtype)
        if not isinstance(xs, np.ndarray) or xs.ndim != 3:
            raise ValueError(f"xs must be a numpy array of shape (T, B, I), got {getattr(xs, 'shape', type(xs).__name__)}")
        T, B, I = xs.shape
        if min(T, B, I) < 1:
            raise ValueError(f"xs must have T, B, I >= 1, got shape {xs.shape}")
        H = h.shape[-1] if isinstance(h, np.ndarray) and h.ndim == 2 else -1
        for a, name, shape in ((xs, "xs", (T, B, I)), (h, "h", (B, H)), (c, "c", (B, H)), (w_ih, "w_ih", (4 * H, I)),
                               (w_hh, "w_hh", (4 * H, H)), (b_ih, "b_ih", (4 * H,)), (b_hh, "b_hh", (4 * H,))):
            checked_array(a, name, dt, shape)
        if H < 1:
            raise ValueError(f"h must have H >= 1, got shape {h.shape}")
        for a, name in ((h, "h"), (c, "c")):
            if not a.flags.writeable:
                raise ValueError(f"{name} must be writeable (the loop updates it in place)")
        result: NDArray[Any] = run(xs, h, c, w_ih, w_hh, b_ih, b_hh)
        return result

    checked.njit = run  # type: ignore[attr-defined]
    return checked


_LOOPS: dict[np.dtype[Any], LSTMLoop] = {}


def lstm_loop(dtype: DTypeLike = np.float64) -> LSTMLoop:
    """The LSTM loop over ``fastrnn_cell_forward_f32``/``_f64`` for ``dtype``, its arrays checked;
    ``.njit`` is the jitted loop without the checks (for nopython callers)."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    if dt not in _LOOPS:
        step = lib.fastrnn_cell_forward_f32 if dt == np.float32 else lib.fastrnn_cell_forward_f64
        _LOOPS[dt] = _make(step, dt.type)
    return _LOOPS[dt]
