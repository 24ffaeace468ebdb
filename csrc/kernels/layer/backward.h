// The layer backward driver (fastrnn/rnn.h, layer_backward), for any cell
// policy (cells/common.h).
//
// Steps run in reverse processing order in chunks. Per step: the policy's
// backward row gives the gates' pre-activation gradients dG and the
// gradient carried into h, then the recurrent product dG · W_hh (W_hh packed
// into panels of its columns) feeds the step processed next. After each
// chunk its dG rows go through the large products (dx, dW_ih, dW_hh) and the
// bias column sums, so dG is kept for one chunk only. With the LSTM's
// projection (w_hr) a step first turns the state's gradient dh [P] into the
// units' dm = dh · W_hr [H] for the rows, and keeps dh for dW_hr = Σ dh^T m.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>

#include "cells/common.h"
#include "cells/lstm.h"  // add_peephole_row_grads, lstm_output_row
#include "common/scratch.h"
#include "fastrnn/rnn.h"
#include "gemm/gemm.h"
#include "gemm/recurrent.h"
#include "gemm/small.h"
#include "parallel/plan.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// The arguments of layer_backward (shapes in fastrnn/rnn.h).
template <class T>
struct LayerBackwardArgs {
    int64_t steps, B, I, H, P;  // P: the state's units (w_hr's rows, else H)
    const T *x, *c0, *w_ih, *w_hh, *peep, *hmask, *w_hr;
    const int64_t* lengths;
    bool reverse;
    const T *ws_gates, *ws_h, *ws_c, *grad_out;
    int64_t grad_out_t_stride, grad_out_b_stride;  // row (t, b) of grad_out at these strides
    const T *grad_h_n, *grad_c_n;
    T *dx, *dh0, *dc0, *dw_ih, *dw_hh, *db_ih, *db_hh, *dpeep, *dw_hr;
    bool add_dw;
};

// dG is kept for chunks of steps of about this many bytes, and at least
// kBwdChunkRows rows of T*B: shorter chunks re-read and re-write dW too
// often on wide layers. The chunk depends on the shapes only, never on the
// thread count (the products' sums must not change with it).
constexpr int64_t kBwdChunkBytes = int64_t(2) << 20;
constexpr int64_t kBwdChunkRows = 1024;

template <class Cell, class T>
class LayerBackward {
public:
    explicit LayerBackward(const LayerBackwardArgs<T>& a) : a_(a) { setup(); }
    void run();

private:
    static constexpr int NR = 2 * V<T>::W;
    static constexpr int G = num_gates(Cell::kind);
    // Gates whose dG feeds dh = dG · W_hh directly: the n block of a GRU
    // goes through dG_n (gru) or through the reset phase (gru_orig).
    static constexpr int direct_gates = (Cell::separate_n_grad || Cell::n_product_after_reset) ? 2 : G;

    void setup();
    void pack(int64_t task, int64_t ntasks);
    void project_rows(int64_t m0, int64_t m1, int64_t q0, int64_t q1, int64_t jp0, int64_t jp1, int64_t st,
                      int64_t t0);
    void add_projection_grads(int64_t s0, int64_t s1, int64_t t0);
    void step_rows(int64_t m0, int64_t m1, int64_t u0, int64_t u1, int64_t st, int64_t t0);
    void time_loop(int64_t m0, int64_t m1, int64_t jp0, int64_t jp1, int64_t sp0, int64_t sp1, int64_t s0,
                   int64_t s1, int64_t t0);
    void finish(int64_t m0, int64_t m1, int64_t sp0, int64_t sp1);
    void chunk_loop(int64_t s0, int64_t s1, int64_t t0, bool first, bool last);
    void chunk_products(int64_t s0, int64_t s1, int64_t t0);
    void add_colsum(int64_t R, const T* A, int64_t lda, int64_t ncols, T* out);
    void add_peephole_grads(int64_t s0, int64_t s1, int64_t t0);
    // The step processed before step t (t - 1, or t + 1 in reverse), or -1 for the first one.
    int64_t step_before(int64_t t) const {
        const int64_t tp = a_.reverse ? t + 1 : t - 1;
        return tp < 0 || tp >= Tn_ ? -1 : tp;
    }
    // Row b of the cell state entering step t: c0's, or the one kept after the step before.
    const T* c_before(int64_t t, int64_t b) const {
        const int64_t tp = step_before(t);
        return tp < 0 ? a_.c0 + b * H_ : a_.ws_c + (tp * B_ + b) * H_;
    }

