// Array checks and error reports of the bindings.
//
// Every array handed in from Python is checked for dtype, ndim, shape,
// C-contiguity and alignment before any kernel runs, and every error is
// raised as ValueError (std::invalid_argument) or TypeError (py::type_error)
// naming the argument and what was expected.
//
// The bindings take py::object and test arrays with is_arr, not with
// py::array_t arguments: pybind11's array_t caster builds a dtype object per
// argument and per overload tried (~0.15 us each), and a cell step of B=1,
// H=128 computes for 1-5 us. is_arr reads the same facts (type, dtype
// number, byte order, flags) through pybind11's public accessors, with the
// wanted dtype numbers looked up once.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "fastrnn/rnn.h"

namespace fastrnn::python {

namespace py = pybind11;

template <class F>
using Arr = py::array_t<F, py::array::c_style>;
using Lengths = py::array_t<int64_t, py::array::c_style>;

[[noreturn]] inline void value_error(const std::string& msg) { throw std::invalid_argument(msg); }

// "(2, 3)", "(4,)".
std::string shape_str(const py::array& a);
// The Kind of a kind name, or a ValueError listing the names.
Kind get_kind(const std::string& name);
// Whether the array's data is aligned for its dtype (NPY_ARRAY_ALIGNED).
bool aligned(const py::array& a);
// Whether the bytes a spans and those b (an array or None) spans overlap
// (the span from the lowest to the highest element, whatever the strides).
bool overlaps(const py::array& a, const py::object& b);
// a has exactly these dimensions and is aligned, else a ValueError.
void check_shape(const py::array& a, const char* name, std::initializer_list<int64_t> dims);
// The size rule of fastrnn/workspace.h, as a ValueError.
void check_sizes(int64_t T, int64_t B, int64_t I, int64_t H);
// H small enough that the weight shapes (up to 4*H rows) can be computed.
void check_hidden_size(int64_t H);
// lengths (if given): shape (B,) and 1 <= lengths[b] <= T, else a ValueError.
void check_lengths(const std::optional<Lengths>& lengths, int64_t T, int64_t B);

// The argument report of a call whose arrays failed the fast check: the
// first float array fixes the dtype; raises for the first bad argument.
[[noreturn]] void report_bad_args(const char* fn,
                                  std::initializer_list<std::pair<const char*, py::object>> floats,
                                  std::initializer_list<std::pair<const char*, bool>> optional,
                                  const py::object& lengths);
// A [T, B, H] argument read by rows (grad_out) on the report path: None, or
// an ndarray of the forward's dtype (else TypeError) with 3 dimensions,
// adjacent rows and aligned (else ValueError).
void check_rows_arg(const py::object& o, const char* name, bool is_double);
// The same for the gradients of a backward call (dtype of the forward pass).
[[noreturn]] void report_bad_grads(const char* fn, bool is_double,
                                   std::initializer_list<std::pair<const char*, py::object>> grads);

// The dtype number of F and whether a dtype number is the same 64-bit integer.
template <class F>
int dtype_num() {
    static const int num = py::dtype::of<F>().num();
    return num;
}
inline bool is_int64_num(int num) {
    static const int longlong = py::dtype("longlong").num();  // np.longlong: the same 64-bit integers
    return num == dtype_num<int64_t>() || (sizeof(long long) == 8 && num == longlong);
}

// Whether an array's elements are F in this machine's byte order.
template <class F>
bool has_dtype(const py::array& a) {
    const py::dtype d = a.dtype();
    const int num = d.num();
    const bool dtype_ok = std::is_same<F, int64_t>::value ? is_int64_num(num) : num == dtype_num<F>();
    constexpr char foreign = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '>' : '<';
    return dtype_ok && d.byteorder() != foreign;
}

// What Arr<F> accepts without conversion: a C-contiguous ndarray of F in
// this machine's byte order.
template <class F>
bool is_arr(const py::object& o) {
    if (!py::isinstance<py::array>(o)) return false;
    const auto a = py::reinterpret_borrow<py::array>(o);
    return has_dtype<F>(a) && (a.flags() & py::array::c_style) != 0;
}

// The rows of a [T, B, H] array that need not be dense (layer_forward's out,
// layer_backward's grad_out): row (t, b) is H adjacent values at
// data + t * t + b * b (strides in elements).
struct RowStrides {
    int64_t t, b;
};

// Whether a (3 dimensions) has adjacent rows: its last axis has unit stride
// (or length 1) and every stride is a whole number of elements.
bool has_rows(const py::array& a);
// The row strides of an array that has_rows.
RowStrides row_strides(const py::array& a);
// What a strided grad_out may be without a report: an ndarray of F with
// has_rows, aligned.
template <class F>
bool is_rows(const py::object& o) {
    if (!py::isinstance<py::array>(o)) return false;
    const auto a = py::reinterpret_borrow<py::array>(o);
    return has_dtype<F>(a) && a.ndim() == 3 && has_rows(a) && aligned(a);
}
// layer_forward's out: None, or an ndarray of F (else TypeError) of shape
// (T, B, H), aligned, writeable, with adjacent rows that do not overlap each
// other (time-major or batch-major) and no byte shared with `inputs` (else
// ValueError naming out and what is wrong).
void check_out(const py::object& out, bool is_double, int64_t T, int64_t B, int64_t H,
               std::initializer_list<std::pair<const char*, const py::object*>> inputs);

// Every `required` argument is_arr<F>, every `optional` one too or None.
template <class F>
bool all_arrays_of(std::initializer_list<const py::object*> required,
                   std::initializer_list<const py::object*> optional) {
    for (const py::object* o : required)
        if (!is_arr<F>(*o)) return false;
    for (const py::object* o : optional)
        if (!o->is_none() && !is_arr<F>(*o)) return false;
    return true;
}

template <class F>
Arr<F> borrow(const py::object& o) {
    return py::reinterpret_borrow<Arr<F>>(o);
}

template <class F>
std::optional<Arr<F>> maybe(const py::object& o) {
    if (o.is_none()) return std::nullopt;
    return borrow<F>(o);
}

template <class F>
const F* ptr_or_null(const std::optional<Arr<F>>& a) {
    return a ? a->data() : nullptr;
}

// Shared shape checks of layer_forward / cell_forward (h: h0 or h, c: c0 or
// c). Returns H.
template <class F>
int64_t check_weights(Kind kind, int64_t B, int64_t I, const Arr<F>& h, const char* hname,
                      const std::optional<Arr<F>>& c, const char* cname, const Arr<F>& w_ih,
                      const Arr<F>& w_hh, const std::optional<Arr<F>>& b_ih,
                      const std::optional<Arr<F>>& b_hh, const std::optional<Arr<F>>& w_hr = std::nullopt) {
    if (h.ndim() != 2)
        value_error(std::string(hname) + " must have 2 dimensions (B, H), got shape " + shape_str(h));
    const int64_t P = h.shape(1);  // the state's units: H, or the projection's rows
    if (P < 1) value_error(std::string(hname) + " must have at least 1 column (its units)");
    check_shape(h, hname, {B, P});
    int64_t H = P;
    if (w_hr) {  // the LSTM's projection [P, H]
        if (w_hr->ndim() != 2 || w_hr->shape(1) < 1)
            value_error("w_hr must have 2 dimensions (P, H) with H >= 1, got shape " + shape_str(*w_hr));
        H = w_hr->shape(1);
        check_shape(*w_hr, "w_hr", {P, H});
        if (!has_cell_state(kind)) value_error("w_hr must be None for kinds other than 'lstm' and 'lstm_cifg' (projections are the LSTM's)");
        if (P > H)
            value_error("w_hr must have no more rows (projected units, " + std::to_string(P) +
                        ") than columns (hidden units, " + std::to_string(H) + ")");
    }
    check_hidden_size(H);
    const int64_t G = num_gates(kind);
    check_shape(w_ih, "w_ih", {G * H, I});
    check_shape(w_hh, "w_hh", {G * H, P});
    if (has_cell_state(kind)) {
        if (!c) value_error(std::string(cname) + " must be an array of shape (B, H) for the LSTM kinds ('lstm', 'lstm_cifg'), got None");
        check_shape(*c, cname, {B, H});
    } else if (c) {
        value_error(std::string(cname) + " must be None for kinds other than 'lstm' and 'lstm_cifg'");
    }
    if (b_ih.has_value() != b_hh.has_value()) value_error("b_ih and b_hh must both be arrays or both be None");
    if (b_ih) {
        check_shape(*b_ih, "b_ih", {G * H});
        check_shape(*b_hh, "b_hh", {G * H});
    }
    return H;
}

// A layer's or cell's recurrent-dropout mask: None, or an array of shape (B, H).
template <class F>
void check_hmask(const std::optional<Arr<F>>& hmask, int64_t B, int64_t H) {
    if (hmask) check_shape(*hmask, "hmask", {B, H});
}

// The LSTM's peepholes of a forward: None, or (lstm only) an array of shape (3*H).
template <class F>
void check_peepholes(Kind kind, const std::optional<Arr<F>>& peep, int64_t H) {
    if (!peep) return;
    if (!has_cell_state(kind)) value_error("peep must be None for kinds other than 'lstm' and 'lstm_cifg' (peepholes are the LSTM's)");
    check_shape(*peep, "peep", {kPeepholes * H});
}

}  // namespace fastrnn::python
