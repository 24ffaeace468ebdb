// Layer backward.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>
#include "cells/rows.h"
#include "gemm/gemm.h"
#include "gemm/recurrent.h"
#include "gemm/small.h"
#include "parallel/plan.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// ================================================================ layer backward
// The backward keeps dG for chunks of steps: about this many bytes (at least
// kBwdChunkRows rows of T*B: shorter chunks are slower on wide layers,
// e.g. LSTM B=32 I=H=512, where each chunk re-reads and re-writes dW).
constexpr int64_t kBwdChunkBytes = int64_t(2) << 20;
constexpr int64_t kBwdChunkRows = 1024;

template <class T>
void run_layer_backward(Kind kind, int64_t Tn, int64_t B, int64_t I, int64_t H, const T* x,
                         const T* c0, const T* w_ih, const T* w_hh, const int64_t* lengths,
                         bool reverse, const T* ws_gates, const T* ws_h, const T* ws_c,
                         const T* grad_out, int64_t grad_out_t_stride,
                         int64_t grad_out_b_stride, const T* grad_h_n, const T* grad_c_n, T* dx, T* dh0,
                         T* dc0, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh, bool add_dw) {
    constexpr int NR = 2 * V<T>::W;
    const int G = num_gates(kind);
    const int64_t GH = G * H;
    const int64_t ldg = kept_gates(kind) * H;
    const bool lstm = kind == Kind::lstm, is_gru = kind == Kind::gru, is_gru_orig = kind == Kind::gru_orig;
    const bool rnn = G == 1, relu = kind == Kind::rnn_relu;
    // dG is kept for a chunk of Tc steps only (not all T): after each chunk its
    // rows go through the large products (dx rows, dW, db accumulate), so the
    // buffer stays small (a few MB, reused from the block cache) instead of
    // T*B*G*H (page faults on fresh memory dominated at large T*B). Tc depends
    // on the shapes only, never on the thread count.
    const int64_t step_bytes = std::max<int64_t>(1, B * (GH + (is_gru ? H : 0)) * (int64_t)sizeof(T));
    const int64_t Tc = std::max<int64_t>(
        1, std::min<int64_t>(Tn, std::max<int64_t>(kBwdChunkBytes / step_bytes,
                                                   (kBwdChunkRows + B - 1) / std::max<int64_t>(1, B))));
    // gru: the recurrent projection's gradient differs from dG only in its n
    // block (dan * r), kept apart as dGn [Tc*B, H].
    Scratch<T> dG(checked_mul(checked_mul(Tc, B), GH));
    Scratch<T> dGn(is_gru ? checked_mul(checked_mul(Tc, B), H) : 1);

    const int64_t unit_panels = (H + NR - 1) / NR;
    const int64_t Hp = unit_panels * NR + V<T>::W;  // row stride of S, drh (padded)
    Packed<T> w_hh_packed;
    w_hh_packed.ktot = GH;
    w_hh_packed.npanels = unit_panels;
    w_hh_packed.alloc();

    Scratch<T> dh_carry(checked_mul(B, H)), S(checked_mul(B, Hp)), drh(is_gru_orig ? checked_mul(B, Hp) : 1), dc(lstm ? checked_mul(B, H) : 1);
    if (grad_h_n)
        std::memcpy(dh_carry.p, grad_h_n, B * H * sizeof(T));
    else
        dh_carry.zero(B * H);
    S.zero(B * Hp);
    if (lstm) {
        if (grad_c_n)
            std::memcpy(dc.p, grad_c_n, B * H * sizeof(T));
        else
            dc.zero(B * H);
    }

    const Plan plan = make_plan(B, unit_panels, B * GH * H, Tn, unit_panels * GH * NR * (int64_t)sizeof(T));
    const int64_t batch_slices = plan.mode == Mode::batch ? (B >= 8 * plan.nthreads ? 2 * plan.nthreads : plan.nthreads) : 1;
    std::vector<int> lists((size_t)std::max<int64_t>(plan.nthreads, batch_slices) * unit_panels);

    // The time loop (backwards) for rows [m0, m1) and unit panels [jp0, jp1),
    // steps st in [s0, s1) (processed st = s1-1 down to s0); the chunk's
    // steps have t in [t0, t0 + s1 - s0), stored at dG row (t - t0) * B.
    auto loop = [&](int64_t lid, int64_t m0, int64_t m1, int64_t jp0, int64_t jp1, int64_t s0,
                    int64_t s1, int64_t t0) {
        const int64_t u0 = jp0 * NR, u1 = std::min<int64_t>(H, jp1 * NR);
        int* plist = lists.data() + (size_t)lid * unit_panels;
        int np = 0;
        for (int64_t jp = jp0; jp < jp1; ++jp) plist[np++] = (int)jp;
        for (int64_t st = s1 - 1; st >= s0; --st) {
            const int64_t t = reverse ? Tn - 1 - st : st;
            const int64_t tprev = reverse ? t + 1 : t - 1;  // step processed before t
            const T* gkt = ws_gates + t * B * ldg;
            const T* go = grad_out ? grad_out + t * grad_out_t_stride : nullptr;
            T* dgt = dG.p + (t - t0) * B * GH;
            T* dgnt = dGn.p + (t - t0) * B * H;
            for (int64_t b = m0; b < m1; ++b) {
                const bool active = !lengths || t < lengths[b];
                const T* sb = S.p + b * Hp;
                T* ddb = dh_carry.p + b * H;
                if (!active) {
                    pad_bwd_row<T>(u0, u1, sb, ddb);
                    for (int g = 0; g < G; ++g)
                        std::memset(dgt + b * GH + g * H + u0, 0, (u1 - u0) * sizeof(T));
                    if (is_gru) std::memset(dgnt + b * H + u0, 0, (u1 - u0) * sizeof(T));
                    continue;
                }
                const T* gob = go ? go + b * grad_out_b_stride : nullptr;
                const T* gk = gkt + b * ldg;
                if (rnn)
                    rnn_bwd_row<T>(relu, u0, u1, gk, sb, gob, ddb, dgt + b * GH);
                else if (lstm) {
                    const T* cprev = st == 0 ? c0 + b * H : ws_c + (tprev * B + b) * H;
                    lstm_bwd_row<T>(H, u0, u1, gk, cprev, ws_c + (t * B + b) * H, sb, gob, ddb,
                                    dc.p + b * H, dgt + b * GH);
                } else if (is_gru)
                    gru_bwd_row<T>(H, u0, u1, gk, ws_h + (t * B + b) * H, sb, gob, ddb,
                                   dgt + b * GH, dgnt + b * H);
                else
                    gruo_bwd_rowA<T>(H, u0, u1, gk, ws_h + (t * B + b) * H, sb, gob, ddb,
                                     dgt + b * GH);
            }
            if (is_gru_orig) {
                barrier(plan);
                // drh = dan · W_hn
                panels_gemm<T>(m0, m1, H, dgt + 2 * H, GH, w_hh_packed, 2 * H, plist, np, drh.p, Hp);
                for (int64_t b = m0; b < m1; ++b) {
                    if (lengths && t >= lengths[b]) continue;
                    gruo_bwd_rowB<T>(u0, u1, gkt + b * ldg, ws_h + (t * B + b) * H, drh.p + b * Hp,
                                     dh_carry.p + b * H, dgt + b * GH);
                }
            }
            barrier(plan);
            // S = dGh_t · W_hh (gru_orig: r, z rows only; n went through drh; gru: the n
            // block from dGn, the same sum in the same k order)
            panels_gemm<T>(m0, m1, (is_gru_orig || is_gru) ? 2 * H : GH, dgt, GH, w_hh_packed, 0, plist, np, S.p, Hp);
            if (is_gru) panels_gemm<T>(m0, m1, H, dgnt, H, w_hh_packed, 2 * H, plist, np, S.p, Hp, true);
        }
    };
    // dh0 = dh_carry + S (own rows / units)
    auto finish = [&](int64_t m0, int64_t m1, int64_t jp0, int64_t jp1) {
        const int64_t u0 = jp0 * NR, u1 = std::min<int64_t>(H, jp1 * NR);
        for (int64_t b = m0; b < m1; ++b)
            for (int64_t j = u0; j < u1; ++j) dh0[b * H + j] = dh_carry.p[b * H + j] + S.p[b * Hp + j];
    };

    // The weight and bias gradients accumulate over the chunks (and, with add_dw, onto what
    // dw_ih and dw_hh held: the caller's running sums, saving it a temporary and an add).
    if (!add_dw) {
        std::memset(dw_ih, 0, GH * I * sizeof(T));
        std::memset(dw_hh, 0, GH * H * sizeof(T));
    }
    if (db_ih) {
        std::memset(db_ih, 0, GH * sizeof(T));
        std::memset(db_hh, 0, GH * sizeof(T));
    }
    std::vector<T> csum(db_ih ? GH : 1);
    auto add_colsum = [&](int64_t R, const T* A, int64_t lda, int64_t ncols, T* out) {
        colsum<T>(R, ncols, A, lda, csum.data());
        for (int64_t n = 0; n < ncols; ++n) out[n] += csum[n];
    };

    if (plan.mode == Mode::batch)
        parallel_for(2 * plan.nthreads,
                     [&](int64_t i) { pack_backward(w_hh, GH, H, w_hh_packed, (int)i, 2 * plan.nthreads); });
    else if (plan.mode == Mode::serial)
        pack_backward(w_hh, GH, H, w_hh_packed, 0, 1);
    for (int64_t s1 = Tn; s1 > 0; s1 -= Tc) {
        const int64_t s0 = std::max<int64_t>(0, s1 - Tc);
        const int64_t t0 = reverse ? Tn - s1 : s0;  // the chunk's first time index
        const bool first = s1 == Tn, last = s0 == 0;
        if (plan.mode == Mode::units) {
            parallel_team(plan.nthreads, [&](int id) {
                if (first) {
                    pack_backward(w_hh, GH, H, w_hh_packed, id, plan.nthreads);
                    barrier(plan);
                }
                int64_t jp0, jp1;
                split(unit_panels, plan.nthreads, id, &jp0, &jp1);
                loop(id, 0, B, jp0, jp1, s0, s1, t0);
                if (last) finish(0, B, jp0, jp1);
            });
        } else if (plan.mode == Mode::batch) {
            parallel_for(batch_slices, [&](int64_t i) {
                int64_t m0, m1;
                split(B, (int)batch_slices, (int)i, &m0, &m1);
                loop(i, m0, m1, 0, unit_panels, s0, s1, t0);
                if (last) finish(m0, m1, 0, unit_panels);
            });
        } else {
            loop(0, 0, B, 0, unit_panels, s0, s1, t0);
            if (last) finish(0, B, 0, unit_panels);
        }

        // Large products over the chunk's rows (t in [t0, t0 + R / B)).
        const int64_t R = (s1 - s0) * B;
        large_product<T>(false, false, R, I, GH, dG.p, GH, w_ih, I, false, dx + t0 * B * I, I);
        large_product<T>(true, false, GH, I, R, dG.p, GH, x + t0 * B * I, I, true, dw_ih, I);
        const T* hp = rnn ? nullptr : ws_h + t0 * B * H;  // rnn kinds: ws_h is h0 only
        if (rnn) {
            // The state before step t is the kept state of the step processed before it
            // (t - 1, or t + 1 in reverse), h0 (ws_h) for the first step processed.
            const int64_t n = s1 - s0;
            const bool has_first = reverse ? t0 + n == Tn : t0 == 0;
            const int64_t tf = reverse ? Tn - 1 : 0;  // the first step processed
            if (has_first)
                large_product<T>(true, false, GH, H, B, dG.p + (tf - t0) * B * GH, GH, ws_h, H, true, dw_hh, H);
            const int64_t r0 = (has_first && !reverse) ? 1 : 0;  // chunk steps [r0, r1) from gates
            const int64_t r1 = (has_first && reverse) ? n - 1 : n;
            if (r1 > r0) {
                const T* prev = ws_gates + (t0 + r0 + (reverse ? 1 : -1)) * B * ldg;
                large_product<T>(true, false, GH, H, (r1 - r0) * B, dG.p + r0 * B * GH, GH, prev, ldg, true,
                      dw_hh, H);
            }
        } else if (is_gru_orig) {
            large_product<T>(true, false, 2 * H, H, R, dG.p, GH, hp, H, true, dw_hh, H);
            large_product<T>(true, false, H, H, R, dG.p + 2 * H, GH, ws_gates + t0 * B * ldg + 3 * H, ldg,
                  true, dw_hh + 2 * H * H, H);
        } else if (is_gru) {
            large_product<T>(true, false, 2 * H, H, R, dG.p, GH, hp, H, true, dw_hh, H);
            large_product<T>(true, false, H, H, R, dGn.p, H, hp, H, true, dw_hh + 2 * H * H, H);
        } else {  // lstm
            large_product<T>(true, false, GH, H, R, dG.p, GH, hp, H, true, dw_hh, H);
        }
        if (db_ih) {
            add_colsum(R, dG.p, GH, GH, db_ih);
            if (is_gru) add_colsum(R, dGn.p, H, H, db_hh + 2 * H);  // r, z: db_ih's, below
        }
    }
    if (lstm) std::memcpy(dc0, dc.p, B * H * sizeof(T));
    // db_hh equals db_ih but in gru's n block (accumulated from dGn above)
    if (db_ih) std::memcpy(db_hh, db_ih, (is_gru ? 2 * H : GH) * sizeof(T));
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
