// The layer forward driver: one layer, one direction, the whole sequence
// (fastrnn/rnn.h, layer_forward), for any cell policy (cells/common.h).
//
// Per step: the recurrent product h · W_hh^T into S (W_hh packed once per
// call into panels, gemm/recurrent.h), then one fused pointwise pass per batch
// row (the policy's forward row) that reads the input projection gx and S,
// writes the new state, the output and, in training, the kept gates.
// With the LSTM's projection (w_hr) the pass writes the units' output m
// instead, and a second product, m · W_hr^T, makes the state and the output.
// The threads share the loop as parallel/plan.h decides.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cells/common.h"
#include "common/scratch.h"
#include "gemm/recurrent.h"
#include "gemm/tile.h"
#include "layer/projection.h"
#include "parallel/plan.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// The arguments of layer_forward (shapes in fastrnn/rnn.h).
template <class T>
struct LayerForwardArgs {
    int64_t steps, B, I, H, P;  // P: the state's units (w_hr's rows, else H)
    const T *x, *h0, *c0, *w_ih, *w_hh, *b_ih, *b_hh, *peep, *hmask, *w_hr;
    const int64_t* lengths;
    bool reverse;
    T* out;
    int64_t out_t_stride, out_b_stride;  // row (t, b) of out at out + t * out_t_stride + b * out_b_stride
    T *h_n, *c_n, *ws_gates, *ws_h, *ws_c;
};

// The input projection is computed in chunks of about this many bytes, each
// just before its steps run, when the whole projection would be larger: the
// chunk stays in L2 next to x and out (a projection of a few MB in one buffer
// runs some layers 2x slower, depending on where its pages fall).
constexpr int64_t kProjChunkBytes = int64_t(512) << 10;
// Units mode computes the whole projection up front; in inference that is
// extra memory, so a projection above this size keeps one thread and chunks.
constexpr int64_t kUnitsMaxProjectionBytes = int64_t(64) << 20;

template <class Cell, class T>
class LayerForward {
public:
    explicit LayerForward(const LayerForwardArgs<T>& a) : a_(a) { setup(); }
    void run();

private:
    static constexpr int NR = 2 * V<T>::W;
    static constexpr int G = num_gates(Cell::kind);

    // The share of one thread (or task): state rows [m0, m1), unit panels
    // [jp0, jp1) (units [u0, u1)), the units [q0, q1) of the state h it
    // writes (its hidden units; with a projection, the projection's panels
    // [qp0, qp1)), and the panel lists of its products.
    struct Part {
        int64_t m0, m1, u0, u1, q0, q1, qp0, qp1;
        const int* product_panels;  // the step's product (gru_orig: r and z only; not Cell::unread_gate)
        int n_product;
        const int* reset_panels;  // gru_orig: the n product after the reset phase
        int n_reset;
    };

    void setup();
    void setup_projection();
    void setup_state();
    void pack(int64_t task, int64_t ntasks);
    void project_chunk(const Part& p, int64_t st, int64_t t);
    void step_rows(const Part& p, int64_t st, int64_t t, int64_t active_end);
    void step_after_reset(const Part& p, int64_t st, int64_t t, int64_t active_end);
    void project_rows(const Part& p, int64_t st, int64_t t, int64_t active_end);
    void mask_rows(int64_t m0, int64_t m1, int64_t q0, int64_t q1, int64_t buf);
    void time_loop(int64_t list_id, int64_t m0, int64_t m1, int64_t jp0, int64_t jp1, int64_t qp0, int64_t qp1);

