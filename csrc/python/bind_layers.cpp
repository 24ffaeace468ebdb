// Bindings of the layer kernels: layer_forward and layer_backward (backend
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
py::tuple layer_forward_t(const std::string& kind_name, const Arr<F>& x, const Arr<F>& h0,
                          const std::optional<Arr<F>>& c0, const Arr<F>& w_ih, const Arr<F>& w_hh,
                          const std::optional<Arr<F>>& b_ih, const std::optional<Arr<F>>& b_hh,
                          const std::optional<Lengths>& lengths, bool reverse, bool keep,
                          const py::object& out_arg, const std::optional<Arr<F>>& peep,
                          const std::optional<Arr<F>>& hmask, const std::optional<Arr<F>>& w_hr) {
    const Kind kind = get_kind(kind_name);
    if (x.ndim() != 3) value_error("x must have 3 dimensions (T, B, I), got shape " + shape_str(x));
    const int64_t T = x.shape(0), B = x.shape(1), I = x.shape(2);
    if (T < 1 || B < 1 || I < 1) value_error("x must have T, B, I >= 1, got shape " + shape_str(x));
    if (!aligned(x)) value_error("x must be an aligned array");
    const int64_t H = check_weights<F>(kind, B, I, h0, "h0", c0, "c0", w_ih, w_hh, b_ih, b_hh, w_hr);
    const int64_t P = h0.shape(1);  // the state's units (w_hr's rows, else H)
    check_sizes(T, B, I, H);
    check_lengths(lengths, T, B);
    const bool lstm = has_cell_state(kind);
    check_peepholes(kind, peep, H);
    check_hmask(hmask, B, P);
    const py::object none = py::none(), c0o = c0 ? py::object(*c0) : none,
                     b_iho = b_ih ? py::object(*b_ih) : none, b_hho = b_hh ? py::object(*b_hh) : none,
                     leno = lengths ? py::object(*lengths) : none, peepo = peep ? py::object(*peep) : none,
                     hmasko = hmask ? py::object(*hmask) : none, w_hro = w_hr ? py::object(*w_hr) : none;
    check_out(out_arg, std::is_same<F, double>::value, T, B, P,
              {{"x", &x}, {"h0", &h0}, {"c0", &c0o}, {"w_ih", &w_ih}, {"w_hh", &w_hh}, {"b_ih", &b_iho},
               {"b_hh", &b_hho}, {"lengths", &leno}, {"peep", &peepo}, {"hmask", &hmasko}, {"w_hr", &w_hro}});

    // The caller's out (any row strides), or a new dense one.
    py::array out = out_arg.is_none() ? py::array(empty<F>({T, B, P}))
                                            : py::reinterpret_borrow<py::array>(out_arg);
    const RowStrides out_rows = out_arg.is_none() ? RowStrides{B * P, P} : row_strides(out);
    F* const out_data = static_cast<F*>(out.mutable_data());
    Arr<F> h_n = empty<F>({B, P});
    std::optional<Arr<F>> c_n;
    if (lstm) c_n = empty<F>({B, H});
    std::optional<Arr<F>> gates, hs, cs;
    if (keep) {
        const LayerWorkspaceLayout layout = layer_workspace_layout(kind, T, B, H, P);
        gates = empty<F>({T, B, layout.gates_cols});
        hs = empty<F>({layout.h_steps, B, P});
        if (layout.c_steps) cs = empty<F>({layout.c_steps, B, H});
    }
    {
        // The kernel touches no Python object: release the GIL so other
        // Python threads run meanwhile (every array stays referenced here).
        py::gil_scoped_release nogil;
        fastrnn::layer_forward<F>(kind, T, B, I, H, x.data(), h0.data(), ptr_or_null(c0),
                                  w_ih.data(), w_hh.data(), ptr_or_null(b_ih), ptr_or_null(b_hh),
                                  ptr_or_null(peep), ptr_or_null(hmask), P, ptr_or_null(w_hr),
                                  lengths ? lengths->data() : nullptr,
                                  reverse, out_data,
                                  out_rows.t, out_rows.b, h_n.mutable_data(), c_n ? c_n->mutable_data() : nullptr,
                                  gates ? gates->mutable_data() : nullptr,
                                  hs ? hs->mutable_data() : nullptr,
                                  cs ? cs->mutable_data() : nullptr);
    }
    py::object ws = py::none();
    if (keep) {
        LayerWorkspace w;
        w.kind = kind;
        w.is_double = std::is_same<F, double>::value;
        w.T = T; w.B = B; w.I = I; w.H = H; w.P = P;
        w.reverse = reverse;
        w.bias = b_ih.has_value();
        w.x = x; w.w_ih = w_ih; w.w_hh = w_hh;
        w.c0 = c0 ? py::object(*c0) : py::none();
        w.lengths = lengths ? py::object(*lengths) : py::none();
        w.peep = peepo;
        w.hmask = hmasko;
        w.w_hr = w_hro;
        w.gates = *gates; w.hs = *hs;
        w.cs = cs ? py::object(*cs) : py::none();
        ws = py::cast(std::move(w));
    }
    return py::make_tuple(out, h_n, c_n ? py::object(*c_n) : py::none(), ws);
}

