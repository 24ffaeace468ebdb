// Runtime settings of the kernels: threads, the block cache, the SIMD path
// and the GEMM of the large products (with SciPy's BLAS loaded on demand).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>

#include "arrays.h"
#include "fastrnn/blas.h"
#include "fastrnn/memory.h"
#include "fastrnn/threads.h"
#include "fastrnn/rnn.h"

namespace fastrnn::python {

namespace {

// SciPy's BLAS through its public Cython API, resolved at the first call that
// needs it (set_gemm('scipy'), blas_info), once (GIL held).
void ensure_blas() {
    static bool tried = false;
    if (tried) return;
    tried = true;
    try {
        py::module_ cb = py::module_::import("scipy.linalg.cython_blas");
        py::dict capi = cb.attr("__pyx_capi__");
        auto capsule_pointer = [&](const char* name) -> void* {
            py::object cap = capi[name];
            PyObject* o = cap.ptr();
            const char* cname = PyCapsule_GetName(o);
            void* p = PyCapsule_GetPointer(o, cname);
            if (!p) {
                PyErr_Clear();
                return nullptr;
            }
            return p;
        };
        void* s = capsule_pointer("sgemm");
        void* d = capsule_pointer("dgemm");
        if (s && d) set_blas(reinterpret_cast<sgemm_fn>(s), reinterpret_cast<dgemm_fn>(d));
    } catch (py::error_already_set&) {
        // No SciPy: the built-in GEMM is used.
    }
}

}  // namespace

void bind_runtime(py::module_& m) {
    m.def("set_num_threads", [](long long n) {
        if (n < 1 || n > 4096) value_error("n must be between 1 and 4096, got " + std::to_string(n));
        fastrnn::set_num_threads((int)n);
    }, py::arg("n"), "Set the number of threads the kernels use.");
    m.def("get_num_threads", &fastrnn::get_num_threads,
          "Number of threads the kernels use (default: FASTRNN_NUM_THREADS or the number of cores).");
    m.def("set_cache_limit", [](long long nbytes) {
        if (nbytes < 0) value_error("nbytes must be >= 0, got " + std::to_string(nbytes));
        fastrnn::set_cache_limit((size_t)nbytes);
    }, py::arg("nbytes"),
          "Bytes of freed large blocks (workspaces, outputs) kept for reuse; 0 turns the cache off.");
    m.def("get_cache_limit", []() { return (unsigned long long)fastrnn::get_cache_limit(); },
          "Bytes the block cache may hold (default 1 GiB, or FASTRNN_CACHE_MB at start-up).");
    m.def("cached_bytes", []() { return (unsigned long long)fastrnn::cached_bytes(); },
          "Bytes the block cache holds right now (free blocks kept for reuse).");
    m.def("release_cache", &fastrnn::release_cache, "Return every cached block to the system.");
    m.def("simd_path", &fastrnn::simd_path, "SIMD code path chosen at runtime for this CPU.");
    m.def(
        "reduced_precision_features",
        []() { return py::str(fastrnn::reduced_precision_features()).attr("split")(); },
        "The reduced-precision instructions this CPU has (names as in /proc/cpuinfo; no kernel uses them yet).");
    m.attr("REDUCED_PRECISION_FEATURES") = py::str(fastrnn::kReducedPrecisionFeatures).attr("split")();
    m.def(
        "blas_info",
        []() {
            ensure_blas();
            if (use_blas_gemm() && have_blas()) return std::string("scipy.linalg.cython_blas");
            return std::string("built-in");
        },
        "Which GEMM the kernels use for the large products.");
    m.def(
        "set_gemm",
        [](const std::string& which) {
            if (which == "builtin") {
                set_use_blas_gemm(false);
            } else if (which == "scipy") {
                ensure_blas();
                if (!have_blas()) value_error("SciPy's BLAS (scipy.linalg.cython_blas) is not available");
                set_use_blas_gemm(true);
            } else {
                value_error("which must be 'builtin' or 'scipy', got '" + which + "'");
            }
        },
        py::arg("which"),
        "Choose the GEMM of the large products: 'builtin' (default: the kernels' own packed, "
        "threaded GEMM) or 'scipy' (SciPy's BLAS through scipy.linalg.cython_blas).");
}

}  // namespace fastrnn::python

