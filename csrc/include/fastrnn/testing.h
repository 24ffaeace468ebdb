// Failure injection, for tests of what a failed call leaves behind. No Python here.
//
// Each hook arms a countdown: the n-th event of its kind from now fails, as it
// would for want of resources; n = 0 disarms it. Disarmed (the default), each
// event costs one relaxed atomic load.
#pragma once

#include <cstdint>

namespace fastrnn::testing {

enum class Failure : int {
    allocation = 0,  // cache_alloc (scratch buffers, the bindings' outputs) returns nullptr
    pool = 1,        // a parallel_for / parallel_team that needs the pool throws std::system_error
                     // (EAGAIN), as when a worker thread cannot start
};

// Arm (n >= 1) or disarm (n = 0) the countdown of `what`; returns what was left of the
// previous countdown (0: it fired, or none was armed).
int64_t inject_failure(Failure what, int64_t n);

// Called at each event of `what`: true if this one must fail (the countdown reaches 0).
bool injected_failure(Failure what);

}  // namespace fastrnn::testing
