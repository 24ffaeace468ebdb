"""The Numba backend: the fallback where the compiled extension is missing.

Same contract (``CONTRACT.md``) and same results (within float tolerance) as
the NumPy reference, with the fast-path structure of the C++ backend:

* forward: ONE GEMM for the input projection of all T steps (biases folded
  in, NumPy ``@``), W_hh transposed once per call, then a jitted time loop
  doing per step only the recurrent product (``np.dot`` -> SciPy's BLAS, into
  a preallocated buffer) and one fused pointwise pass per batch row (bias,
  activations, state update, output; a few short loops over the row while it
  is in L1, so that each vectorizes) - no allocation inside the loop;
* backward: a jitted time loop doing per step only the pointwise gate
  gradients and ``dh = dG @ W_hh``; ``dW_ih``, ``dW_hh``, ``dx`` and the bias
  gradients are a few large GEMMs / reductions over all T*B rows afterwards.

Everything is computed in the dtype it is given (float32 or float64): the
kernels receive the constant one as a scalar of that dtype so that no float64
literal promotes float32 arithmetic. No ``fastmath``: NaN and Inf propagate.
sigmoid and tanh are our own vectorizable, few-ulp implementations (below):
libm's scalar ``exp``/``tanh`` calls are not vectorized by Numba without SVML
and cost 3-10x more per element.

Threads: the kernels are serial (one step is too small to share with a
barrier per step) and Numba's threading layer is never started (see
``set_num_threads``). The large products before and after the time loops run
in the BLAS of NumPy/SciPy with its own threads (``OPENBLAS_NUM_THREADS`` /
threadpoolctl); inside the loops OpenBLAS is held at one thread
(``_serial_blas``), which measured faster at every shape tried.

The kernels are compiled lazily on their first call (``cache=True`` keeps the
machine code in ``__pycache__`` for the next process), one specialisation per
(kernel, dtype): kind flags, ``keep`` and ``reverse`` are run-time arguments,
absent optional arrays are passed as empty arrays of the same type.
"""

from __future__ import annotations

try:
    import numba as _numba
except ImportError as exc:  # pragma: no cover - exercised by tests/test_fallback.py in a subprocess
    raise ImportError(f"the 'numba' backend needs the numba package ({exc})") from exc

import contextlib
import threading

import numpy as np
from llvmlite import ir as _ir
from numba.core import types as _types
from numba.extending import intrinsic as _intrinsic
from numba.extending import overload as _overload

from .._validate import thread_count
from ._acc import add_into, check_acc

NAME = "numba"
KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_orig")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3, "gru_orig": 3}

_jit = _numba.njit(cache=True, nogil=True, error_model="numpy")


def set_num_threads(n: int) -> None:
    """Accept fastrnn's thread count; nothing in this backend runs Numba threads.

    The kernels here are serial per step (the per-step work is too small to
    share across threads with a barrier each step) and have no parallel
    regions; the big products run in the BLAS of NumPy/SciPy, whose thread
    count this does not change. Numba's threading layer is deliberately not
    started: ``numba.set_num_threads`` launches its OpenMP pool, and an idle
    pool of one OpenMP runtime slowed another's (PyTorch's) in the same
    process 8x (GRU seed workload on 2 threads: 0.64 -> 5.2 s).
    """
    thread_count(n)


# ==========================================================================
# Jitted kernels. Notation: t is the time index, b the batch row, j the hidden
# unit; gx [T, B, G*H] is the input projection with biases folded in.
# `lengths` [B] int64 (T where a sequence is not padded); a row b is valid at
# step t iff t < lengths[b]. `one` is 1 in the dtype of the arrays.
# ==========================================================================


# --------------------------------------------------------------------------
# exp / sigmoid / tanh that the loop vectorizer can vectorize: arithmetic,
# rint and a bit cast only (libm's scalar exp/tanh calls are not vectorized
# by Numba without SVML, and they dominated the step at B > 1). Cody-Waite
# reduction x = k ln2 + r, |r| <= ln2/2, Taylor polynomial of expm1(r)
# (degree 13 in float64, 8 in float32: truncation below half an ulp), and
# 2^k built from its bits (in 32-bit lanes for float32). Max relative error a few ulp; NaN propagates, +-Inf
# give the right limits. tanh(x) = t / (t + 2) with t = expm1(2x), accurate
# near 0 too.
# --------------------------------------------------------------------------


