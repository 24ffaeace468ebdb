#include <pybind11/pybind11.h>

#include "fastrnn/build_info.h"

namespace py = pybind11;

namespace fastrnn::python {

void bind_info(py::module_& m) {
    m.def(
        "build_info",
        []() {
            const BuildInfo b = fastrnn::build_info();
            py::dict d;
            d["version"] = b.version;
            d["compiler"] = b.compiler;
            d["cxx_flags"] = b.cxx_flags;
            d["build_type"] = b.build_type;
            d["simd"] = b.simd;
            return d;
        },
        "Facts about how the compiled kernels were built: version, compiler, flags, SIMD level.");
}

}  // namespace fastrnn::python
