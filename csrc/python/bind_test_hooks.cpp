// Test hooks of the compiled kernels: the vectorized activations and the
// layers' GEMM on their own (for accuracy tests and timing), and failure
// injection (for tests of what a failed call leaves behind).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "arrays.h"
#include "blocks.h"
#include "fastrnn/rnn.h"
#include "fastrnn/testing.h"
#include "fastrnn/workspace.h"

namespace fastrnn::python {

namespace {

template <class F>
Arr<F> activation_t(const std::string& which, const Arr<F>& x) {
    Activation fn;
    if (which == "sigmoid")
        fn = Activation::sigmoid;
    else if (which == "tanh")
        fn = Activation::tanh;
    else if (which == "exp")
        fn = Activation::exp;
    else
        value_error("which must be 'sigmoid', 'tanh' or 'exp'");
    if (!aligned(x)) value_error("x must be an aligned array");
    std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
    Arr<F> out(shape);
    fastrnn::apply_activation<F>(fn, x.data(), out.mutable_data(), (int64_t)x.size());
    return out;
}

template <class F>
Arr<F> matmul_t(const Arr<F>& a, const Arr<F>& b, bool ta, bool tb) {
    if (a.ndim() != 2) value_error("a must have 2 dimensions");
    if (b.ndim() != 2) value_error("b must have 2 dimensions");
    if (!aligned(a) || !aligned(b)) value_error("a and b must be aligned arrays");
    const int64_t M = ta ? a.shape(1) : a.shape(0), K = ta ? a.shape(0) : a.shape(1);
    const int64_t Kb = tb ? b.shape(1) : b.shape(0), N = tb ? b.shape(0) : b.shape(1);
    if (K != Kb) value_error("a and b have mismatched inner dimensions");
    if (M < 1 || N < 1 || K < 1) value_error("a and b must not be empty");
    if (M > kMaxDim || N > kMaxDim || K > kMaxDim) value_error("a and b are too large");
    Arr<F> c = empty<F>({M, N});
    {
        py::gil_scoped_release nogil;  // pure C++
        fastrnn::matmul<F>(ta, tb, M, N, K, a.data(), a.shape(1), b.data(), b.shape(1), c.mutable_data());
    }
    return c;
}

}  // namespace

void bind_test_hooks(py::module_& m) {
    m.def("_activation", &activation_t<float>, py::arg("which"), py::arg("x").noconvert(),
          "The kernels' vectorized sigmoid/tanh/exp, elementwise (for accuracy tests).");
    m.def("_activation", &activation_t<double>, py::arg("which"), py::arg("x").noconvert());

    m.def("_matmul", &matmul_t<float>, py::arg("a").noconvert(), py::arg("b").noconvert(),
          py::arg("ta") = false, py::arg("tb") = false,
          "op(a) @ op(b) through the layers' GEMM (for tests and timing).");
    m.def("_matmul", &matmul_t<double>, py::arg("a").noconvert(), py::arg("b").noconvert(),
          py::arg("ta") = false, py::arg("tb") = false);

    m.def(
        "_inject_failure",
        [](const std::string& what, int64_t n) {
            if (n < 0) value_error("n must be >= 0 (0 disarms)");
            if (what == "allocation") return testing::inject_failure(testing::Failure::allocation, n);
            if (what == "pool") return testing::inject_failure(testing::Failure::pool, n);
            value_error("what must be 'allocation' or 'pool'");
        },
        py::arg("what"), py::arg("n"),
        "_inject_failure(what, n) -> the countdown left before\n\n"
        "The n-th event of `what` from now fails: 'allocation' (a kernel scratch buffer or an "
        "output block: MemoryError) or 'pool' (a parallel call of the kernels' threads: "
        "RuntimeError, as when a thread cannot start). n = 0 disarms; returns what was left of "
        "the previous countdown (0 if it fired).");
}

}  // namespace fastrnn::python