@_intrinsic
def _pow2_f64(typingctx, k):
    """2**k for a float64 holding an integer k in [-1022, 1023], built from its bits (no call, vectorizable)."""
    if k != _types.float64:
        return None

    def codegen(context, builder, signature, args):
        i64 = _ir.IntType(64)
        bits = builder.shl(builder.add(builder.fptosi(args[0], i64), i64(1023)), i64(52))
        return builder.bitcast(bits, _ir.DoubleType())

    return _types.float64(_types.float64), codegen


@_intrinsic
def _pow2_f32(typingctx, k):
    """2**k for a float32 holding an integer k in [-126, 127], in 32-bit lanes (no call, vectorizable)."""
    if k != _types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = _ir.IntType(32)
        bits = builder.shl(builder.add(builder.fptosi(args[0], i32), i32(127)), i32(23))
        return builder.bitcast(bits, _ir.FloatType())

    return _types.float32(_types.float32), codegen


@_jit
def _expm1_parts64(x):
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
    scale = _pow2_f64(k)
    return p, scale


@_jit
def _expm1_parts32(x):
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
    scale = _pow2_f32(k)
    return p, scale


@_jit
def _sigmoid64(x):
    p, scale = _expm1_parts64(-x)
    e = (1.0 + p) * scale
    e = np.inf if -x > 709.78 else e
    return 1.0 / (1.0 + e)


@_jit
def _sigmoid32(x):
    p, scale = _expm1_parts32(-x)
    e = (np.float32(1.0) + p) * scale
    e = np.float32(np.inf) if -x > np.float32(88.72) else e
    return np.float32(1.0) / (np.float32(1.0) + e)


@_jit
def _tanh64(x):
    p, scale = _expm1_parts64(x + x)
    t = (1.0 + p) * scale - 1.0
    t = p if scale == 1.0 else t
    return t / (t + 2.0)


@_jit
def _tanh32(x):
    p, scale = _expm1_parts32(x + x)
    t = (np.float32(1.0) + p) * scale - np.float32(1.0)
    t = p if scale == np.float32(1.0) else t
    return t / (t + np.float32(2.0))


def _sigmoid(x):  # pragma: no cover - typed by the overload below
    raise NotImplementedError


def _tanh(x):  # pragma: no cover - typed by the overload below
    raise NotImplementedError


@_overload(_sigmoid, jit_options=dict(nogil=True, error_model="numpy"))
def _ov_sigmoid(x):
    if x == _types.float32:
        return lambda x: _sigmoid32(x)
    if x == _types.float64:
        return lambda x: _sigmoid64(x)
    return None


@_overload(_tanh, jit_options=dict(nogil=True, error_model="numpy"))
def _ov_tanh(x):
    if x == _types.float32:
        return lambda x: _tanh32(x)
    if x == _types.float64:
        return lambda x: _tanh64(x)
    return None


# --------------------------------------------------------------------------
# Forward kernels: per step one BLAS product into the scratch `gh`, then per
# batch row a few short loops over that row (still in L1): activations in
# place, then the state update. Loops over a row touch few arrays so that
# they vectorize.
# --------------------------------------------------------------------------


@_jit
def _fwd_rnn(gx, h, wt, lengths, reverse, relu, keep, one, out, gh, y_s, hp_s):
    """Elman RNN forward. h [B,H] (in: h0, out: h_n), wt = W_hh.T [H,H]; gh [B,H] scratch.
    keep: y_s[t] = h_new, hp_s[t] = h before step t."""
    T, B, H = gx.shape
    zero = one - one
    for s in range(T):
        t = T - 1 - s if reverse else s
        np.dot(h, wt, gh)
        for b in range(B):
            hb = h[b]
            ob = out[t, b]
            if keep:
                hp_s[t, b, :] = hb
            if t >= lengths[b]:
                ob[:] = zero
                continue
            xb = gx[t, b]
            g = gh[b]
            if relu:
                for j in range(H):
                    a = xb[j] + g[j]
                    g[j] = zero if a < zero else a  # NaN stays NaN
            else:
                for j in range(H):
                    g[j] = _tanh(xb[j] + g[j])
            hb[:] = g
            ob[:] = g
            if keep:
                y_s[t, b, :] = g


