// Cell forward and backward.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include "cells/rows.h"
#include "gemm/small.h"
#include "layer/projection.h"
#include "parallel/plan.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// ================================================================ cells
// One step for B <= 4 (the latency path; not gru_orig, whose second product
// needs all of r*h): each part computes its hidden units [u0, u1) of every
// gate - input and recurrent rows, then the pointwise step - from weight rows
// it alone reads. From 64K multiply-adds (GRU/LSTM B=1 I=64 H=128) the parts
// are parallel_for tasks: the caller takes the first, a worker that is awake
// the second (the same rows each call, so they stay in its core's L2), and a
// sleeping one finds nothing left. Units are split at multiples of the vector
// width, so each dot product is the same whatever the split.
template <class T>
void cell_forward_units(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h,
                        const T* c, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh,
                        T* h_new, T* c_new, T* gx, int64_t ldg, bool keep, T* S) {
    constexpr int W = V<T>::W;
    constexpr int NR = 2 * W;
    const int G = num_gates(kind);
    const int64_t GH = G * H;
    const bool lstm = kind == Kind::lstm, is_gru = kind == Kind::gru;
    const bool rnn = G == 1, relu = kind == Kind::rnn_relu;
    const T* bhn = (is_gru && b_hh) ? b_hh + 2 * H : nullptr;
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
            for (int64_t b = 0; b < B; ++b) folded_bias(kind, H, b_ih, b_hh, n0, nu, gx + b * ldg + n0);
            small_nt<T>(B, nu, I, x, I, w_ih + n0 * I, I, gx + n0, ldg, true);
            small_nt<T>(B, nu, H, h, H, w_hh + n0 * H, H, S + n0, GH, false);
        }
        for (int64_t b = 0; b < B; ++b) {
            T* g = gx + b * ldg;
            const GateSums<T> sb{S + b * GH, NR, H};
            if (rnn) {
                rnn_fwd_row<T>(relu, u0, u1, g, keep ? g : nullptr, sb, h_new + b * H, nullptr);
            } else if (lstm) {
                std::memcpy(c_new + b * H + u0, c + b * H + u0, nu * sizeof(T));
                lstm_fwd_row<T>(H, u0, u1, g, keep ? g : nullptr, sb, c_new + b * H, h_new + b * H,
                                nullptr, nullptr);
            } else {
                gru_fwd_row<T>(H, u0, u1, g, keep ? g : nullptr, sb, bhn, h + b * H, h_new + b * H,
                               nullptr);
            }
        }
    };
    if (parts > 1)
        parallel_for(parts, part);
    else
        part(0);
}

template <class T>
void run_cell_forward(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h,
                       const T* c, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh,
                       T* h_new, T* c_new, T* ws_gates) {
    constexpr int NR = 2 * V<T>::W;
    const int G = num_gates(kind);
    const int64_t GH = G * H;
    const bool keep = ws_gates != nullptr;
    const int64_t ldg = keep ? kept_gates(kind) * H : GH;
    const bool lstm = kind == Kind::lstm, is_gru = kind == Kind::gru, is_gru_orig = kind == Kind::gru_orig;
    const bool rnn = G == 1, relu = kind == Kind::rnn_relu;

    Scratch<T> gxbuf;
    T* gx = ws_gates;
    if (!keep) {
        gxbuf.alloc(checked_mul(B, GH));
        gx = gxbuf.p;
    }
    Scratch<T> S(checked_mul(B, GH));
    if (B <= 4 && !is_gru_orig) {
        cell_forward_units(kind, B, I, H, x, h, c, w_ih, w_hh, b_ih, b_hh, h_new, c_new, gx, ldg,
                           keep, S.p);
        return;
    }
    input_projection(kind, B, I, H, x, w_ih, b_ih, b_hh, gx, ldg);
    small_nt<T>(B, is_gru_orig ? 2 * H : GH, H, h, H, w_hh, H, S.p, GH, false);
    const T* bhn = (is_gru && b_hh) ? b_hh + 2 * H : nullptr;
    if (lstm) std::memcpy(c_new, c, B * H * sizeof(T));
    Scratch<T> rhbuf(is_gru_orig && !keep ? checked_mul(B, H) : 1);
    for (int64_t b = 0; b < B; ++b) {
        T* g = gx + b * ldg;
        const GateSums<T> sb{S.p + b * GH, NR, H};
        if (rnn)
            rnn_fwd_row<T>(relu, 0, H, g, keep ? g : nullptr, sb, h_new + b * H, nullptr);
        else if (lstm)
            lstm_fwd_row<T>(H, 0, H, g, keep ? g : nullptr, sb, c_new + b * H, h_new + b * H, nullptr, nullptr);
        else if (is_gru)
            gru_fwd_row<T>(H, 0, H, g, keep ? g : nullptr, sb, bhn, h + b * H, h_new + b * H, nullptr);
        else
            gruo_fwd_row1<T>(H, 0, H, g, sb, h + b * H, keep ? g + 3 * H : rhbuf.p + b * H);
    }
    if (is_gru_orig) {
        const T* rh = keep ? gx + 3 * H : rhbuf.p;
        small_nt<T>(B, H, H, rh, keep ? ldg : H, w_hh + 2 * H * H, H, S.p + 2 * H, GH, false);
        for (int64_t b = 0; b < B; ++b) {
            const GateSums<T> sb{S.p + b * GH, NR, H};
            gruo_fwd_row2<T>(H, 0, H, gx + b * ldg, keep, sb, h + b * H, h_new + b * H, nullptr);
        }
    }
}

