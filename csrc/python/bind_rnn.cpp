// Bindings of the recurrent kernels (backend contract, fastrnn/backends/CONTRACT.md).
//
// This file only checks arrays and dispatches: every array handed in from
// Python is checked for dtype, ndim, shape, C-contiguity and alignment, and
// every error is raised as ValueError (std::invalid_argument) or TypeError
// (py::type_error) naming the argument, before any kernel runs. float32 and
// float64 are bound under one name as two overloads with noconvert(), so no
// silent copies or dtype changes happen; a third overload taking plain
// objects only exists to report what is wrong with the arguments.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <dlfcn.h>

#include <climits>
#include <cstring>
#include <cstdint>
#include <optional>
#include <new>
#include <stdexcept>
#include <string>

#include "fastrnn/blas.h"
#include "fastrnn/memory.h"
#include "fastrnn/rnn.h"
#include "fastrnn/threads.h"

namespace py = pybind11;

namespace fastrnn::python {

namespace {

template <class F>
using Arr = py::array_t<F, py::array::c_style>;
using Lengths = py::array_t<int64_t, py::array::c_style>;

[[noreturn]] void value_error(const std::string& msg) { throw std::invalid_argument(msg); }

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i) s += ", ";
        s += std::to_string(a.shape(i));
    }
    if (a.ndim() == 1) s += ",";
    return s + ")";
}

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

Kind get_kind(const std::string& name) {
    Kind k;
    if (!parse_kind(name.c_str(), &k))
        value_error("kind must be one of 'rnn_tanh', 'rnn_relu', 'lstm', 'gru', 'gru_orig', got '" +
                    name + "'");
    return k;
}

bool aligned(const py::array& a) {
    return (a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0;
}

// What Arr<F> (noconvert) accepts, checked without building dtype objects: a C-contiguous
// ndarray of F in this machine's byte order.
template <class F>
bool is_arr(const py::object& o) {
    if (!py::isinstance<py::array>(o)) return false;
    const auto* a = py::detail::array_proxy(o.ptr());
    const auto* d = py::detail::array_descriptor_proxy(a->descr);
    int num = d->type_num;
    if (std::is_same<F, int64_t>::value && num == py::detail::npy_api::NPY_LONGLONG_ && sizeof(long long) == 8)
        num = py::detail::npy_format_descriptor<F>::value;  // np.longlong: the same 64-bit integers
    constexpr char foreign = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '>' : '<';
    return num == py::detail::npy_format_descriptor<F>::value && d->byteorder != foreign &&
           (a->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) != 0;
}

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
Arr<F> borrow(const py::object& o) { return py::reinterpret_borrow<Arr<F>>(o); }

template <class F>
std::optional<Arr<F>> maybe(const py::object& o) {
    if (o.is_none()) return std::nullopt;
    return borrow<F>(o);
}

// Whether a's bytes and those of b (an array or None) overlap.
bool overlaps(const py::array& a, const py::object& b) {
    if (b.is_none() || !py::isinstance<py::array>(b)) return false;
    const py::array bb = py::reinterpret_borrow<py::array>(b);
    const char* a0 = static_cast<const char*>(a.data());
    const char* b0 = static_cast<const char*>(bb.data());
    return a0 < b0 + bb.nbytes() && b0 < a0 + a.nbytes();
}

void check_shape(const py::array& a, const char* name, std::initializer_list<int64_t> dims) {
    if (a.ndim() != (py::ssize_t)dims.size())
        value_error(std::string(name) + " must have " + std::to_string(dims.size()) +
                    " dimensions with shape " + dims_str(dims) + ", got shape " + shape_str(a));
    size_t i = 0;
    for (int64_t d : dims) {
        if (a.shape(i) != d)
            value_error(std::string(name) + " must have shape " + dims_str(dims) + ", got " +
                        shape_str(a));
        ++i;
    }
    if (!aligned(a)) value_error(std::string(name) + " must be an aligned array");
}

// Full check of one argument on the error-reporting path (what failed is_arr):
// a numpy array (or None when optional), of dtype `want` - the dtype `like`
// has - unless want is nullptr, C-contiguous.
void check_array_type(const py::object& o, const char* name, const py::dtype* want,
                      bool optional, const char* like = "x") {
    if (o.is_none()) {
        if (optional) return;
        throw py::type_error(std::string(name) + " must be a numpy array, got None");
    }
    if (!py::isinstance<py::array>(o))
        throw py::type_error(std::string(name) + " must be a numpy array, got " +
                             std::string(py::str(py::type::of(o).attr("__name__"))));
    py::array a = py::reinterpret_borrow<py::array>(o);
    if (want) {
        if (!a.dtype().is(*want) && !a.dtype().equal(*want))
            throw py::type_error(std::string(name) + " must have dtype " +
                                 std::string(py::str(*want)) + " like " + like + ", got " +
                                 std::string(py::str(a.dtype())));
    }
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_))
        value_error(std::string(name) + " must be C-contiguous");
}

