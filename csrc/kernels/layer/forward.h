// Layer forward.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>
#include "cells/rows.h"
#include "gemm/recurrent.h"
#include "layer/projection.h"
#include "parallel/plan.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// ================================================================ layer forward
template <class T>
void run_layer_forward(Kind kind, int64_t Tn, int64_t B, int64_t I, int64_t H, const T* x,
                        const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* b_ih,
                        const T* b_hh, const int64_t* lengths, bool reverse, T* out,
                        int64_t out_t_stride, int64_t out_b_stride, T* h_n, T* c_n, T* ws_gates,
                        T* ws_h, T* ws_c) {
    constexpr int NR = 2 * V<T>::W;
    const int G = num_gates(kind);
    const int64_t GH = G * H;
    const bool keep = ws_gates != nullptr;
    const int64_t ldg = keep ? kept_gates(kind) * H : GH;
    const bool lstm = kind == Kind::lstm, is_gru = kind == Kind::gru, is_gru_orig = kind == Kind::gru_orig;
    const bool rnn = G == 1, relu = kind == Kind::rnn_relu;

    const T* bhn = (is_gru && b_hh) ? b_hh + 2 * H : nullptr;
    const int64_t unit_panels = (H + NR - 1) / NR;
    const int64_t Hp = unit_panels * NR;
    const int64_t lds = G * Hp + V<T>::W;  // padded: no power-of-two row distance
    Packed<T> w_hh_packed;
    w_hh_packed.ktot = H;
    w_hh_packed.npanels = unit_panels * G;
    w_hh_packed.alloc();
    Plan plan = make_plan(B, unit_panels, B * GH * H, Tn, w_hh_packed.npanels * H * NR * (int64_t)sizeof(T));
    // Units mode computes the input projection of all T steps up front; in
    // inference that buffer is extra memory (training keeps it anyway), so a
    // long sequence whose projection would pass 64 MB stays on one thread
    // with the chunked projection instead (e.g. LSTM B=1 H=128 T=10^6: 2 GB).
    if (!keep && plan.mode == Mode::units && Tn * B * GH * (int64_t)sizeof(T) > ((int64_t)64 << 20)) {
        plan.mode = Mode::serial;
        plan.nthreads = 1;
    }

    // Input projection. A small Gx: all T steps in one GEMM (straight into
    // the workspace in training). A large Gx: in chunks of Tc steps computed
    // by each thread for its own rows just before they are used, so Gx never
    // leaves the cache (a 512 KB buffer instead of T*B*G*H values); training
    // then writes each workspace row once, with the post-activations, instead
    // of the projection followed by a second pass over it (gru_orig keeps
    // the single GEMM: its r*h slot is read back by the second phase).
    const int64_t step_bytes = B * GH * (int64_t)sizeof(T);
    // Chunks of 512 KB: the chunk stays in L2 next to x and out (a projection
    // of a few MB in one buffer runs some layers 2x slower, depending on
    // where its pages fall).
    constexpr int64_t kProjChunkBytes = int64_t(512) << 10;
    const bool chunked = !(keep && is_gru_orig) && plan.mode != Mode::units && Tn * step_bytes > kProjChunkBytes;
    const int64_t Tc = chunked ? std::max<int64_t>(1, std::min<int64_t>(Tn, kProjChunkBytes / step_bytes)) : Tn;
    Scratch<T> gxbuf;
    T* gx = ws_gates;
    if (!keep || chunked) {
        gxbuf.alloc(checked_mul(checked_mul(Tc, B), GH));
        gx = gxbuf.p;
    }
    Packed<T> w_ih_packed;
    std::vector<T> fbias;
    if (!chunked) {
        input_projection(kind, Tn * B, I, H, x, w_ih, b_ih, b_hh, gx, ldg);
    } else {
        w_ih_packed.ktot = I;
        w_ih_packed.npanels = (GH + NR - 1) / NR;
        w_ih_packed.alloc();
        if (b_ih) {
            fbias.resize(GH);
            folded_bias(kind, H, b_ih, b_hh, 0, GH, fbias.data());
        }
    }
    const T* bias_row = fbias.empty() ? nullptr : fbias.data();

    // Variable lengths: the recurrent state lives in rows sorted by decreasing
    // length (row r holds sequence perm[r]), so the sequences still running at
    // step t are the rows [0, nact[t]) and the step's product skips the
    // finished ones; x, out and the workspace stay in batch order. Without
    // lengths perm is the identity. (A row's result does not depend on which
    // rows share its product, so this changes no value.)
    const bool permuted = lengths != nullptr;
    std::vector<int64_t> perm(B), nact(permuted ? Tn : 0);
    for (int64_t b = 0; b < B; ++b) perm[b] = b;
    if (permuted) {
        std::stable_sort(perm.begin(), perm.end(),
                         [&](int64_t p, int64_t q) { return lengths[p] > lengths[q]; });
        for (int64_t b = 0; b < B; ++b)  // histogram of lengths, then suffix sums
            if (lengths[b] >= 1 && lengths[b] <= Tn) ++nact[lengths[b] - 1];
        for (int64_t t = Tn - 2; t >= 0; --t) nact[t] += nact[t + 1];
    }
    Scratch<T> hbuf(checked_mul(2 * B, H)), cbuf(lstm ? checked_mul(B, H) : 1), S(checked_mul(B, lds));
    Scratch<T> rhbuf(is_gru_orig ? checked_mul(B, H) : 1);
    Scratch<T> xg((chunked && permuted) ? checked_mul(B, I) : 1);  // x rows of a step, in state order
    for (int64_t r = 0; r < B; ++r) {
        std::memcpy(hbuf.p + r * H, h0 + perm[r] * H, H * sizeof(T));
        if (lstm) std::memcpy(cbuf.p + r * H, c0 + perm[r] * H, H * sizeof(T));
    }
    // rnn kinds keep no per-step states: the kept gates are the states after each step
    // (carried through padded steps), and ws_h keeps h0 only ([B, H]).
    if (keep && rnn) std::memcpy(ws_h, h0, B * H * sizeof(T));

    // Batch mode: slices of rows, each running the whole sequence, claimed by
    // whichever thread is free (parallel_for), so a thread that is late on a
    // busy machine never holds the others up.
    const int64_t batch_slices = plan.mode == Mode::batch ? (B >= 8 * plan.nthreads ? 2 * plan.nthreads : plan.nthreads) : 1;
    // No allocation (nor anything that may throw) inside the parallel region.
    std::vector<int> lists((size_t)std::max<int64_t>(plan.nthreads, batch_slices) * 3 * w_hh_packed.npanels);

    auto pack_task = [&](int64_t i, int64_t n) {
        pack_forward(w_hh, H, G, w_hh_packed, (int)i, (int)n);
        if (chunked) {
            int64_t p0, p1;
            split(w_ih_packed.npanels, (int)n, (int)i, &p0, &p1);
            pack_b_panels(w_ih, 1, I, I, GH, w_ih_packed, p0, p1);  // W_ih^T
        }
    };
    // The time loop for state rows [m0, m1) and hidden-unit panels [jp0, jp1).
    auto loop = [&](int64_t lid, int64_t m0, int64_t m1, int64_t jp0, int64_t jp1) {
        const int64_t u0 = jp0 * NR, u1 = std::min<int64_t>(H, jp1 * NR);
        // Panel lists: all gates (phase 1 of gru_orig: r, z; phase 2: n).
        int* pl_all = lists.data() + (size_t)lid * 3 * w_hh_packed.npanels;
        int* pl_rz = pl_all + w_hh_packed.npanels;
        int* pl_n = pl_rz + w_hh_packed.npanels;
        int n_all = 0, n_rz = 0, n_n = 0;
        for (int64_t jp = jp0; jp < jp1; ++jp)
            for (int g = 0; g < G; ++g) {
                pl_all[n_all++] = (int)(jp * G + g);
                if (g < 2)
                    pl_rz[n_rz++] = (int)(jp * G + g);
                else
                    pl_n[n_n++] = (int)(jp * G + g);
            }
        const GateSums<T> sl{S.p, G * NR, NR};
        for (int64_t st = 0; st < Tn; ++st) {
            const int64_t t = reverse ? Tn - 1 - st : st;
            const T* hp = hbuf.p + (st & 1) * B * H;
            T* hn = hbuf.p + ((st + 1) & 1) * B * H;
            // the chunk buffer is in state order, the full projection in batch order
            T* gxt = chunked ? gx + (st % Tc) * B * GH : gx + t * B * ldg;
            const int64_t ldx = chunked ? GH : ldg;  // row stride of gxt
            T* gkt = keep ? ws_gates + t * B * ldg : nullptr;
            T* outt = out + t * out_t_stride;  // row b at outt + b * out_b_stride
            if (chunked && st % Tc == 0) {
                const int64_t ns = std::min<int64_t>(Tc, Tn - st);
                if (!permuted && !reverse && m0 == 0 && m1 == B) {  // the chunk's rows are contiguous
                    gemm_block<T>(0, ns * B, 0, w_ih_packed.npanels, GH, I, x + t * B * I, I, 1, nullptr,
                                  0, w_ih_packed, false, bias_row, gx, GH);
                } else {
                    for (int64_t s2 = 0; s2 < ns; ++s2) {
                        const int64_t t2 = reverse ? t - s2 : t + s2;
                        const T* xs = x + t2 * B * I;
                        if (permuted) {
                            for (int64_t r = m0; r < m1; ++r)
                                std::memcpy(xg.p + r * I, xs + perm[r] * I, I * sizeof(T));
                            xs = xg.p;
                        }
                        gemm_block<T>(m0, m1, 0, w_ih_packed.npanels, GH, I, xs, I, 1, nullptr, 0, w_ih_packed,
                                      false, bias_row, gx + s2 * B * GH, GH);
                    }
                }
            }
            // rows [m0, active_end) still run at step t
            const int64_t active_end = permuted ? std::min(m1, std::max(m0, nact[t])) : m1;
            if (active_end > m0) {
                if (!is_gru_orig)
                    panels_gemm<T>(m0, active_end, H, hp, H, w_hh_packed, 0, pl_all, n_all, S.p, lds);
                else
                    panels_gemm<T>(m0, active_end, H, hp, H, w_hh_packed, 0, pl_rz, n_rz, S.p, lds);
            }
            for (int64_t r = m0; r < m1; ++r) {
                const int64_t b = perm[r];
                T* g = gxt + (chunked ? r : b) * ldx;
                T* gk = keep ? gkt + b * ldg : nullptr;
                const GateSums<T> sb{sl.s + r * lds, sl.sA, sl.sB};
                const T* hpb = hp + r * H;
                T* hnb = hn + r * H;
                T* cb = cbuf.p + r * H;
                if (keep && !rnn)
                    std::memcpy(ws_h + (t * B + b) * H + u0, hpb + u0, (u1 - u0) * sizeof(T));
                if (r >= active_end) {  // finished: the state is carried, the output is zero
                    std::memcpy(hnb + u0, hpb + u0, (u1 - u0) * sizeof(T));
                    if (keep && rnn) std::memcpy(gk + u0, hpb + u0, (u1 - u0) * sizeof(T));
                    std::memset(outt + b * out_b_stride + u0, 0, (u1 - u0) * sizeof(T));
                    if (keep && lstm)
                        std::memcpy(ws_c + (t * B + b) * H + u0, cb + u0, (u1 - u0) * sizeof(T));
                    if (keep && is_gru_orig) std::memset(gk + 3 * H + u0, 0, (u1 - u0) * sizeof(T));
                    continue;
                }
                if (rnn)
                    rnn_fwd_row<T>(relu, u0, u1, g, gk, sb, hnb, outt + b * out_b_stride);
                else if (lstm)
                    lstm_fwd_row<T>(H, u0, u1, g, gk, sb, cb, hnb, outt + b * out_b_stride,
                                    keep ? ws_c + (t * B + b) * H : nullptr);
                else if (is_gru)
                    gru_fwd_row<T>(H, u0, u1, g, gk, sb, bhn, hpb, hnb, outt + b * out_b_stride);
                else {
                    gruo_fwd_row1<T>(H, u0, u1, g, sb, hpb, rhbuf.p + r * H);
                    if (keep)  // backward reads r*h from the workspace
                        std::memcpy(gk + 3 * H + u0, rhbuf.p + r * H + u0, (u1 - u0) * sizeof(T));
                }
            }
            if (is_gru_orig) {
                barrier(plan);
                if (active_end > m0) panels_gemm<T>(m0, active_end, H, rhbuf.p, H, w_hh_packed, 0, pl_n, n_n, S.p, lds);
                for (int64_t r = m0; r < active_end; ++r) {
                    const int64_t b = perm[r];
                    const GateSums<T> sb{sl.s + r * lds, sl.sA, sl.sB};
                    gruo_fwd_row2<T>(H, u0, u1, gxt + (chunked ? r : b) * ldx, keep, sb, hp + r * H,
                                     hn + r * H, outt + b * out_b_stride);
                }
            }
            barrier(plan);
        }
    };
    if (plan.mode == Mode::units) {
        parallel_team(plan.nthreads, [&](int id) {
            pack_task(id, plan.nthreads);
            barrier(plan);
            int64_t jp0, jp1;
            split(unit_panels, plan.nthreads, id, &jp0, &jp1);
            loop(id, 0, B, jp0, jp1);
        });
    } else if (plan.mode == Mode::batch) {
        parallel_for(2 * plan.nthreads, [&](int64_t i) { pack_task(i, 2 * plan.nthreads); });
        parallel_for(batch_slices, [&](int64_t i) {
            int64_t m0, m1;
            split(B, (int)batch_slices, (int)i, &m0, &m1);
            loop(i, m0, m1, 0, unit_panels);
        });
    } else {
        pack_task(0, 1);
        loop(0, 0, B, 0, unit_panels);
    }
    const T* hfin = hbuf.p + (Tn & 1) * B * H;
    for (int64_t r = 0; r < B; ++r) {
        std::memcpy(h_n + perm[r] * H, hfin + r * H, H * sizeof(T));
        if (lstm) std::memcpy(c_n + perm[r] * H, cbuf.p + r * H, H * sizeof(T));
    }
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
