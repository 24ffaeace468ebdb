// What the backward bindings need from a training forward: opaque Python
// objects holding references to the forward's arrays.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "fastrnn/rnn.h"

namespace fastrnn::python {

namespace py = pybind11;

struct LayerWorkspace {
    Kind kind;
    bool is_double;
    int64_t T, B, I, H;
    bool reverse, bias;
    bool consumed = false;
    py::object x, c0, w_ih, w_hh, lengths;  // the forward inputs (references)
    py::object gates, hs, cs;               // kept: [T,B,K], [h_steps,B,H], [T,B,H] (lstm)
};

struct CellWorkspace {
    Kind kind;
    bool is_double;
    int64_t B, I, H;
    bool bias;
    bool consumed = false;
    py::object x, h, c, c_new, w_ih, w_hh, gates;
};

}  // namespace fastrnn::python