@_jit
def _fwd_lstm(gx, h, c, wt, lengths, reverse, keep, one, out, gh, gates_s, tc_s, hp_s, cp_s):
    """LSTM forward, gates (i, f, g, o). wt = W_hh.T [H,4H]; gh [B,4H] scratch.
    keep: gates_s [T,B,4H] post-activation, tc_s = tanh(c_new), hp_s/cp_s the step's input states."""
    T, B, G = gx.shape
    H = G // 4
    zero = one - one
    for s in range(T):
        t = T - 1 - s if reverse else s
        np.dot(h, wt, gh)
        for b in range(B):
            hb = h[b]
            cb = c[b]
            ob = out[t, b]
            if keep:
                hp_s[t, b, :] = hb
                cp_s[t, b, :] = cb
            if t >= lengths[b]:
                ob[:] = zero
                continue
            xb = gx[t, b]
            g = gh[b]
            for j in range(2 * H):  # i, f
                g[j] = _sigmoid(xb[j] + g[j])
            for j in range(2 * H, 3 * H):  # g
                g[j] = _tanh(xb[j] + g[j])
            for j in range(3 * H, G):  # o
                g[j] = _sigmoid(xb[j] + g[j])
            for j in range(H):
                cb[j] = g[H + j] * cb[j] + g[j] * g[2 * H + j]
            tcb = ob  # tanh(c') goes through out, then out is overwritten by h'
            for j in range(H):
                tcb[j] = _tanh(cb[j])
            if keep:
                tc_s[t, b, :] = tcb
                gates_s[t, b, :] = g
            for j in range(H):
                hv = g[3 * H + j] * tcb[j]
                hb[j] = hv
                ob[j] = hv


@_jit
def _fwd_gru(gx, h, wt, bhn, lengths, reverse, keep, one, out, gh, gates_s, hn_s, hp_s):
    """GRU forward, PyTorch form: n = tanh(gx_n + r * (W_hn h + b_hn)).
    gx holds b_ih and b_hr, b_hz; bhn [H] is b_hn. wt = W_hh.T [H,3H].
    keep: gates_s (r, z, n), hn_s = W_hn h + b_hn, hp_s the step's input state."""
    T, B, G = gx.shape
    H = G // 3
    zero = one - one
    for s in range(T):
        t = T - 1 - s if reverse else s
        np.dot(h, wt, gh)
        for b in range(B):
            hb = h[b]
            ob = out[t, b]
            if keep:
                hp_s[t, b, :] = hb
            if t >= lengths[b]:
                ob[:] = zero
                continue
            xb = gx[t, b]
            g = gh[b]
            for j in range(2 * H):  # r, z
                g[j] = _sigmoid(xb[j] + g[j])
            for j in range(H):
                g[2 * H + j] += bhn[j]
            if keep:
                hn_s[t, b, :] = g[2 * H:]
            for j in range(H):  # n
                g[2 * H + j] = _tanh(xb[2 * H + j] + g[j] * g[2 * H + j])
            if keep:
                gates_s[t, b, :] = g
            for j in range(H):
                z = g[H + j]
                hv = (one - z) * g[2 * H + j] + z * hb[j]
                hb[j] = hv
                ob[j] = hv


