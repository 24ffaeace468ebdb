// Global thread count of the kernels and their task pool. No Python here.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

namespace fastrnn {

// Number of threads the kernels use (>= 1). Default: the environment variable
// FASTRNN_NUM_THREADS if set to a positive integer, else the number of cores.
int get_num_threads();
// Set the thread count; n < 1 restores the default.
void set_num_threads(int n);

// Run fn(i) for every i in [0, n), on up to get_num_threads() threads with
// the caller taking part. Tasks are claimed one at a time from a shared
// counter, and the caller waits only for tasks that have started: a worker
// that is late (descheduled on a busy machine) finds nothing left to do, so
// it never holds the call up. Each task must not depend on which thread runs
// it (a parallel_for inside a task runs serially). Calls from several threads
// at once are serialised. A task that throws stops the others from starting;
// the call rethrows it once the started ones have ended.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

// Run fn(id) for every id in [0, n) on n threads at once (the caller runs id
// 0, pool worker k always id k + 1; 1 <= n <= get_num_threads()), for work
// whose parts wait for each other at a SpinBarrier, or that reads the same
// part of the data at every call (it stays in that core's cache). Unlike
// parallel_for's tasks these run concurrently by construction, so a late
// worker holds the others up (the price of the kernels' units mode, which
// synchronises every time step). A member must not throw (the others would
// wait at the barrier for ever); a parallel_for inside any pool task runs
// serially.
void parallel_team(int n, const std::function<void(int)>& fn);

// A reusable barrier for the n threads of one parallel_team: wait() returns
// when all n have called it. Spins (then yields: a descheduled member should
// not cost the others a time slice each).
class SpinBarrier {
public:
    explicit SpinBarrier(int n) : n_(n) {}
    void wait();

private:
    const int n_;
    std::atomic<int> count_{0};
    std::atomic<unsigned> gen_{0};
};

}  // namespace fastrnn