    const LayerBackwardArgs<T>& a_;
    int64_t Tn_ = 0, B_ = 0, H_ = 0, P_ = 0, GH_ = 0, ldg_ = 0;
    int64_t chunk_steps_ = 0;
    int64_t unit_panels_ = 0;
    int64_t state_panels_ = 0;  // panels of the state's P units (the product dG · W_hh's columns)
    int64_t lds_ = 0;       // row stride of S_ and drh_ (padded)
    Scratch<T> dG_, dG_n_;  // gru: dG_n [chunk_steps_*B, H], the recurrent product's n block
    Packed<T> w_hh_packed_;
    Scratch<T> dh_carry_, S_, drh_, dc_;
    Scratch<T> hm_;  // recurrent dropout: the chunk's states entering each step, times hmask [rows, P]
    // The projection: W_hr [P, H] in panels of its columns, the chunk's state
    // gradients dh [rows, P], a step's dm = dh · W_hr [B, ldm_] and the
    // chunk's m = o*tanh(c') [rows, H] for dW_hr.
    Packed<T> w_hr_packed_;
    Scratch<T> dhp_, dm_, m_;
    int64_t ldm_ = 0;
    Plan plan_;
    int64_t batch_slices_ = 1;
    std::vector<int> panel_ids_;  // 0 .. max(unit_panels_, state_panels_)-1: a part's panels are a slice
    std::vector<T> colsum_;
    bool dw_started_ = false;  // set before the first addition into dw_ih / dw_hh
};

template <class Cell, class T>
void LayerBackward<Cell, T>::setup() {
    const int64_t B = B_ = a_.B, H = H_ = a_.H, P = P_ = a_.P;
    Tn_ = a_.steps;
    GH_ = G * H;
    ldg_ = kept_gates(Cell::kind) * H;
    const int64_t step_bytes = std::max<int64_t>(1, B * (GH_ + (Cell::separate_n_grad ? H : 0)) * (int64_t)sizeof(T));
    chunk_steps_ = std::max<int64_t>(
        1, std::min<int64_t>(Tn_, std::max<int64_t>(kBwdChunkBytes / step_bytes, (kBwdChunkRows + B - 1) / B)));
    dG_.alloc(checked_mul(checked_mul(chunk_steps_, B), GH_));
    dG_n_.alloc(Cell::separate_n_grad ? checked_mul(checked_mul(chunk_steps_, B), H) : 1);

    unit_panels_ = (H + NR - 1) / NR;
    state_panels_ = (P + NR - 1) / NR;
    lds_ = state_panels_ * NR + V<T>::W;
    w_hh_packed_.ktot = GH_;
    w_hh_packed_.npanels = state_panels_;
    w_hh_packed_.alloc();
    if (a_.w_hr) {
        w_hr_packed_.ktot = P;
        w_hr_packed_.npanels = unit_panels_;
        w_hr_packed_.alloc();
        ldm_ = unit_panels_ * NR + V<T>::W;
        dhp_.alloc(checked_mul(checked_mul(chunk_steps_, B), P));
        dm_.alloc(checked_mul(B, ldm_));
        m_.alloc(checked_mul(checked_mul(chunk_steps_, B), H));
    }

    dh_carry_.alloc(checked_mul(B, P));
    S_.alloc(checked_mul(B, lds_));
    drh_.alloc(Cell::n_product_after_reset ? checked_mul(B, lds_) : 1);
    dc_.alloc(Cell::has_cell_state ? checked_mul(B, H) : 1);
    hm_.alloc(a_.hmask ? checked_mul(checked_mul(chunk_steps_, B), P) : 1);
    if (a_.grad_h_n)
        std::memcpy(dh_carry_.p, a_.grad_h_n, B * P * sizeof(T));
    else
        dh_carry_.zero(B * P);
    S_.zero(B * lds_);
    if (Cell::has_cell_state) {
        if (a_.grad_c_n)
            std::memcpy(dc_.p, a_.grad_c_n, B * H * sizeof(T));
        else
            dc_.zero(B * H);
    }
    plan_ = make_plan(B, unit_panels_, B * GH_ * P, Tn_, state_panels_ * GH_ * NR * (int64_t)sizeof(T));
    batch_slices_ = plan_.mode == Mode::batch ? (B >= 8 * plan_.nthreads ? 2 * plan_.nthreads : plan_.nthreads) : 1;
    panel_ids_ = panel_ids(std::max(unit_panels_, state_panels_));
    colsum_.resize(a_.db_ih ? GH_ : 1);
}

