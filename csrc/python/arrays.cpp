// Array checks and error reports of the bindings (see arrays.h).
#include "arrays.h"

#include <string>
#include <utility>

#include "fastrnn/workspace.h"

namespace fastrnn::python {

namespace {

// NPY_ARRAY_ALIGNED of NumPy's C API (py::array names only the layout flags).
constexpr int kNpyArrayAligned = 0x0100;

std::string dims_str(std::initializer_list<int64_t> d) {
    std::string s = "(";
    size_t i = 0;
    for (int64_t v : d) {
        if (i++) s += ", ";
        s += std::to_string(v);
    }
    if (d.size() == 1) s += ",";
    return s + ")";
}

// Full check of one argument on the error-reporting path (what failed is_arr):
// a numpy array (or None when optional), of dtype `want` - the dtype `like`
// has - unless want is nullptr, C-contiguous.
void check_array_type(const py::object& o, const char* name, const py::dtype* want, bool optional,
                      const char* like = "x") {
    if (o.is_none()) {
        if (optional) return;
        throw py::type_error(std::string(name) + " must be a numpy array, got None");
    }
    if (!py::isinstance<py::array>(o))
        throw py::type_error(std::string(name) + " must be a numpy array, got " +
                             std::string(py::str(py::type::of(o).attr("__name__"))));
    py::array a = py::reinterpret_borrow<py::array>(o);
    if (want && !a.dtype().is(*want) && !a.dtype().equal(*want))
        throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(*want)) +
                             " like " + like + ", got " + std::string(py::str(a.dtype())));
    if (!(a.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
}

}  // namespace

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i) s += ", ";
        s += std::to_string(a.shape(i));
    }
    if (a.ndim() == 1) s += ",";
    return s + ")";
}

Kind get_kind(const std::string& name) {
    Kind k;
    if (!parse_kind(name.c_str(), &k))
        value_error("kind must be one of 'rnn_tanh', 'rnn_relu', 'lstm', 'gru', 'gru_orig', 'lstm_cifg', got '" + name +
                    "'");
    return k;
}

bool aligned(const py::array& a) { return (a.flags() & kNpyArrayAligned) != 0; }

namespace {

// [lo, hi): the bytes from a's lowest to its highest element (empty if a has none).
std::pair<const char*, const char*> span(const py::array& a) {
    const char* lo = static_cast<const char*>(a.data());
    if (a.size() == 0) return {lo, lo};
    const char* hi = lo + a.itemsize();
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        const py::ssize_t reach = (a.shape(i) - 1) * a.strides(i);
        (reach < 0 ? lo : hi) += reach;
    }
    return {lo, hi};
}

}  // namespace

bool overlaps(const py::array& a, const py::object& b) {
    if (b.is_none() || !py::isinstance<py::array>(b)) return false;
    const auto sa = span(a), sb = span(py::reinterpret_borrow<py::array>(b));
    return sa.first < sb.second && sb.first < sa.second;
}

bool has_rows(const py::array& a) {
    const py::ssize_t item = a.itemsize();
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        if (a.strides(i) % item != 0) return false;
    return a.shape(a.ndim() - 1) <= 1 || a.strides(a.ndim() - 1) == item;
}

RowStrides row_strides(const py::array& a) {
    return {a.strides(0) / a.itemsize(), a.strides(1) / a.itemsize()};
}

void check_out(const py::object& out, bool is_double, int64_t T, int64_t B, int64_t H,
               std::initializer_list<std::pair<const char*, const py::object*>> inputs) {
    if (out.is_none()) return;
    const char* want = is_double ? "float64" : "float32";
    if (!py::isinstance<py::array>(out))
        throw py::type_error(std::string("out must be None or a numpy array of dtype ") + want + ", got " +
                             std::string(py::str(py::type::of(out).attr("__name__"))));
    const py::array a = py::reinterpret_borrow<py::array>(out);
    if (!(is_double ? has_dtype<double>(a) : has_dtype<float>(a)))
        throw py::type_error(std::string("out must have dtype ") + want + " like x, got " +
                             std::string(py::str(a.dtype())));
    check_shape(a, "out", {T, B, H});
    if (!a.writeable()) value_error("out must be writeable");
    if (!has_rows(a))
        value_error("out must have adjacent rows (out[t, b] H adjacent values), got strides " +
                    std::string(py::str(py::tuple(a.attr("strides")))));
    // The rows must not overlap: ordered by stride, each axis of length > 1
    // steps past the whole extent of the one inside it.
    const RowStrides s = row_strides(a);
    struct Axis { int64_t n, stride; };
    Axis inner{T, s.t}, outer{B, s.b};
    if (inner.n <= 1 || (outer.n > 1 && outer.stride < inner.stride)) std::swap(inner, outer);
    const bool disjoint = (inner.n <= 1 || inner.stride >= H) &&
                          (outer.n <= 1 || (inner.n <= 1 ? outer.stride >= H
                                                         : outer.stride >= inner.n * inner.stride));
    if (!disjoint)
        value_error("out's rows must not overlap each other (time-major or batch-major rows of H), got strides " +
                    std::string(py::str(py::tuple(a.attr("strides")))));
    for (const auto& in : inputs)
        if (overlaps(a, *in.second)) value_error(std::string("out shares memory with ") + in.first);
}