@_jit
def _fwd_gru_orig(gx, h, wt_rz, wt_n, lengths, reverse, keep, one, out, ghrz, rh, ghn, gates_s, rh_s, hp_s):
    """GRU forward, original form: n = tanh(gx_n + W_hn (r * h)); gx holds all biases.
    wt_rz = W_hh[:2H].T [H,2H], wt_n = W_hh[2H:].T [H,H]; ghrz [B,2H], rh, ghn [B,H] scratch.
    keep: gates_s (r, z, n), rh_s = r * h, hp_s the step's input state."""
    T, B, G = gx.shape
    H = G // 3
    zero = one - one
    for s in range(T):
        t = T - 1 - s if reverse else s
        np.dot(h, wt_rz, ghrz)
        for b in range(B):
            xb = gx[t, b]
            g = ghrz[b]
            hb = h[b]
            rb = rh[b]
            for j in range(2 * H):  # r, z (padded rows too: harmless, and rh_s is read for every row)
                g[j] = _sigmoid(xb[j] + g[j])
            for j in range(H):
                rb[j] = g[j] * hb[j]
        np.dot(rh, wt_n, ghn)
        for b in range(B):
            hb = h[b]
            ob = out[t, b]
            if keep:
                hp_s[t, b, :] = hb
                rh_s[t, b, :] = rh[b]
            if t >= lengths[b]:
                ob[:] = zero
                continue
            xb = gx[t, b]
            g = ghrz[b]
            nb = ghn[b]
            for j in range(H):  # n
                nb[j] = _tanh(xb[2 * H + j] + nb[j])
            if keep:
                gates_s[t, b, : 2 * H] = g
                gates_s[t, b, 2 * H:] = nb
            for j in range(H):
                z = g[H + j]
                hv = (one - z) * nb[j] + z * hb[j]
                hb[j] = hv
                ob[j] = hv


@_jit
def _small_tn(a, b, out):
    """out = a.T @ b for few rows (a [R, N], b [R, K], R small: a cell's batch): rank-R updates,
    k innermost so each row of out is one vectorized pass. NumPy's matmul takes a slow generic
    loop for R = 1 (~75 us at 512 x 128) and np.dot's BLAS call ~15 us."""
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


def _at_b(a, b, out=None):
    """a.T @ b (a [R, N], b [R, K]) into ``out`` or a new array."""
    if out is None:
        out = np.empty((a.shape[1], b.shape[1]), dtype=a.dtype)
    if a.shape[0] <= 16:
        _small_tn(a, b, out)
    else:
        np.matmul(a.T, b, out=out)
    return out


@_jit
def _bwd_rnn(y_s, w, lengths, reverse, relu, one, grad_out, dh, dg, dtmp):
    """Elman RNN backward. dh [B,H] (in: grad h_n, out: grad h0); w = W_hh [H,H];
    dg [T,B,H] receives the pre-activation gradients (zero at padded steps)."""
    T, B, H = y_s.shape
    zero = one - one
    for s in range(T):
        t = s if reverse else T - 1 - s
        for b in range(B):
            if t >= lengths[b]:
                for j in range(H):
                    dg[t, b, j] = zero
                continue
            for j in range(H):
                d = dh[b, j] + grad_out[t, b, j]
                y = y_s[t, b, j]
                if relu:
                    dg[t, b, j] = d if y > zero else zero
                else:
                    dg[t, b, j] = d * (one - y * y)
        np.dot(dg[t], w, dtmp)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = dtmp[b, j]


@_jit
def _bwd_lstm(gates_s, tc_s, cp_s, w, lengths, reverse, one, grad_out, dh, dc, dg, dtmp):
    """LSTM backward. dh, dc [B,H] (in: grads of h_n, c_n; out: of h0, c0); w = W_hh [4H,H];
    dg [T,B,4H] receives the gate pre-activation gradients (zero at padded steps)."""
    T, B, G = gates_s.shape
    H = G // 4
    zero = one - one
    for s in range(T):
        t = s if reverse else T - 1 - s
        for b in range(B):
            if t >= lengths[b]:
                for j in range(G):
                    dg[t, b, j] = zero
                continue
            for j in range(H):
                ig = gates_s[t, b, j]
                fg = gates_s[t, b, H + j]
                gg = gates_s[t, b, 2 * H + j]
                og = gates_s[t, b, 3 * H + j]
                tc = tc_s[t, b, j]
                d = dh[b, j] + grad_out[t, b, j]
                do = d * tc
                dcn = dc[b, j] + d * og * (one - tc * tc)
                dg[t, b, j] = dcn * gg * ig * (one - ig)
                dg[t, b, H + j] = dcn * cp_s[t, b, j] * fg * (one - fg)
                dg[t, b, 2 * H + j] = dcn * ig * (one - gg * gg)
                dg[t, b, 3 * H + j] = do * og * (one - og)
                dc[b, j] = dcn * fg
        np.dot(dg[t], w, dtmp)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = dtmp[b, j]


