// The operating-system calls of the kernels' runtime (thread pool, block
// cache), each with a fallback where the POSIX/Linux call does not exist
// (macOS, Windows, musl): the rest of csrc/kernels is portable C++17.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <thread>

#if defined(_WIN32)
#include <malloc.h>
#else
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#endif
#if defined(__linux__)
#include <sched.h>
#endif

namespace fastrnn::platform {

// The CPUs this process may run on: its affinity mask on Linux (a
// container's or taskset's share), else the hardware threads; at least 1.
inline int available_cpus() {
    int n = 0;
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
#endif
    if (n <= 0) n = (int)std::thread::hardware_concurrency();
    return n > 0 ? n : 1;
}

// Handlers run around fork() (pthread_atfork); nothing where there is no fork.
inline void at_fork(void (*prepare)(), void (*parent)(), void (*child)()) {
#if defined(_WIN32)
    (void)prepare, (void)parent, (void)child;
#else
    pthread_atfork(prepare, parent, child);
#endif
}

// The size of a memory page (4 KB on x86-64; 16/64 KB on some arm64 kernels).
inline size_t page_size() {
#if defined(_WIN32)
    return 4096;
#else
    const long v = sysconf(_SC_PAGESIZE);
    return v > 0 ? (size_t)v : 65536;
#endif
}

// Give the whole pages of [p, p + bytes) back to the system; they read as
// zeros when touched again. A hint: nothing happens where it is not supported.
inline void release_pages(void* p, size_t bytes) {
#if defined(MADV_DONTNEED)
    madvise(p, bytes, MADV_DONTNEED);
#else
    (void)p, (void)bytes;
#endif
}

// 64-byte aligned memory (bytes a multiple of 64), freed with aligned_free.
inline void* aligned_alloc64(size_t bytes) {
#if defined(_WIN32)
    return _aligned_malloc(bytes, 64);
#else
    return std::aligned_alloc(64, bytes);
#endif
}
inline void aligned_free(void* p) {
#if defined(_WIN32)
    _aligned_free(p);
#else
    std::free(p);
#endif
}

// The pause of a spin-wait round.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

}  // namespace fastrnn::platform