void check_shape(const py::array& a, const char* name, std::initializer_list<int64_t> dims) {
    if (a.ndim() != (py::ssize_t)dims.size())
        value_error(std::string(name) + " must have " + std::to_string(dims.size()) + " dimensions with shape " +
                    dims_str(dims) + ", got shape " + shape_str(a));
    size_t i = 0;
    for (int64_t d : dims) {
        if (a.shape(i) != d)
            value_error(std::string(name) + " must have shape " + dims_str(dims) + ", got " + shape_str(a));
        ++i;
    }
    if (!aligned(a)) value_error(std::string(name) + " must be an aligned array");
}

void check_sizes(int64_t T, int64_t B, int64_t I, int64_t H) {
    switch (fastrnn::check_sizes(T, B, I, H)) {
        case SizeCheck::ok: return;
        case SizeCheck::not_positive:
            value_error("sizes must be >= 1, got T=" + std::to_string(T) + ", B=" + std::to_string(B) +
                        ", I=" + std::to_string(I) + ", H=" + std::to_string(H));
        case SizeCheck::too_large:
            value_error("sizes too large for the kernels (T*B, 4*H and I must fit a 32-bit int, and "
                        "each array's element count must fit int64 / 16)");
    }
}

void check_hidden_size(int64_t H) {
    if (H > kMaxDim / 4) value_error("hidden size too large");
}

void check_lengths(const std::optional<Lengths>& lengths, int64_t T, int64_t B) {
    if (!lengths) return;
    check_shape(*lengths, "lengths", {B});
    const int64_t* p = lengths->data();
    for (int64_t b = 0; b < B; ++b)
        if (p[b] < 1 || p[b] > T)
            value_error("lengths must satisfy 1 <= lengths[b] <= T = " + std::to_string(T) + ", got lengths[" +
                        std::to_string(b) + "] = " + std::to_string(p[b]));
}

void report_bad_args(const char* fn, std::initializer_list<std::pair<const char*, py::object>> floats,
                     std::initializer_list<std::pair<const char*, bool>> optional, const py::object& lengths) {
    // The first float array fixes the dtype.
    const py::object& first = floats.begin()->second;
    const char* first_name = floats.begin()->first;
    check_array_type(first, first_name, nullptr, false);
    py::dtype dt = py::reinterpret_borrow<py::array>(first).dtype();
    if (!dt.is(py::dtype::of<float>()) && !dt.equal(py::dtype::of<float>()) && !dt.is(py::dtype::of<double>()) &&
        !dt.equal(py::dtype::of<double>()))
        throw py::type_error(std::string(first_name) + " must have dtype float32 or float64, got " +
                             std::string(py::str(dt)));
    auto opt = optional.begin();
    for (const auto& kv : floats) {
        check_array_type(kv.second, kv.first, &dt, opt->second);
        ++opt;
    }
    if (!lengths.is_none()) {
        check_array_type(lengths, "lengths", nullptr, true);
        py::array a = py::reinterpret_borrow<py::array>(lengths);
        if (!a.dtype().equal(py::dtype::of<int64_t>()))
            throw py::type_error("lengths must have dtype int64, got " + std::string(py::str(a.dtype())));
    }
    throw py::type_error(std::string(fn) + ": invalid argument types");
}

void check_rows_arg(const py::object& o, const char* name, bool is_double) {
    if (o.is_none()) return;
    const py::dtype dt = is_double ? py::dtype::of<double>() : py::dtype::of<float>();
    if (!py::isinstance<py::array>(o))
        throw py::type_error(std::string(name) + " must be None or a numpy array of dtype " +
                             std::string(py::str(dt)) + ", got " +
                             std::string(py::str(py::type::of(o).attr("__name__"))));
    const py::array a = py::reinterpret_borrow<py::array>(o);
    if (!(is_double ? has_dtype<double>(a) : has_dtype<float>(a)))
        throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(dt)) +
                             " like the forward pass, got " + std::string(py::str(a.dtype())));
    if (a.ndim() != 3) value_error(std::string(name) + " must have 3 dimensions (T, B, H), got shape " + shape_str(a));
    if (!has_rows(a))
        value_error(std::string(name) + " must have adjacent rows (" + name + "[t, b] H adjacent values), got strides " +
                    std::string(py::str(py::tuple(a.attr("strides")))));
    if (!aligned(a)) value_error(std::string(name) + " must be an aligned array");
}

void report_bad_grads(const char* fn, bool is_double,
                      std::initializer_list<std::pair<const char*, py::object>> grads) {
    py::dtype dt = is_double ? py::dtype::of<double>() : py::dtype::of<float>();
    for (const auto& kv : grads) check_array_type(kv.second, kv.first, &dt, true, "the forward pass");
    throw py::type_error(std::string(fn) + ": invalid argument types");
}

}  // namespace fastrnn::python