@_jit
def _bwd_gru(gates_s, hn_s, hp_s, w, lengths, reverse, one, grad_out, dh, dgx, dgh, dz_h, dtmp):
    """GRU (PyTorch form) backward. w = W_hh [3H,H]; dgx [T,B,3H] gradients of the input
    projection, dgh [T,B,3H] of the recurrent projection (n block times r); dz_h, dtmp [B,H] scratch."""
    T, B, G = gates_s.shape
    H = G // 3
    zero = one - one
    for s in range(T):
        t = s if reverse else T - 1 - s
        for b in range(B):
            if t >= lengths[b]:
                for j in range(G):
                    dgx[t, b, j] = zero
                    dgh[t, b, j] = zero
                continue
            for j in range(H):
                r = gates_s[t, b, j]
                z = gates_s[t, b, H + j]
                n = gates_s[t, b, 2 * H + j]
                d = dh[b, j] + grad_out[t, b, j]
                dn = d * (one - z) * (one - n * n)
                dzz = d * (hp_s[t, b, j] - n) * z * (one - z)
                dr = dn * hn_s[t, b, j] * r * (one - r)
                dgx[t, b, j] = dr
                dgx[t, b, H + j] = dzz
                dgx[t, b, 2 * H + j] = dn
                dgh[t, b, j] = dr
                dgh[t, b, H + j] = dzz
                dgh[t, b, 2 * H + j] = dn * r
                dz_h[b, j] = d * z
        np.dot(dgh[t], w, dtmp)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = dz_h[b, j] + dtmp[b, j]


@_jit
def _bwd_gru_orig(gates_s, rh_s, hp_s, w_rz, w_n, lengths, reverse, one, grad_out, dh, dg, drz, dn_b, drh, dsum,
                  dtmp):
    """GRU (original form) backward. w_rz = W_hh[:2H] [2H,H], w_n = W_hh[2H:] [H,H];
    dg [T,B,3H] gradients of the gate pre-activations (input and recurrent alike);
    drz [B,2H], dn_b, drh, dsum, dtmp [B,H] scratch."""
    T, B, G = gates_s.shape
    H = G // 3
    zero = one - one
    for s in range(T):
        t = s if reverse else T - 1 - s
        for b in range(B):
            if t >= lengths[b]:
                for j in range(H):
                    dn_b[b, j] = zero
                continue
            for j in range(H):
                z = gates_s[t, b, H + j]
                n = gates_s[t, b, 2 * H + j]
                d = dh[b, j] + grad_out[t, b, j]
                dn_b[b, j] = d * (one - z) * (one - n * n)
                drz[b, H + j] = d * (hp_s[t, b, j] - n) * z * (one - z)
                dsum[b, j] = d * z
        np.dot(dn_b, w_n, drh)  # d(r*h) = dn @ W_hn
        for b in range(B):
            if t >= lengths[b]:
                for j in range(G):
                    dg[t, b, j] = zero
                for j in range(2 * H):
                    drz[b, j] = zero
                continue
            for j in range(H):
                r = gates_s[t, b, j]
                dr = drh[b, j] * hp_s[t, b, j] * r * (one - r)
                drz[b, j] = dr
                dg[t, b, j] = dr
                dg[t, b, H + j] = drz[b, H + j]
                dg[t, b, 2 * H + j] = dn_b[b, j]
                dsum[b, j] += drh[b, j] * r
        np.dot(drz, w_rz, dtmp)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = dsum[b, j] + dtmp[b, j]


# ==========================================================================
# Boundary checks (so that nothing reachable from Python can crash a kernel)
# ==========================================================================


def _dtype_of(x):
    dt = getattr(x, "dtype", None)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"the numba backend computes in float32 or float64, got x of dtype {dt}")
    return np.dtype(dt)


def _arr(a, name, dtype, shape):
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


def _gates(kind):
    try:
        return GATES[kind]
    except (KeyError, TypeError):
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}") from None


def _lengths(lengths, T, B):
    if lengths is None:
        return np.full(B, T, dtype=np.int64), False
    lengths = np.asarray(lengths)
    if lengths.shape != (B,) or lengths.dtype.kind not in "iu":
        raise ValueError(f"lengths must be integers of shape ({B},), got {lengths.dtype} of shape {lengths.shape}")
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"lengths must be in [1, T={T}], got {lengths.tolist()}")
    return lengths, True


