// Bindings of the cell kernels: cell_forward and cell_backward (backend
// contract, fastrnn/backends/CONTRACT.md). They convert, check and dispatch.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>

#include "arrays.h"
#include "backward.h"
#include "blocks.h"
#include "fastrnn/rnn.h"
#include "fastrnn/workspace.h"
#include "workspaces.h"

namespace fastrnn::python {

namespace {

template <class F>
py::tuple cell_forward_t(const std::string& kind_name, const Arr<F>& x, const Arr<F>& h,
                         const std::optional<Arr<F>>& c, const Arr<F>& w_ih, const Arr<F>& w_hh,
                         const std::optional<Arr<F>>& b_ih, const std::optional<Arr<F>>& b_hh,
                         bool keep, const std::optional<Arr<F>>& peep, const std::optional<Arr<F>>& hmask) {
    const Kind kind = get_kind(kind_name);
    if (x.ndim() != 2) value_error("x must have 2 dimensions (B, I), got shape " + shape_str(x));
    const int64_t B = x.shape(0), I = x.shape(1);
    if (B < 1 || I < 1) value_error("x must have B, I >= 1, got shape " + shape_str(x));
    if (!aligned(x)) value_error("x must be an aligned array");
    const int64_t H = check_weights<F>(kind, B, I, h, "h", c, "c", w_ih, w_hh, b_ih, b_hh);
    check_sizes(1, B, I, H);
    check_peepholes(kind, peep, H);
    check_hmask(hmask, B, H);
    const bool lstm = has_cell_state(kind);
    Arr<F> h_new = empty<F>({B, H});
    std::optional<Arr<F>> c_new, gates;
    if (lstm) c_new = empty<F>({B, H});
    if (keep) gates = empty<F>({B, cell_workspace_elements(kind, 1, H)});
    {
        // Small kernel, but still pure C++: no reason to hold the GIL.
        py::gil_scoped_release nogil;
        fastrnn::cell_forward<F>(kind, B, I, H, x.data(), h.data(), ptr_or_null(c), w_ih.data(),
                                 w_hh.data(), ptr_or_null(b_ih), ptr_or_null(b_hh), ptr_or_null(peep),
                                 ptr_or_null(hmask), h_new.mutable_data(), c_new ? c_new->mutable_data() : nullptr,
                                 gates ? gates->mutable_data() : nullptr);
    }
    py::object ws = py::none();
    if (keep) {
        CellWorkspace w;
        w.kind = kind;
        w.is_double = std::is_same<F, double>::value;
        w.B = B; w.I = I; w.H = H;
        w.bias = b_ih.has_value();
        // Our own copies of the inputs and of c_new (contract.Backend.cell_forward): the caller
        // may change its arrays, or write into the returned one, before backward. The weights,
        // peep and hmask are kept by reference, as a layer's (contract.py: the caller leaves them
        // unchanged until backward; the layers refuse a backward after parameters were replaced).
        w.x = copy_of(x, {B, I});
        w.h = copy_of(h, {B, H});
        w.c = c ? py::object(copy_of(*c, {B, H})) : py::none();
        w.c_new = lstm ? py::object(copy_of(*c_new, {B, H})) : py::none();
        w.w_ih = w_ih; w.w_hh = w_hh; w.gates = *gates;
        w.peep = peep ? py::object(*peep) : py::none();
        w.hmask = hmask ? py::object(*hmask) : py::none();
        ws = py::cast(std::move(w));
    }
    return py::make_tuple(h_new, c_new ? py::object(*c_new) : py::none(), ws);
}

template <class F>
py::dict cell_backward_t(CellWorkspace& ws, const std::optional<Arr<F>>& grad_h,
                         const std::optional<Arr<F>>& grad_c) {
    check_usable(ws, "cell_backward");
    const int64_t B = ws.B, I = ws.I, H = ws.H;
    const Kind kind = ws.kind;
    const bool lstm = has_cell_state(kind);
    if (grad_h) check_shape(*grad_h, "grad_h", {B, H});
    if (grad_c) {
        if (!lstm) value_error("grad_c must be None for kinds other than 'lstm' and 'lstm_cifg'");
        check_shape(*grad_c, "grad_c", {B, H});
    }
    // The workspace's arrays, read by the kernel (ws keeps them alive while it runs).
    const Arr<F> x = borrow<F>(ws.x), h = borrow<F>(ws.h), w_ih = borrow<F>(ws.w_ih),
                 w_hh = borrow<F>(ws.w_hh), gates = borrow<F>(ws.gates);
    const F* c = lstm ? borrow<F>(ws.c).data() : nullptr;
    const F* cn = lstm ? borrow<F>(ws.c_new).data() : nullptr;
    const F* peep = ws.peep.is_none() ? nullptr : borrow<F>(ws.peep).data();
    const F* hmask = ws.hmask.is_none() ? nullptr : borrow<F>(ws.hmask).data();

    Gradients<F> g({B, I}, B, I, H, H, kind, ws.bias);
    std::optional<Arr<F>> dpeep;
    if (peep) dpeep = empty<F>({kPeepholes * H});
    run_backward(ws, "cell_backward", [&] {
        fastrnn::cell_backward<F>(kind, B, I, H, x.data(), h.data(), c, cn, w_ih.data(),
                                  w_hh.data(), peep, hmask, gates.data(), ptr_or_null(grad_h),
                                  ptr_or_null(grad_c), g.dx.mutable_data(), g.dh.mutable_data(),
                                  g.dc_ptr(), g.dw_ih.mutable_data(), g.dw_hh.mutable_data(),
                                  g.db_ih_ptr(), g.db_hh_ptr(), dpeep ? dpeep->mutable_data() : nullptr);
    });
    py::dict d = g.dict("h", "c");
    d["peep"] = dpeep ? py::object(*dpeep) : py::none();
    return d;
}


}  // namespace

void bind_cells(py::module_& m) {
    py::class_<CellWorkspace>(m, "CellWorkspace",
                              "What cell_backward needs from a training cell_forward (opaque).");

    m.def(
        "cell_forward",
        [](const std::string& kind, const py::object& x, const py::object& h, const py::object& c,
           const py::object& w_ih, const py::object& w_hh, const py::object& b_ih,
           const py::object& b_hh, bool keep, const py::object& peep, const py::object& hmask) -> py::tuple {
            auto call = [&](auto f) -> std::optional<py::tuple> {  // as in layer_forward
                using F = decltype(f);
                if (!all_arrays_of<F>({&x, &h, &w_ih, &w_hh}, {&c, &b_ih, &b_hh, &peep, &hmask})) return std::nullopt;
                return cell_forward_t<F>(kind, borrow<F>(x), borrow<F>(h), maybe<F>(c), borrow<F>(w_ih),
                                         borrow<F>(w_hh), maybe<F>(b_ih), maybe<F>(b_hh), keep, maybe<F>(peep),
                                         maybe<F>(hmask));
            };
            if (auto r = call(0.0f)) return *r;
            if (auto r = call(0.0)) return *r;
            report_bad_args("cell_forward",
                            {{"x", x}, {"h", h}, {"c", c}, {"w_ih", w_ih}, {"w_hh", w_hh},
                             {"b_ih", b_ih}, {"b_hh", b_hh}, {"peep", peep}, {"hmask", hmask}},
                            {{"x", false}, {"h", false}, {"c", true}, {"w_ih", false},
                             {"w_hh", false}, {"b_ih", true}, {"b_hh", true}, {"peep", true}, {"hmask", true}},
                            py::none());
        },
        py::arg("kind"), py::arg("x"), py::arg("h"), py::arg("c").none(true), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih").none(true), py::arg("b_hh").none(true), py::arg("keep"),
        py::arg("peep") = py::none(), py::arg("hmask") = py::none(),
        "cell_forward(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, keep, peep=None, hmask=None) -> (h_new, c_new, ws)\n\n"
        "peep: None or the LSTM's peephole weights [3*H]; hmask: None or [B, H], the recurrent input's mask "
        "(the product sees h * hmask; kept by reference for cell_backward)");

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

}

}  // namespace fastrnn::python
