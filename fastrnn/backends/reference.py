"""The NumPy reference backend: the specification of fastrnn's math.

Short and readable, one equation a line; every other backend is tested
against it. It computes in the dtype it is given (float32 or float64). The
functions here are the backend contract of ``contract.Backend``.

Notation per step (B rows of a batch, H hidden units, G gates)::

    gx = x @ W_ih.T + b_ih          [B, G*H]   input projection (all steps in one GEMM)
    gh = h @ W_hh.T + b_hh          [B, G*H]   recurrent projection

and the gate blocks follow PyTorch's order: LSTM (i, f, g, o), GRU (r, z, n).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

try:
    from scipy.special import expit as sigmoid
except ImportError:  # the core install has no SciPy: the same formula in NumPy

    def sigmoid(x: Any) -> Any:
        """1 / (1 + exp(-x)) in the dtype of ``x`` (SciPy's expit: equal in float64, within 1 ulp in float32)."""
        with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives 0, as it should
            return 1 / (1 + np.exp(-x))

from ._acc import add_into, check_acc
from ._args import check_forward, check_gradients
from ._rows import check_out, check_rows_arg
from .contract import KINDS, has_cell_state, num_gates

NAME = "numpy"
PRODUCTS_IN_BLAS = True  # NumPy's matmul


def _split(a: NDArray[Any], n: int) -> list[NDArray[Any]]:
    """Split the last axis of ``a`` into ``n`` equal gate blocks."""
    return np.split(a, n, axis=-1)


# --------------------------------------------------------------------------
# One step: forward and backward of the recurrence given the input projection
# --------------------------------------------------------------------------


def _step_forward(kind: str, gx: NDArray[Any], h: NDArray[Any], c: NDArray[Any] | None, w_hh: NDArray[Any],
                  b_hh: NDArray[Any] | None, peep: NDArray[Any] | None = None,
                  hmask: NDArray[Any] | None = None) -> tuple[Any, Any, Any]:
    """One recurrent step. Returns (h_new, c_new, saved-for-backward). Nothing saved is an array
    returned to the caller (who may write into it): the RNN step saves a copy of h_new.
    ``peep``: the LSTM's peephole weights (p_i, p_f, p_o) as one [3H] array, or None.
    ``hmask``: the recurrent input's mask [B, H] (the product sees h * hmask), or None."""
    gh = (h if hmask is None else h * hmask) @ w_hh.T
    if b_hh is not None:
        gh = gh + b_hh
    if kind == "rnn_tanh":
        h_new = np.tanh(gx + gh)
        return h_new, None, (h_new.copy(),)
    if kind == "rnn_relu":
        h_new = np.maximum(gx + gh, 0)
        return h_new, None, (h_new.copy(),)
    if has_cell_state(kind):  # the LSTM kinds
        xi, xf, xg, xo = _split(gx + gh, 4)
        if peep is not None:  # i and f see the old cell state, o the new one
            p_i, p_f, p_o = _split(peep, 3)
            xi = xi + p_i * c
            xf = xf + p_f * c
        i = sigmoid(xi)
        f = 1 - i if kind == "lstm_cifg" else sigmoid(xf)  # cifg: the forget gate coupled to the input gate
        g = np.tanh(xg)
        c_new = f * c + i * g
        if peep is not None:
            xo = xo + p_o * c_new
        o = sigmoid(xo)
        tc = np.tanh(c_new)
        h_new = o * tc
        return h_new, c_new, (i, f, g, o, tc)
    if kind == "gru":
        xr, xz, xn = _split(gx, 3)
        hr, hz, hn = _split(gh, 3)
        r = sigmoid(xr + hr)
        z = sigmoid(xz + hz)
        n = np.tanh(xn + r * hn)
        h_new = (1 - z) * n + z * h
        return h_new, None, (r, z, n, hn)
    if kind == "gru_orig":
        xr, xz, xn = _split(gx, 3)
        hr, hz, _ = _split(gh, 3)
        H = h.shape[-1]
        r = sigmoid(xr + hr)
        z = sigmoid(xz + hz)
        rh = r * (h if hmask is None else h * hmask)  # W_hn sees r times what the product sees
        bn = 0 if b_hh is None else b_hh[2 * H:]
        n = np.tanh(xn + rh @ w_hh[2 * H:].T + bn)
        h_new = (1 - z) * n + z * h
        return h_new, None, (r, z, n, rh)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _step_backward(kind: str, saved: Any, dh: NDArray[Any], dc: NDArray[Any] | None, h: NDArray[Any],
                   c: NDArray[Any] | None, w_hh: NDArray[Any], peep: NDArray[Any] | None = None,
                   hmask: NDArray[Any] | None = None) -> tuple[Any, ...]:
    """Backward of one step (``hmask``: the forward's, whose product saw h * hmask).

    ``dh``/``dc`` are the gradients w.r.t. the step's new h/c; ``h``/``c``
    are the step's input states. Returns (dgx, dW_hh, dgh_bias, dh_prev,
    dc_prev, dpeep) where dgx is the gradient of the gate pre-activations coming
    from the input projection (so dW_ih = dgx.T @ x, db_ih = sum dgx) and dpeep
    the peephole weights' gradient summed over the batch (None without ``peep``).
    """
    hm = h if hmask is None else h * hmask  # what the recurrent product saw

    def through_w(v: NDArray[Any]) -> NDArray[Any]:  # v = d(product's input): its part in d(h)
        return v if hmask is None else v * hmask

    if kind in ("rnn_tanh", "rnn_relu"):
        (h_new,) = saved
        if kind == "rnn_tanh":
            da = dh * (1 - h_new * h_new)
        else:
            da = dh * (h_new > 0)
        return da, da.T @ hm, da, through_w(da @ w_hh), None, None
    if has_cell_state(kind):  # the LSTM kinds
        i, f, g, o, tc = saved
        do = dh * tc
        da_o = do * o * (1 - o)
        dcn = dc + dh * o * (1 - tc * tc)
        if peep is not None:  # o saw c_new
            p_i, p_f, p_o = _split(peep, 3)
            dcn = dcn + da_o * p_o
        di = dcn * g
        df = dcn * c
        dg = dcn * i
        if kind == "lstm_cifg":  # f = 1 - i: f's gradient flows into i, f's pre-activation has none
            da_i = (di - df) * i * (1 - i)
            da_f = np.zeros_like(df)
        else:
            da_i = di * i * (1 - i)
            da_f = df * f * (1 - f)
        dc_prev = dcn * f
        dpeep = None
        if peep is not None:  # i and f saw c
            dc_prev = dc_prev + da_i * p_i + da_f * p_f
            c_new = f * c + i * g
            dpeep = np.concatenate([(da_i * c).sum(axis=0), (da_f * c).sum(axis=0), (da_o * c_new).sum(axis=0)])
        da = np.concatenate([da_i, da_f, dg * (1 - g * g), da_o], axis=-1)
        return da, da.T @ hm, da, through_w(da @ w_hh), dc_prev, dpeep
    if kind == "gru":
        r, z, n, hn = saved
        dn = dh * (1 - z) * (1 - n * n)
        dz = dh * (h - n) * z * (1 - z)
        dr = dn * hn * r * (1 - r)
        dgx = np.concatenate([dr, dz, dn], axis=-1)
        dgh = np.concatenate([dr, dz, dn * r], axis=-1)
        dh_prev = dh * z + through_w(dgh @ w_hh)
        return dgx, dgh.T @ hm, dgh, dh_prev, None, None
    if kind == "gru_orig":
        r, z, n, rh = saved
        H = h.shape[-1]
        dn = dh * (1 - z) * (1 - n * n)
        dz = dh * (h - n) * z * (1 - z)
        drh = dn @ w_hh[2 * H:]
        dr = drh * hm * r * (1 - r)
        drz = np.concatenate([dr, dz], axis=-1)
        dgx = np.concatenate([dr, dz, dn], axis=-1)
        dW_hh = np.concatenate([drz.T @ hm, dn.T @ rh], axis=0)
        dh_prev = dh * z + through_w(drh * r) + through_w(drz @ w_hh[: 2 * H])
        return dgx, dW_hh, dgx, dh_prev, None, None
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


# --------------------------------------------------------------------------
# Whole sequence, one layer, one direction
# --------------------------------------------------------------------------


def layer_forward(kind: str, x: NDArray[Any], h0: NDArray[Any], c0: NDArray[Any] | None, w_ih: NDArray[Any],
                  w_hh: NDArray[Any], b_ih: NDArray[Any] | None, b_hh: NDArray[Any] | None,
                  lengths: NDArray[Any] | None, reverse: bool, keep: bool,
                  out: NDArray[Any] | None = None, peep: NDArray[Any] | None = None,
                  hmask: NDArray[Any] | None = None, w_hr: NDArray[Any] | None = None) -> tuple[Any, ...]:
    """Run one layer over ``x [T, B, I]``; see ``contract.Backend``."""
    check_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, peep=peep, hmask=hmask, w_hr=w_hr)
    T, B, _ = x.shape
    P = h0.shape[1]  # the state's units (H without a projection)
    check_out(out, (T, B, P), x.dtype, dict(x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                                            lengths=lengths, peep=peep, hmask=hmask, w_hr=w_hr))
    gx_all = x.reshape(T * B, -1) @ w_ih.T
    if b_ih is not None:
        gx_all = gx_all + b_ih
    gx_all = gx_all.reshape(T, B, -1)
    if out is None:
        out = np.empty((T, B, P), dtype=x.dtype)  # every step writes its row
    steps = range(T - 1, -1, -1) if reverse else range(T)
    h, c = h0, c0
    saved: list[Any] = [None] * T
    states: list[Any] = [None] * T
    for t in steps:
        h_step, c_step, saved_t = _step_forward(kind, gx_all[t], h, c, w_hh, b_hh, peep, hmask)
        if w_hr is not None:  # the LSTM's projection: h' = W_hr (o * tanh(c'))
            saved_t = (saved_t, h_step)
            h_step = h_step @ w_hr.T
        if keep:
            saved[t] = saved_t
            states[t] = (h, c)
        if lengths is not None:
            valid = (t < lengths)[:, None]
            h_step = np.where(valid, h_step, h)
            if c is not None:
                c_step = np.where(valid, c_step, c)
            out[t] = np.where(valid, h_step, 0)
        else:
            out[t] = h_step
        h, c = h_step, c_step
    ws = None
    if keep:
        ws = dict(kind=kind, x=x, w_ih=w_ih, w_hh=w_hh, bias=b_ih is not None,
                  lengths=lengths, reverse=reverse, saved=saved, states=states, peep=peep, hmask=hmask,
                  w_hr=w_hr)
    return out, h, c, ws


