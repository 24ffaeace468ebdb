// What the backward bindings (layer_backward, cell_backward) share: the
// gradients they return, and how a backward uses its forward's workspace.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>

#include "arrays.h"
#include "blocks.h"
#include "fastrnn/rnn.h"

namespace fastrnn::python {

// The arrays a backward returns: x, the state(s), the weights' and biases'
// gradients, in the contract's dict (LAYER_GRAD_KEYS / CELL_GRAD_KEYS).
template <class F>
struct Gradients {
    Arr<F> dx, dh, dw_ih, dw_hh;
    std::optional<Arr<F>> dc, db_ih, db_hh;

    // dx of x's dims; dh [B, P] (P the state's units: H, or an LSTM projection's) and dc (lstm)
    // [B, H]; dw_ih [GH, I] and dw_hh [GH, P] fresh, or the caller's acc arrays; db_ih, db_hh
    // [GH] with bias.
    Gradients(std::initializer_list<int64_t> x_dims, int64_t B, int64_t I, int64_t H, int64_t P, Kind kind,
              bool bias, const std::optional<Arr<F>>& acc_ih = std::nullopt,
              const std::optional<Arr<F>>& acc_hh = std::nullopt)
        : dx(empty<F>(x_dims)), dh(empty<F>({B, P})),
          dw_ih(acc_ih ? *acc_ih : empty<F>({num_gates(kind) * H, I})),
          dw_hh(acc_hh ? *acc_hh : empty<F>({num_gates(kind) * H, P})) {
        const int64_t GH = num_gates(kind) * H;
        if (has_cell_state(kind)) dc = empty<F>({B, H});
        if (bias) {
            db_ih = empty<F>({GH});
            db_hh = empty<F>({GH});
        }
    }
    F* dc_ptr() { return dc ? dc->mutable_data() : nullptr; }
    F* db_ih_ptr() { return db_ih ? db_ih->mutable_data() : nullptr; }
    F* db_hh_ptr() { return db_hh ? db_hh->mutable_data() : nullptr; }

    // h_key, c_key: the state's names ("h0", "c0" for a layer; "h", "c" for a cell).
    py::dict dict(const char* h_key, const char* c_key) const {
        py::dict d;
        d["x"] = dx;
        d[h_key] = dh;
        d[c_key] = dc ? py::object(*dc) : py::none();
        d["w_ih"] = dw_ih;
        d["w_hh"] = dw_hh;
        d["b_ih"] = db_ih ? py::object(*db_ih) : py::none();
        d["b_hh"] = db_hh ? py::object(*db_hh) : py::none();
        return d;
    }
};

// Whether a workspace (LayerWorkspace, CellWorkspace) may be used by a backward now: not
// consumed by one that succeeded, not in use by one running in another thread. `fn` names
// the backward in the error.
template <class W>
void check_usable(const W& ws, const char* fn) {
    if (ws.consumed) value_error(std::string("ws was already used by ") + fn + " (backward called twice)");
    if (ws.busy) value_error(std::string("ws is in use by a ") + fn + " running in another thread");
}

// Run `kernel` (the GIL released) on what `ws` keeps, after every argument check and every
// output allocation. ws is consumed (its arrays released) only when the kernel succeeded: a
// kernel that failed (no memory for a scratch buffer, no thread) read ws and wrote only the
// outputs, so ws stays usable and the backward may be retried. The exception: the kernel
// failed after it began adding into the caller's acc arrays (PartialAccumulation); then ws
// is consumed too (a retry would add twice) and the error is the contract's
// PartialBackwardError, which says so.
template <class W, class Kernel>
void run_backward(W& ws, const char* fn, Kernel&& kernel) {
    check_usable(ws, fn);
    ws.busy = true;
    try {
        py::gil_scoped_release nogil;
        kernel();
    } catch (const PartialAccumulation& e) {
        ws.busy = false;
        ws.consume();
        const std::string msg = std::string(fn) + " failed part way (" + e.what() +
                                "): acc may hold part of its weight gradients, and ws is consumed "
                                "(run the forward again)";
        const py::object cls = py::module_::import("fastrnn.backends.contract").attr("PartialBackwardError");
        PyErr_SetString(cls.ptr(), msg.c_str());
        throw py::error_already_set();
    } catch (...) {
        ws.busy = false;
        throw;
    }
    ws.busy = false;
    ws.consume();
}

}  // namespace fastrnn::python
