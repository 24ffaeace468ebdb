// fastrnn._core: the compiled extension. This file only registers the
// bindings; each bind_<thing>.cpp converts and checks, the kernels live in
// csrc/kernels and know nothing of Python.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace fastrnn::python {
void bind_info(py::module_& m);
void bind_layers(py::module_& m);
void bind_cells(py::module_& m);
void bind_runtime(py::module_& m);
void bind_test_hooks(py::module_& m);
}  // namespace fastrnn::python

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastrnn compiled kernels";
    fastrnn::python::bind_info(m);
    fastrnn::python::bind_layers(m);
    fastrnn::python::bind_cells(m);
    fastrnn::python::bind_runtime(m);
    fastrnn::python::bind_test_hooks(m);
}
