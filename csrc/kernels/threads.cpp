// Global thread count of the kernels and a small task pool.
#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

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

// One parallel_for call. Shared with the workers that attach to it, so a
// straggler that wakes after the call returned still holds valid memory (it
// only finds the counter exhausted; it never calls fn then).
struct Job {
    std::function<void(int64_t)> fn;
    int64_t total = 0;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    void work() {
        for (;;) {
            const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
            if (i >= total) return;
            fn(i);
            done.fetch_add(1, std::memory_order_release);
        }
    }
};

struct Pool {
    std::mutex mu;
    std::condition_variable cv;
    std::shared_ptr<Job> job;
    uint64_t generation = 0;
    bool stop = false;
    std::vector<std::thread> workers;
    std::mutex run_mu;  // one parallel_for at a time

    void worker_loop() {
        uint64_t seen = 0;
        for (;;) {
            std::shared_ptr<Job> j;
            {
                std::unique_lock<std::mutex> lock(mu);
                cv.wait(lock, [&] { return stop || generation != seen; });
                if (stop) return;
                seen = generation;
                j = job;
            }
            if (j) j->work();
        }
    }
    void ensure(int nworkers) {  // called with run_mu held
        if ((int)workers.size() == nworkers) return;
        shutdown();
        stop = false;
        for (int i = 0; i < nworkers; ++i) workers.emplace_back([this] { worker_loop(); });
    }
    void shutdown() {
        {
            std::lock_guard<std::mutex> lock(mu);
            stop = true;
        }
        cv.notify_all();
        for (auto& t : workers) t.join();
        workers.clear();
    }
};

Pool* g_pool = nullptr;
std::mutex g_pool_mu;

Pool& pool() {
    std::lock_guard<std::mutex> lock(g_pool_mu);
    if (!g_pool) {
        g_pool = new Pool();  // never destroyed: threads may outlive static destructors
        // In a forked child the workers do not exist: start afresh there.
        pthread_atfork(nullptr, nullptr, [] { g_pool = nullptr; });
    }
    return *g_pool;
}

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

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
    if (n <= 0) return;
    const int nt = get_num_threads();
    if (nt <= 1 || n == 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    Pool& p = pool();
    std::lock_guard<std::mutex> run(p.run_mu);
    p.ensure(nt - 1);
    auto job = std::make_shared<Job>();
    job->fn = fn;
    job->total = n;
    {
        std::lock_guard<std::mutex> lock(p.mu);
        p.job = job;
        ++p.generation;
    }
    p.cv.notify_all();
    job->work();
    // Wait only for tasks already started by other threads.
    while (job->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
    std::lock_guard<std::mutex> lock(p.mu);
    p.job.reset();
}

}  // namespace fastrnn