// Task `task` of `ntasks` of packing W_hh (and the projection's W_hr).
template <class Cell, class T>
void LayerBackward<Cell, T>::pack(int64_t task, int64_t ntasks) {
    pack_backward(a_.w_hh, GH_, P_, w_hh_packed_, (int)task, (int)ntasks);
    if (a_.w_hr) pack_backward(a_.w_hr, P_, H_, w_hr_packed_, (int)task, (int)ntasks);
}

// The projection's part of step st for rows [m0, m1): the state's gradient
// dh = carry + S + grad_out for the part's state units [q0, q1), kept in the
// chunk's dh rows (zero for a padded row, whose dh is carried instead), then
// the units' dm = dh · W_hr for its unit panels [jp0, jp1), which reads every
// state unit's dh: in units mode the team meets between the two.
template <class Cell, class T>
void LayerBackward<Cell, T>::project_rows(int64_t m0, int64_t m1, int64_t q0, int64_t q1, int64_t jp0,
                                          int64_t jp1, int64_t st, int64_t t0) {
    const int64_t B = B_, P = P_;
    const int64_t t = a_.reverse ? Tn_ - 1 - st : st;
    const T* go = a_.grad_out ? a_.grad_out + t * a_.grad_out_t_stride : nullptr;
    T* dht = dhp_.p + (t - t0) * B * P;
    for (int64_t b = m0; b < m1; ++b) {
        const T* sums = S_.p + b * lds_;
        T* carry = dh_carry_.p + b * P;
        T* dh = dht + b * P;
        if (a_.lengths && t >= a_.lengths[b]) {
            pad_bwd_row<T>(q0, q1, sums, carry);
            std::memset(dh + q0, 0, (q1 - q0) * sizeof(T));
            continue;
        }
        const T* g = go ? go + b * a_.grad_out_b_stride : nullptr;
        for (int64_t j = q0; j < q1; ++j) {
            dh[j] = carry[j] + sums[j] + (g ? g[j] : T(0));
            carry[j] = 0;
        }
    }
    barrier(plan_);
    panels_gemm<T>(m0, m1, P, dht, P, w_hr_packed_, 0, panel_ids_.data() + jp0, (int)(jp1 - jp0), dm_.p,
                   ldm_);
}

