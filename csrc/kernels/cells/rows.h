// Pointwise rows of the cells.
#pragma once

#include <algorithm>
#include <cstdint>
#include "simd/math.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// ---------------------------------------------------------------- pointwise rows
// Each function handles units [u0, u1) of one batch row in chunks of W lanes.
// `gx` is the row of pre-activations (x·W_ih^T + folded bias), gate g at
// gx[g*H + j]; in training `gk` (same layout; may be gx itself) receives the
// post-activations, else it is nullptr. The
// recurrent product of gate g for unit j sits at s[jp*sA + g*sB + c] with
// jp = j / NR, c = j % NR (panel layout: sA = G*NR, sB = NR; natural layout:
// sA = NR, sB = H).
template <class T>
struct GateSums {
    const T* s;
    int64_t sA, sB;
    const T* at(int64_t j, int g) const {
        constexpr int NR = 2 * V<T>::W;
        int64_t jp = j / NR;
        return s + jp * sA + g * sB + (j - jp * NR);
    }
};

template <class T>
void rnn_fwd_row(bool relu, int64_t u0, int64_t u1, const T* gx, T* gk, GateSums<T> s, T* hnew, T* out) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v a = vloadn(gx + j, n) + vloadn(s.at(j, 0), n);
        v h = relu ? vrelu(a) : vtanh(a);
        vstoren(hnew + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (gk) vstoren(gk + j, h, n);
    }
}

template <class T>
void lstm_fwd_row(int64_t H, int64_t u0, int64_t u1, const T* gx, T* gk, GateSums<T> s, T* c, T* hnew,
                  T* out, T* ckeep) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v i = vsigmoid(vloadn(gx + j, n) + vloadn(s.at(j, 0), n));
        v f = vsigmoid(vloadn(gx + H + j, n) + vloadn(s.at(j, 1), n));
        v g = vtanh(vloadn(gx + 2 * H + j, n) + vloadn(s.at(j, 2), n));
        v o = vsigmoid(vloadn(gx + 3 * H + j, n) + vloadn(s.at(j, 3), n));
        v cn = f * vloadn(c + j, n) + i * g;
        v h = o * vtanh(cn);
        vstoren(c + j, cn, n);
        vstoren(hnew + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (gk) {
            vstoren(gk + j, i, n);
            vstoren(gk + H + j, f, n);
            vstoren(gk + 2 * H + j, g, n);
            vstoren(gk + 3 * H + j, o, n);
        }
        if (ckeep) vstoren(ckeep + j, cn, n);
    }
}

// PyTorch GRU. bhn: [H] recurrent bias of the n gate or nullptr.
template <class T>
void gru_fwd_row(int64_t H, int64_t u0, int64_t u1, const T* gx, T* gk, GateSums<T> s, const T* bhn,
                 const T* hprev, T* hnew, T* out) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v r = vsigmoid(vloadn(gx + j, n) + vloadn(s.at(j, 0), n));
        v z = vsigmoid(vloadn(gx + H + j, n) + vloadn(s.at(j, 1), n));
        v hn = vloadn(s.at(j, 2), n);
        if (bhn) hn += vloadn(bhn + j, n);
        v nn = vtanh(vloadn(gx + 2 * H + j, n) + r * hn);
        v hp = vloadn(hprev + j, n);
        v h = nn + z * (hp - nn);
        vstoren(hnew + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (gk) {
            vstoren(gk + j, r, n);
            vstoren(gk + H + j, z, n);
            vstoren(gk + 2 * H + j, nn, n);
            vstoren(gk + 3 * H + j, hn, n);
        }
    }
}

// gru_orig, phase 1: r, z (stored in place) and rh = r*h.
template <class T>
void gruo_fwd_row1(int64_t H, int64_t u0, int64_t u1, T* gx, GateSums<T> s, const T* hprev, T* rh) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v r = vsigmoid(vloadn(gx + j, n) + vloadn(s.at(j, 0), n));
        v z = vsigmoid(vloadn(gx + H + j, n) + vloadn(s.at(j, 1), n));
        vstoren(gx + j, r, n);
        vstoren(gx + H + j, z, n);
        vstoren(rh + j, r * vloadn(hprev + j, n), n);
    }
}

// gru_orig, phase 2: n from W_hn (r*h), state update.
template <class T>
void gruo_fwd_row2(int64_t H, int64_t u0, int64_t u1, T* gx, bool keep, GateSums<T> s, const T* hprev,
                   T* hnew, T* out) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v nn = vtanh(vloadn(gx + 2 * H + j, n) + vloadn(s.at(j, 2), n));
        v z = vloadn(gx + H + j, n);
        v hp = vloadn(hprev + j, n);
        v h = nn + z * (hp - nn);
        vstoren(hnew + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (keep) vstoren(gx + 2 * H + j, nn, n);
    }
}