def _check_layer(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    G = _gates(kind)
    dtype = _dtype_of(x)
    if x.ndim != 3 or min(x.shape) < 1:
        raise ValueError(f"x must have shape [T, B, I] with T, B, I >= 1, got {getattr(x, 'shape', None)}")
    T, B, I = x.shape
    if getattr(h0, "ndim", 0) != 2 or h0.shape[1] < 1:
        raise ValueError(f"h0 must have shape [B, H], got {getattr(h0, 'shape', None)}")
    H = h0.shape[1]
    x = _arr(x, "x", dtype, (T, B, I))
    h0 = _arr(h0, "h0", dtype, (B, H))
    if kind == "lstm":
        if c0 is None:
            raise ValueError("c0 is required for kind 'lstm'")
        c0 = _arr(c0, "c0", dtype, (B, H))
    elif c0 is not None:
        raise ValueError(f"c0 must be None for kind {kind!r}")
    w_ih = _arr(w_ih, "w_ih", dtype, (G * H, I))
    w_hh = _arr(w_hh, "w_hh", dtype, (G * H, H))
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be arrays or both be None")
    if b_ih is not None:
        b_ih = _arr(b_ih, "b_ih", dtype, (G * H,))
        b_hh = _arr(b_hh, "b_hh", dtype, (G * H,))
    return x, h0, c0, w_ih, w_hh, b_ih, b_hh, dtype, G


def _transposed(w, steps):
    """``w.T`` as a C-contiguous copy: the layout the step's ``h @ W_hh.T`` streams best (BLAS 'N').
    Copied in blocks of 64 rows, several times faster than ``np.ascontiguousarray(w.T)`` for
    the weight matrices of real layers (which do not fit in L1/L2). For one step (a cell) the
    copy would cost more than it saves: the view itself (Fortran order, BLAS 'T') is used."""
    if steps == 1:
        return w.T
    n, k = w.shape
    out = np.empty((k, n), dtype=w.dtype)
    for j in range(0, n, 64):
        out[:, j:j + 64] = w[j:j + 64].T
    return out


class _SerialBLAS:
    """OpenBLAS single-threaded while a jitted time loop runs (``with _serial_blas(steps):``).

    The loops call BLAS once per step on a small product (``np.dot`` -> SciPy's
    OpenBLAS) and alternate it with jitted pointwise code; OpenBLAS's worker
    threads then cost more than they give (GRU B=64 I=128 H=256 T=50 training
    on 2 cores: 108 ms with 2 BLAS threads, 75 ms with 1). The large GEMMs
    outside the loops keep the user's BLAS threads: the previous counts are
    restored when the last concurrent loop ends. Single steps (cells) are left
    alone. Needs threadpoolctl; without it BLAS is left as it is.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._libs = None
        self._depth = 0
        self._saved = []

    def _find(self):
        try:
            import scipy.linalg.cython_blas  # noqa: F401 - the BLAS numba's np.dot calls; load it first
            from threadpoolctl import ThreadpoolController

            return [lib for lib in ThreadpoolController().lib_controllers if lib.internal_api == "openblas"]
        except Exception:  # pragma: no cover - threadpoolctl missing or unable to read a library
            return []

    @contextlib.contextmanager
    def limit(self, steps):
        if steps <= 1:
            yield
            return
        with self._lock:
            if self._libs is None:
                self._libs = self._find()
            if self._depth == 0:
                self._saved = [lib.get_num_threads() for lib in self._libs]
                for lib, n in zip(self._libs, self._saved):
                    if n != 1:
                        lib.set_num_threads(1)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for lib, n in zip(self._libs, self._saved):
                        if n != 1:
                            lib.set_num_threads(n)


_serial_blas = _SerialBLAS().limit


# ==========================================================================
# The contract
# ==========================================================================


def layer_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, keep):
    """Run one layer over ``x [T, B, I]``; see CONTRACT.md."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, dtype, G = _check_layer(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    T, B, I = x.shape
    H = h0.shape[1]
    lens, padded = _lengths(lengths, T, B)
    reverse, keep = bool(reverse), bool(keep)
    one = dtype.type(1)

    # Input projection of all T steps in one GEMM; fold in every bias the step does not need apart.
    gx = x.reshape(T * B, I) @ w_ih.T
    bhn = None
    if b_ih is not None:
        bias = b_ih.copy()
        if kind == "gru":
            bias[: 2 * H] += b_hh[: 2 * H]
            bhn = b_hh[2 * H:].copy()
        else:
            bias += b_hh
        gx += bias
    gx = gx.reshape(T, B, G * H)
    if kind == "gru" and bhn is None:
        bhn = np.zeros(H, dtype=dtype)

    out = np.empty((T, B, H), dtype=dtype)
    h = h0.copy()
    c = None if c0 is None else c0.copy()
    shape = (T, B, H) if keep else (0, 0, 0)
    gshape = (T, B, G * H) if keep else (0, 0, 0)
    hp_s = np.empty(shape, dtype=dtype)
    saved = {}
    with _serial_blas(T):
        if kind in ("rnn_tanh", "rnn_relu"):
            y_s = np.empty(shape, dtype=dtype)
            _fwd_rnn(gx, h, _transposed(w_hh, T), lens, reverse, kind == "rnn_relu", keep, one, out,
                     np.empty((B, H), dtype=dtype), y_s, hp_s)
            saved = dict(y=y_s)
        elif kind == "lstm":
            gates_s = np.empty(gshape, dtype=dtype)
            tc_s = np.empty(shape, dtype=dtype)
            cp_s = np.empty(shape, dtype=dtype)
            _fwd_lstm(gx, h, c, _transposed(w_hh, T), lens, reverse, keep, one, out,
                      np.empty((B, G * H), dtype=dtype), gates_s, tc_s, hp_s, cp_s)
            saved = dict(gates=gates_s, tc=tc_s, cp=cp_s)
        elif kind == "gru":
            gates_s = np.empty(gshape, dtype=dtype)
            hn_s = np.empty(shape, dtype=dtype)
            _fwd_gru(gx, h, _transposed(w_hh, T), bhn, lens, reverse, keep, one, out,
                     np.empty((B, G * H), dtype=dtype), gates_s, hn_s, hp_s)
            saved = dict(gates=gates_s, hn=hn_s)
        else:  # gru_orig
            gates_s = np.empty(gshape, dtype=dtype)
            rh_s = np.empty(shape, dtype=dtype)
            _fwd_gru_orig(gx, h, _transposed(w_hh[: 2 * H], T), _transposed(w_hh[2 * H:], T), lens,
                          reverse, keep, one, out, np.empty((B, 2 * H), dtype=dtype), np.empty((B, H), dtype=dtype),
                          np.empty((B, H), dtype=dtype), gates_s, rh_s, hp_s)
            saved = dict(gates=gates_s, rh=rh_s)
    ws = None
    if keep:
        ws = dict(kind=kind, x=x, w_ih=w_ih, w_hh=w_hh, bias=b_ih is not None, lengths=lens, padded=padded,
                  reverse=reverse, hp=hp_s, **saved)
    return out, h, c, ws


def layer_backward(ws, grad_out, grad_h_n, grad_c_n, acc=None):
    """Gradients of a ``layer_forward(..., keep=True)``; see CONTRACT.md."""
    if not isinstance(ws, dict) or "hp" not in ws:
        raise ValueError("ws must be the workspace of a numba layer_forward(..., keep=True), not yet consumed "
                         "by a layer_backward")
    kind, x, w_ih, w_hh = ws["kind"], ws["x"], ws["w_ih"], ws["w_hh"]
    check_acc(acc, w_ih, w_hh, (x, grad_out, grad_h_n, grad_c_n))
    T, B, I = x.shape
    GH, H = w_hh.shape
    dtype = x.dtype
    one = dtype.type(1)
    lens, reverse = ws["lengths"], ws["reverse"]
    # None means a zero gradient (CONTRACT.md)
    grad_out = np.zeros((T, B, H), dtype) if grad_out is None else _arr(grad_out, "grad_out", dtype, (T, B, H))
    dh = np.zeros((B, H), dtype) if grad_h_n is None else \
        np.array(_arr(grad_h_n, "grad_h_n", dtype, (B, H)), order="C")  # a fresh copy: the kernel updates it
    dc = None
    if kind == "lstm":
        dc = np.zeros((B, H), dtype) if grad_c_n is None else np.array(_arr(grad_c_n, "grad_c_n", dtype, (B, H)))

    dgx = np.empty((T, B, GH), dtype=dtype)
    dgh = dgx  # gradient of the recurrent projection, where it differs from dgx (gru)
    dtmp = np.empty((B, H), dtype=dtype)
    hp = ws["hp"]
    with _serial_blas(T):
        if kind in ("rnn_tanh", "rnn_relu"):
            _bwd_rnn(ws["y"], w_hh, lens, reverse, kind == "rnn_relu", one, grad_out, dh, dgx, dtmp)
        elif kind == "lstm":
            _bwd_lstm(ws["gates"], ws["tc"], ws["cp"], w_hh, lens, reverse, one, grad_out, dh, dc, dgx, dtmp)
        elif kind == "gru":
            dgh = np.empty((T, B, GH), dtype=dtype)
            _bwd_gru(ws["gates"], ws["hn"], hp, w_hh, lens, reverse, one, grad_out, dh, dgx, dgh,
                     np.empty((B, H), dtype=dtype), dtmp)
        else:  # gru_orig
            _bwd_gru_orig(ws["gates"], ws["rh"], hp, w_hh[: 2 * H], w_hh[2 * H:], lens, reverse, one, grad_out, dh, dgx,
                          np.empty((B, 2 * H), dtype=dtype), np.empty((B, H), dtype=dtype),
                          np.empty((B, H), dtype=dtype), np.empty((B, H), dtype=dtype), dtmp)

    # The big products over all T*B rows.
    dgx_flat = dgx.reshape(T * B, GH)
    dgh_flat = dgh.reshape(T * B, GH)
    hp_flat = hp.reshape(T * B, H)
    if kind == "gru_orig":
        dw_hh = np.empty_like(w_hh)
        _at_b(dgx_flat[:, : 2 * H], hp_flat, dw_hh[: 2 * H])
        _at_b(dgx_flat[:, 2 * H:], ws["rh"].reshape(T * B, H), dw_hh[2 * H:])
    else:
        dw_hh = _at_b(dgh_flat, hp_flat)
    grads = dict(
        x=(dgx_flat @ w_ih).reshape(T, B, I),
        h0=dh,
        c0=dc,
        w_ih=_at_b(dgx_flat, x.reshape(T * B, I)),
        w_hh=dw_hh,
        b_ih=dgx_flat.sum(axis=0) if ws["bias"] else None,
        b_hh=dgh_flat.sum(axis=0) if ws["bias"] else None,
    )
    ws.clear()  # consumed (CONTRACT.md): free the saved activations now, not when the layer drops ws
    return add_into(grads, acc)


def cell_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, keep):
    """One step of a cell on ``x [B, I]``; see CONTRACT.md."""
    if getattr(x, "ndim", 0) != 2:
        raise ValueError(f"x must have shape [B, I], got {getattr(x, 'shape', None)}")
    out, h_new, c_new, ws = layer_forward(kind, x[None], h, c, w_ih, w_hh, b_ih, b_hh, None, False, keep)
    if ws is not None:
        ws["cell"] = True
    return h_new, c_new, ws


def cell_backward(ws, grad_h, grad_c):
    """Gradients of a ``cell_forward(..., keep=True)``; see CONTRACT.md."""
    if not isinstance(ws, dict) or not ws.get("cell"):
        raise ValueError("ws must be the workspace of a numba cell_forward(..., keep=True), not yet consumed "
                         "by a cell_backward")
    B, H = ws["hp"].shape[1:]
    dtype = ws["x"].dtype
    zeros = np.zeros((1, B, H), dtype=dtype)
    # the cell's own argument names in errors (layer_backward would say grad_h_n)
    grad_h = None if grad_h is None else _arr(grad_h, "grad_h", dtype, (B, H))
    grad_c = None if grad_c is None else _arr(grad_c, "grad_c", dtype, (B, H))
    g = layer_backward(ws, zeros, grad_h, grad_c)
    return dict(x=g["x"][0], h=g["h0"], c=g["c0"], w_ih=g["w_ih"], w_hh=g["w_hh"], b_ih=g["b_ih"], b_hh=g["b_hh"])