[[noreturn]] void report_bad_args(const char* fn, std::initializer_list<std::pair<const char*, py::object>> floats,
                                  std::initializer_list<std::pair<const char*, bool>> optional,
                                  const py::object& lengths) {
    // The first float array fixes the dtype.
    const py::object& first = floats.begin()->second;
    const char* first_name = floats.begin()->first;
    check_array_type(first, first_name, nullptr, false);
    py::dtype dt = py::reinterpret_borrow<py::array>(first).dtype();
    if (!dt.is(py::dtype::of<float>()) && !dt.equal(py::dtype::of<float>()) &&
        !dt.is(py::dtype::of<double>()) && !dt.equal(py::dtype::of<double>()))
        throw py::type_error(std::string(first_name) + " must have dtype float32 or float64, got " +
                             std::string(py::str(dt)));
    auto opt = optional.begin();
    for (const auto& kv : floats) {
        check_array_type(kv.second, kv.first, &dt, opt->second);
        ++opt;
    }
    if (!lengths.is_none()) {
        py::dtype i64 = py::dtype::of<int64_t>();
        check_array_type(lengths, "lengths", nullptr, true);
        py::array a = py::reinterpret_borrow<py::array>(lengths);
        if (!a.dtype().equal(i64))
            throw py::type_error("lengths must have dtype int64, got " + std::string(py::str(a.dtype())));
    }
    throw py::type_error(std::string(fn) + ": invalid argument types");
}

// The gradients of a backward call that failed the fast check: names the first bad one.
[[noreturn]] void report_bad_grads(const char* fn, bool is_double,
                                   std::initializer_list<std::pair<const char*, py::object>> grads) {
    py::dtype dt = is_double ? py::dtype::of<double>() : py::dtype::of<float>();
    for (const auto& kv : grads) check_array_type(kv.second, kv.first, &dt, true, "the forward pass");
    throw py::type_error(std::string(fn) + ": invalid argument types");
}

void check_sizes(int64_t T, int64_t B, int64_t I, int64_t H) {
    if (T < 1 || B < 1 || I < 1 || H < 1)
        value_error("sizes must be >= 1, got T=" + std::to_string(T) + ", B=" + std::to_string(B) +
                    ", I=" + std::to_string(I) + ", H=" + std::to_string(H));
    // BLAS takes 32-bit ints: rows T*B, columns up to 4*H, I.
    const int64_t lim = INT_MAX;
    if (T > lim / B || H > lim / 4 || I > lim)
        value_error("sizes too large for the kernels (T*B, 4*H and I must fit a 32-bit int)");
}

void check_lengths(const std::optional<Lengths>& lengths, int64_t T, int64_t B) {
    if (!lengths) return;
    check_shape(*lengths, "lengths", {B});
    const int64_t* p = lengths->data();
    for (int64_t b = 0; b < B; ++b)
        if (p[b] < 1 || p[b] > T)
            value_error("lengths must satisfy 1 <= lengths[b] <= T = " + std::to_string(T) +
                        ", got lengths[" + std::to_string(b) + "] = " + std::to_string(p[b]));
}

template <class F>
const F* ptr_or_null(const std::optional<Arr<F>>& a) {
    return a ? a->data() : nullptr;
}

// Shared shape checks of layer_forward / cell_forward. Returns H.
template <class F>
int64_t check_weights(Kind kind, int64_t B, int64_t I, const Arr<F>& h, const char* hname,
                      const std::optional<Arr<F>>& c, const char* cname, const Arr<F>& w_ih,
                      const Arr<F>& w_hh, const std::optional<Arr<F>>& b_ih,
                      const std::optional<Arr<F>>& b_hh) {
    if (h.ndim() != 2)
        value_error(std::string(hname) + " must have 2 dimensions (B, H), got shape " + shape_str(h));
    const int64_t H = h.shape(1);
    if (H < 1) value_error(std::string(hname) + " must have H >= 1 columns");
    check_shape(h, hname, {B, H});
    const int64_t G = num_gates(kind);
    if (H > INT_MAX / 4) value_error("hidden size too large");
    check_shape(w_ih, "w_ih", {G * H, I});
    check_shape(w_hh, "w_hh", {G * H, H});
    if (kind == Kind::lstm) {
        if (!c) value_error(std::string(cname) + " must be an array of shape (B, H) for kind 'lstm', got None");
        check_shape(*c, cname, {B, H});
    } else if (c) {
        value_error(std::string(cname) + " must be None for kinds other than 'lstm'");
    }
    if (b_ih.has_value() != b_hh.has_value())
        value_error("b_ih and b_hh must both be arrays or both be None");
    if (b_ih) {
        check_shape(*b_ih, "b_ih", {G * H});
        check_shape(*b_hh, "b_hh", {G * H});
    }
    return H;
}

