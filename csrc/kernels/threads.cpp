// Global thread count of the kernels and a small task pool.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "fastrnn/threads.h"
#include "platform/platform.h"

namespace fastrnn {

namespace {

int default_threads() {
    if (const char* s = std::getenv("FASTRNN_NUM_THREADS")) {
        char* end = nullptr;
        long v = std::strtol(s, &end, 10);
        if (end != s && *end == '\0' && v > 0 && v <= 4096) return (int)v;
    }
    return platform::available_cpus();
}

std::atomic<int> g_threads{0};

// Set while a thread runs a pool task: a parallel_for from inside one runs
// serially (the pool takes one call at a time).
thread_local bool t_in_task = false;

// One parallel_for call. Shared with the workers that attach to it, so a
// straggler that wakes after the call returned still holds valid memory (it
// only finds the counter exhausted; it never calls fn then). A task that
// throws (std::bad_alloc from a scratch buffer) stops new tasks from
// starting; the caller waits for the started ones, then rethrows the first.
struct Job {
    std::function<void(int64_t)> fn;
    int64_t total = 0;
    bool pinned = false;  // task i on thread slot i (0: the caller, k + 1: worker k)
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> started{0};
    std::atomic<int64_t> done{0};
    std::atomic<bool> failed{false};
    std::mutex err_mu;
    std::exception_ptr err;
    void run(int64_t i) {
        t_in_task = true;
        try {
            fn(i);
        } catch (...) {
            std::lock_guard<std::mutex> lock(err_mu);
            if (!err) err = std::current_exception();
            failed.store(true, std::memory_order_release);
        }
        t_in_task = false;
        done.fetch_add(1, std::memory_order_release);
    }
    void work(int slot) {
        if (pinned) {
            if (slot < total) run(slot);
            return;
        }
        // started counts a claim before it is made (sequentially consistent with
        // the caller's "next = total; read started" after a failure: a claim the
        // caller does not count finds the counter exhausted)
        for (;;) {
            if (failed.load(std::memory_order_acquire)) return;
            started.fetch_add(1);
            const int64_t i = next.fetch_add(1);
            if (i >= total) {
                started.fetch_sub(1);
                return;
            }
            run(i);
        }
    }
};

// The i-th round of a wait for another thread: spin first (it often ends
// within microseconds, and a yield is a system call), then yield (a
// descheduled thread should not cost the waiter a time slice each round).
inline void backoff(int i) {
    if (i < (1 << 14))
        platform::cpu_relax();
    else
        std::this_thread::yield();
}

// How long an idle worker polls for the next job before it sleeps on the
// condition variable: the parallel_for calls of one layer call come back to
// back (a GEMM's packing, then its product; the chunks of a backward), and a
// sleeping worker takes a futex wake-up each time (tens of us on a VM).
constexpr auto kSpin = std::chrono::microseconds(100);

struct Pool {
    std::mutex mu;
    std::condition_variable cv;
    std::shared_ptr<Job> job;
    std::atomic<uint64_t> generation{0};  // written under mu; read by spinning workers without it
    bool stop = false;
    std::vector<std::thread> workers;
    std::mutex run_mu;  // one parallel_for at a time

    void worker_loop(int index) {
        uint64_t seen = 0;
        for (;;) {
            const auto until = std::chrono::steady_clock::now() + kSpin;
            for (int i = 0; generation.load(std::memory_order_acquire) == seen; ++i) {
                platform::cpu_relax();
                if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) break;
            }
            std::shared_ptr<Job> j;
            {
                std::unique_lock<std::mutex> lock(mu);
                cv.wait(lock, [&] { return stop || generation.load(std::memory_order_relaxed) != seen; });
                if (stop) return;
                seen = generation.load(std::memory_order_relaxed);
                j = job;
            }
            if (j) j->work(index + 1);
        }
    }
    void ensure(int nworkers) {  // called with run_mu held
        if ((int)workers.size() == nworkers) return;
        shutdown();
        stop = false;
        for (int i = 0; i < nworkers; ++i) workers.emplace_back([this, i] { worker_loop(i); });
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
        // In a forked child the workers do not exist: start afresh there. The
        // pool's lock is held across fork so the child never inherits it taken.
        platform::at_fork([] { g_pool_mu.lock(); }, [] { g_pool_mu.unlock(); },
                       [] {
                           g_pool = nullptr;
                           g_pool_mu.unlock();
                       });
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

void SpinBarrier::wait() {
    const unsigned g = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
        count_.store(0, std::memory_order_relaxed);
        gen_.fetch_add(1, std::memory_order_release);
        return;
    }
    for (int i = 0; gen_.load(std::memory_order_acquire) == g; ++i) backoff(i);
}

namespace {

// fn(i) for i in [0, n) on the pool with `workers` workers and the caller;
// pinned: task i on slot i (the caller 0, worker k k + 1), else claimed.
void run_on_pool(int64_t n, int workers, bool pinned, const std::function<void(int64_t)>& fn) {
    Pool& p = pool();
    std::lock_guard<std::mutex> run(p.run_mu);
    p.ensure(workers);
    auto job = std::make_shared<Job>();
    job->fn = fn;
    job->total = n;
    job->pinned = pinned;
    {
        std::lock_guard<std::mutex> lock(p.mu);
        p.job = job;
        p.generation.fetch_add(1, std::memory_order_release);
    }
    p.cv.notify_all();
    job->work(0);
    // Wait only for tasks already started by other threads. After a failure
    // no task starts any more: wait for the started ones.
    for (int i = 0; job->done.load(std::memory_order_acquire) < n; ++i) {
        if (job->failed.load(std::memory_order_acquire) && !job->pinned) {
            job->next.store(n);  // nothing new starts
            if (job->done.load(std::memory_order_acquire) >= job->started.load()) break;
        }
        backoff(i);
    }
    {
        std::lock_guard<std::mutex> lock(p.mu);
        p.job.reset();
    }
    if (job->err) std::rethrow_exception(job->err);
}

}  // namespace

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
    if (n <= 0) return;
    const int nt = get_num_threads();
    if (nt <= 1 || n == 1 || t_in_task) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    run_on_pool(n, nt - 1, false, fn);
}

void parallel_team(int n, const std::function<void(int)>& fn) {
    if (n <= 1) {
        if (n == 1) fn(0);
        return;
    }
    // At least n - 1 workers (even if the thread count was lowered since the
    // caller chose n), one call at a time, member i always on the same thread
    // (slot i): the members run at once, and a member that reads the same
    // part of the weights at every call finds it in its core's cache.
    run_on_pool(n, std::max(get_num_threads(), n) - 1, true, [&](int64_t i) { fn((int)i); });
}

}  // namespace fastrnn