def _zeros_for_none(g: NDArray[Any] | None, shape: tuple[int, ...], dtype: Any) -> NDArray[Any]:
    """A gradient argument: None means zero (CONTRACT.md)."""
    return np.zeros(shape, dtype) if g is None else g


def layer_backward(ws: Any, grad_out: NDArray[Any] | None, grad_h_n: NDArray[Any] | None,
                   grad_c_n: NDArray[Any] | None,
                   acc: tuple[NDArray[Any], NDArray[Any]] | None = None) -> dict[str, Any]:
    """Gradients of a ``layer_forward(..., keep=True)``; see ``contract.Backend``."""
    kind, x, w_ih, w_hh = ws["kind"], ws["x"], ws["w_ih"], ws["w_hh"]
    w_hr = ws["w_hr"]
    check_acc(acc, w_ih, w_hh, (x, grad_out, grad_h_n, grad_c_n, ws["peep"], ws["hmask"], w_hr))
    T, B, P, H = x.shape[0], x.shape[1], w_hh.shape[1], w_ih.shape[0] // num_gates(kind)  # P: h's width
    check_rows_arg(grad_out, "grad_out", (T, B, P), x.dtype)  # read at its strides
    check_gradients(x.dtype, grad_h_n=(grad_h_n, (B, P)), grad_c_n=(grad_c_n if has_cell_state(kind) else None, (B, H)))
    grad_out = _zeros_for_none(grad_out, (T, B, P), x.dtype)
    grad_h_n = _zeros_for_none(grad_h_n, (B, P), x.dtype)
    if has_cell_state(kind):
        grad_c_n = _zeros_for_none(grad_c_n, (B, H), x.dtype)
    lengths = ws["lengths"]
    T = x.shape[0]
    steps = range(T) if ws["reverse"] else range(T - 1, -1, -1)
    dgx_all = np.zeros((T,) + grad_out.shape[1:-1] + (w_ih.shape[0],), dtype=x.dtype)
    dW_hh = np.zeros_like(w_hh)
    db_hh = np.zeros(w_hh.shape[0], dtype=x.dtype)
    peep = ws["peep"]
    dpeep = None if peep is None else np.zeros_like(peep)
    dW_hr = None if w_hr is None else np.zeros_like(w_hr)
    dh, dc = grad_h_n, grad_c_n
    for t in steps:
        h, c = ws["states"][t]
        dh_step = dh + grad_out[t]
        if lengths is not None:
            valid = (t < lengths)[:, None]
            dh_step = np.where(valid, dh_step, 0)
            dc_step = None if dc is None else np.where(valid, dc, 0)
        else:
            dc_step = dc
        saved_t = ws["saved"][t]
        if w_hr is not None:  # through the projection: dW_hr += dh^T m, and m's gradient dh W_hr
            saved_t, m = saved_t
            dW_hr += dh_step.T @ m
            dh_step = dh_step @ w_hr
        dgx, dW, dgh, dh_prev, dc_prev, dp = _step_backward(kind, saved_t, dh_step, dc_step, h, c, w_hh,
                                                            peep, ws["hmask"])
        if lengths is not None:
            dgx = np.where(valid, dgx, 0)
            dh_prev = np.where(valid, dh_prev, dh)
            if dc is not None:
                dc_prev = np.where(valid, dc_prev, dc)
        dgx_all[t] = dgx
        dW_hh += dW
        if dpeep is not None:
            dpeep += dp  # padded rows add 0 (their dh, dc are 0)
        db_hh += dgh.sum(axis=0)
        dh, dc = dh_prev, dc_prev
    dgx_flat = dgx_all.reshape(T * x.shape[1], -1)
    grads = dict(
        x=(dgx_flat @ w_ih).reshape(x.shape),
        h0=dh,
        c0=dc,
        w_ih=dgx_flat.T @ x.reshape(-1, x.shape[2]),
        w_hh=dW_hh,
        b_ih=dgx_flat.sum(axis=0) if ws["bias"] else None,
        b_hh=db_hh if ws["bias"] else None,
        peep=dpeep,
        w_hr=dW_hr,
    )
    return add_into(grads, acc)


