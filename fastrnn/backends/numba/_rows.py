"""The pointwise part of one step, one batch row, per kind: what differs between the kinds.

A forward row takes the row's input projection ``xb`` (biases folded in) and
its recurrent product ``g`` (the scratch the step's product wrote; activations
go in place), updates the state ``hb`` (and ``cb``) and writes the output row
``ob``; with ``keep`` it saves what backward reads in ``s1``, ``s2`` (rows of
the kind's saved arrays, see ``_layer.SAVED``). A backward row takes
``d = dh + grad_out`` and writes the gate pre-activation gradients ``dgx``
(and ``dgh``, the recurrent product's, where they differ) and the part
``direct`` of the gradient of the step's input state that does not go
through ``W_hh``. Each row runs a few short loops over its H units while they
are in L1, touching few arrays, so that each loop vectorizes.

:func:`forward_row` and :func:`backward_row` choose the kind's row by its
code (its index in ``contract.KINDS``): a run-time argument, because Numba's
cache does not keep a loop specialised on a function passed to it.
"""

from __future__ import annotations

from typing import Any

from numpy.typing import NDArray

from ..contract import KINDS
from ._math import jit, sigmoid, tanh

RNN_TANH, RNN_RELU, LSTM, GRU, GRU_ORIG, LSTM_CIFG = (
    KINDS.index(k) for k in ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_orig", "lstm_cifg"))

# --------------------------------------------------------------------------
# Forward rows. H is the row's hidden size; gate blocks in PyTorch's order.
# --------------------------------------------------------------------------


@jit
def _rnn_forward(relu: bool, one: Any, xb: NDArray[Any], g: NDArray[Any], hb: NDArray[Any], ob: NDArray[Any],
                 keep: bool, y: NDArray[Any]) -> None:
    """Elman RNN: h' = act(xb + g). keep: y = h'."""
    zero = one - one
    H = hb.shape[0]
    if relu:
        for j in range(H):
            a = xb[j] + g[j]
            g[j] = zero if a < zero else a  # NaN stays NaN
    else:
        for j in range(H):
            g[j] = tanh(xb[j] + g[j])
    hb[:] = g
    ob[:] = g
    if keep:
        y[:] = g


@jit
def _lstm_forward(cifg: bool, one: Any, xb: NDArray[Any], g: NDArray[Any], pp: NDArray[Any], hb: NDArray[Any],
                  cb: NDArray[Any], ob: NDArray[Any], keep: bool, gates: NDArray[Any], tc: NDArray[Any]) -> None:
    """LSTM, gates (i, f, g, o): c' = f*c + i*g, h' = o*tanh(c'); cifg: f = 1 - i. keep: gates
    post-activation, tc = tanh(c'). pp: the peepholes (p_i, p_f, p_o) [3H], or empty: i and f then
    see c, o sees c'."""
    H = hb.shape[0]
    peep = pp.shape[0] > 0
    if peep:
        for j in range(H):
            g[j] += pp[j] * cb[j]
            g[H + j] += pp[H + j] * cb[j]
    if cifg:
        for j in range(H):
            g[j] = sigmoid(xb[j] + g[j])
            g[H + j] = one - g[j]
    else:
        for j in range(2 * H):  # i, f
            g[j] = sigmoid(xb[j] + g[j])
    for j in range(2 * H, 3 * H):  # g
        g[j] = tanh(xb[j] + g[j])
    for j in range(H):
        cb[j] = g[H + j] * cb[j] + g[j] * g[2 * H + j]
    if peep:
        for j in range(H):
            g[3 * H + j] += pp[2 * H + j] * cb[j]
    for j in range(3 * H, 4 * H):  # o
        g[j] = sigmoid(xb[j] + g[j])
    tcb = ob  # tanh(c') goes through out, then out is overwritten by h'
    for j in range(H):
        tcb[j] = tanh(cb[j])
    if keep:
        tc[:] = tcb
        gates[:] = g
    for j in range(H):
        hv = g[3 * H + j] * tcb[j]
        hb[j] = hv
        ob[j] = hv


@jit
def _gru_forward(one: Any, xb: NDArray[Any], g: NDArray[Any], bhn: NDArray[Any], hb: NDArray[Any], ob: NDArray[Any],
                 keep: bool, gates: NDArray[Any], hn: NDArray[Any]) -> None:
    """GRU, PyTorch form: n = tanh(xb_n + r * (W_hn h + b_hn)); xb holds b_ih and b_hr, b_hz, and
    bhn is b_hn. keep: gates (r, z, n), hn = W_hn h + b_hn."""
    H = hb.shape[0]
    for j in range(2 * H):  # r, z
        g[j] = sigmoid(xb[j] + g[j])
    for j in range(H):
        g[2 * H + j] += bhn[j]
    if keep:
        hn[:] = g[2 * H:]
    for j in range(H):  # n
        g[2 * H + j] = tanh(xb[2 * H + j] + g[j] * g[2 * H + j])
    if keep:
        gates[:] = g
    for j in range(H):
        z = g[H + j]
        hv = (one - z) * g[2 * H + j] + z * hb[j]
        hb[j] = hv
        ob[j] = hv


@jit
def gru_orig_reset(xb: NDArray[Any], g: NDArray[Any], hb: NDArray[Any], rhb: NDArray[Any]) -> None:
    """GRU, original form, the part before its second product (every row, padded ones too:
    harmless, and the saved r*h is read for every row): r, z = sigmoid(xb + g) in place,
    rhb = r * h."""
    H = hb.shape[0]
    for j in range(2 * H):  # r, z
        g[j] = sigmoid(xb[j] + g[j])
    for j in range(H):
        rhb[j] = g[j] * hb[j]


@jit
def _gru_orig_forward(one: Any, xb: NDArray[Any], g: NDArray[Any], nb: NDArray[Any], hb: NDArray[Any],
                      ob: NDArray[Any], keep: bool, gates: NDArray[Any]) -> None:
    """GRU, original form: n = tanh(xb_n + W_hn (r * h)); xb holds all biases, g the r, z of
    :func:`gru_orig_reset`, nb = W_hn (r * h). keep: gates (r, z, n)."""
    H = hb.shape[0]
    for j in range(H):  # n
        nb[j] = tanh(xb[2 * H + j] + nb[j])
    if keep:
        gates[: 2 * H] = g
        gates[2 * H:] = nb
    for j in range(H):
        z = g[H + j]
        hv = (one - z) * nb[j] + z * hb[j]
        hb[j] = hv
        ob[j] = hv


@jit
def forward_row(kind: int, one: Any, xb: NDArray[Any], g: NDArray[Any], gn: NDArray[Any], bhn: NDArray[Any],
                pp: NDArray[Any], hb: NDArray[Any], cb: NDArray[Any], ob: NDArray[Any], keep: bool, s1: NDArray[Any],
                s2: NDArray[Any]) -> None:
    """The forward row of ``kind`` (``gn``: gru_orig's W_hn (r*h); ``bhn``: gru's b_hn; ``pp``: the
    lstm's peepholes or empty)."""
    if kind == LSTM or kind == LSTM_CIFG:
        _lstm_forward(kind == LSTM_CIFG, one, xb, g, pp, hb, cb, ob, keep, s1, s2)
    elif kind == GRU:
        _gru_forward(one, xb, g, bhn, hb, ob, keep, s1, s2)
    elif kind == GRU_ORIG:
        _gru_orig_forward(one, xb, g, gn, hb, ob, keep, s1)
    else:
        _rnn_forward(kind == RNN_RELU, one, xb, g, hb, ob, keep, s1)


# --------------------------------------------------------------------------
# Backward rows. d = dh + grad_out is the gradient of the step's new h.
# --------------------------------------------------------------------------


@jit
def _rnn_backward(relu: bool, one: Any, dhb: NDArray[Any], gob: NDArray[Any], y: NDArray[Any],
                  dgx: NDArray[Any]) -> None:
    zero = one - one
    for j in range(dhb.shape[0]):
        d = dhb[j] + gob[j]
        yj = y[j]
        if relu:
            dgx[j] = d if yj > zero else zero
        else:
            dgx[j] = d * (one - yj * yj)


@jit
def _lstm_backward(cifg: bool, one: Any, dhb: NDArray[Any], gob: NDArray[Any], gates: NDArray[Any],
                   tc: NDArray[Any], cp: NDArray[Any], pp: NDArray[Any], dcb: NDArray[Any], dgx: NDArray[Any],
                   dpb: NDArray[Any]) -> None:
    """dcb (in: grad of c', out: of c) is updated in place. With peepholes (pp [3H], else empty)
    the row's share of their gradient is added into dpb [3H]. cifg: f = 1 - i, so f's gradient
    goes to i and f's pre-activation has none."""
    H = dhb.shape[0]
    peep = pp.shape[0] > 0
    for j in range(H):
        ig = gates[j]
        fg = gates[H + j]
        gg = gates[2 * H + j]
        og = gates[3 * H + j]
        tcj = tc[j]
        d = dhb[j] + gob[j]
        da_o = d * tcj * og * (one - og)
        dcn = dcb[j] + d * og * (one - tcj * tcj)
        if peep:  # o saw c'
            dcn += da_o * pp[2 * H + j]
        if cifg:
            da_i = dcn * (gg - cp[j]) * ig * (one - ig)
            da_f = one - one
        else:
            da_i = dcn * gg * ig * (one - ig)
            da_f = dcn * cp[j] * fg * (one - fg)
        dgx[j] = da_i
        dgx[H + j] = da_f
        dgx[2 * H + j] = dcn * ig * (one - gg * gg)
        dgx[3 * H + j] = da_o
        if peep:  # i and f saw c
            dcb[j] = dcn * fg + da_i * pp[j] + da_f * pp[H + j]
            dpb[j] += da_i * cp[j]
            dpb[H + j] += da_f * cp[j]
            dpb[2 * H + j] += da_o * (fg * cp[j] + ig * gg)  # c' (as forward computed it)
        else:
            dcb[j] = dcn * fg


@jit
def _gru_backward(one: Any, dhb: NDArray[Any], gob: NDArray[Any], gates: NDArray[Any], hn: NDArray[Any],
                  hp: NDArray[Any], dgx: NDArray[Any], dgh: NDArray[Any], direct: NDArray[Any]) -> None:
    """dgh: the recurrent product's gradient (the n block times r); direct = d * z."""
    H = dhb.shape[0]
    for j in range(H):
        r = gates[j]
        z = gates[H + j]
        n = gates[2 * H + j]
        d = dhb[j] + gob[j]
        dn = d * (one - z) * (one - n * n)
        dzz = d * (hp[j] - n) * z * (one - z)
        dr = dn * hn[j] * r * (one - r)
        dgx[j] = dr
        dgx[H + j] = dzz
        dgx[2 * H + j] = dn
        dgh[j] = dr
        dgh[H + j] = dzz
        dgh[2 * H + j] = dn * r
        direct[j] = d * z


@jit
def _gru_orig_backward(one: Any, dhb: NDArray[Any], gob: NDArray[Any], gates: NDArray[Any], hp: NDArray[Any],
                       dnb: NDArray[Any], drzb: NDArray[Any], direct: NDArray[Any]) -> None:
    """The part before the product dn @ W_hn: dnb = dn, drzb's z block, direct = d * z."""
    H = dhb.shape[0]
    for j in range(H):
        z = gates[H + j]
        n = gates[2 * H + j]
        d = dhb[j] + gob[j]
        dnb[j] = d * (one - z) * (one - n * n)
        drzb[H + j] = d * (hp[j] - n) * z * (one - z)
        direct[j] = d * z


@jit
def gru_orig_backward_reset(one: Any, drhb: NDArray[Any], gates: NDArray[Any], hp: NDArray[Any], mb: NDArray[Any],
                            dnb: NDArray[Any], drzb: NDArray[Any], dgx: NDArray[Any], direct: NDArray[Any]) -> None:
    """The part after the product drh = dn @ W_hn (= d(r*h), or with recurrent dropout d(r*h*m),
    mb the row's mask, else empty): the r block, the row's dgx, and the r * drh (* m) part of
    direct."""
    H = dnb.shape[0]
    masked = mb.shape[0] > 0
    for j in range(H):
        r = gates[j]
        if masked:
            dr = drhb[j] * (hp[j] * mb[j]) * r * (one - r)
            direct[j] += drhb[j] * r * mb[j]
        else:
            dr = drhb[j] * hp[j] * r * (one - r)
            direct[j] += drhb[j] * r
        drzb[j] = dr
        dgx[j] = dr
        dgx[H + j] = drzb[H + j]
        dgx[2 * H + j] = dnb[j]


@jit
def backward_row(kind: int, one: Any, dhb: NDArray[Any], gob: NDArray[Any], s1: NDArray[Any], s2: NDArray[Any],
                 hp: NDArray[Any], cp: NDArray[Any], pp: NDArray[Any], dcb: NDArray[Any], dgx: NDArray[Any],
                 dgh: NDArray[Any], direct: NDArray[Any], dnb: NDArray[Any], drzb: NDArray[Any],
                 dpb: NDArray[Any]) -> None:
    """The backward row of ``kind`` (s1, s2: the rows its forward saved; hp, cp: the step's
    input states; pp, dpb: the lstm's peepholes and the row's sum of their gradient, or empty)."""
    if kind == LSTM or kind == LSTM_CIFG:
        _lstm_backward(kind == LSTM_CIFG, one, dhb, gob, s1, s2, cp, pp, dcb, dgx, dpb)
    elif kind == GRU:
        _gru_backward(one, dhb, gob, s1, s2, hp, dgx, dgh, direct)
    elif kind == GRU_ORIG:
        _gru_orig_backward(one, dhb, gob, s1, hp, dnb, drzb, direct)
    else:
        _rnn_backward(kind == RNN_RELU, one, dhb, gob, s1, dgx)
