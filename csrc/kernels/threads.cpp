// Global thread count of the kernels.
#include <atomic>
#include <cstdlib>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fastrnn/threads.h"

namespace fastrnn {

namespace {

int default_threads() {
    if (const char* s = std::getenv("FASTRNN_NUM_THREADS")) {
        char* end = nullptr;
        long v = std::strtol(s, &end, 10);
        if (end != s && *end == '\0' && v > 0 && v <= 4096) return (int)v;
    }
#ifdef _OPENMP
    int n = omp_get_num_procs();
#else
    int n = (int)std::thread::hardware_concurrency();
#endif
    return n > 0 ? n : 1;
}

std::atomic<int> g_threads{0};

}  // namespace

int get_num_threads() {
    int n = g_threads.load(std::memory_order_relaxed);
    if (n <= 0) {
        n = default_threads();
        g_threads.store(n, std::memory_order_relaxed);
    }
    return n;
}

void set_num_threads(int n) { g_threads.store(n >= 1 ? n : default_threads()); }

}  // namespace fastrnn
