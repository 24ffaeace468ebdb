// Output arrays in the kernels' block cache (see blocks.h).
#include "blocks.h"

#include "platform.h"

namespace fastrnn::python {

namespace {

constexpr unsigned kNumpyTraceDomain = 389047;  // NumPy's tracemalloc domain
const char* const kBlockName = "fastrnn.block";

// PyTraceMalloc_Track/Untrack, looked up at run time: CPython 3.11's header
// declares them without C linkage for C++ callers.
using TrackFn = int (*)(unsigned int, uintptr_t, size_t);
using UntrackFn = int (*)(unsigned int, uintptr_t);
const TrackFn trace_track = reinterpret_cast<TrackFn>(platform::find_symbol("PyTraceMalloc_Track"));
const UntrackFn trace_untrack = reinterpret_cast<UntrackFn>(platform::find_symbol("PyTraceMalloc_Untrack"));

void release_block(PyObject* cap) {
    void* p = PyCapsule_GetPointer(cap, kBlockName);
    const size_t bytes = reinterpret_cast<uintptr_t>(PyCapsule_GetContext(cap));
    if (trace_untrack) trace_untrack(kNumpyTraceDomain, reinterpret_cast<uintptr_t>(p));
    cache_free(p, bytes);
}

}  // namespace

py::capsule cached_block(size_t bytes, void** data) {
    size_t block = 0;
    void* p = cache_alloc(bytes, &block);
    if (!p) throw std::bad_alloc();  // MemoryError
    // The context (the block's real size) is set before the destructor that
    // reads it, so a failure here frees the block exactly once.
    PyObject* cap = PyCapsule_New(p, kBlockName, nullptr);
    if (!cap || PyCapsule_SetContext(cap, reinterpret_cast<void*>((uintptr_t)block)) != 0 ||
        PyCapsule_SetDestructor(cap, release_block) != 0) {
        Py_XDECREF(cap);
        cache_free(p, block);
        throw py::error_already_set();
    }
    if (trace_track) trace_track(kNumpyTraceDomain, reinterpret_cast<uintptr_t>(p), bytes);
    *data = p;
    return py::reinterpret_steal<py::capsule>(cap);
}

}  // namespace fastrnn::python