// ---- backward rows. dh = dh_carry + s + go (s, go may be null: zero). `dg` is the
// row of pre-activation gradients (ld G*H); `dgh` the gradients seen by the
// recurrent product (gru: n block is dan*r), may alias dg.
template <class T>
inline typename V<T>::v load_dh(const T* dh_carry, const T* s, const T* go, int64_t j, int n) {
    typename V<T>::v dh = vloadn(dh_carry + j, n);
    if (s) dh += vloadn(s + j, n);
    if (go) dh += vloadn(go + j, n);
    return dh;
}

template <class T>
void rnn_bwd_row(bool relu, int64_t u0, int64_t u1, const T* gk, const T* s, const T* go, T* dh_carry,
                 T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dh_carry, s, go, j, n);
        v h = vloadn(gk + j, n);
        v da = relu ? (h > 0 ? dh : v{}) : dh * (1 - h * h);
        vstoren(dg + j, da, n);
        vstoren(dh_carry + j, v{}, n);
    }
}

template <class T>
void lstm_bwd_row(int64_t H, int64_t u0, int64_t u1, const T* gk, const T* cprev, const T* ct,
                  const T* s, const T* go, T* dh_carry, T* dc, T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dh_carry, s, go, j, n);
        v i = vloadn(gk + j, n), f = vloadn(gk + H + j, n);
        v g = vloadn(gk + 2 * H + j, n), o = vloadn(gk + 3 * H + j, n);
        v tc = vtanh(vloadn(ct + j, n));
        v dcv = vloadn(dc + j, n) + dh * o * (1 - tc * tc);
        v di = dcv * g, dgg = dcv * i, df = dcv * vloadn(cprev + j, n), dov = dh * tc;
        vstoren(dc + j, dcv * f, n);
        vstoren(dg + j, di * i * (1 - i), n);
        vstoren(dg + H + j, df * f * (1 - f), n);
        vstoren(dg + 2 * H + j, dgg * (1 - g * g), n);
        vstoren(dg + 3 * H + j, dov * o * (1 - o), n);
        vstoren(dh_carry + j, v{}, n);
    }
}

// dg: the gates' gradients [3H]; dgh: the recurrent projection's n block, dan * r
// ([H]; its r and z blocks are dg's own).
template <class T>
void gru_bwd_row(int64_t H, int64_t u0, int64_t u1, const T* gk, const T* hprev, const T* s,
                 const T* go, T* dh_carry, T* dg, T* dgh) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dh_carry, s, go, j, n);
        v r = vloadn(gk + j, n), z = vloadn(gk + H + j, n);
        v nn = vloadn(gk + 2 * H + j, n), hn = vloadn(gk + 3 * H + j, n);
        v hp = vloadn(hprev + j, n);
        v dn = dh * (1 - z);
        v dz = dh * (hp - nn);
        v dan = dn * (1 - nn * nn);
        v dar = dan * hn * r * (1 - r);
        v daz = dz * z * (1 - z);
        vstoren(dh_carry + j, dh * z, n);
        vstoren(dg + j, dar, n);
        vstoren(dg + H + j, daz, n);
        vstoren(dg + 2 * H + j, dan, n);
        vstoren(dgh + j, dan * r, n);
    }
}

// gru_orig backward, phase A: z and n gates, dh_carry = dh*z.
template <class T>
void gruo_bwd_rowA(int64_t H, int64_t u0, int64_t u1, const T* gk, const T* hprev, const T* s,
                   const T* go, T* dh_carry, T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dh_carry, s, go, j, n);
        v z = vloadn(gk + H + j, n), nn = vloadn(gk + 2 * H + j, n);
        v hp = vloadn(hprev + j, n);
        v dn = dh * (1 - z);
        v dz = dh * (hp - nn);
        vstoren(dh_carry + j, dh * z, n);
        vstoren(dg + H + j, dz * z * (1 - z), n);
        vstoren(dg + 2 * H + j, dn * (1 - nn * nn), n);
    }
}

// gru_orig backward, phase B: drh = dan · W_hn (in s2); r gate, dh_carry += drh*r.
template <class T>
void gruo_bwd_rowB(int64_t u0, int64_t u1, const T* gk, const T* hprev, const T* s2, T* dh_carry,
                   T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v drh = vloadn(s2 + j, n);
        v r = vloadn(gk + j, n);
        v dr = drh * vloadn(hprev + j, n);
        vstoren(dg + j, dr * r * (1 - r), n);
        vstoren(dh_carry + j, vloadn(dh_carry + j, n) + drh * r, n);
    }
}

// Padded step of a row in backward: dh carried, no gate gradient.
template <class T>
void pad_bwd_row(int64_t u0, int64_t u1, const T* s, T* dh_carry) {
    if (s)
        for (int64_t j = u0; j < u1; ++j) dh_carry[j] += s[j];
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