// Arrays of a cached block's size (kCacheMinBytes and up) live in the
// kernels' block cache (fastrnn/memory.h): a training step then reuses the
// previous step's memory instead of faulting in fresh pages. The capsule gives the block back when NumPy drops the
// array; tracemalloc sees the block in NumPy's domain like any array.
constexpr unsigned kNumpyTraceDomain = 389047;  // NumPy's tracemalloc domain
const char* const kBlockName = "fastrnn.block";

// PyTraceMalloc_Track/Untrack, looked up at run time: CPython 3.11's header
// declares them without C linkage for C++ callers.
using TrackFn = int (*)(unsigned int, uintptr_t, size_t);
using UntrackFn = int (*)(unsigned int, uintptr_t);
const TrackFn trace_track = reinterpret_cast<TrackFn>(dlsym(RTLD_DEFAULT, "PyTraceMalloc_Track"));
const UntrackFn trace_untrack =
    reinterpret_cast<UntrackFn>(dlsym(RTLD_DEFAULT, "PyTraceMalloc_Untrack"));

void release_block(PyObject* cap) {
    void* p = PyCapsule_GetPointer(cap, kBlockName);
    const size_t bytes = reinterpret_cast<uintptr_t>(PyCapsule_GetContext(cap));
    if (trace_untrack) trace_untrack(kNumpyTraceDomain, reinterpret_cast<uintptr_t>(p));
    fastrnn::cache_free(p, bytes);
}

template <class F>
Arr<F> empty(std::initializer_list<int64_t> dims) {
    std::vector<py::ssize_t> shape(dims.begin(), dims.end());
    size_t bytes = sizeof(F);
    for (py::ssize_t d : shape)
        if (__builtin_mul_overflow(bytes, (size_t)d, &bytes)) throw std::bad_alloc();
    if (bytes < fastrnn::kCacheMinBytes) return Arr<F>(shape);
    size_t block = 0;
    void* p = fastrnn::cache_alloc(bytes, &block);
    if (!p) throw std::bad_alloc();  // MemoryError
    // The context (the block's real size) is set before the destructor that
    // reads it, so a failure here frees the block exactly once.
    PyObject* cap = PyCapsule_New(p, kBlockName, nullptr);
    if (!cap || PyCapsule_SetContext(cap, reinterpret_cast<void*>((uintptr_t)block)) != 0 ||
        PyCapsule_SetDestructor(cap, release_block) != 0) {
        Py_XDECREF(cap);
        fastrnn::cache_free(p, block);
        throw py::error_already_set();
    }
    py::capsule base = py::reinterpret_steal<py::capsule>(cap);
    if (trace_track) trace_track(kNumpyTraceDomain, reinterpret_cast<uintptr_t>(p), bytes);
    return Arr<F>(shape, static_cast<F*>(p), base);
}

// ------------------------------------------------------------- workspaces
// Opaque to the layers: what layer_backward needs from the forward pass.
struct LayerWorkspace {
    Kind kind;
    bool is_double;
    int64_t T, B, I, H;
    bool reverse, bias;
    bool consumed = false;
    py::object x, c0, w_ih, w_hh, lengths;  // the forward inputs (references)
    py::object gates, hs, cs;               // kept: [T,B,K], [T,B,H], [T,B,H] (lstm)
};

struct CellWorkspace {
    Kind kind;
    bool is_double;
    int64_t B, I, H;
    bool bias;
    bool consumed = false;
    py::object x, h, c, c_new, w_ih, w_hh, gates;
};

