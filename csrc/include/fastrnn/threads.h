// Global thread count of the kernels and their task pool. No Python here.
#pragma once

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
// it, and must not call parallel_for itself. Calls from several threads at
// once are serialised.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace fastrnn
