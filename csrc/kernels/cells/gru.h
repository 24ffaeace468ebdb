// PyTorch's GRU cell (gate order r, z, n; ONNX linear_before_reset=1):
//   n = tanh(W_in x + b_in + r*(W_hn h + b_hn)) ; h' = (1-z)*n + z*h
// It keeps [r, z, n, W_hn h + b_hn] per step. b_hn stays inside the reset
// product, so the input projection folds only b_in into the n block; the
// recurrent product's gradient differs from dG in its n block (dan * r).
#pragma once

#include <cstdint>

#include "cells/common.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// b_hn: [H] recurrent bias of the n gate or nullptr.
template <class T>
FASTRNN_ROW
void gru_fwd_row(int64_t H, int64_t u0, int64_t u1, const T* gx, T* kept, GateSums<T> s,
                 const T* b_hn, const T* h_prev, T* h_new, T* out) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v r = vsigmoid(gate_input(gx, s, H, 0, j, n));
        v z = vsigmoid(gate_input(gx, s, H, 1, j, n));
        v hn = vloadn(s.at(j, 2), n);
        if (b_hn) hn += vloadn(b_hn + j, n);
        v nn = vtanh(vloadn(gx + 2 * H + j, n) + r * hn);
        v hp = vloadn(h_prev + j, n);
        v h = nn + z * (hp - nn);
        vstoren(h_new + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (kept) {
            vstoren(kept + j, r, n);
            vstoren(kept + H + j, z, n);
            vstoren(kept + 2 * H + j, nn, n);
            vstoren(kept + 3 * H + j, hn, n);
        }
    }
}

// dg: the gates' gradients [3H]; dg_n: the recurrent product's n block,
// dan * r ([H]; its r and z blocks are dg's own).
template <class T>
FASTRNN_ROW
void gru_bwd_row(int64_t H, int64_t u0, int64_t u1, const T* kept, const T* h_prev, const T* sums,
                 const T* grad_out, T* dh_carry, T* dg, T* dg_n) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dh_carry, sums, grad_out, j, n);
        v r = vloadn(kept + j, n), z = vloadn(kept + H + j, n);
        v nn = vloadn(kept + 2 * H + j, n), hn = vloadn(kept + 3 * H + j, n);
        v hp = vloadn(h_prev + j, n);
        v dn = dh * (1 - z);
        v dz = dh * (hp - nn);
        v dan = dn * (1 - nn * nn);
        v dar = dan * hn * r * (1 - r);
        v daz = dz * z * (1 - z);
        vstoren(dh_carry + j, dh * z, n);
        vstoren(dg + j, dar, n);
        vstoren(dg + H + j, daz, n);
        vstoren(dg + 2 * H + j, dan, n);
        vstoren(dg_n + j, dan * r, n);
    }
}

struct GruCell : CellDefaults {
    static constexpr Kind kind = Kind::gru;
    static constexpr bool n_bias_inside_reset = true;
    static constexpr bool separate_n_grad = true;

    template <class T>
    __attribute__((always_inline)) static void forward(const ForwardRow<T>& r, int64_t H, int64_t u0,
                                                       int64_t u1) {
        gru_fwd_row<T>(H, u0, u1, r.gx, r.kept, r.sums, r.b_hn, r.h_prev, r.h_new, r.out);
    }
    template <class T>
    __attribute__((always_inline)) static void backward(const BackwardRow<T>& r, int64_t H, int64_t u0,
                                                        int64_t u1) {
        gru_bwd_row<T>(H, u0, u1, r.kept, r.h_prev, r.sums, r.grad_out, r.dh_carry, r.dg, r.dg_n);
    }
};

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
