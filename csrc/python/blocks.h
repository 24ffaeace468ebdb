// Output arrays of the bindings. Arrays of a cached block's size
// (kCacheMinBytes and up) live in the kernels' block cache
// (fastrnn/memory.h): a training step then reuses the previous step's memory
// instead of faulting in fresh pages. A capsule owns the block and gives it
// back when NumPy drops the array; tracemalloc sees the block in NumPy's
// domain like any array.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <cstring>
#include <new>
#include <vector>

#include "arrays.h"
#include "fastrnn/memory.h"

namespace fastrnn::python {

// A block of `bytes` (>= kCacheMinBytes) from the cache, and the capsule that
// owns it.
py::capsule cached_block(size_t bytes, void** data);

// An uninitialised C-contiguous array of F.
template <class F>
Arr<F> empty(std::initializer_list<int64_t> dims) {
    std::vector<py::ssize_t> shape(dims.begin(), dims.end());
    size_t bytes = sizeof(F);
    for (py::ssize_t d : shape)
        if (__builtin_mul_overflow(bytes, (size_t)d, &bytes)) throw std::bad_alloc();
    if (bytes < kCacheMinBytes) return Arr<F>(shape);
    void* p = nullptr;
    py::capsule owner = cached_block(bytes, &p);
    return Arr<F>(shape, static_cast<F*>(p), owner);
}

// A new C-contiguous array with the contents of `a` (of `dims`, its shape).
template <class F>
Arr<F> copy_of(const Arr<F>& a, std::initializer_list<int64_t> dims) {
    Arr<F> c = empty<F>(dims);
    std::memcpy(c.mutable_data(), a.data(), sizeof(F) * (size_t)a.size());
    return c;
}

}  // namespace fastrnn::python
