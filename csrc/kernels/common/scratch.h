// Scratch buffers of the kernels, from the large-block cache.
#pragma once

#include <cstddef>
#include <cstring>
#include <new>

#include "fastrnn/memory.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

inline size_t checked_mul(size_t a, size_t b) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) throw std::bad_alloc();
    return r;
}

// Scratch memory from the large-block cache (fastrnn/memory.h).
template <class T>
struct Scratch {
    T* p = nullptr;
    size_t bytes = 0;
    Scratch() = default;
    explicit Scratch(size_t n) { alloc(n); }
    void alloc(size_t n) {
        free();
        // cache_alloc rounds, refuses impossible sizes, and reports the real size
        p = static_cast<T*>(cache_alloc(checked_mul(n, sizeof(T)), &bytes));
        if (!p) throw std::bad_alloc();
    }
    void zero(size_t n) { std::memset(p, 0, n * sizeof(T)); }
    void free() {
        cache_free(p, bytes);
        p = nullptr;
    }
    ~Scratch() { free(); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
};

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
