// What the backward bindings need from a training forward: opaque Python
// objects holding references to the forward's arrays.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "fastrnn/rnn.h"

namespace fastrnn::python {

namespace py = pybind11;

// How a backward uses a workspace (backward.h's run_backward): `busy` while its kernel runs,
// `consumed` once it succeeded; consume() drops the arrays it referenced.
struct WorkspaceUse {
    bool consumed = false;
    bool busy = false;
};

struct LayerWorkspace : WorkspaceUse {
    Kind kind;
    bool is_double;
    int64_t T, B, I, H, P;  // P: the state's units (w_hr's rows, else H)
    bool reverse, bias;
    py::object x, c0, w_ih, w_hh, lengths, peep, hmask, w_hr;  // the forward inputs (references)
    py::object gates, hs, cs;               // kept: [T,B,K], [h_steps,B,P], [T,B,H] (lstm)
    void consume() {
        consumed = true;
        x = c0 = w_ih = w_hh = lengths = peep = hmask = w_hr = gates = hs = cs = py::none();
    }
};

struct CellWorkspace : WorkspaceUse {
    Kind kind;
    bool is_double;
    int64_t B, I, H;
    bool bias;
    py::object x, h, c, c_new, w_ih, w_hh, peep, hmask, gates;
    void consume() {
        consumed = true;
        x = h = c = c_new = w_ih = w_hh = peep = hmask = gates = py::none();
    }
};

}  // namespace fastrnn::python
