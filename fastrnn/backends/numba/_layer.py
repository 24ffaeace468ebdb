"""The contract's entry points: arrays in, the time loops run, gradients out.

Forward: ONE GEMM for the input projection of all T steps (biases folded in,
NumPy ``@``), W_hh transposed once per call, then :func:`_loops.forward_loop`.
Backward: :func:`_loops.backward_loop` leaves the gate gradients of every
step; ``dW_ih``, ``dW_hh``, ``dx`` and the bias gradients are a few large
GEMMs / reductions over all T*B rows afterwards.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from .._acc import add_into, check_acc
from .._rows import check_out, check_rows_arg
from ..contract import KINDS, has_cell_state
from .._args import check_forward, check_gradients
from ._checks import check_layer, lengths_array, writeable
from ._loops import backward_loop, forward_loop
from ._products import at_b, transposed
from ._threads import serial_blas

#: kind -> widths, in units of H, of the two arrays its forward saves for backward (s1, s2):
#: rnn: h'; lstm: the gates post-activation, tanh(c'); gru: the gates, W_hn h + b_hn;
#: gru_orig: the gates, r * h. Every kind also saves its step's input states (hp, and cp for the LSTM kinds).
SAVED = {"rnn_tanh": (1, 0), "rnn_relu": (1, 0), "lstm": (4, 1), "gru": (3, 1), "gru_orig": (3, 1)}
SAVED["lstm_cifg"] = SAVED["lstm"]


def _input_projection(kind: str, x: NDArray[Any], w_ih: NDArray[Any], b_ih: NDArray[Any] | None,
                      b_hh: NDArray[Any] | None, H: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """gx = x @ W_ih.T with every bias the step does not need apart folded in, and b_hn (gru: the
    bias inside r * (W_hn h + b_hn); an empty array for the other kinds)."""
    T, B, I = x.shape
    gx = x.reshape(T * B, I) @ w_ih.T
    bhn = None
    if b_ih is not None:
        bias = b_ih.copy()
        b_hh = cast(NDArray[Any], b_hh)  # given with b_ih (check_layer)
        if kind == "gru":
            bias[: 2 * H] += b_hh[: 2 * H]
            bhn = b_hh[2 * H:].copy()
        else:
            bias += b_hh
        gx += bias
    if bhn is None:
        bhn = np.zeros(H if kind == "gru" else 0, dtype=x.dtype)
    return gx.reshape(T, B, -1), bhn


def layer_forward(kind: str, x: NDArray[Any], h0: NDArray[Any], c0: NDArray[Any] | None, w_ih: NDArray[Any],
                  w_hh: NDArray[Any], b_ih: NDArray[Any] | None, b_hh: NDArray[Any] | None,
                  lengths: NDArray[Any] | None, reverse: bool, keep: bool,
                  out: NDArray[Any] | None = None, peep: NDArray[Any] | None = None,
                  hmask: NDArray[Any] | None = None, w_hr: NDArray[Any] | None = None) -> tuple[Any, ...]:
    """Run one layer over ``x [T, B, I]``; see ``contract.Backend``."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep, hmask, w_hr, dtype, G = check_layer(
        kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, peep, hmask, w_hr)
    T, B, _ = x.shape
    P = h0.shape[1]  # the state's units
    H = P if w_hr is None else w_hr.shape[1]
    check_out(out, (T, B, P), dtype, dict(x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                                          lengths=lengths, peep=peep, hmask=hmask, w_hr=w_hr))
    pp = np.empty(0, dtype=dtype) if peep is None else peep
    mask = np.empty((B, 0), dtype=dtype) if hmask is None else hmask
    lens, padded = lengths_array(lengths, T, B)
    reverse, keep = bool(reverse), bool(keep)
    gx, bhn = _input_projection(kind, x, w_ih, b_ih, b_hh, H)

    def kept(width: int) -> NDArray[Any]:  # an array the loop fills only with keep (and always indexes by t, b)
        return np.empty((T, B, width if keep else 0), dtype=dtype)

    if out is None:
        out = np.empty((T, B, P), dtype=dtype)
    h = h0.copy()
    c = np.empty((B, 0), dtype=dtype) if c0 is None else c0.copy()
    s1, s2 = (kept(n * H) for n in SAVED[kind])
    hp, cp = kept(P), kept(H if c0 is not None else 0)
    if w_hr is None:
        wrt, m, hq = np.empty((0, 0), dtype=dtype), np.empty((B, 0), dtype=dtype), np.empty((B, 0), dtype=dtype)
    else:
        wrt, m, hq = transposed(w_hr, T), np.empty((B, H), dtype=dtype), np.empty((B, P), dtype=dtype)
    if kind == "gru_orig":
        wt, wt_n = transposed(w_hh[: 2 * H], T), transposed(w_hh[2 * H:], T)
        gn, rh = np.empty((B, H), dtype=dtype), np.empty((B, H), dtype=dtype)
    else:
        wt = wt_n = transposed(w_hh, T)
        gn = rh = np.empty((B, 0), dtype=dtype)
    gh = np.empty((B, wt.shape[1]), dtype=dtype)
    with serial_blas(T):
        forward_loop(KINDS.index(kind), gx, h, c, wt, wt_n, bhn, pp, lens, reverse, keep, dtype.type(1), out, gh, gn,
                     rh, s1, s2, hp, cp, mask, np.empty_like(mask), wrt, m, hq)
    ws = None
    if keep:
        ws = dict(kind=kind, x=x, w_ih=w_ih, w_hh=w_hh, bias=b_ih is not None, lengths=lens, padded=padded,
                  reverse=reverse, hp=hp, cp=cp, s1=s1, s2=s2, pp=pp, hmask=mask,
                  w_hr=np.empty((0, 0), dtype=dtype) if w_hr is None else w_hr)
    return out, h, None if c0 is None else c, ws


