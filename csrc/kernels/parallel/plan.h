// How a layer's time loop is shared among threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

#include "fastrnn/threads.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// How a layer's time loop is shared among threads.
enum class Mode {
    serial,  // one thread: small steps, where a fork and a join cost more than they save
    batch,   // each thread owns slices of batch rows for the whole sequence
    units,   // each thread owns panels of hidden units; the team meets at a barrier every step
};

struct Plan {
    Mode mode = Mode::serial;
    int nthreads = 1;
    std::shared_ptr<SpinBarrier> bar;  // units mode: the team's barrier
};

// The plan of one layer call.
//   unit_panels: panels of NR hidden units (the units mode's share)
//   step_work:   multiply-adds of one step's recurrent product (B*G*H*H)
//   steps:       time steps T
//   wbytes:      bytes of the packed recurrent weights
// * batch needs no synchronisation inside the loop (rows are independent), so
//   it is taken whenever each thread gets a couple of rows and the whole call
//   is worth a fork. Each thread streams all the weights, so when they do not
//   fit a core's L2 and the batch is small, units is better.
// * units from 64K multiply-adds a step (LSTM B=1 H=128): such a step streams
//   its weights from L2 and each core reads only its share of them. Long
//   steps (>= 4M multiply-adds) whose weights do not fit L2 take it too: each
//   core then streams only its share of W_hh from L3. It is the mode that
//   suffers most on an oversubscribed machine (a descheduled member stalls
//   the others every step), hence the thresholds.
// * serial otherwise: the latency path.
inline Plan make_plan(int64_t B, int64_t unit_panels, int64_t step_work, int64_t steps, int64_t wbytes) {
    Plan p;
    const int P = get_num_threads();
    if (P <= 1) return p;
    const double total = (double)step_work * (double)steps;
    const bool fits_l2 = wbytes <= (int64_t)1024 * 1024;
    const bool batch_ok = B >= 2 * P && total >= 4e6;
    const bool long_step = step_work >= (int64_t)1 << 22;
    if (batch_ok && (fits_l2 || (B >= 8 * P && !long_step))) {
        p.mode = Mode::batch;
        p.nthreads = P;
        return p;
    }
    if (unit_panels >= P && step_work >= 65536) {
        p.mode = Mode::units;
        p.nthreads = (int)std::min<int64_t>(P, unit_panels);
        p.bar = std::make_shared<SpinBarrier>(p.nthreads);
        return p;
    }
    if (batch_ok) {
        p.mode = Mode::batch;
        p.nthreads = P;
    }
    return p;
}

// The team's barrier in units mode; nothing otherwise.
inline void barrier(const Plan& pl) {
    if (pl.mode == Mode::units) pl.bar->wait();
}

// Part `id` of `parts` near-equal parts of [0, n): [*lo, *hi).
inline void split(int64_t n, int parts, int id, int64_t* lo, int64_t* hi) {
    int64_t q = n / parts, r = n % parts;
    *lo = id * q + std::min<int64_t>(id, r);
    *hi = *lo + q + (id < r ? 1 : 0);
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