template <class F>
py::dict layer_backward_t(LayerWorkspace& ws, const std::optional<py::array>& grad_out,
                          const std::optional<Arr<F>>& grad_h_n,
                          const std::optional<Arr<F>>& grad_c_n, const py::object& acc) {
    check_usable(ws, "layer_backward");
    const int64_t T = ws.T, B = ws.B, I = ws.I, H = ws.H, P = ws.P;
    const Kind kind = ws.kind;
    const bool lstm = has_cell_state(kind);
    if (grad_out) check_shape(*grad_out, "grad_out", {T, B, P});
    if (grad_h_n) check_shape(*grad_h_n, "grad_h_n", {B, P});
    if (grad_c_n) {
        if (!lstm) value_error("grad_c_n must be None for kinds other than 'lstm' and 'lstm_cifg'");
        check_shape(*grad_c_n, "grad_c_n", {B, H});
    }
    const RowStrides go_rows = grad_out ? row_strides(*grad_out) : RowStrides{B * P, P};
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
        const int64_t cols[2] = {I, P};
        for (int i = 0; i < 2; ++i) {
            if (!is_arr<F>(*as[i]))
                throw py::type_error(std::string(names[i]) + " must be a C-contiguous numpy array of dtype " +
                                     (std::is_same<F, double>::value ? "float64" : "float32") +
                                     " like the forward pass");
            const py::array a = py::reinterpret_borrow<py::array>(*as[i]);
            check_shape(a, names[i], {GH, cols[i]});
            if (!a.writeable()) value_error(std::string(names[i]) + " must be writeable");
            // The kernel reads these while it writes acc: no overlap, or the result is wrong.
            for (const py::object& other :
                 {ws.x, ws.w_ih, ws.w_hh, ws.gates, ws.hs, ws.cs, ws.c0, ws.peep, ws.hmask, ws.w_hr})
                if (overlaps(a, other)) value_error(std::string(names[i]) + " shares memory with the forward's arrays");
            const py::object go = grad_out ? py::object(*grad_out) : py::none();
            for (const py::object& g : {go, grad_h_n ? py::object(*grad_h_n) : py::none(),
                                        grad_c_n ? py::object(*grad_c_n) : py::none()})
                if (overlaps(a, g)) value_error(std::string(names[i]) + " shares memory with a gradient argument");
        }
        if (overlaps(py::reinterpret_borrow<py::array>(a0), a1))
            value_error("acc[0] and acc[1] share memory");
        acc_ih = py::reinterpret_borrow<Arr<F>>(a0);
        acc_hh = py::reinterpret_borrow<Arr<F>>(a1);
    }
    // The workspace's arrays, read by the kernel (ws keeps them alive while it runs).
    const Arr<F> x = borrow<F>(ws.x), w_ih = borrow<F>(ws.w_ih), w_hh = borrow<F>(ws.w_hh),
                 gates = borrow<F>(ws.gates), hs = borrow<F>(ws.hs);
    const F* c0 = lstm ? borrow<F>(ws.c0).data() : nullptr;
    const F* cs = lstm ? borrow<F>(ws.cs).data() : nullptr;
    const int64_t* len = ws.lengths.is_none() ? nullptr : py::reinterpret_borrow<Lengths>(ws.lengths).data();
    const F* peep = ws.peep.is_none() ? nullptr : borrow<F>(ws.peep).data();
    const F* hmask = ws.hmask.is_none() ? nullptr : borrow<F>(ws.hmask).data();
    const F* w_hr = ws.w_hr.is_none() ? nullptr : borrow<F>(ws.w_hr).data();

    Gradients<F> g({T, B, I}, B, I, H, P, kind, ws.bias, acc_ih, acc_hh);
    std::optional<Arr<F>> dpeep, dw_hr;
    if (peep) dpeep = empty<F>({kPeepholes * H});
    if (w_hr) dw_hr = empty<F>({P, H});
    run_backward(ws, "layer_backward", [&] {
        fastrnn::layer_backward<F>(
            kind, T, B, I, H, x.data(), c0, w_ih.data(), w_hh.data(), peep, hmask, P, w_hr, len, ws.reverse,
            gates.data(), hs.data(), cs,
            grad_out ? static_cast<const F*>(grad_out->data()) : nullptr, go_rows.t, go_rows.b,
            ptr_or_null(grad_h_n), ptr_or_null(grad_c_n), g.dx.mutable_data(),
            g.dh.mutable_data(), g.dc_ptr(), g.dw_ih.mutable_data(), g.dw_hh.mutable_data(),
            g.db_ih_ptr(), g.db_hh_ptr(), dpeep ? dpeep->mutable_data() : nullptr,
            dw_hr ? dw_hr->mutable_data() : nullptr, acc_ih.has_value());
    });
    py::dict d = g.dict("h0", "c0");
    d["peep"] = dpeep ? py::object(*dpeep) : py::none();
    d["w_hr"] = dw_hr ? py::object(*dw_hr) : py::none();
    return d;
}

}  // namespace