def _projected(ws: dict[str, Any], H: int) -> NDArray[Any]:
    """What the lstm's projection saw at each step, m = o * tanh(c') (s1's o block times s2), and
    zero at padded steps (whose saved rows the loop leaves unwritten)."""
    s1, s2 = ws["s1"], ws["s2"]
    valid = np.arange(s1.shape[0])[:, None] < ws["lengths"][None, :]
    m = np.zeros(s2.shape, dtype=s2.dtype)
    np.multiply(s1[:, :, 3 * H:], s2, out=m, where=valid[:, :, None])
    return m


def layer_backward(ws: Any, grad_out: NDArray[Any] | None, grad_h_n: NDArray[Any] | None,
                   grad_c_n: NDArray[Any] | None,
                   acc: tuple[NDArray[Any], NDArray[Any]] | None = None) -> dict[str, Any]:
    """Gradients of a ``layer_forward(..., keep=True)``; see ``contract.Backend``."""
    if not isinstance(ws, dict) or "hp" not in ws:
        raise ValueError("ws must be the workspace of a numba layer_forward(..., keep=True), not yet consumed "
                         "by a layer_backward")
    kind, x, w_ih, w_hh = ws["kind"], ws["x"], ws["w_ih"], ws["w_hh"]
    w_hr = ws["w_hr"]
    proj = w_hr.shape[0] > 0
    check_acc(acc, w_ih, w_hh, (x, grad_out, grad_h_n, grad_c_n, ws["pp"], ws["hmask"], w_hr))
    T, B, I = x.shape
    GH, P = w_hh.shape  # P: the state's units
    H = w_hr.shape[1] if proj else P
    dtype = x.dtype
    # None means a zero gradient (contract.Backend.layer_backward)
    check_rows_arg(grad_out, "grad_out", (T, B, P), dtype)  # read in place, at its strides
    check_gradients(dtype, grad_h_n=(grad_h_n, (B, P)), grad_c_n=(grad_c_n if has_cell_state(kind) else None, (B, H)))
    grad_out = np.zeros((T, B, P), dtype) if grad_out is None else writeable(grad_out)
    dh = np.zeros((B, P), dtype) if grad_h_n is None else grad_h_n.copy()  # a fresh copy: the loop updates it
    dc = np.empty((B, 0), dtype)
    if has_cell_state(kind):
        dc = np.zeros((B, H), dtype) if grad_c_n is None else grad_c_n.copy()

    def scratch(width: int) -> NDArray[Any]:
        return np.empty((B, width), dtype=dtype)

    dgx = np.empty((T, B, GH), dtype=dtype)
    dgh = np.empty((T, B, GH), dtype=dtype) if kind == "gru" else dgx  # where the recurrent product's differs
    direct = scratch(H if kind in ("gru", "gru_orig") else 0)
    if kind == "gru_orig":
        w, w_n = w_hh[: 2 * H], w_hh[2 * H:]
        dn, drh, drz = scratch(H), scratch(H), scratch(2 * H)
    else:
        w = w_n = w_hh
        dn = drh = drz = scratch(0)
    hp = ws["hp"]
    dp = np.zeros((B, ws["pp"].shape[0]), dtype=dtype)  # each row's sum of the peepholes' gradient
    dq = np.empty((T, B, P if proj else 0), dtype=dtype)  # the projection's: each step's state gradient
    with serial_blas(T):
        backward_loop(KINDS.index(kind), ws["s1"], ws["s2"], hp, ws["cp"], ws["pp"], w, w_n, ws["lengths"],
                      ws["reverse"], dtype.type(1), grad_out, dh, dc, dgx, dgh, direct, dn, drh, drz, scratch(P), dp,
                      ws["hmask"], w_hr, dq, scratch(H if proj else 0), np.zeros(H if proj else 0, dtype=dtype))

    # The big products over all T*B rows.
    dgx_flat = dgx.reshape(T * B, GH)
    dgh_flat = dgh.reshape(T * B, GH)
    hp_flat = (hp if ws["hmask"].shape[1] == 0 else hp * ws["hmask"]).reshape(T * B, P)  # what W_hh saw
    if kind == "gru_orig":
        dw_hh = np.empty_like(w_hh)
        at_b(dgx_flat[:, : 2 * H], hp_flat, dw_hh[: 2 * H])
        at_b(dgx_flat[:, 2 * H:], ws["s2"].reshape(T * B, H), dw_hh[2 * H:])  # s2: r * h (r * h * hmask)
    else:
        dw_hh = at_b(dgh_flat, hp_flat)
    grads = dict(
        x=(dgx_flat @ w_ih).reshape(T, B, I),
        h0=dh,
        c0=dc if has_cell_state(kind) else None,
        w_ih=at_b(dgx_flat, x.reshape(T * B, I)),
        w_hh=dw_hh,
        b_ih=dgx_flat.sum(axis=0) if ws["bias"] else None,
        b_hh=dgh_flat.sum(axis=0) if ws["bias"] else None,
        peep=dp.sum(axis=0) if ws["pp"].shape[0] else None,
        w_hr=at_b(dq.reshape(T * B, P), _projected(ws, H).reshape(T * B, H)) if proj else None,
    )
    ws.clear()  # consumed (contract.Backend): free the saved activations now, not when the layer drops ws
    return add_into(grads, acc)