// The pointwise rows of step st for rows [m0, m1), units [u0, u1); the
// chunk's dG rows start at time t0.
template <class Cell, class T>
void LayerBackward<Cell, T>::step_rows(int64_t m0, int64_t m1, int64_t u0, int64_t u1, int64_t st, int64_t t0) {
    const int64_t B = B_, H = H_;
    const int64_t t = a_.reverse ? Tn_ - 1 - st : st;
    const T* keptt = a_.ws_gates + t * B * ldg_;
    const T* go = a_.grad_out ? a_.grad_out + t * a_.grad_out_t_stride : nullptr;
    T* dgt = dG_.p + (t - t0) * B * GH_;
    T* dgnt = dG_n_.p + (t - t0) * B * H;
    const bool proj = a_.w_hr != nullptr;  // project_rows made the rows' dm (and carried the padded ones)
    for (int64_t b = m0; b < m1; ++b) {
        const T* sums = proj ? nullptr : S_.p + b * lds_;
        T* carry = proj ? dm_.p + b * ldm_ : dh_carry_.p + b * H;
        if (a_.lengths && t >= a_.lengths[b]) {  // padded: dh is carried, no gate gradient
            if (!proj) pad_bwd_row<T>(u0, u1, sums, carry);
            for (int g = 0; g < G; ++g) std::memset(dgt + b * GH_ + g * H + u0, 0, (u1 - u0) * sizeof(T));
            if (Cell::separate_n_grad) std::memset(dgnt + b * H + u0, 0, (u1 - u0) * sizeof(T));
            continue;
        }
        BackwardRow<T> row{};
        row.kept = keptt + b * ldg_;
        if (!Cell::kept_gates_are_state) row.h_prev = a_.ws_h + (t * B + b) * P_;
        if (Cell::has_cell_state) {
            row.c_prev = c_before(t, b);
            row.c_new = a_.ws_c + (t * B + b) * H;
            row.dc = dc_.p + b * H;
            if (Cell::has_peepholes) row.peep = a_.peep;
        }
        row.sums = sums;
        row.grad_out = go && !proj ? go + b * a_.grad_out_b_stride : nullptr;
        row.dh_carry = carry;
        row.dg = dgt + b * GH_;
        if (Cell::separate_n_grad) row.dg_n = dgnt + b * H;
        Cell::backward(row, H, u0, u1);
    }
}

// The time loop (backwards) for rows [m0, m1), unit panels [jp0, jp1) and
// the state's panels [sp0, sp1) (the columns of its product dG · W_hh; the
// same as the unit panels without a projection), steps st in [s0, s1)
// (processed st = s1-1 down to s0); the chunk's steps have t in
// [t0, t0 + s1 - s0), stored at dG row (t - t0) * B.
template <class Cell, class T>
void LayerBackward<Cell, T>::time_loop(int64_t m0, int64_t m1, int64_t jp0, int64_t jp1, int64_t sp0, int64_t sp1,
                                       int64_t s0, int64_t s1, int64_t t0) {
    const int64_t B = B_, H = H_, P = P_;
    const int64_t u0 = jp0 * NR, u1 = std::min<int64_t>(H, jp1 * NR);
    const int64_t q0 = std::min<int64_t>(P, sp0 * NR), q1 = std::min<int64_t>(P, sp1 * NR);
    const int* panels = panel_ids_.data() + sp0;  // the product's panels [sp0, sp1)
    const int np = (int)(sp1 - sp0);
    for (int64_t st = s1 - 1; st >= s0; --st) {
        const int64_t t = a_.reverse ? Tn_ - 1 - st : st;
        T* dgt = dG_.p + (t - t0) * B * GH_;
        if (a_.w_hr) project_rows(m0, m1, q0, q1, jp0, jp1, st, t0);
        step_rows(m0, m1, u0, u1, st, t0);
        if constexpr (Cell::n_product_after_reset) {
            barrier(plan_);
            // drh = dan · W_hn, then the reset gate's rows
            panels_gemm<T>(m0, m1, H, dgt + 2 * H, GH_, w_hh_packed_, 2 * H, panels, np, drh_.p, lds_);
            for (int64_t b = m0; b < m1; ++b) {
                if (a_.lengths && t >= a_.lengths[b]) continue;
                BackwardRow<T> row{};
                row.kept = a_.ws_gates + t * B * ldg_ + b * ldg_;
                row.h_prev = a_.ws_h + (t * B + b) * H;
                row.drh = drh_.p + b * lds_;
                row.hmask = a_.hmask ? a_.hmask + b * H : nullptr;
                row.dh_carry = dh_carry_.p + b * H;
                row.dg = dgt + b * GH_;
                Cell::backward_after_reset(row, H, u0, u1);
            }
        }
        barrier(plan_);
        // S = dG_t · W_hh over the direct gates; gru adds its n block from dG_n
        // (the same sum in the same k order)
        panels_gemm<T>(m0, m1, direct_gates * H, dgt, GH_, w_hh_packed_, 0, panels, np, S_.p, lds_);
        if (Cell::separate_n_grad)
            panels_gemm<T>(m0, m1, H, dG_n_.p + (t - t0) * B * H, H, w_hh_packed_, 2 * H, panels, np, S_.p,
                           lds_, true);
        if (a_.hmask)  // S is the gradient of h * hmask: that of h is S * hmask
            for (int64_t b = m0; b < m1; ++b)
                for (int64_t j = q0; j < q1; ++j) S_.p[b * lds_ + j] *= a_.hmask[b * P + j];
    }
}