    const LayerForwardArgs<T>& a_;
    int64_t Tn_ = 0, B_ = 0, H_ = 0, P_ = 0, GH_ = 0;
    bool keep_ = false;
    int64_t ldg_ = 0;             // row stride of ws_gates (kept blocks * H), or GH in inference
    const T* b_hn_ = nullptr;     // gru: the n gate's recurrent bias
    int64_t unit_panels_ = 0;     // panels of NR hidden units
    int64_t lds_ = 0;             // row stride of S
    Packed<T> w_hh_packed_;
    Plan plan_;
    bool chunked_ = false;        // the projection in chunks of chunk_steps_ steps
    int64_t chunk_steps_ = 0;
    Scratch<T> gx_buf_;
    T* gx_ = nullptr;             // the projection (ws_gates in training unless chunked)
    Packed<T> w_ih_packed_;       // chunked: W_ih^T in panels
    std::vector<T> folded_bias_;
    bool permuted_ = false;
    std::vector<int64_t> perm_;         // state row r holds sequence perm_[r]
    std::vector<int64_t> active_rows_;  // rows [0, active_rows_[t]) still run at step t
    Scratch<T> h_buf_, c_buf_, S_, rh_buf_, x_rows_;
    Scratch<T> hm_buf_;  // recurrent dropout: h * hmask, the product's input (double-buffered as h_buf_)
    // The projection: the units' output m [B, H], W_hr^T in panels of NR state
    // units (proj_panels_ lists them all; a part's are a slice), and m · W_hr^T
    // [B, ldp_] (panel-padded rows).
    Scratch<T> m_buf_, hp_;
    Packed<T> w_hr_packed_;
    std::vector<int> proj_panels_;
    int64_t ldp_ = 0;
    int64_t batch_slices_ = 1;
    std::vector<int> lists_;
};

template <class Cell, class T>
void LayerForward<Cell, T>::setup() {
    Tn_ = a_.steps;
    B_ = a_.B;
    H_ = a_.H;
    P_ = a_.P;
    GH_ = G * H_;
    keep_ = a_.ws_gates != nullptr;
    ldg_ = keep_ ? kept_gates(Cell::kind) * H_ : GH_;
    if (Cell::n_bias_inside_reset && a_.b_hh) b_hn_ = a_.b_hh + 2 * H_;
    unit_panels_ = (H_ + NR - 1) / NR;
    lds_ = G * unit_panels_ * NR + V<T>::W;  // padded: no power-of-two row distance
    w_hh_packed_.ktot = P_;
    w_hh_packed_.npanels = unit_panels_ * G;
    w_hh_packed_.alloc();
    plan_ = make_plan(B_, unit_panels_, B_ * GH_ * P_, Tn_,
                      w_hh_packed_.npanels * P_ * NR * (int64_t)sizeof(T));
    if (a_.w_hr) {
        w_hr_packed_.ktot = H_;
        w_hr_packed_.npanels = (P_ + NR - 1) / NR;
        w_hr_packed_.alloc();
        ldp_ = w_hr_packed_.npanels * NR + V<T>::W;
        proj_panels_ = panel_ids(w_hr_packed_.npanels);
    }
    if (!keep_ && plan_.mode == Mode::units &&
        Tn_ * B_ * GH_ * (int64_t)sizeof(T) > kUnitsMaxProjectionBytes) {
        plan_.mode = Mode::serial;
        plan_.nthreads = 1;
    }
    setup_projection();
    setup_state();
}

// The input projection. A small one: all T steps in one GEMM (straight into
// the workspace in training). A large one: chunks of chunk_steps_ steps, each
// computed by the thread that owns its rows just before they are used, so it
// never leaves the cache; training then writes each workspace row once, with
// the post-activations. A cell whose n product follows the reset phase keeps
// the single GEMM in training (its r*h block is read back by the second phase).
template <class Cell, class T>
void LayerForward<Cell, T>::setup_projection() {
    const int64_t step_bytes = B_ * GH_ * (int64_t)sizeof(T);
    chunked_ = !(keep_ && Cell::n_product_after_reset) && plan_.mode != Mode::units &&
               Tn_ * step_bytes > kProjChunkBytes;
    chunk_steps_ = chunked_ ? std::max<int64_t>(1, std::min<int64_t>(Tn_, kProjChunkBytes / step_bytes)) : Tn_;
    gx_ = a_.ws_gates;
    if (!keep_ || chunked_) {
        gx_buf_.alloc(checked_mul(checked_mul(chunk_steps_, B_), GH_));
        gx_ = gx_buf_.p;
    }
    if (!chunked_) {
        input_projection<Cell>(Tn_ * B_, a_.I, H_, a_.x, a_.w_ih, a_.b_ih, a_.b_hh, gx_, ldg_);
        return;
    }
    w_ih_packed_.ktot = a_.I;
    w_ih_packed_.npanels = (GH_ + NR - 1) / NR;
    w_ih_packed_.alloc();
    if (a_.b_ih) {
        folded_bias_.resize(GH_);
        folded_bias<Cell>(H_, a_.b_ih, a_.b_hh, 0, GH_, folded_bias_.data());
    }
}

