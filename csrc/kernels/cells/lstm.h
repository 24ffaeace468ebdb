// The LSTM cell (PyTorch's gate order i, f, g, o):
//   c' = f*c + i*g ; h' = o*tanh(c')
// the LSTM with peepholes (fastrnn/rnn.h): i and f see c, o sees c'
// (the same rows with Peep), and the LSTM with coupled input and forget gates
// (Kind::lstm_cifg, the rows with Cifg): f = 1 - i. All keep the
// post-activation gates [i, f, g, o] per step, and c' in ws_c.
#pragma once

#include <cstdint>
#include <cstring>

#include "cells/common.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// The forward row; with Peep, i and f also see c and o sees c' through the
// peephole weights; with Cifg, f = 1 - i and f's block of the sums is not
// read (the terms are compiled out of the plain LSTM's row).
template <class T, bool Peep, bool Cifg>
FASTRNN_ROW
void lstm_fwd_row(int64_t H, int64_t u0, int64_t u1, const T* gx, T* kept, GateSums<T> s, const T* peep, T* c,
                  T* h_new, T* out, T* c_kept) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v cp = vloadn(c + j, n);
        v ai = gate_input(gx, s, H, 0, j, n);
        if constexpr (Peep) ai += vloadn(peep + j, n) * cp;
        v i = vsigmoid(ai);
        v f;
        if constexpr (Cifg) {
            f = 1 - i;
        } else {
            v af = gate_input(gx, s, H, 1, j, n);
            if constexpr (Peep) af += vloadn(peep + H + j, n) * cp;
            f = vsigmoid(af);
        }
        v g = vtanh(gate_input(gx, s, H, 2, j, n));
        v cn = f * cp + i * g;
        v ao = gate_input(gx, s, H, 3, j, n);
        if constexpr (Peep) ao += vloadn(peep + 2 * H + j, n) * cn;
        v o = vsigmoid(ao);
        v h = o * vtanh(cn);
        vstoren(c + j, cn, n);
        vstoren(h_new + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (kept) {
            vstoren(kept + j, i, n);
            vstoren(kept + H + j, f, n);
            vstoren(kept + 2 * H + j, g, n);
            vstoren(kept + 3 * H + j, o, n);
        }
        if (c_kept) vstoren(c_kept + j, cn, n);
    }
}

// dc + a*b, the cell state's gradient: rounded once (an FMA) in the AVX-512
// copy, twice (the product, then the sum) in the AVX2 and generic copies -
// the roundings tools/golden.py's files hold. Written out because, left to
// -ffp-contract=fast, the AVX2 rounding depends on where the compiler puts
// the branch of dc's masked load, which moves with the code around the row.
template <class T>
inline typename V<T>::v add_cell_grad(typename V<T>::v dc, typename V<T>::v a, typename V<T>::v b) {
#if defined(__AVX512F__)
    return fma_once<T>(a, b, dc);
#else
    return dc + product_rounded(a, b);
#endif
}

// The backward row; with Peep, dc' gains o's peephole term (o saw c'), and
// the gradient into c those of i and f. The peepholes' own gradient is summed
// over rows and steps by the drivers from dG and the kept cell states. With
// Cifg (f = 1 - i), dc'/di = g - c and f's pre-activation gradient is zero.
template <class T, bool Peep, bool Cifg>
FASTRNN_ROW
void lstm_bwd_row(int64_t H, int64_t u0, int64_t u1, const T* kept, const T* c_prev, const T* c_new,
                  const T* peep, const T* sums, const T* grad_out, T* dh_carry, T* dc, T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dh_carry, sums, grad_out, j, n);
        v i = vloadn(kept + j, n), f = vloadn(kept + H + j, n);
        v g = vloadn(kept + 2 * H + j, n), o = vloadn(kept + 3 * H + j, n);
        v tc = vtanh(vloadn(c_new + j, n));
        v dcv = add_cell_grad<T>(vloadn(dc + j, n), dh * o, 1 - tc * tc);
        v dao = dh * tc * o * (1 - o);
        if constexpr (Peep) dcv += dao * vloadn(peep + 2 * H + j, n);
        // cifg: f = 1 - i, so f's gradient flows into i and f's pre-activation has none
        const v dai = Cifg ? dcv * (g - vloadn(c_prev + j, n)) * i * (1 - i) : dcv * g * i * (1 - i);
        const v daf = Cifg ? v{} : dcv * vloadn(c_prev + j, n) * f * (1 - f);
        v dc_prev;  // i and f saw c through the peepholes (cifg: f's pre-activation gradient is 0)
        if constexpr (!Peep)
            dc_prev = dcv * f;
        else if constexpr (Cifg)
            dc_prev = dcv * f + dai * vloadn(peep + j, n);
        else
            dc_prev = dcv * f + dai * vloadn(peep + j, n) + daf * vloadn(peep + H + j, n);
        vstoren(dc + j, dc_prev, n);
        vstoren(dg + j, dai, n);
        vstoren(dg + H + j, daf, n);
        vstoren(dg + 2 * H + j, dcv * i * (1 - g * g), n);
        vstoren(dg + 3 * H + j, dao, n);
        vstoren(dh_carry + j, v{}, n);
    }
}