// ------------------------------------------------------------- BLAS
// SciPy's BLAS through its public Cython API, resolved once (GIL held).
void ensure_blas() {
    static bool tried = false;
    if (tried) return;
    tried = true;
    try {
        py::module_ cb = py::module_::import("scipy.linalg.cython_blas");
        py::dict capi = cb.attr("__pyx_capi__");
        auto get = [&](const char* name) -> void* {
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
        void* s = get("sgemm");
        void* d = get("dgemm");
        if (s && d) set_blas(reinterpret_cast<sgemm_fn>(s), reinterpret_cast<dgemm_fn>(d));
    } catch (py::error_already_set&) {
        // No SciPy: the built-in GEMM is used.
    }
}

// ------------------------------------------------------------- layer
template <class F>
py::tuple layer_forward_t(const std::string& kind_name, const Arr<F>& x, const Arr<F>& h0,
                          const std::optional<Arr<F>>& c0, const Arr<F>& w_ih, const Arr<F>& w_hh,
                          const std::optional<Arr<F>>& b_ih, const std::optional<Arr<F>>& b_hh,
                          const std::optional<Lengths>& lengths, bool reverse, bool keep) {
    const Kind kind = get_kind(kind_name);
    if (x.ndim() != 3) value_error("x must have 3 dimensions (T, B, I), got shape " + shape_str(x));
    const int64_t T = x.shape(0), B = x.shape(1), I = x.shape(2);
    if (T < 1 || B < 1 || I < 1) value_error("x must have T, B, I >= 1, got shape " + shape_str(x));
    if (!aligned(x)) value_error("x must be an aligned array");
    const int64_t H = check_weights<F>(kind, B, I, h0, "h0", c0, "c0", w_ih, w_hh, b_ih, b_hh);
    check_sizes(T, B, I, H);
    check_lengths(lengths, T, B);
    ensure_blas();
    const bool lstm = kind == Kind::lstm;
    const int64_t K = kept_gates(kind) * H;

    Arr<F> out = empty<F>({T, B, H});
    Arr<F> h_n = empty<F>({B, H});
    std::optional<Arr<F>> c_n;
    if (lstm) c_n = empty<F>({B, H});
    std::optional<Arr<F>> gates, hs, cs;
    if (keep) {
        gates = empty<F>({T, B, K});
        // rnn kinds: h0 only (their kept gates are the states; see fastrnn/rnn.h)
        hs = empty<F>({num_gates(kind) == 1 ? 1 : T, B, H});
        if (lstm) cs = empty<F>({T, B, H});
    }
    {
        // The kernel touches no Python object: release the GIL so other
        // Python threads run meanwhile (every array stays referenced here).
        py::gil_scoped_release nogil;
        fastrnn::layer_forward<F>(kind, T, B, I, H, x.data(), h0.data(), ptr_or_null(c0),
                                  w_ih.data(), w_hh.data(), ptr_or_null(b_ih), ptr_or_null(b_hh),
                                  lengths ? lengths->data() : nullptr, reverse, out.mutable_data(),
                                  h_n.mutable_data(), c_n ? c_n->mutable_data() : nullptr,
                                  gates ? gates->mutable_data() : nullptr,
                                  hs ? hs->mutable_data() : nullptr,
                                  cs ? cs->mutable_data() : nullptr);
    }
    py::object ws = py::none();
    if (keep) {
        LayerWorkspace w;
        w.kind = kind;
        w.is_double = std::is_same<F, double>::value;
        w.T = T; w.B = B; w.I = I; w.H = H;
        w.reverse = reverse;
        w.bias = b_ih.has_value();
        w.x = x; w.w_ih = w_ih; w.w_hh = w_hh;
        w.c0 = c0 ? py::object(*c0) : py::none();
        w.lengths = lengths ? py::object(*lengths) : py::none();
        w.gates = *gates; w.hs = *hs;
        w.cs = cs ? py::object(*cs) : py::none();
        ws = py::cast(std::move(w));
    }
    return py::make_tuple(out, h_n, c_n ? py::object(*c_n) : py::none(), ws);
}

template <class F>
py::dict layer_backward_t(LayerWorkspace& ws, const std::optional<Arr<F>>& grad_out,
                          const std::optional<Arr<F>>& grad_h_n,
                          const std::optional<Arr<F>>& grad_c_n, const py::object& acc) {
    if (ws.consumed) value_error("ws was already used by layer_backward (backward called twice)");
    const int64_t T = ws.T, B = ws.B, I = ws.I, H = ws.H;
    const Kind kind = ws.kind;
    const bool lstm = kind == Kind::lstm;
    if (grad_out) check_shape(*grad_out, "grad_out", {T, B, H});
    if (grad_h_n) check_shape(*grad_h_n, "grad_h_n", {B, H});
    if (grad_c_n) {
        if (!lstm) value_error("grad_c_n must be None for kinds other than 'lstm'");
        check_shape(*grad_c_n, "grad_c_n", {B, H});
    }
    const int64_t GH = num_gates(kind) * H;
    // acc: the caller's running weight gradients, added into in place.
    std::optional<Arr<F>> acc_ih, acc_hh;
    if (!acc.is_none()) {
        if (!(py::isinstance<py::tuple>(acc) || py::isinstance<py::list>(acc)) || py::len(acc) != 2)
            throw py::type_error("acc must be None or a pair (w_ih, w_hh) of arrays to add the weight "
                                 "gradients into, got " +
                                 std::string(py::str(py::type::of(acc).attr("__name__"))));
        const py::object a0 = acc[py::int_(0)], a1 = acc[py::int_(1)];
        const char* names[2] = {"acc[0] (w_ih)", "acc[1] (w_hh)"};
        const py::object* as[2] = {&a0, &a1};
        const int64_t cols[2] = {I, H};
        for (int i = 0; i < 2; ++i) {
            if (!is_arr<F>(*as[i]))
                throw py::type_error(std::string(names[i]) + " must be a C-contiguous numpy array of dtype " +
                                     (std::is_same<F, double>::value ? "float64" : "float32") +
                                     " like the forward pass");
            const py::array a = py::reinterpret_borrow<py::array>(*as[i]);
            check_shape(a, names[i], {GH, cols[i]});
            if (!a.writeable()) value_error(std::string(names[i]) + " must be writeable");
            // The kernel reads these while it writes acc: no overlap, or the result is wrong.
            for (const py::object& other : {ws.x, ws.w_ih, ws.w_hh, ws.gates, ws.hs, ws.cs, ws.c0})
                if (overlaps(a, other)) value_error(std::string(names[i]) + " shares memory with the forward's arrays");
            for (const auto* g : {&grad_out, &grad_h_n, &grad_c_n})
                if (*g && overlaps(a, **g)) value_error(std::string(names[i]) + " shares memory with a gradient argument");
        }
        if (overlaps(py::reinterpret_borrow<py::array>(a0), a1))
            value_error("acc[0] and acc[1] share memory");
        acc_ih = py::reinterpret_borrow<Arr<F>>(a0);
        acc_hh = py::reinterpret_borrow<Arr<F>>(a1);
    }
    // Take the workspace (it may be consumed): its arrays stay alive in these
    // locals while the kernel runs.
    Arr<F> x = py::reinterpret_borrow<Arr<F>>(ws.x), w_ih = py::reinterpret_borrow<Arr<F>>(ws.w_ih),
           w_hh = py::reinterpret_borrow<Arr<F>>(ws.w_hh),
           gates = py::reinterpret_borrow<Arr<F>>(ws.gates), hs = py::reinterpret_borrow<Arr<F>>(ws.hs);
    py::object c0o = ws.c0, cso = ws.cs, leno = ws.lengths;
    ws.consumed = true;
    ws.x = ws.c0 = ws.w_ih = ws.w_hh = ws.lengths = ws.gates = ws.hs = ws.cs = py::none();

    const F* c0 = lstm ? py::reinterpret_borrow<Arr<F>>(c0o).data() : nullptr;
    const F* cs = lstm ? py::reinterpret_borrow<Arr<F>>(cso).data() : nullptr;
    const int64_t* len = leno.is_none() ? nullptr : py::reinterpret_borrow<Lengths>(leno).data();

    Arr<F> dx = empty<F>({T, B, I}), dh0 = empty<F>({B, H});
    std::optional<Arr<F>> dc0;
    if (lstm) dc0 = empty<F>({B, H});
    Arr<F> dw_ih = acc_ih ? *acc_ih : empty<F>({GH, I}), dw_hh = acc_hh ? *acc_hh : empty<F>({GH, H});
    std::optional<Arr<F>> db_ih, db_hh;
    if (ws.bias) {
        db_ih = empty<F>({GH});
        db_hh = empty<F>({GH});
    }
    {
        // Pure C++ from here: let other Python threads run.
        py::gil_scoped_release nogil;
        fastrnn::layer_backward<F>(
            kind, T, B, I, H, x.data(), c0, w_ih.data(), w_hh.data(), len, ws.reverse,
            gates.data(), hs.data(), cs, ptr_or_null(grad_out), ptr_or_null(grad_h_n),
            ptr_or_null(grad_c_n), dx.mutable_data(), dh0.mutable_data(),
            dc0 ? dc0->mutable_data() : nullptr, dw_ih.mutable_data(), dw_hh.mutable_data(),
            db_ih ? db_ih->mutable_data() : nullptr, db_hh ? db_hh->mutable_data() : nullptr,
            acc_ih.has_value());
    }
    py::dict d;
    d["x"] = dx;
    d["h0"] = dh0;
    d["c0"] = dc0 ? py::object(*dc0) : py::none();
    d["w_ih"] = dw_ih;
    d["w_hh"] = dw_hh;
    d["b_ih"] = db_ih ? py::object(*db_ih) : py::none();
    d["b_hh"] = db_hh ? py::object(*db_hh) : py::none();
    return d;
}

// ------------------------------------------------------------- cell
template <class F>
py::tuple cell_forward_t(const std::string& kind_name, const Arr<F>& x, const Arr<F>& h,
                         const std::optional<Arr<F>>& c, const Arr<F>& w_ih, const Arr<F>& w_hh,
                         const std::optional<Arr<F>>& b_ih, const std::optional<Arr<F>>& b_hh,
                         bool keep) {
    const Kind kind = get_kind(kind_name);
    if (x.ndim() != 2) value_error("x must have 2 dimensions (B, I), got shape " + shape_str(x));
    const int64_t B = x.shape(0), I = x.shape(1);
    if (B < 1 || I < 1) value_error("x must have B, I >= 1, got shape " + shape_str(x));
    if (!aligned(x)) value_error("x must be an aligned array");
    const int64_t H = check_weights<F>(kind, B, I, h, "h", c, "c", w_ih, w_hh, b_ih, b_hh);
    check_sizes(1, B, I, H);
    if (B > 4) ensure_blas();
    const bool lstm = kind == Kind::lstm;
    const int64_t K = kept_gates(kind) * H;
    Arr<F> h_new = empty<F>({B, H});
    std::optional<Arr<F>> c_new, gates;
    if (lstm) c_new = empty<F>({B, H});
    if (keep) gates = empty<F>({B, K});
    {
        // Small kernel, but still pure C++: no reason to hold the GIL.
        py::gil_scoped_release nogil;
        fastrnn::cell_forward<F>(kind, B, I, H, x.data(), h.data(), ptr_or_null(c), w_ih.data(),
                                 w_hh.data(), ptr_or_null(b_ih), ptr_or_null(b_hh),
                                 h_new.mutable_data(), c_new ? c_new->mutable_data() : nullptr,
                                 gates ? gates->mutable_data() : nullptr);
    }
    py::object ws = py::none();
    if (keep) {
        CellWorkspace w;
        w.kind = kind;
        w.is_double = std::is_same<F, double>::value;
        w.B = B; w.I = I; w.H = H;
        w.bias = b_ih.has_value();
        w.x = x; w.h = h; w.w_ih = w_ih; w.w_hh = w_hh; w.gates = *gates;
        w.c = c ? py::object(*c) : py::none();
        // Our own copy of c_new: the caller may modify the returned array.
        w.c_new = py::none();
        if (lstm) {
            Arr<F> copy = empty<F>({B, H});
            std::memcpy(copy.mutable_data(), c_new->data(), sizeof(F) * B * H);
            w.c_new = copy;
        }
        ws = py::cast(std::move(w));
    }
    return py::make_tuple(h_new, c_new ? py::object(*c_new) : py::none(), ws);
}

template <class F>
py::dict cell_backward_t(CellWorkspace& ws, const std::optional<Arr<F>>& grad_h,
                         const std::optional<Arr<F>>& grad_c) {
    if (ws.consumed) value_error("ws was already used by cell_backward (backward called twice)");
    const int64_t B = ws.B, I = ws.I, H = ws.H;
    const Kind kind = ws.kind;
    const bool lstm = kind == Kind::lstm;
    if (grad_h) check_shape(*grad_h, "grad_h", {B, H});
    if (grad_c) {
        if (!lstm) value_error("grad_c must be None for kinds other than 'lstm'");
        check_shape(*grad_c, "grad_c", {B, H});
    }
    const int64_t GH = num_gates(kind) * H;
    Arr<F> x = py::reinterpret_borrow<Arr<F>>(ws.x), h = py::reinterpret_borrow<Arr<F>>(ws.h),
           w_ih = py::reinterpret_borrow<Arr<F>>(ws.w_ih),
           w_hh = py::reinterpret_borrow<Arr<F>>(ws.w_hh),
           gates = py::reinterpret_borrow<Arr<F>>(ws.gates);
    py::object co = ws.c, cno = ws.c_new;
    ws.consumed = true;
    ws.x = ws.h = ws.c = ws.c_new = ws.w_ih = ws.w_hh = ws.gates = py::none();
    const F* c = lstm ? py::reinterpret_borrow<Arr<F>>(co).data() : nullptr;
    const F* cn = lstm ? py::reinterpret_borrow<Arr<F>>(cno).data() : nullptr;

    Arr<F> dx = empty<F>({B, I}), dh = empty<F>({B, H});
    std::optional<Arr<F>> dc;
    if (lstm) dc = empty<F>({B, H});
    Arr<F> dw_ih = empty<F>({GH, I}), dw_hh = empty<F>({GH, H});
    std::optional<Arr<F>> db_ih, db_hh;
    if (ws.bias) {
        db_ih = empty<F>({GH});
        db_hh = empty<F>({GH});
    }
    {
        // Pure C++: release the GIL.
        py::gil_scoped_release nogil;
        fastrnn::cell_backward<F>(kind, B, I, H, x.data(), h.data(), c, cn, w_ih.data(),
                                  w_hh.data(), gates.data(), ptr_or_null(grad_h),
                                  ptr_or_null(grad_c), dx.mutable_data(), dh.mutable_data(),
                                  dc ? dc->mutable_data() : nullptr, dw_ih.mutable_data(),
                                  dw_hh.mutable_data(), db_ih ? db_ih->mutable_data() : nullptr,
                                  db_hh ? db_hh->mutable_data() : nullptr);
    }
    py::dict d;
    d["x"] = dx;
    d["h"] = dh;
    d["c"] = dc ? py::object(*dc) : py::none();
    d["w_ih"] = dw_ih;
    d["w_hh"] = dw_hh;
    d["b_ih"] = db_ih ? py::object(*db_ih) : py::none();
    d["b_hh"] = db_hh ? py::object(*db_hh) : py::none();
    return d;
}

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
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX) value_error("a and b are too large");
    Arr<F> c = empty<F>({M, N});
    {
        py::gil_scoped_release nogil;  // pure C++
        fastrnn::matmul<F>(ta, tb, M, N, K, a.data(), a.shape(1), b.data(), b.shape(1), c.mutable_data());
    }
    return c;
}

}  // namespace