// dh0 = dh_carry + S (own rows / state panels, as time_loop's product).
template <class Cell, class T>
void LayerBackward<Cell, T>::finish(int64_t m0, int64_t m1, int64_t sp0, int64_t sp1) {
    const int64_t P = P_;
    const int64_t q0 = std::min<int64_t>(P, sp0 * NR), q1 = std::min<int64_t>(P, sp1 * NR);
    for (int64_t b = m0; b < m1; ++b)
        for (int64_t j = q0; j < q1; ++j) a_.dh0[b * P + j] = dh_carry_.p[b * P + j] + S_.p[b * lds_ + j];
}

// The time loop of one chunk, shared among the threads as planned.
template <class Cell, class T>
void LayerBackward<Cell, T>::chunk_loop(int64_t s0, int64_t s1, int64_t t0, bool first, bool last) {
    const int64_t B = B_;
    if (plan_.mode == Mode::units) {
        parallel_team(plan_.nthreads, [&](int id) {
            if (first) {
                pack(id, plan_.nthreads);
                barrier(plan_);
            }
            int64_t jp0, jp1, sp0, sp1;
            split(unit_panels_, plan_.nthreads, id, &jp0, &jp1);
            split(state_panels_, plan_.nthreads, id, &sp0, &sp1);
            time_loop(0, B, jp0, jp1, sp0, sp1, s0, s1, t0);
            if (last) finish(0, B, sp0, sp1);
        });
    } else if (plan_.mode == Mode::batch) {
        parallel_for(batch_slices_, [&](int64_t i) {
            int64_t m0, m1;
            split(B, (int)batch_slices_, (int)i, &m0, &m1);
            time_loop(m0, m1, 0, unit_panels_, 0, state_panels_, s0, s1, t0);
            if (last) finish(m0, m1, 0, state_panels_);
        });
    } else {
        time_loop(0, B, 0, unit_panels_, 0, state_panels_, s0, s1, t0);
        if (last) finish(0, B, 0, state_panels_);
    }
}

template <class Cell, class T>
void LayerBackward<Cell, T>::add_colsum(int64_t R, const T* A, int64_t lda, int64_t ncols, T* out) {
    colsum<T>(R, ncols, A, lda, colsum_.data());
    for (int64_t n = 0; n < ncols; ++n) out[n] += colsum_[n];
}

// The peepholes' gradient over the chunk's steps: dp_i += dG_i * c, dp_f +=
// dG_f * c, dp_o += dG_o * c' (c the cell state entering step t, c' the
// one it made). A padded step's dG is zero. Tasks own blocks of units and
// each unit sums its rows in one order, so the result does not depend on
// the thread count.
template <class Cell, class T>
void LayerBackward<Cell, T>::add_peephole_grads(int64_t s0, int64_t s1, int64_t t0) {
    const int64_t B = B_, H = H_, GH = GH_;
    T* dp = a_.dpeep;
    auto units = [&](int64_t j0, int64_t j1) {
        for (int64_t t = t0; t < t0 + (s1 - s0); ++t)
            for (int64_t b = 0; b < B; ++b)
                add_peephole_row_grads<T>(H, j0, j1, dG_.p + ((t - t0) * B + b) * GH, c_before(t, b),
                                          a_.ws_c + (t * B + b) * H, dp);
    };
    constexpr int64_t kUnitBlock = 64;  // units per task: tasks share at most a cache line of dp at their edges
    const int64_t blocks = (H + kUnitBlock - 1) / kUnitBlock;
    if (blocks > 1 && (s1 - s0) * B * H >= (int64_t(1) << 16))
        parallel_for(blocks, [&](int64_t i) { units(i * kUnitBlock, std::min(H, (i + 1) * kUnitBlock)); });
    else
        units(0, H);
}