def cell_forward(kind: str, x: NDArray[Any], h: NDArray[Any], c: NDArray[Any] | None, w_ih: NDArray[Any],
                 w_hh: NDArray[Any], b_ih: NDArray[Any] | None, b_hh: NDArray[Any] | None,
                 keep: bool, peep: NDArray[Any] | None = None,
                 hmask: NDArray[Any] | None = None) -> tuple[Any, ...]:
    """One step of a cell on ``x [B, I]``; see ``contract.Backend``."""
    # errors name the cell's h, c
    check_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, cell=True, peep=peep, hmask=hmask)
    out, h_new, c_new, ws = layer_forward(kind, x[None], h, c, w_ih, w_hh, b_ih, b_hh, None, False, keep, peep=peep,
                                          hmask=hmask)
    if ws is not None:
        ws["cell"] = True
        ws["x"] = ws["x"].copy()  # a copy of x (contract.Backend.cell_forward); h, c are copied by the loop
    return h_new, c_new, ws


def cell_backward(ws: Any, grad_h: NDArray[Any] | None, grad_c: NDArray[Any] | None) -> dict[str, Any]:
    """Gradients of a ``cell_forward(..., keep=True)``; see ``contract.Backend``."""
    if not isinstance(ws, dict) or not ws.get("cell"):
        raise ValueError("ws must be the workspace of a numba cell_forward(..., keep=True), not yet consumed "
                         "by a cell_backward")
    B, H = ws["hp"].shape[1:]
    dtype = ws["x"].dtype
    zeros = np.zeros((1, B, H), dtype=dtype)
    # the cell's own argument names in errors (layer_backward would say grad_h_n)
    check_gradients(dtype, grad_h=(grad_h, (B, H)), grad_c=(grad_c if has_cell_state(ws["kind"]) else None, (B, H)))
    g = layer_backward(ws, zeros, grad_h, grad_c)
    return dict(x=g["x"][0], h=g["h0"], c=g["c0"], w_ih=g["w_ih"], w_hh=g["w_hh"], b_ih=g["b_ih"], b_hh=g["b_hh"],
                peep=g["peep"])