// One row's share of the peepholes' gradient over units [j0, j1): dp_i +=
// dG_i * c, dp_f += dG_f * c, dp_o += dG_o * c' (c the cell state entering
// the step, c' the one it made; dg the row's gate gradients, ld 4*H). The
// drivers (layer/backward.h, cell/cell.h) sum it over rows and steps.
template <class T>
inline void add_peephole_row_grads(int64_t H, int64_t j0, int64_t j1, const T* dg, const T* c_prev,
                                   const T* c_new, T* dp) {
    for (int64_t j = j0; j < j1; ++j) {
        dp[j] += dg[j] * c_prev[j];
        dp[H + j] += dg[H + j] * c_prev[j];
        dp[2 * H + j] += dg[3 * H + j] * c_new[j];
    }
}

// m = o*tanh(c') over H units, the forward row's output (before a
// projection), from the kept o and c': the projection's gradient reads it.
template <class T>
FASTRNN_ROW
void lstm_output_row(int64_t H, const T* o, const T* c_new, T* m) {
    constexpr int W = V<T>::W;
    for (int64_t j = 0; j < H; j += W) {
        int n = (int)std::min<int64_t>(W, H - j);
        vstoren(m + j, vloadn(o + j, n) * vtanh(vloadn(c_new + j, n)), n);
    }
}

// The LSTM kinds' policies: Peep adds the peephole terms, Cifg couples f to i.
template <Kind K, bool Peep>
struct LstmCellOf : CellDefaults {
    static constexpr Kind kind = K;
    static constexpr bool has_cell_state = true;
    static constexpr bool has_peepholes = Peep;
    static constexpr bool cifg = K == Kind::lstm_cifg;
    static constexpr int unread_gate = cifg ? 1 : -1;  // f = 1 - i: f's sums are not read

    template <class T>
    __attribute__((always_inline)) static void forward(const ForwardRow<T>& r, int64_t H, int64_t u0,
                                                       int64_t u1) {
        lstm_fwd_row<T, Peep, cifg>(H, u0, u1, r.gx, r.kept, r.sums, Peep ? r.peep : nullptr, r.c, r.h_new,
                                    r.out, r.c_kept);
    }
    // A padded step keeps the carried cell state.
    template <class T>
    static void forward_padded(const ForwardRow<T>& r, int64_t, int64_t u0, int64_t u1) {
        if (r.c_kept) std::memcpy(r.c_kept + u0, r.c + u0, (u1 - u0) * sizeof(T));
    }
    template <class T>
    __attribute__((always_inline)) static void backward(const BackwardRow<T>& r, int64_t H, int64_t u0,
                                                        int64_t u1) {
        lstm_bwd_row<T, Peep, cifg>(H, u0, u1, r.kept, r.c_prev, r.c_new, Peep ? r.peep : nullptr, r.sums,
                                    r.grad_out, r.dh_carry, r.dc, r.dg);
    }
};

using LstmCell = LstmCellOf<Kind::lstm, false>;
using LstmPeepholeCell = LstmCellOf<Kind::lstm, true>;
using LstmCifgCell = LstmCellOf<Kind::lstm_cifg, false>;
using LstmCifgPeepholeCell = LstmCellOf<Kind::lstm_cifg, true>;

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
