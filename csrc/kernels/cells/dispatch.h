// The one place a Kind becomes a cell policy: with_cell(kind, fn) calls
// fn(Policy{}) with the policy of that kind.
#pragma once

#include "cells/gru.h"
#include "cells/gru_orig.h"
#include "cells/lstm.h"
#include "cells/rnn.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// The policies agree with the facts of fastrnn/rnn.h.
template <class Cell>
constexpr bool consistent() {
    return Cell::kept_gates_are_state == kept_gates_are_states(Cell::kind) &&
           Cell::has_cell_state == has_cell_state(Cell::kind);
}
static_assert(consistent<RnnTanhCell>() && consistent<RnnReluCell>() && consistent<LstmCell>() &&
              consistent<LstmPeepholeCell>() && consistent<LstmCifgCell>() && consistent<LstmCifgPeepholeCell>() &&
              consistent<GruCell>() && consistent<GruOrigCell>());

template <class Fn>
void with_cell(Kind kind, Fn&& fn) {
    switch (kind) {
        case Kind::rnn_tanh: return fn(RnnTanhCell{});
        case Kind::rnn_relu: return fn(RnnReluCell{});
        case Kind::lstm: return fn(LstmCell{});
        case Kind::gru: return fn(GruCell{});
        case Kind::gru_orig: return fn(GruOrigCell{});
        case Kind::lstm_cifg: return fn(LstmCifgCell{});
    }
}

// The dispatch of the kernels: an LSTM with peepholes (refused on other kinds,
// isa_kernels.inl) has a policy of its own, whose rows add the peephole terms.
template <class Fn>
void with_cell(Kind kind, bool peepholes, Fn&& fn) {
    if (peepholes && kind == Kind::lstm) return fn(LstmPeepholeCell{});
    if (peepholes && kind == Kind::lstm_cifg) return fn(LstmCifgPeepholeCell{});
    return with_cell(kind, fn);
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