// The projection's gradient over the chunk's steps: dW_hr += dh^T m with m =
// o*tanh(c') (the forward row's output, from the kept o and c'). A padded
// row's dh is zero and its m too (the forward does not write its kept gates).
template <class Cell, class T>
void LayerBackward<Cell, T>::add_projection_grads(int64_t s0, int64_t s1, int64_t t0) {
    const int64_t B = B_, H = H_, R = (s1 - s0) * B;
    for (int64_t r = 0; r < R; ++r) {
        if (a_.lengths && t0 + r / B >= a_.lengths[r % B])
            std::memset(m_.p + r * H, 0, H * sizeof(T));
        else
            lstm_output_row<T>(H, a_.ws_gates + t0 * B * ldg_ + r * ldg_ + 3 * H, a_.ws_c + (t0 * B + r) * H,
                               m_.p + r * H);
    }
    large_product<T>(true, false, P_, H, R, dhp_.p, P_, m_.p, H, true, a_.dw_hr, H);
}

// The large products over the chunk's rows (t in [t0, t0 + R / B)).
template <class Cell, class T>
void LayerBackward<Cell, T>::chunk_products(int64_t s0, int64_t s1, int64_t t0) {
    const int64_t B = B_, I = a_.I, H = H_, P = P_, GH = GH_, ldg = ldg_;
    const int64_t R = (s1 - s0) * B;
    const T* dG = dG_.p;
    large_product<T>(false, false, R, I, GH, dG, GH, a_.w_ih, I, false, a_.dx + t0 * B * I, I);
    dw_started_ = true;
    large_product<T>(true, false, GH, I, R, dG, GH, a_.x + t0 * B * I, I, true, a_.dw_ih, I);
    if (a_.hmask) {
        // Recurrent dropout: W_hh saw the state entering each step times hmask.
        const int64_t n = s1 - s0;
        for (int64_t t = t0; t < t0 + n; ++t) {
            const int64_t tp = step_before(t);
            for (int64_t b = 0; b < B; ++b) {
                const T* src = !Cell::kept_gates_are_state ? a_.ws_h + (t * B + b) * P
                               : tp < 0 ? a_.ws_h + b * H
                                        : a_.ws_gates + (tp * B + b) * ldg;
                T* dst = hm_.p + ((t - t0) * B + b) * P;
                for (int64_t j = 0; j < P; ++j) dst[j] = src[j] * a_.hmask[b * P + j];
            }
        }
        large_product<T>(true, false, direct_gates * H, P, R, dG, GH, hm_.p, P, true, a_.dw_hh, P);
        if constexpr (Cell::n_product_after_reset)  // W_hn sees r*h*hmask (kept block 3)
            large_product<T>(true, false, H, H, R, dG + 2 * H, GH, a_.ws_gates + t0 * B * ldg + 3 * H, ldg,
                             true, a_.dw_hh + 2 * H * H, H);
        if constexpr (Cell::separate_n_grad)
            large_product<T>(true, false, H, H, R, dG_n_.p, H, hm_.p, H, true, a_.dw_hh + 2 * H * H, H);
    } else if constexpr (Cell::kept_gates_are_state) {
        // The state before step t is the kept state of the step processed
        // before it (t - 1, or t + 1 in reverse); h0 (ws_h) for the first one.
        const bool reverse = a_.reverse;
        const int64_t n = s1 - s0;
        const bool has_first = reverse ? t0 + n == Tn_ : t0 == 0;
        const int64_t tf = reverse ? Tn_ - 1 : 0;  // the first step processed
        if (has_first)
            large_product<T>(true, false, GH, H, B, dG + (tf - t0) * B * GH, GH, a_.ws_h, H, true, a_.dw_hh, H);
        const int64_t r0 = (has_first && !reverse) ? 1 : 0;  // chunk steps [r0, r1) from the gates
        const int64_t r1 = (has_first && reverse) ? n - 1 : n;
        if (r1 > r0) {
            const T* prev = a_.ws_gates + (t0 + r0 + (reverse ? 1 : -1)) * B * ldg;
            large_product<T>(true, false, GH, H, (r1 - r0) * B, dG + r0 * B * GH, GH, prev, ldg, true,
                             a_.dw_hh, H);
        }
    } else {
        const T* hp = a_.ws_h + t0 * B * P;
        large_product<T>(true, false, direct_gates * H, P, R, dG, GH, hp, P, true, a_.dw_hh, P);
        if constexpr (Cell::n_product_after_reset)  // W_hn sees r*h (kept block 3)
            large_product<T>(true, false, H, H, R, dG + 2 * H, GH, a_.ws_gates + t0 * B * ldg + 3 * H, ldg,
                             true, a_.dw_hh + 2 * H * H, H);
        if constexpr (Cell::separate_n_grad)
            large_product<T>(true, false, H, H, R, dG_n_.p, H, hp, H, true, a_.dw_hh + 2 * H * H, H);
    }
    if constexpr (Cell::has_peepholes) add_peephole_grads(s0, s1, t0);
    if constexpr (Cell::has_cell_state)
        if (a_.w_hr) add_projection_grads(s0, s1, t0);
    if (a_.db_ih) {
        add_colsum(R, dG, GH, GH, a_.db_ih);
        if (Cell::separate_n_grad) add_colsum(R, dG_n_.p, H, H, a_.db_hh + 2 * H);  // r, z: db_ih's, below
    }
}

