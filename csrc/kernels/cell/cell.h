// The cell driver: one step, forward and backward (fastrnn/rnn.h,
// cell_forward / cell_backward), for any cell policy (cells/common.h). The
// products are gemm/small.h's (a few rows, no packing); the pointwise rows
// are the same functions the layers use.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cells/common.h"
#include "cells/lstm.h"  // add_peephole_row_grads
#include "common/scratch.h"
#include "gemm/small.h"
#include "layer/projection.h"
#include "parallel/plan.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// The arguments of cell_forward (shapes in fastrnn/rnn.h).
template <class T>
struct CellForwardArgs {
    int64_t B, I, H;
    const T *x, *h, *c, *w_ih, *w_hh, *b_ih, *b_hh, *peep, *hmask;
    T *h_new, *c_new, *ws_gates;
};

// The arguments of cell_backward.
template <class T>
struct CellBackwardArgs {
    int64_t B, I, H;
    const T *x, *h, *c, *c_new, *w_ih, *w_hh, *peep, *hmask, *ws_gates, *grad_h, *grad_c;
    T *dx, *dh, *dc, *dw_ih, *dw_hh, *db_ih, *db_hh, *dpeep;
};

// Recurrent dropout: what the cell's recurrent product sees, h * hmask, into hm
// ([B, H]); h itself without hmask.
template <class T>
const T* masked_state(int64_t B, int64_t H, const T* h, const T* hmask, Scratch<T>& hm) {
    if (!hmask) return h;
    hm.alloc(checked_mul(B, H));
    for (int64_t k = 0; k < B * H; ++k) hm.p[k] = h[k] * hmask[k];
    return hm.p;
}

// Batch row b of a cell step: pre-activations gx_row (kept in place when
// keep), recurrent sums S row (plain layout).
template <class Cell, class T>
ForwardRow<T> cell_row(const CellForwardArgs<T>& a, int64_t b, T* gx_row, bool keep, const T* S_row,
                       T* rh, const T* hm) {
    constexpr int NR = 2 * V<T>::W;
    const int64_t H = a.H;
    ForwardRow<T> row{};
    row.gx = gx_row;
    row.kept = keep ? gx_row : nullptr;
    row.sums = GateSums<T>{S_row, NR, H};
    row.h_prev = a.h + b * H;
    if (a.hmask) row.h_masked = hm + b * H;  // gru_orig: r*h_masked feeds W_hn
    row.h_new = a.h_new + b * H;
    if (Cell::has_cell_state) row.c = a.c_new + b * H;  // c_new holds c, updated in place
    if (Cell::n_bias_inside_reset && a.b_hh) row.b_hn = a.b_hh + 2 * H;
    if (Cell::has_peepholes) row.peep = a.peep;
    row.rh = rh;
    return row;
}

// One step for B <= 4 (the latency path; not for a cell whose n product
// follows the reset phase, which needs all of r*h): each part computes its
// hidden units [u0, u1) of every gate - input and recurrent rows, then the
// pointwise step - from weight rows it alone reads. From 64K multiply-adds
// (GRU/LSTM B=1 I=64 H=128) the parts are parallel_for tasks: the caller
// takes the first, a worker that is awake the second (the same rows each
// call, so they stay in its core's L2), and a sleeping one finds nothing
// left. Units are split at multiples of the vector width, so each dot
// product is the same whatever the split.
template <class Cell, class T>
void cell_forward_units(const CellForwardArgs<T>& a, T* gx, int64_t ldg, bool keep, T* S, const T* hm) {
    constexpr int W = V<T>::W;
    const int64_t B = a.B, I = a.I, H = a.H;
    constexpr int G = num_gates(Cell::kind);
    const int64_t GH = G * H;
    const int64_t nv = (H + W - 1) / W;
    const int P = get_num_threads();
    const int parts = (P > 1 && B * GH * (I + H) >= 65536) ? (int)std::min<int64_t>(P, nv) : 1;
    auto part = [&](int64_t id) {
        int64_t v0, v1;
        split(nv, parts, (int)id, &v0, &v1);
        const int64_t u0 = v0 * W, u1 = std::min(H, v1 * W), nu = u1 - u0;
        if (nu <= 0) return;
        for (int g = 0; g < G; ++g) {
            const int64_t n0 = g * H + u0;
            for (int64_t b = 0; b < B; ++b) folded_bias<Cell>(H, a.b_ih, a.b_hh, n0, nu, gx + b * ldg + n0);
            small_nt<T>(B, nu, I, a.x, I, a.w_ih + n0 * I, I, gx + n0, ldg, true);
            small_nt<T>(B, nu, H, hm, H, a.w_hh + n0 * H, H, S + n0, GH, false);
        }
        for (int64_t b = 0; b < B; ++b) {
            if (Cell::has_cell_state) std::memcpy(a.c_new + b * H + u0, a.c + b * H + u0, nu * sizeof(T));
            Cell::forward(cell_row<Cell, T>(a, b, gx + b * ldg, keep, S + b * GH, nullptr, hm), H, u0, u1);
        }
    };
    if (parts > 1)
        parallel_for(parts, part);
    else
        part(0);
}