// Variable lengths: the recurrent state lives in rows sorted by decreasing
// length (row r holds sequence perm_[r]), so the sequences still running at
// step t are the rows [0, active_rows_[t]) and the step's product skips the
// finished ones; x, out and the workspace stay in batch order. Without
// lengths perm_ is the identity. A row's result does not depend on which
// rows share its product, so this changes no value.
template <class Cell, class T>
void LayerForward<Cell, T>::setup_state() {
    const int64_t B = B_, H = H_, P = P_, I = a_.I;
    permuted_ = a_.lengths != nullptr;
    perm_.resize(B);
    active_rows_.assign(permuted_ ? Tn_ : 0, 0);
    for (int64_t b = 0; b < B; ++b) perm_[b] = b;
    if (permuted_) {
        const int64_t* lengths = a_.lengths;
        std::stable_sort(perm_.begin(), perm_.end(),
                         [&](int64_t p, int64_t q) { return lengths[p] > lengths[q]; });
        for (int64_t b = 0; b < B; ++b)  // histogram of lengths, then suffix sums
            if (lengths[b] >= 1 && lengths[b] <= Tn_) ++active_rows_[lengths[b] - 1];
        for (int64_t t = Tn_ - 2; t >= 0; --t) active_rows_[t] += active_rows_[t + 1];
    }
    h_buf_.alloc(checked_mul(2 * B, P));
    m_buf_.alloc(a_.w_hr ? checked_mul(B, H) : 1);
    hp_.alloc(a_.w_hr ? checked_mul(B, ldp_) : 1);
    c_buf_.alloc(Cell::has_cell_state ? checked_mul(B, H) : 1);
    S_.alloc(checked_mul(B, lds_));
    rh_buf_.alloc(Cell::n_product_after_reset ? checked_mul(B, H) : 1);
    x_rows_.alloc((chunked_ && permuted_) ? checked_mul(B, I) : 1);  // a step's x rows in state order
    for (int64_t r = 0; r < B; ++r) {
        std::memcpy(h_buf_.p + r * P, a_.h0 + perm_[r] * P, P * sizeof(T));
        if (Cell::has_cell_state) std::memcpy(c_buf_.p + r * H, a_.c0 + perm_[r] * H, H * sizeof(T));
    }
    hm_buf_.alloc(a_.hmask ? checked_mul(2 * B, P) : 1);
    if (a_.hmask) mask_rows(0, B, 0, P, 0);  // h0 * hmask, the first step's product input
    // A cell whose kept gates are its states keeps h0 only in ws_h ([B, H]).
    if (keep_ && Cell::kept_gates_are_state) std::memcpy(a_.ws_h, a_.h0, B * H * sizeof(T));
    // Batch mode: slices of rows claimed by whichever thread is free, so a
    // thread that is late on a busy machine never holds the others up.
    batch_slices_ = plan_.mode == Mode::batch ? (B >= 8 * plan_.nthreads ? 2 * plan_.nthreads : plan_.nthreads) : 1;
    // Allocated here: nothing inside the parallel region allocates (or may throw).
    lists_.resize((size_t)std::max<int64_t>(plan_.nthreads, batch_slices_) * 2 * w_hh_packed_.npanels);
}

// Task `task` of `ntasks` of packing W_hh (and, chunked, W_ih^T).
template <class Cell, class T>
void LayerForward<Cell, T>::pack(int64_t task, int64_t ntasks) {
    pack_forward(a_.w_hh, H_, P_, G, w_hh_packed_, (int)task, (int)ntasks);
    if (a_.w_hr) pack_forward(a_.w_hr, P_, H_, 1, w_hr_packed_, (int)task, (int)ntasks);
    if (chunked_) {
        int64_t p0, p1;
        split(w_ih_packed_.npanels, (int)ntasks, (int)task, &p0, &p1);
        pack_b_panels(a_.w_ih, 1, a_.I, a_.I, GH_, w_ih_packed_, p0, p1);  // W_ih^T
    }
}

