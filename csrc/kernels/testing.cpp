// Failure injection for tests (fastrnn/testing.h).
#include "fastrnn/testing.h"

#include <atomic>

namespace fastrnn::testing {

namespace {
std::atomic<int64_t> g_countdown[2];  // per Failure: events left until the failing one (0: disarmed)
}  // namespace

int64_t inject_failure(Failure what, int64_t n) {
    return g_countdown[(int)what].exchange(n > 0 ? n : 0);
}

bool injected_failure(Failure what) {
    std::atomic<int64_t>& c = g_countdown[(int)what];
    int64_t left = c.load(std::memory_order_relaxed);
    while (left > 0)
        if (c.compare_exchange_weak(left, left - 1)) return left == 1;
    return false;
}

}  // namespace fastrnn::testing