template <class Cell, class T>
void cell_forward_driver(const CellForwardArgs<T>& a) {
    const int64_t B = a.B, I = a.I, H = a.H;
    const int64_t GH = num_gates(Cell::kind) * H;
    const bool keep = a.ws_gates != nullptr;
    const int64_t ldg = keep ? kept_gates(Cell::kind) * H : GH;
    Scratch<T> gx_buf;
    T* gx = a.ws_gates;
    if (!keep) {
        gx_buf.alloc(checked_mul(B, GH));
        gx = gx_buf.p;
    }
    Scratch<T> S(checked_mul(B, GH));
    Scratch<T> hm_buf;
    const T* hm = masked_state(B, H, a.h, a.hmask, hm_buf);  // the recurrent product's input
    if (B <= 4 && !Cell::n_product_after_reset) {
        cell_forward_units<Cell>(a, gx, ldg, keep, S.p, hm);
        return;
    }
    input_projection<Cell>(B, I, H, a.x, a.w_ih, a.b_ih, a.b_hh, gx, ldg);
    // gru_orig: the r and z products now, the n product after the reset phase
    const int64_t product_cols = Cell::n_product_after_reset ? 2 * H : GH;
    small_nt<T>(B, product_cols, H, hm, H, a.w_hh, H, S.p, GH, false);
    if (Cell::has_cell_state) std::memcpy(a.c_new, a.c, B * H * sizeof(T));
    Scratch<T> rh(Cell::n_product_after_reset ? checked_mul(B, H) : 1);
    for (int64_t b = 0; b < B; ++b)
        Cell::forward(cell_row<Cell, T>(a, b, gx + b * ldg, keep, S.p + b * GH,
                                     Cell::n_product_after_reset ? rh.p + b * H : nullptr, hm),
                      H, 0, H);
    if constexpr (Cell::n_product_after_reset) {
        small_nt<T>(B, H, H, rh.p, H, a.w_hh + 2 * H * H, H, S.p + 2 * H, GH, false);
        for (int64_t b = 0; b < B; ++b)
            Cell::forward_after_reset(cell_row<Cell, T>(a, b, gx + b * ldg, keep, S.p + b * GH, nullptr, hm), H,
                                      0, H);
    }
}

// The pointwise backward of the B rows into dG (and dG_n), dh_carry.
template <class Cell, class T>
void cell_backward_rows(const CellBackwardArgs<T>& a, T* dG, T* dG_n, T* dh_carry) {
    const int64_t B = a.B, H = a.H;
    const int64_t GH = num_gates(Cell::kind) * H;
    const int64_t ldg = kept_gates(Cell::kind) * H;
    for (int64_t b = 0; b < B; ++b) {
        BackwardRow<T> row{};
        row.kept = a.ws_gates + b * ldg;
        row.h_prev = a.h + b * H;
        if (Cell::has_cell_state) {
            row.c_prev = a.c + b * H;
            row.c_new = a.c_new + b * H;
            row.dc = a.dc + b * H;
            if (Cell::has_peepholes) row.peep = a.peep;
        }
        row.dh_carry = dh_carry + b * H;
        row.dg = dG + b * GH;
        if (Cell::separate_n_grad) row.dg_n = dG_n + b * H;
        Cell::backward(row, H, 0, H);
    }
    if constexpr (Cell::n_product_after_reset) {
        Scratch<T> drh(checked_mul(B, H));
        small_nn<T>(B, H, H, dG + 2 * H, GH, a.w_hh + 2 * H * H, H, drh.p, H, false);
        for (int64_t b = 0; b < B; ++b) {
            BackwardRow<T> row{};
            row.kept = a.ws_gates + b * ldg;
            row.h_prev = a.h + b * H;
            row.drh = drh.p + b * H;
            row.hmask = a.hmask ? a.hmask + b * H : nullptr;
            row.dh_carry = dh_carry + b * H;
            row.dg = dG + b * GH;
            Cell::backward_after_reset(row, H, 0, H);
        }
    }
}