// The projection chunk that starts at step st (time index t), rows [m0, m1).
// The chunk buffer is in state order, the full projection in batch order.
template <class Cell, class T>
void LayerForward<Cell, T>::project_chunk(const Part& p, int64_t st, int64_t t) {
    const int64_t B = B_, I = a_.I;
    const int64_t ns = std::min<int64_t>(chunk_steps_, Tn_ - st);
    const T* bias = folded_bias_.empty() ? nullptr : folded_bias_.data();
    if (!permuted_ && !a_.reverse && p.m0 == 0 && p.m1 == B) {  // the chunk's rows are contiguous
        gemm_block<T>(0, ns * B, 0, w_ih_packed_.npanels, GH_, I, a_.x + t * B * I, I, 1, nullptr, 0,
                      w_ih_packed_, false, bias, gx_, GH_);
        return;
    }
    for (int64_t s = 0; s < ns; ++s) {
        const int64_t ts = a_.reverse ? t - s : t + s;
        const T* xs = a_.x + ts * B * I;
        if (permuted_) {
            for (int64_t r = p.m0; r < p.m1; ++r)
                std::memcpy(x_rows_.p + r * I, xs + perm_[r] * I, I * sizeof(T));
            xs = x_rows_.p;
        }
        gemm_block<T>(p.m0, p.m1, 0, w_ih_packed_.npanels, GH_, I, xs, I, 1, nullptr, 0, w_ih_packed_,
                      false, bias, gx_ + s * B * GH_, GH_);
    }
}

// The pointwise pass of step st (time t) over the part's rows: rows
// [m0, active_end) run the cell, the others carry their state.
template <class Cell, class T>
void LayerForward<Cell, T>::step_rows(const Part& p, int64_t st, int64_t t, int64_t active_end) {
    const int64_t B = B_, H = H_, P = P_;
    const int64_t u0 = p.u0, u1 = p.u1, q0 = p.q0, nq = p.q1 - p.q0;
    const bool proj = a_.w_hr != nullptr;  // the row writes m; project_rows the state and output
    const T* hp = h_buf_.p + (st & 1) * B * P;
    T* hn = h_buf_.p + ((st + 1) & 1) * B * P;
    T* gxt = chunked_ ? gx_ + (st % chunk_steps_) * B * GH_ : gx_ + t * B * ldg_;
    const int64_t ldx = chunked_ ? GH_ : ldg_;  // row stride of gxt
    T* keptt = keep_ ? a_.ws_gates + t * B * ldg_ : nullptr;
    T* outt = a_.out + t * a_.out_t_stride;
    for (int64_t r = p.m0; r < p.m1; ++r) {
        const int64_t b = perm_[r];
        ForwardRow<T> row{};
        row.gx = gxt + (chunked_ ? r : b) * ldx;
        row.kept = keep_ ? keptt + b * ldg_ : nullptr;
        row.sums = GateSums<T>{S_.p + r * lds_, G * NR, NR};
        row.h_prev = hp + r * P;
        row.h_new = proj ? m_buf_.p + r * H : hn + r * P;
        row.out = proj ? nullptr : outt + b * a_.out_b_stride;
        if (Cell::has_cell_state) {
            row.c = c_buf_.p + r * H;
            row.c_kept = keep_ ? a_.ws_c + (t * B + b) * H : nullptr;
        }
        row.b_hn = b_hn_;
        if (Cell::has_peepholes) row.peep = a_.peep;
        if (Cell::n_product_after_reset) {
            row.rh = rh_buf_.p + r * H;
            if (a_.hmask) row.h_masked = hm_buf_.p + (st & 1) * B * P + r * P;  // the product's input
        }
        if (keep_ && !Cell::kept_gates_are_state)
            std::memcpy(a_.ws_h + (t * B + b) * P + q0, row.h_prev + q0, nq * sizeof(T));
        if (r >= active_end) {  // finished: the state is carried, the output is zero
            if (!proj) {
                std::memcpy(row.h_new + q0, row.h_prev + q0, nq * sizeof(T));
                std::memset(row.out + q0, 0, nq * sizeof(T));
            }
            Cell::forward_padded(row, H, u0, u1);
            continue;
        }
        Cell::forward(row, H, u0, u1);
    }
}

