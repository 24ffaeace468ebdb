// The GRU of the original paper (ONNX linear_before_reset=0):
//   n = tanh(W_in x + b_in + W_hn (r*h) + b_hn) ; h' = (1-z)*n + z*h
// Its n gate's recurrent product needs r*h first, so each step runs in two
// phases around that product (forward: r, z and r*h, then n and h';
// backward: z and n, then r from dan · W_hn). It keeps [r, z, n, r*h].
#pragma once

#include <cstdint>
#include <cstring>

#include "cells/common.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// Forward, phase 1: r, z (stored over their pre-activations) and rh = r*h.
template <class T>
FASTRNN_ROW
void gru_orig_fwd_reset_row(int64_t H, int64_t u0, int64_t u1, T* gx, GateSums<T> s,
                            const T* h_prev, T* rh) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v r = vsigmoid(gate_input(gx, s, H, 0, j, n));
        v z = vsigmoid(gate_input(gx, s, H, 1, j, n));
        vstoren(gx + j, r, n);
        vstoren(gx + H + j, z, n);
        vstoren(rh + j, r * vloadn(h_prev + j, n), n);
    }
}

// Forward, phase 2: n from W_hn (r*h), the state update.
template <class T>
FASTRNN_ROW
void gru_orig_fwd_update_row(int64_t H, int64_t u0, int64_t u1, T* gx, bool keep, GateSums<T> s,
                             const T* h_prev, T* h_new, T* out) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v nn = vtanh(gate_input(gx, s, H, 2, j, n));
        v z = vloadn(gx + H + j, n);
        v hp = vloadn(h_prev + j, n);
        v h = nn + z * (hp - nn);
        vstoren(h_new + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (keep) vstoren(gx + 2 * H + j, nn, n);
    }
}

// Backward, phase 1: the z and n gates, dh_carry = dh*z.
template <class T>
FASTRNN_ROW
void gru_orig_bwd_update_row(int64_t H, int64_t u0, int64_t u1, const T* kept, const T* h_prev,
                             const T* sums, const T* grad_out, T* dh_carry, T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dh_carry, sums, grad_out, j, n);
        v z = vloadn(kept + H + j, n), nn = vloadn(kept + 2 * H + j, n);
        v hp = vloadn(h_prev + j, n);
        v dn = dh * (1 - z);
        v dz = dh * (hp - nn);
        vstoren(dh_carry + j, dh * z, n);
        vstoren(dg + H + j, dz * z * (1 - z), n);
        vstoren(dg + 2 * H + j, dn * (1 - nn * nn), n);
    }
}

// Backward, phase 2: drh = dan · W_hn; the r gate, dh_carry += drh*r. With
// Masked (recurrent dropout), W_hn saw r*(h*mask): dr = drh*(h*mask) and
// dh_carry += drh*r*mask.
template <class T, bool Masked>
FASTRNN_ROW
void gru_orig_bwd_reset_row(int64_t u0, int64_t u1, const T* kept, const T* h_prev, const T* mask,
                            const T* drh, T* dh_carry, T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v d = vloadn(drh + j, n);
        v r = vloadn(kept + j, n);
        v hp = vloadn(h_prev + j, n);
        if constexpr (Masked) {
            v m = vloadn(mask + j, n);
            v dr = d * (hp * m);
            vstoren(dg + j, dr * r * (1 - r), n);
            vstoren(dh_carry + j, vloadn(dh_carry + j, n) + d * r * m, n);
        } else {
            v dr = d * hp;
            vstoren(dg + j, dr * r * (1 - r), n);
            vstoren(dh_carry + j, vloadn(dh_carry + j, n) + d * r, n);
        }
    }
}

struct GruOrigCell : CellDefaults {
    static constexpr Kind kind = Kind::gru_orig;
    static constexpr bool n_product_after_reset = true;

    // Phase 1; r*h (r*h_masked with recurrent dropout) also goes to the kept
    // block 3 (backward reads it there).
    template <class T>
    __attribute__((always_inline)) static void forward(const ForwardRow<T>& r, int64_t H, int64_t u0,
                                                       int64_t u1) {
        gru_orig_fwd_reset_row<T>(H, u0, u1, r.gx, r.sums, r.h_masked ? r.h_masked : r.h_prev, r.rh);
        if (r.kept) std::memcpy(r.kept + 3 * H + u0, r.rh + u0, (u1 - u0) * sizeof(T));
    }
    template <class T>
    __attribute__((always_inline)) static void forward_after_reset(const ForwardRow<T>& r, int64_t H,
                                                                   int64_t u0, int64_t u1) {
        gru_orig_fwd_update_row<T>(H, u0, u1, r.gx, r.kept != nullptr, r.sums, r.h_prev, r.h_new, r.out);
    }
    // A padded step has no r*h: zeros, so the n block of dW_hh gets nothing from it.
    template <class T>
    static void forward_padded(const ForwardRow<T>& r, int64_t H, int64_t u0, int64_t u1) {
        if (r.kept) std::memset(r.kept + 3 * H + u0, 0, (u1 - u0) * sizeof(T));
    }
    template <class T>
    __attribute__((always_inline)) static void backward(const BackwardRow<T>& r, int64_t H, int64_t u0,
                                                        int64_t u1) {
        gru_orig_bwd_update_row<T>(H, u0, u1, r.kept, r.h_prev, r.sums, r.grad_out, r.dh_carry, r.dg);
    }
    template <class T>
    __attribute__((always_inline)) static void backward_after_reset(const BackwardRow<T>& r, int64_t,
                                                                    int64_t u0, int64_t u1) {
        if (r.hmask)
            gru_orig_bwd_reset_row<T, true>(u0, u1, r.kept, r.h_prev, r.hmask, r.drh, r.dh_carry, r.dg);
        else
            gru_orig_bwd_reset_row<T, false>(u0, u1, r.kept, r.h_prev, nullptr, r.drh, r.dh_carry, r.dg);
    }
};

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