template <class Cell, class T>
void cell_backward_driver(const CellBackwardArgs<T>& a) {
    const int64_t B = a.B, I = a.I, H = a.H;
    const int64_t GH = num_gates(Cell::kind) * H;
    const int64_t ldg = kept_gates(Cell::kind) * H;
    // gates whose dG feeds dh = dG · W_hh directly (see LayerBackward)
    constexpr int direct_gates =
        (Cell::separate_n_grad || Cell::n_product_after_reset) ? 2 : num_gates(Cell::kind);
    Scratch<T> dG(checked_mul(B, GH));
    Scratch<T> dG_n(Cell::separate_n_grad ? checked_mul(B, H) : 1);
    Scratch<T> dh_carry(checked_mul(B, H));
    if (a.grad_h)
        std::memcpy(dh_carry.p, a.grad_h, B * H * sizeof(T));
    else
        dh_carry.zero(B * H);
    if (Cell::has_cell_state) {
        if (a.grad_c)
            std::memcpy(a.dc, a.grad_c, B * H * sizeof(T));
        else
            std::memset(a.dc, 0, B * H * sizeof(T));
    }
    cell_backward_rows<Cell>(a, dG.p, dG_n.p, dh_carry.p);
    Scratch<T> hm_buf;
    const T* hm = masked_state(B, H, a.h, a.hmask, hm_buf);  // what W_hh saw
    if (!a.hmask) {
        std::memcpy(a.dh, dh_carry.p, B * H * sizeof(T));
        small_nn<T>(B, H, direct_gates * H, dG.p, GH, a.w_hh, H, a.dh, H, true);
        if (Cell::separate_n_grad) small_nn<T>(B, H, H, dG_n.p, H, a.w_hh + 2 * H * H, H, a.dh, H, true);
    } else {
        // the products give the gradient of h * hmask: that of h is it times hmask, rounded
        // before dh_carry is added (two passes, as the layer's: no fused multiply-add)
        small_nn<T>(B, H, direct_gates * H, dG.p, GH, a.w_hh, H, a.dh, H, false);
        if (Cell::separate_n_grad) small_nn<T>(B, H, H, dG_n.p, H, a.w_hh + 2 * H * H, H, a.dh, H, true);
        for (int64_t k = 0; k < B * H; ++k) a.dh[k] *= a.hmask[k];
        for (int64_t k = 0; k < B * H; ++k) a.dh[k] += dh_carry.p[k];
    }
    small_nn<T>(B, I, GH, dG.p, GH, a.w_ih, I, a.dx, I, false);
    small_tn<T>(B, GH, I, dG.p, GH, a.x, I, a.dw_ih, I);
    small_tn<T>(B, direct_gates * H, H, dG.p, GH, hm, H, a.dw_hh, H);
    if (Cell::n_product_after_reset)  // W_hn sees r*h (r*h*hmask; kept block 3)
        small_tn<T>(B, H, H, dG.p + 2 * H, GH, a.ws_gates + 3 * H, ldg, a.dw_hh + 2 * H * H, H);
    if (Cell::separate_n_grad) small_tn<T>(B, H, H, dG_n.p, H, hm, H, a.dw_hh + 2 * H * H, H);
    if constexpr (Cell::has_peepholes) {
        std::memset(a.dpeep, 0, kPeepholes * H * sizeof(T));
        for (int64_t b = 0; b < B; ++b)
            add_peephole_row_grads<T>(H, 0, H, dG.p + b * GH, a.c + b * H, a.c_new + b * H, a.dpeep);
    }
    if (a.db_ih) {
        colsum<T>(B, GH, dG.p, GH, a.db_ih);
        std::memcpy(a.db_hh, a.db_ih, (Cell::separate_n_grad ? 2 * H : GH) * sizeof(T));
        if (Cell::separate_n_grad) colsum<T>(B, H, dG_n.p, H, a.db_hh + 2 * H);
    }
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
