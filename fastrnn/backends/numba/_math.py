"""Scalar exp, sigmoid and tanh that Numba's loop vectorizer can vectorize, and the ``jit`` of the kernels.

Arithmetic, ``rint`` and a bit cast only: libm's scalar ``exp``/``tanh``
calls are not vectorized by Numba without SVML, and they dominate a step at
B > 1. Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, Taylor polynomial of
expm1(r) (degree 13 in float64, 8 in float32: truncation below half an ulp),
and 2^k built from its bits (in 32-bit lanes for float32). Max relative
error a few ulp; NaN propagates, +-Inf give the right limits.
tanh(x) = t / (t + 2) with t = expm1(2x), accurate near 0 too.

:func:`sigmoid` and :func:`tanh` are typed per dtype (float32 or float64)
by overloads, so float32 arithmetic stays in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

#: The kernels' decorator: compiled on first call, machine code cached in ``__pycache__``,
#: the GIL released, NumPy's error model (no exception on division by zero). No ``fastmath``:
#: NaN and Inf propagate and no expression is reassociated.
_F = TypeVar("_F", bound=Callable[..., Any])
_njit = numba.njit(cache=True, nogil=True, error_model="numpy")


def jit(f: _F) -> _F:
    """``f`` compiled by Numba with the options above (typed as ``f`` for the type checker)."""
    return cast(_F, _njit(f))


def _pow2_intrinsic(float_type: Any, ir_float: Any, int_bits: int, bias: int, mantissa_bits: int) -> Any:
    """An intrinsic 2**k for a ``float_type`` holding an integer k in the type's normal exponent
    range, built from its bits in lanes of ``int_bits`` (no call, vectorizable)."""

    def pow2(typingctx: Any, k: Any) -> Any:
        if k != float_type:
            return None

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ity = ir.IntType(int_bits)
            bits = builder.shl(builder.add(builder.fptosi(args[0], ity), ity(bias)), ity(mantissa_bits))
            return builder.bitcast(bits, ir_float)

        return float_type(float_type), codegen

    return intrinsic(pow2)


_pow2_f64 = _pow2_intrinsic(types.float64, ir.DoubleType(), 64, 1023, 52)  # k in [-1022, 1023]
_pow2_f32 = _pow2_intrinsic(types.float32, ir.FloatType(), 32, 127, 23)  # k in [-126, 127]


@jit
def _expm1_parts64(x: Any) -> tuple[Any, Any]:
    """(p, 2^k) with expm1(x) = p if k == 0 else (1 + p) 2^k - 1; x clamped to [-708, 709]."""
    x = 709.0 if x > 709.0 else x
    x = -708.0 if x < -708.0 else x
    k = np.rint(x * 1.4426950408889634)
    r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
    q = 1.0 / 6227020800.0
    q = q * r + 1.0 / 479001600.0
    q = q * r + 1.0 / 39916800.0
    q = q * r + 1.0 / 3628800.0
    q = q * r + 1.0 / 362880.0
    q = q * r + 1.0 / 40320.0
    q = q * r + 1.0 / 5040.0
    q = q * r + 1.0 / 720.0
    q = q * r + 1.0 / 120.0
    q = q * r + 1.0 / 24.0
    q = q * r + 1.0 / 6.0
    q = q * r + 0.5
    p = r + r * (r * q)
    scale: Any = _pow2_f64(k)
    return p, scale


@jit
def _expm1_parts32(x: Any) -> tuple[Any, Any]:
    x = np.float32(88.0) if x > np.float32(88.0) else x
    x = np.float32(-87.0) if x < np.float32(-87.0) else x
    k = np.rint(x * np.float32(1.44269504))
    r = (x - k * np.float32(0.693145751953125)) - k * np.float32(1.428606765330187e-06)
    q = np.float32(1.0 / 362880.0)
    q = q * r + np.float32(1.0 / 40320.0)
    q = q * r + np.float32(1.0 / 5040.0)
    q = q * r + np.float32(1.0 / 720.0)
    q = q * r + np.float32(1.0 / 120.0)
    q = q * r + np.float32(1.0 / 24.0)
    q = q * r + np.float32(1.0 / 6.0)
    q = q * r + np.float32(0.5)
    p = r + r * (r * q)
    scale: Any = _pow2_f32(k)
    return p, scale


@jit
def _sigmoid64(x: Any) -> Any:
    p, scale = _expm1_parts64(-x)
    e = (1.0 + p) * scale
    e = np.inf if -x > 709.78 else e
    return 1.0 / (1.0 + e)


@jit
def _sigmoid32(x: Any) -> Any:
    p, scale = _expm1_parts32(-x)
    e = (np.float32(1.0) + p) * scale
    e = np.float32(np.inf) if -x > np.float32(88.72) else e
    return np.float32(1.0) / (np.float32(1.0) + e)


@jit
def _tanh64(x: Any) -> Any:
    p, scale = _expm1_parts64(x + x)
    t = (1.0 + p) * scale - 1.0
    t = p if scale == 1.0 else t
    return t / (t + 2.0)


@jit
def _tanh32(x: Any) -> Any:
    p, scale = _expm1_parts32(x + x)
    t = (np.float32(1.0) + p) * scale - np.float32(1.0)
    t = p if scale == np.float32(1.0) else t
    return t / (t + np.float32(2.0))


def sigmoid(x: Any) -> Any:  # pragma: no cover - typed by the overload below
    raise NotImplementedError


def tanh(x: Any) -> Any:  # pragma: no cover - typed by the overload below
    raise NotImplementedError


# x unannotated: Numba requires the overload's parameters, annotations included, to be the lambdas'
@overload(sigmoid, jit_options=dict(nogil=True, error_model="numpy"))
def _ov_sigmoid(x) -> Callable[[Any], Any] | None:  # type: ignore[no-untyped-def]
    if x == types.float32:
        return lambda x: _sigmoid32(x)
    if x == types.float64:
        return lambda x: _sigmoid64(x)
    return None


# x unannotated: Numba requires the overload's parameters, annotations included, to be the lambdas'
@overload(tanh, jit_options=dict(nogil=True, error_model="numpy"))
def _ov_tanh(x) -> Callable[[Any], Any] | None:  # type: ignore[no-untyped-def]
    if x == types.float32:
        return lambda x: _tanh32(x)
    if x == types.float64:
        return lambda x: _tanh64(x)
    return None