# --------------------------------------------------------------------------
# One step (cell)
# --------------------------------------------------------------------------


def cell_forward(kind: str, x: NDArray[Any], h: NDArray[Any], c: NDArray[Any] | None, w_ih: NDArray[Any],
                 w_hh: NDArray[Any], b_ih: NDArray[Any] | None, b_hh: NDArray[Any] | None,
                 keep: bool, peep: NDArray[Any] | None = None,
                 hmask: NDArray[Any] | None = None) -> tuple[Any, ...]:
    """One step of a cell on ``x [B, I]``; see ``contract.Backend``."""
    check_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, cell=True, peep=peep, hmask=hmask)
    gx = x @ w_ih.T
    if b_ih is not None:
        gx = gx + b_ih
    h_new, c_new, saved = _step_forward(kind, gx, h, c, w_hh, b_hh, peep, hmask)
    ws = None
    if keep:
        ws = dict(kind=kind, x=x.copy(), h=h.copy(), c=None if c is None else c.copy(), w_ih=w_ih, w_hh=w_hh,
                  bias=b_ih is not None, saved=saved, peep=peep, hmask=hmask)  # copies of x, h, c (contract.Backend)
    return h_new, c_new, ws


def cell_backward(ws: Any, grad_h: NDArray[Any] | None, grad_c: NDArray[Any] | None) -> dict[str, Any]:
    """Gradients of a ``cell_forward(..., keep=True)``; see ``contract.Backend``."""
    x, w_ih = ws["x"], ws["w_ih"]
    shape = (x.shape[0], ws["w_hh"].shape[1])
    check_gradients(x.dtype, grad_h=(grad_h, shape), grad_c=(grad_c if has_cell_state(ws["kind"]) else None, shape))
    grad_h = _zeros_for_none(grad_h, shape, x.dtype)
    if has_cell_state(ws["kind"]):
        grad_c = _zeros_for_none(grad_c, shape, x.dtype)
    dgx, dW_hh, dgh, dh, dc, dpeep = _step_backward(ws["kind"], ws["saved"], grad_h, grad_c, ws["h"], ws["c"],
                                                    ws["w_hh"], ws["peep"], ws["hmask"])
    return dict(
        x=dgx @ w_ih,
        h=dh,
        c=dc,
        w_ih=dgx.T @ x,
        w_hh=dW_hh,
        b_ih=dgx.sum(axis=0) if ws["bias"] else None,
        b_hh=dgh.sum(axis=0) if ws["bias"] else None,
        peep=dpeep,
    )