void bind_rnn(py::module_& m) {
    py::class_<LayerWorkspace>(m, "LayerWorkspace",
                               "What layer_backward needs from a training layer_forward (opaque).");
    py::class_<CellWorkspace>(m, "CellWorkspace",
                              "What cell_backward needs from a training cell_forward (opaque).");

    // One entry point per function for both dtypes, not one overload per dtype: pybind11's
    // array_t caster looks a dtype object up per argument and per overload tried (~0.15 us
    // each), and a cell step of B=1, H=128 computes for 1-5 us. Arrays that pass the fast check
    // (is_arr) go to the kernels' binding; anything else to the argument report, which names
    // the argument and what was expected.
    m.def(
        "layer_forward",
        [](const std::string& kind, const py::object& x, const py::object& h0, const py::object& c0,
           const py::object& w_ih, const py::object& w_hh, const py::object& b_ih,
           const py::object& b_hh, const py::object& lengths, bool reverse, bool keep) -> py::tuple {
            // the call in dtype F (named by a value of it) if every array is one of F
            auto call = [&](auto f) -> std::optional<py::tuple> {
                using F = decltype(f);
                if (!all_arrays_of<F>({&x, &h0, &w_ih, &w_hh}, {&c0, &b_ih, &b_hh})) return std::nullopt;
                return layer_forward_t<F>(kind, borrow<F>(x), borrow<F>(h0), maybe<F>(c0),
                                          borrow<F>(w_ih), borrow<F>(w_hh), maybe<F>(b_ih),
                                          maybe<F>(b_hh), maybe<int64_t>(lengths), reverse, keep);
            };
            if (lengths.is_none() || is_arr<int64_t>(lengths)) {
                if (auto r = call(0.0f)) return *r;
                if (auto r = call(0.0)) return *r;
            }
            report_bad_args("layer_forward",
                            {{"x", x}, {"h0", h0}, {"c0", c0}, {"w_ih", w_ih}, {"w_hh", w_hh},
                             {"b_ih", b_ih}, {"b_hh", b_hh}},
                            {{"x", false}, {"h0", false}, {"c0", true}, {"w_ih", false},
                             {"w_hh", false}, {"b_ih", true}, {"b_hh", true}},
                            lengths);
        },
        py::arg("kind"), py::arg("x"), py::arg("h0"), py::arg("c0").none(true), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih").none(true), py::arg("b_hh").none(true),
        py::arg("lengths").none(true), py::arg("reverse"), py::arg("keep"),
        "layer_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, keep)"
        " -> (out, h_n, c_n, ws)\n\nOne layer, one direction, whole sequence (see CONTRACT.md).");

    m.def(
        "layer_backward",
        [](const py::object& ws, const py::object& go, const py::object& gh,
           const py::object& gc, const py::object& acc) -> py::dict {
            if (!py::isinstance<LayerWorkspace>(ws))
                throw py::type_error("ws must be the workspace returned by layer_forward(keep=True)");
            LayerWorkspace& w = ws.cast<LayerWorkspace&>();
            if (!w.is_double && all_arrays_of<float>({}, {&go, &gh, &gc}))
                return layer_backward_t<float>(w, maybe<float>(go), maybe<float>(gh), maybe<float>(gc),
                                               acc);
            if (w.is_double && all_arrays_of<double>({}, {&go, &gh, &gc}))
                return layer_backward_t<double>(w, maybe<double>(go), maybe<double>(gh),
                                                maybe<double>(gc), acc);
            report_bad_grads("layer_backward", w.is_double,
                             {{"grad_out", go}, {"grad_h_n", gh}, {"grad_c_n", gc}});
        },
        py::arg("ws"), py::arg("grad_out").none(true), py::arg("grad_h_n").none(true),
        py::arg("grad_c_n").none(true), py::arg("acc") = py::none(),
        "layer_backward(ws, grad_out, grad_h_n, grad_c_n, acc=None) -> dict of gradients\n\n"
        "acc: None or a pair (w_ih, w_hh) the weight gradients are added into (see CONTRACT.md).");

    m.def(
        "cell_forward",
        [](const std::string& kind, const py::object& x, const py::object& h, const py::object& c,
           const py::object& w_ih, const py::object& w_hh, const py::object& b_ih,
           const py::object& b_hh, bool keep) -> py::tuple {
            auto call = [&](auto f) -> std::optional<py::tuple> {  // as in layer_forward
                using F = decltype(f);
                if (!all_arrays_of<F>({&x, &h, &w_ih, &w_hh}, {&c, &b_ih, &b_hh})) return std::nullopt;
                return cell_forward_t<F>(kind, borrow<F>(x), borrow<F>(h), maybe<F>(c), borrow<F>(w_ih),
                                         borrow<F>(w_hh), maybe<F>(b_ih), maybe<F>(b_hh), keep);
            };
            if (auto r = call(0.0f)) return *r;
            if (auto r = call(0.0)) return *r;
            report_bad_args("cell_forward",
                            {{"x", x}, {"h", h}, {"c", c}, {"w_ih", w_ih}, {"w_hh", w_hh},
                             {"b_ih", b_ih}, {"b_hh", b_hh}},
                            {{"x", false}, {"h", false}, {"c", true}, {"w_ih", false},
                             {"w_hh", false}, {"b_ih", true}, {"b_hh", true}},
                            py::none());
        },
        py::arg("kind"), py::arg("x"), py::arg("h"), py::arg("c").none(true), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih").none(true), py::arg("b_hh").none(true), py::arg("keep"),
        "cell_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, keep) -> (h_new, c_new, ws)");

    m.def(
        "cell_backward",
        [](const py::object& ws, const py::object& gh, const py::object& gc) -> py::dict {
            if (!py::isinstance<CellWorkspace>(ws))
                throw py::type_error("ws must be the workspace returned by cell_forward(keep=True)");
            CellWorkspace& w = ws.cast<CellWorkspace&>();
            if (!w.is_double && all_arrays_of<float>({}, {&gh, &gc}))
                return cell_backward_t<float>(w, maybe<float>(gh), maybe<float>(gc));
            if (w.is_double && all_arrays_of<double>({}, {&gh, &gc}))
                return cell_backward_t<double>(w, maybe<double>(gh), maybe<double>(gc));
            report_bad_grads("cell_backward", w.is_double, {{"grad_h", gh}, {"grad_c", gc}});
        },
        py::arg("ws"), py::arg("grad_h").none(true), py::arg("grad_c").none(true),
        "cell_backward(ws, grad_h, grad_c) -> dict of gradients");

    m.def("_activation", &activation_t<float>, py::arg("which"), py::arg("x").noconvert(),
          "The kernels' vectorized sigmoid/tanh/exp, elementwise (for accuracy tests).");
    m.def("_activation", &activation_t<double>, py::arg("which"), py::arg("x").noconvert());

    m.def("_matmul", &matmul_t<float>, py::arg("a").noconvert(), py::arg("b").noconvert(),
          py::arg("ta") = false, py::arg("tb") = false,
          "op(a) @ op(b) through the layers' GEMM (for tests and timing).");
    m.def("_matmul", &matmul_t<double>, py::arg("a").noconvert(), py::arg("b").noconvert(),
          py::arg("ta") = false, py::arg("tb") = false);

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