template <class T>
void run_cell_backward(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h,
                        const T* c, const T* c_new, const T* w_ih, const T* w_hh,
                        const T* ws_gates, const T* grad_h, const T* grad_c, T* dx, T* dh, T* dc,
                        T* dw_ih, T* dw_hh, T* db_ih, T* db_hh) {
    const int G = num_gates(kind);
    const int64_t GH = G * H;
    const int64_t ldg = kept_gates(kind) * H;
    const bool lstm = kind == Kind::lstm, is_gru = kind == Kind::gru, is_gru_orig = kind == Kind::gru_orig;
    const bool rnn = G == 1, relu = kind == Kind::rnn_relu;

    Scratch<T> dG(checked_mul(B, GH));
    Scratch<T> dGn(is_gru ? checked_mul(B, H) : 1);  // gru: n block of the recurrent projection's gradient
    Scratch<T> dh_carry(checked_mul(B, H));
    if (grad_h)
        std::memcpy(dh_carry.p, grad_h, B * H * sizeof(T));
    else
        dh_carry.zero(B * H);
    if (lstm) {
        if (grad_c)
            std::memcpy(dc, grad_c, B * H * sizeof(T));
        else
            std::memset(dc, 0, B * H * sizeof(T));
    }
    for (int64_t b = 0; b < B; ++b) {
        const T* gk = ws_gates + b * ldg;
        T* ddb = dh_carry.p + b * H;
        if (rnn)
            rnn_bwd_row<T>(relu, 0, H, gk, nullptr, nullptr, ddb, dG.p + b * GH);
        else if (lstm)
            lstm_bwd_row<T>(H, 0, H, gk, c + b * H, c_new + b * H, nullptr, nullptr, ddb,
                            dc + b * H, dG.p + b * GH);
        else if (is_gru)
            gru_bwd_row<T>(H, 0, H, gk, h + b * H, nullptr, nullptr, ddb, dG.p + b * GH,
                           dGn.p + b * H);
        else
            gruo_bwd_rowA<T>(H, 0, H, gk, h + b * H, nullptr, nullptr, ddb, dG.p + b * GH);
    }
    if (is_gru_orig) {
        Scratch<T> drh(checked_mul(B, H));
        small_nn<T>(B, H, H, dG.p + 2 * H, GH, w_hh + 2 * H * H, H, drh.p, H, false);
        for (int64_t b = 0; b < B; ++b)
            gruo_bwd_rowB<T>(0, H, ws_gates + b * ldg, h + b * H, drh.p + b * H, dh_carry.p + b * H,
                             dG.p + b * GH);
    }
    // dh = dh_carry + dGh · W_hh (gru_orig: n went through drh; gru: its n block from dGn)
    std::memcpy(dh, dh_carry.p, B * H * sizeof(T));
    small_nn<T>(B, H, (is_gru_orig || is_gru) ? 2 * H : GH, dG.p, GH, w_hh, H, dh, H, true);
    if (is_gru) small_nn<T>(B, H, H, dGn.p, H, w_hh + 2 * H * H, H, dh, H, true);
    small_nn<T>(B, I, GH, dG.p, GH, w_ih, I, dx, I, false);
    small_tn<T>(B, GH, I, dG.p, GH, x, I, dw_ih, I);
    if (is_gru_orig) {
        small_tn<T>(B, 2 * H, H, dG.p, GH, h, H, dw_hh, H);
        small_tn<T>(B, H, H, dG.p + 2 * H, GH, ws_gates + 3 * H, ldg, dw_hh + 2 * H * H, H);
    } else if (is_gru) {
        small_tn<T>(B, 2 * H, H, dG.p, GH, h, H, dw_hh, H);
        small_tn<T>(B, H, H, dGn.p, H, h, H, dw_hh + 2 * H * H, H);
    } else {
        small_tn<T>(B, GH, H, dG.p, GH, h, H, dw_hh, H);
    }
    if (db_ih) {
        colsum<T>(B, GH, dG.p, GH, db_ih);
        if (is_gru) {
            std::memcpy(db_hh, db_ih, 2 * H * sizeof(T));
            colsum<T>(B, H, dGn.p, H, db_hh + 2 * H);
        } else {
            std::memcpy(db_hh, db_ih, GH * sizeof(T));
        }
    }
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
