// How a layer's time loop is shared among threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include "fastrnn/threads.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// ---------------------------------------------------------------- threading plan
enum class Mode { serial, batch, units };

struct Plan {
    Mode mode = Mode::serial;
    int nthreads = 1;
    std::shared_ptr<SpinBarrier> bar;  // units mode: the team's barrier
};

// How a layer's time loop is shared among threads.
//   step_work: multiply-adds of one step's recurrent product (B*G*H*H)
//   steps:     time steps T
//   wbytes:    bytes of the packed recurrent weights
// * batch: each thread owns a slice of the batch rows for the whole sequence:
//   no synchronisation at all inside the loop (rows are independent), so it
//   is used whenever each thread gets a couple of rows and the whole call is
//   worth a fork (the join can cost a time slice on a busy machine). Each
//   thread streams all the weights,
//   so when they do not fit a core's L2 and the batch is small, units wins.
// * units: each thread owns panels of hidden units, one barrier per step
//   (two for gru_orig). From 64K multiply-adds a step (~3 us: LSTM B=1
//   H=128): such a step streams its weights from L2, and each core then
//   reads only its half (LSTM B=1 I=64 H=128 T=100 inference, 2 threads:
//   0.31 -> 0.25 ms; at 256K it was serial). It is also the mode that
//   suffers most when the machine is oversubscribed (a descheduled thread
//   stalls the others every step).
//   Long steps (>= 4M multiply-adds) whose weights do not fit L2 also take
//   units: each core then streams only its half of W_hh from L3 (2 threads:
//   LSTM B=32 I=H=512 T=50 inference 37.5 -> 26.2 ms, training 94 -> 80 ms;
//   B=64 I=H=1024 T=25 inference 122 -> 101 ms).
// * serial otherwise (small steps: the latency path).
inline Plan make_plan(int64_t B, int64_t npg, int64_t step_work, int64_t steps, int64_t wbytes) {
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
    if (npg >= P && step_work >= 65536) {
        p.mode = Mode::units;
        p.nthreads = (int)std::min<int64_t>(P, npg);
        p.bar = std::make_shared<SpinBarrier>(p.nthreads);
        return p;
    }
    if (batch_ok) {
        p.mode = Mode::batch;
        p.nthreads = P;
    }
    return p;
}

inline void barrier(const Plan& pl) {
    if (pl.mode == Mode::units) pl.bar->wait();
}

inline void split(int64_t n, int parts, int id, int64_t* lo, int64_t* hi) {
    int64_t q = n / parts, r = n % parts;
    *lo = id * q + std::min<int64_t>(id, r);
    *hi = *lo + q + (id < r ? 1 : 0);
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