// gru_orig's second phase of step st: the n product on r*h, then n and h'.
template <class Cell, class T>
void LayerForward<Cell, T>::step_after_reset(const Part& p, int64_t st, int64_t t, int64_t active_end) {
    if constexpr (Cell::n_product_after_reset) {
        const int64_t B = B_, H = H_;
        const T* hp = h_buf_.p + (st & 1) * B * H;
        T* hn = h_buf_.p + ((st + 1) & 1) * B * H;
        T* gxt = chunked_ ? gx_ + (st % chunk_steps_) * B * GH_ : gx_ + t * B * ldg_;
        const int64_t ldx = chunked_ ? GH_ : ldg_;
        T* outt = a_.out + t * a_.out_t_stride;
        barrier(plan_);
        if (active_end > p.m0)
            panels_gemm<T>(p.m0, active_end, H, rh_buf_.p, H, w_hh_packed_, 0, p.reset_panels, p.n_reset,
                           S_.p, lds_);
        for (int64_t r = p.m0; r < active_end; ++r) {
            const int64_t b = perm_[r];
            ForwardRow<T> row{};
            row.gx = gxt + (chunked_ ? r : b) * ldx;
            row.kept = keep_ ? row.gx : nullptr;
            row.sums = GateSums<T>{S_.p + r * lds_, G * NR, NR};
            row.h_prev = hp + r * H;
            row.h_new = hn + r * H;
            row.out = outt + b * a_.out_b_stride;
            Cell::forward_after_reset(row, H, p.u0, p.u1);
        }
    } else {
        (void)p, (void)st, (void)t, (void)active_end;
    }
}

// The projection of step st (time t) for the part's state units [q0, q1):
// the running rows' state is m · W_hr^T, the finished rows' is carried (their
// output zero). It reads every unit's m: in units mode the team meets first.
template <class Cell, class T>
void LayerForward<Cell, T>::project_rows(const Part& p, int64_t st, int64_t t, int64_t active_end) {
    const int64_t B = B_, P = P_, q0 = p.q0, nq = p.q1 - p.q0;
    const T* hp = h_buf_.p + (st & 1) * B * P;
    T* hn = h_buf_.p + ((st + 1) & 1) * B * P;
    T* outt = a_.out + t * a_.out_t_stride;
    barrier(plan_);
    if (active_end > p.m0 && nq > 0)
        panels_gemm<T>(p.m0, active_end, H_, m_buf_.p, H_, w_hr_packed_, 0, proj_panels_.data() + p.qp0,
                       (int)(p.qp1 - p.qp0), hp_.p, ldp_);
    for (int64_t r = p.m0; r < p.m1; ++r) {
        T* out = outt + perm_[r] * a_.out_b_stride + q0;
        if (r >= active_end) {
            std::memcpy(hn + r * P + q0, hp + r * P + q0, nq * sizeof(T));
            std::memset(out, 0, nq * sizeof(T));
            continue;
        }
        std::memcpy(hn + r * P + q0, hp_.p + r * ldp_ + q0, nq * sizeof(T));
        std::memcpy(out, hp_.p + r * ldp_ + q0, nq * sizeof(T));
    }
}

// Recurrent dropout: the product's input, h * hmask, from state buffer buf
// (0 or 1, as h_buf_'s) for rows [m0, m1) and state units [q0, q1).
template <class Cell, class T>
void LayerForward<Cell, T>::mask_rows(int64_t m0, int64_t m1, int64_t q0, int64_t q1, int64_t buf) {
    const int64_t B = B_, P = P_;
    const T* h = h_buf_.p + buf * B * P;
    T* hm = hm_buf_.p + buf * B * P;
    for (int64_t r = m0; r < m1; ++r) {
        const T* m = a_.hmask + perm_[r] * P;
        for (int64_t j = q0; j < q1; ++j) hm[r * P + j] = h[r * P + j] * m[j];
    }
}