void bind_layers(py::module_& m) {
    py::class_<LayerWorkspace>(m, "LayerWorkspace",
                               "What layer_backward needs from a training layer_forward (opaque).");


    // One entry point per function for both dtypes, not one overload per dtype: pybind11's
    // array_t caster looks a dtype object up per argument and per overload tried (~0.15 us
    // each), and a cell step of B=1, H=128 computes for 1-5 us. Arrays that pass the fast check
    // (is_arr) go to the kernels' binding; anything else to the argument report, which names
    // the argument and what was expected.
    m.def(
        "layer_forward",
        [](const std::string& kind, const py::object& x, const py::object& h0, const py::object& c0,
           const py::object& w_ih, const py::object& w_hh, const py::object& b_ih,
           const py::object& b_hh, const py::object& lengths, bool reverse, bool keep,
           const py::object& out, const py::object& peep, const py::object& hmask,
           const py::object& w_hr) -> py::tuple {
            // the call in dtype F (named by a value of it) if every array is one of F
            auto call = [&](auto f) -> std::optional<py::tuple> {
                using F = decltype(f);
                if (!all_arrays_of<F>({&x, &h0, &w_ih, &w_hh}, {&c0, &b_ih, &b_hh, &peep, &hmask, &w_hr}))
                    return std::nullopt;
                return layer_forward_t<F>(kind, borrow<F>(x), borrow<F>(h0), maybe<F>(c0),
                                          borrow<F>(w_ih), borrow<F>(w_hh), maybe<F>(b_ih),
                                          maybe<F>(b_hh), maybe<int64_t>(lengths), reverse, keep, out,
                                          maybe<F>(peep), maybe<F>(hmask), maybe<F>(w_hr));
            };
            if (lengths.is_none() || is_arr<int64_t>(lengths)) {
                if (auto r = call(0.0f)) return *r;
                if (auto r = call(0.0)) return *r;
            }
            report_bad_args("layer_forward",
                            {{"x", x}, {"h0", h0}, {"c0", c0}, {"w_ih", w_ih}, {"w_hh", w_hh},
                             {"b_ih", b_ih}, {"b_hh", b_hh}, {"peep", peep}, {"hmask", hmask}, {"w_hr", w_hr}},
                            {{"x", false}, {"h0", false}, {"c0", true}, {"w_ih", false}, {"w_hh", false},
                             {"b_ih", true}, {"b_hh", true}, {"peep", true}, {"hmask", true}, {"w_hr", true}},
                            lengths);
        },
        py::arg("kind"), py::arg("x"), py::arg("h0"), py::arg("c0").none(true), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih").none(true), py::arg("b_hh").none(true),
        py::arg("lengths").none(true), py::arg("reverse"), py::arg("keep"), py::arg("out") = py::none(),
        py::arg("peep") = py::none(), py::arg("hmask") = py::none(), py::arg("w_hr") = py::none(),
        "layer_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, keep, out=None, peep=None, "
        "hmask=None, w_hr=None)"
        " -> (out, h_n, c_n, ws)\n\nOne layer, one direction, whole sequence (see CONTRACT.md); out: None or "
        "a [T, B, P] array (P = H without w_hr) with adjacent rows to write into (e.g. one half of a bidirectional buffer); "
        "peep: None or the LSTM's peephole weights [3*H] (p_i, p_f, p_o); hmask: None or [B, H], the "
        "recurrent input's mask (the product sees h * hmask); w_hr: None or the LSTM's projection [P, H] "
        "(h, out and w_hh's columns then have P units).");

    m.def(
        "layer_backward",
        [](const py::object& ws, const py::object& go, const py::object& gh,
           const py::object& gc, const py::object& acc) -> py::dict {
            if (!py::isinstance<LayerWorkspace>(ws))
                throw py::type_error("ws must be the workspace returned by layer_forward(keep=True)");
            LayerWorkspace& w = ws.cast<LayerWorkspace&>();
            // grad_out is read by rows: any strides with adjacent rows (e.g. one half of a
            // bidirectional gradient, or a batch-first one)
            const std::optional<py::array> rows =
                go.is_none() ? std::nullopt : std::optional<py::array>(py::reinterpret_borrow<py::array>(go));
            if (!w.is_double && (go.is_none() || is_rows<float>(go)) && all_arrays_of<float>({}, {&gh, &gc}))
                return layer_backward_t<float>(w, rows, maybe<float>(gh), maybe<float>(gc), acc);
            if (w.is_double && (go.is_none() || is_rows<double>(go)) && all_arrays_of<double>({}, {&gh, &gc}))
                return layer_backward_t<double>(w, rows, maybe<double>(gh), maybe<double>(gc), acc);
            check_rows_arg(go, "grad_out", w.is_double);
            report_bad_grads("layer_backward", w.is_double, {{"grad_h_n", gh}, {"grad_c_n", gc}});
        },
        py::arg("ws"), py::arg("grad_out").none(true), py::arg("grad_h_n").none(true),
        py::arg("grad_c_n").none(true), py::arg("acc") = py::none(),
        "layer_backward(ws, grad_out, grad_h_n, grad_c_n, acc=None) -> dict of gradients\n\n"
        "acc: None or a pair (w_ih, w_hh) the weight gradients are added into (see CONTRACT.md).");

}

}  // namespace fastrnn::python
