"""The time loops: one forward and one backward loop for every kind.

Notation: t is the time index, b the batch row; ``gx [T, B, G*H]`` is the
input projection of all steps with the biases folded in. ``lengths [B]``
int64 (T where a sequence is not padded): row b is valid at step t iff
t < lengths[b]. ``one`` is 1 in the dtype of the arrays, so that no float64
literal promotes float32 arithmetic. An array a kind does not use is passed
with a last axis of length 0, so that its rows can be taken (and are empty)
whatever the kind.

Per step the loops do only the recurrent product (``np.dot`` -> SciPy's
BLAS, into a preallocated scratch) and the rows of ``_rows`` - no
allocation. The padding rule lives here, once: a padded row carries its
state unchanged and outputs zero; backward gives it zero gradient and
carries its state's gradient unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._math import jit
from ._rows import GRU_ORIG, backward_row, forward_row, gru_orig_backward_reset, gru_orig_reset


@jit
def forward_loop(kind: int, gx: NDArray[Any], h: NDArray[Any], c: NDArray[Any], wt: NDArray[Any], wt_n: NDArray[Any],
                 bhn: NDArray[Any], pp: NDArray[Any], lengths: NDArray[Any], reverse: bool, keep: bool, one: Any, out: NDArray[Any],
                 gh: NDArray[Any], gn: NDArray[Any], rh: NDArray[Any], s1: NDArray[Any], s2: NDArray[Any],
                 hp_s: NDArray[Any], cp_s: NDArray[Any], hmask: NDArray[Any], hm: NDArray[Any], wrt: NDArray[Any],
                 m: NDArray[Any], hq: NDArray[Any]) -> None:
    """Run ``kind`` over all steps. h [B,H] (in: h0, out: h_n), c likewise (lstm);
    wt = W_hh.T (gru_orig: W_hh[:2H].T, and wt_n = W_hh[2H:].T); gh [B, columns of wt] scratch,
    gn, rh [B,H] gru_orig's scratch; pp the lstm's peepholes [3H] or empty. keep: s1, s2 the kind's saved arrays (``_layer.SAVED``),
    hp_s, cp_s the step's input states. hmask [B,H] (or [B,0]: none): the product sees h * hmask,
    formed in the scratch hm [B,H]. wrt = W_hr.T [H,P] (or [0,0]: none), the lstm's projection: the
    rows then write the units' output m [B,H] and the state (h, out: P units) is m @ W_hr.T, made
    in the scratch hq [B,P]."""
    T, B, _ = gx.shape
    zero = one - one
    masked = hmask.shape[1] > 0
    proj = wrt.shape[0] > 0
    for s in range(T):
        t = T - 1 - s if reverse else s
        if masked:
            np.multiply(h, hmask, hm)
            np.dot(hm, wt, gh)
        else:
            np.dot(h, wt, gh)
        if kind == GRU_ORIG:  # its second product needs r * h (r * hm when masked) of every row first
            for b in range(B):
                gru_orig_reset(gx[t, b], gh[b], hm[b] if masked else h[b], rh[b])
                if keep:
                    s2[t, b, :] = rh[b]
            np.dot(rh, wt_n, gn)
        for b in range(B):
            hb = h[b]
            ob = out[t, b]
            if keep:
                hp_s[t, b, :] = hb
                cp_s[t, b, :] = c[b]
            if t >= lengths[b]:
                ob[:] = zero
                continue
            if proj:  # h' and out come from m after the rows
                forward_row(kind, one, gx[t, b], gh[b], gn[b], bhn, pp, m[b], c[b], m[b], keep, s1[t, b], s2[t, b])
            else:
                forward_row(kind, one, gx[t, b], gh[b], gn[b], bhn, pp, hb, c[b], ob, keep, s1[t, b], s2[t, b])
        if proj:
            np.dot(m, wrt, hq)
            for b in range(B):
                if t < lengths[b]:
                    h[b, :] = hq[b]
                    out[t, b, :] = hq[b]


@jit
def backward_loop(kind: int, s1: NDArray[Any], s2: NDArray[Any], hp_s: NDArray[Any], cp_s: NDArray[Any],
                  pp: NDArray[Any], w: NDArray[Any], w_n: NDArray[Any], lengths: NDArray[Any], reverse: bool, one: Any,
                  grad_out: NDArray[Any], dh: NDArray[Any], dc: NDArray[Any], dgx: NDArray[Any], dgh: NDArray[Any],
                  direct: NDArray[Any], dn: NDArray[Any], drh: NDArray[Any], drz: NDArray[Any],
                  dtmp: NDArray[Any], dp: NDArray[Any], hmask: NDArray[Any], w_hr: NDArray[Any], dq: NDArray[Any],
                  dm: NDArray[Any], zrow: NDArray[Any]) -> None:
    """Backward of :func:`forward_loop`. dh [B,H] (in: grad of h_n, out: of h0), dc likewise (lstm);
    w = W_hh (gru_orig: W_hh[:2H], and w_n = W_hh[2H:]). dgx [T,B,G*H] receives the gradients of
    the gate pre-activations, dgh those of the recurrent product (gru; the same array as dgx for
    the other kinds). direct [B,H]: the part of dh not through W_hh (gru kinds); dn, drh [B,H],
    drz [B,2H] gru_orig's scratch; dtmp [B,H] scratch; pp the lstm's peepholes [3H] (or empty)
    and dp [B, 3H] (or [B, 0]) each row's sum of their gradient (added into); hmask as in
    :func:`forward_loop` (the gradient through W_hh is masked with it). w_hr [P,H] (or [0,0]): the
    lstm's projection; dq [T,B,P] then receives the gradient of each step's state (zero where
    padded), dm [B,H] is the scratch of the units' dm = dq @ W_hr, zrow [H] zeros."""
    T, B, _ = grad_out.shape
    zero = one - one
    proj = w_hr.shape[0] > 0
    for s in range(T):
        t = s if reverse else T - 1 - s
        if proj:
            for b in range(B):
                if t >= lengths[b]:
                    dq[t, b, :] = zero
                else:
                    for j in range(dq.shape[2]):
                        dq[t, b, j] = dh[b, j] + grad_out[t, b, j]
            np.dot(dq[t], w_hr, dm)
        for b in range(B):
            if t >= lengths[b]:
                dgx[t, b, :] = zero
                dgh[t, b, :] = zero
                dn[b, :] = zero
                drz[b, :] = zero
                continue
            if proj:
                backward_row(kind, one, dm[b], zrow, s1[t, b], s2[t, b], hp_s[t, b], cp_s[t, b], pp, dc[b],
                             dgx[t, b], dgh[t, b], direct[b], dn[b], drz[b], dp[b])
            else:
                backward_row(kind, one, dh[b], grad_out[t, b], s1[t, b], s2[t, b], hp_s[t, b], cp_s[t, b], pp,
                             dc[b], dgx[t, b], dgh[t, b], direct[b], dn[b], drz[b], dp[b])
        if kind == GRU_ORIG:
            np.dot(dn, w_n, drh)  # d(r*h) = dn @ W_hn
            for b in range(B):
                if t < lengths[b]:
                    gru_orig_backward_reset(one, drh[b], s1[t, b], hp_s[t, b], hmask[b], dn[b], drz[b], dgx[t, b],
                                            direct[b])
            np.dot(drz, w, dtmp)
        else:
            np.dot(dgh[t], w, dtmp)
        if hmask.shape[1] > 0:
            np.multiply(dtmp, hmask, dtmp)
        for b in range(B):
            if t < lengths[b]:
                if direct.shape[1] == 0:
                    dh[b, :] = dtmp[b]
                else:
                    for j in range(dtmp.shape[1]):
                        dh[b, j] = direct[b, j] + dtmp[b, j]