// The time loop for state rows [m0, m1), hidden-unit panels [jp0, jp1) and
// (with a projection) the projection's panels [qp0, qp1).
template <class Cell, class T>
void LayerForward<Cell, T>::time_loop(int64_t list_id, int64_t m0, int64_t m1, int64_t jp0, int64_t jp1,
                                      int64_t qp0, int64_t qp1) {
    const int64_t npanels = w_hh_packed_.npanels;
    int* product_panels = lists_.data() + (size_t)list_id * 2 * npanels;
    int* reset_panels = product_panels + npanels;
    int n_product = 0, n_reset = 0;
    for (int64_t jp = jp0; jp < jp1; ++jp)
        for (int g = 0; g < G; ++g) {
            if (g == Cell::unread_gate) continue;  // its sums would be computed for nothing
            if (Cell::n_product_after_reset && g >= 2)
                reset_panels[n_reset++] = (int)(jp * G + g);
            else
                product_panels[n_product++] = (int)(jp * G + g);
        }
    const int64_t u0 = jp0 * NR, u1 = std::min<int64_t>(H_, jp1 * NR);
    const int64_t q0 = a_.w_hr ? std::min<int64_t>(P_, qp0 * NR) : u0, q1 = a_.w_hr ? std::min<int64_t>(P_, qp1 * NR) : u1;
    const Part p{m0, m1, u0, u1, q0, q1, qp0, qp1, product_panels, n_product, reset_panels, n_reset};
    for (int64_t st = 0; st < Tn_; ++st) {
        const int64_t t = a_.reverse ? Tn_ - 1 - st : st;
        if (chunked_ && st % chunk_steps_ == 0) project_chunk(p, st, t);
        // rows [m0, active_end) still run at step t
        const int64_t active_end = permuted_ ? std::min(m1, std::max(m0, active_rows_[t])) : m1;
        const T* hin = (a_.hmask ? hm_buf_.p : h_buf_.p) + (st & 1) * B_ * P_;  // what the product sees
        if (active_end > m0)
            panels_gemm<T>(m0, active_end, P_, hin, P_, w_hh_packed_, 0, p.product_panels, p.n_product, S_.p,
                           lds_);
        step_rows(p, st, t, active_end);
        step_after_reset(p, st, t, active_end);
        if (a_.w_hr) project_rows(p, st, t, active_end);
        if (a_.hmask) mask_rows(m0, m1, p.q0, p.q1, (st + 1) & 1);  // every row: that buffer is two steps old
        barrier(plan_);
    }
}

template <class Cell, class T>
void LayerForward<Cell, T>::run() {
    const int64_t B = B_, H = H_, P = P_;
    if (plan_.mode == Mode::units) {
        parallel_team(plan_.nthreads, [&](int id) {
            pack(id, plan_.nthreads);
            barrier(plan_);
            int64_t jp0, jp1, qp0, qp1;
            split(unit_panels_, plan_.nthreads, id, &jp0, &jp1);
            split(w_hr_packed_.npanels, plan_.nthreads, id, &qp0, &qp1);
            time_loop(id, 0, B, jp0, jp1, qp0, qp1);
        });
    } else if (plan_.mode == Mode::batch) {
        parallel_for(2 * plan_.nthreads, [&](int64_t i) { pack(i, 2 * plan_.nthreads); });
        parallel_for(batch_slices_, [&](int64_t i) {
            int64_t m0, m1;
            split(B, (int)batch_slices_, (int)i, &m0, &m1);
            time_loop(i, m0, m1, 0, unit_panels_, 0, w_hr_packed_.npanels);
        });
    } else {
        pack(0, 1);
        time_loop(0, 0, B, 0, unit_panels_, 0, w_hr_packed_.npanels);
    }
    const T* h_final = h_buf_.p + (Tn_ & 1) * B * P;
    for (int64_t r = 0; r < B; ++r) {
        std::memcpy(a_.h_n + perm_[r] * P, h_final + r * P, P * sizeof(T));
        if (Cell::has_cell_state) std::memcpy(a_.c_n + perm_[r] * H, c_buf_.p + r * H, H * sizeof(T));
    }
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
