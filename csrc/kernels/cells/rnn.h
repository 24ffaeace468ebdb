// The Elman RNN cells: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or
// relu. They keep [h'] per step: the kept gate is the new state, so no state
// is stored apart (rnn.h: ws_h holds h0 only).
#pragma once

#include <cstdint>
#include <cstring>

#include "cells/common.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

template <class T>
FASTRNN_ROW
void rnn_fwd_row(bool relu, int64_t u0, int64_t u1, const T* gx, T* kept, GateSums<T> s, T* h_new,
                 T* out) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v a = vloadn(gx + j, n) + vloadn(s.at(j, 0), n);
        v h = relu ? vrelu(a) : vtanh(a);
        vstoren(h_new + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (kept) vstoren(kept + j, h, n);
    }
}

template <class T>
FASTRNN_ROW
void rnn_bwd_row(bool relu, int64_t u0, int64_t u1, const T* kept, const T* sums, const T* grad_out,
                 T* dh_carry, T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dh_carry, sums, grad_out, j, n);
        v h = vloadn(kept + j, n);
        v da = relu ? (h > 0 ? dh : v{}) : dh * (1 - h * h);
        vstoren(dg + j, da, n);
        vstoren(dh_carry + j, v{}, n);
    }
}

template <Kind K>
struct RnnCell : CellDefaults {
    static constexpr Kind kind = K;
    static constexpr bool relu = K == Kind::rnn_relu;
    static constexpr bool kept_gates_are_state = kept_gates_are_states(K);

    template <class T>
    __attribute__((always_inline)) static void forward(const ForwardRow<T>& r, int64_t, int64_t u0,
                                                       int64_t u1) {
        rnn_fwd_row<T>(relu, u0, u1, r.gx, r.kept, r.sums, r.h_new, r.out);
    }
    // A padded step keeps the carried state as its kept gate.
    template <class T>
    static void forward_padded(const ForwardRow<T>& r, int64_t, int64_t u0, int64_t u1) {
        if (r.kept) std::memcpy(r.kept + u0, r.h_prev + u0, (u1 - u0) * sizeof(T));
    }
    template <class T>
    __attribute__((always_inline)) static void backward(const BackwardRow<T>& r, int64_t, int64_t u0,
                                                        int64_t u1) {
        rnn_bwd_row<T>(relu, u0, u1, r.kept, r.sums, r.grad_out, r.dh_carry, r.dg);
    }
};

using RnnTanhCell = RnnCell<Kind::rnn_tanh>;
using RnnReluCell = RnnCell<Kind::rnn_relu>;

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