template <class Cell, class T>
void LayerBackward<Cell, T>::run() {
    const int64_t B = B_, I = a_.I, H = H_, P = P_, GH = GH_;
    // The weight and bias gradients accumulate over the chunks (and, with
    // add_dw, onto what dw_ih and dw_hh hold: the caller's running sums).
    if (!a_.add_dw) {
        std::memset(a_.dw_ih, 0, GH * I * sizeof(T));
        std::memset(a_.dw_hh, 0, GH * P * sizeof(T));
    }
    if (a_.db_ih) {
        std::memset(a_.db_ih, 0, GH * sizeof(T));
        std::memset(a_.db_hh, 0, GH * sizeof(T));
    }
    if (Cell::has_peepholes) std::memset(a_.dpeep, 0, kPeepholes * H * sizeof(T));
    if (a_.w_hr) std::memset(a_.dw_hr, 0, P_ * H * sizeof(T));
    if (plan_.mode == Mode::batch)
        parallel_for(2 * plan_.nthreads,
                     [&](int64_t i) { pack(i, 2 * plan_.nthreads); });
    else if (plan_.mode == Mode::serial)
        pack(0, 1);
    // (units mode packs inside its team, at the first chunk)
    // An error (a scratch buffer, a thread that cannot start) after the first
    // addition into the caller's dw_ih / dw_hh (add_dw) becomes
    // PartialAccumulation (fastrnn/rnn.h): they then hold part of the sum.
    try {
        for (int64_t s1 = Tn_; s1 > 0; s1 -= chunk_steps_) {
            const int64_t s0 = std::max<int64_t>(0, s1 - chunk_steps_);
            const int64_t t0 = a_.reverse ? Tn_ - s1 : s0;  // the chunk's first time index
            chunk_loop(s0, s1, t0, s1 == Tn_, s0 == 0);
            chunk_products(s0, s1, t0);
        }
    } catch (const std::exception& e) {
        if (a_.add_dw && dw_started_) throw PartialAccumulation(e.what());
        throw;
    } catch (...) {
        if (a_.add_dw && dw_started_) throw PartialAccumulation("unknown error");
        throw;
    }
    if (Cell::has_cell_state) std::memcpy(a_.dc0, dc_.p, B * H * sizeof(T));
    // db_hh equals db_ih but in gru's n block (accumulated from dG_n above)
    if (a_.db_ih) std::memcpy(a_.db_hh, a_.db_ih, (Cell::separate_n_grad ? 2 * H : GH) * sizeof(T));
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
