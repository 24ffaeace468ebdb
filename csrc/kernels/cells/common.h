// What every cell policy shares: the layout of a step's recurrent product
// and the rows that a policy's pointwise functions read and write.
//
// A cell policy (cells/rnn.h, lstm.h, gru.h, gru_orig.h) is a type with
//   kind                    its fastrnn::Kind (gate counts come from rnn.h);
//   has_cell_state          LSTM's c next to h;
//   has_peepholes           the LSTM's gates see c through per-unit weights
//                           (backward then sums their gradient, layer/backward.h);
//   kept_gates_are_state    the kept block is the new state itself (rnn kinds:
//                           no per-step state is stored, see rnn.h);
//   n_product_after_reset   the n gate's recurrent product is W_hn (r*h), so
//                           it runs after a first pointwise phase (gru_orig);
//   n_bias_inside_reset     b_hn stays inside r * (W_hn h + b_hn) (PyTorch
//                           GRU): it is not folded into the input projection;
//   separate_n_grad         the n block of the recurrent product's gradient
//                           (dan * r) differs from dG's and is kept apart;
//   unread_gate             a gate block whose recurrent sums the rows never
//                           read (lstm_cifg's f), or -1: the layer forward's
//                           per-step product skips its panels;
//   forward / backward      one row's pointwise step over units [u0, u1);
//   forward_padded          what a padded step keeps for backward;
//   forward_after_reset /   gru_orig's second phase (after the n product).
//   backward_after_reset
// The drivers (layer/forward.h, layer/backward.h, cell/cell.h) take a policy
// as a template argument; cells/dispatch.h picks it from the Kind once.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "fastrnn/rnn.h"
#include "simd/math.h"

// A pointwise row is compiled as a function of its own, never inlined into a
// driver. With -ffp-contract=fast the compiler fuses a*b + c into one FMA
// only where both operations end up in one basic block, and where they end
// up depends on what an inlining caller lets it prove (a pointer's null
// check, the masked tail's n == W). Compiled alone, a row rounds the same way
// for every driver that calls it; where even that is left to the compiler's
// judgement, the rounding is written out (cells/lstm.h, add_cell_grad). A
// call per row and step is small next to the row's work.
#define FASTRNN_ROW __attribute__((noinline))

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// The recurrent product of one batch row: gate g of unit j at
// s[jp*panel_stride + g*gate_stride + c] with jp = j / NR, c = j % NR
// (panel layout of the layers: panel_stride = G*NR, gate_stride = NR; plain
// layout of the cells: panel_stride = NR, gate_stride = H).
template <class T>
struct GateSums {
    const T* s;
    int64_t panel_stride, gate_stride;
    const T* at(int64_t j, int g) const {
        constexpr int NR = 2 * V<T>::W;
        const int64_t jp = j / NR;
        return s + jp * panel_stride + g * gate_stride + (j - jp * NR);
    }
};

// Gate g's pre-activation for units [j, j + n) of a forward row: the input
// projection gx (gate g at gx[g*H + j]) plus the recurrent product.
template <class T>
inline typename V<T>::v gate_input(const T* gx, GateSums<T> s, int64_t H, int g, int64_t j, int n) {
    return vloadn(gx + g * H + j, n) + vloadn(s.at(j, g), n);
}

// One batch row of a forward step. gx: the pre-activations (x·W_ih^T +
// folded bias), gate g at gx[g*H + j]; kept: the row of the workspace that
// receives what backward needs (same layout; may be gx itself), or nullptr
// in inference. Members a kind does not use are left null.
template <class T>
struct ForwardRow {
    T* gx;
    T* kept;
    GateSums<T> sums;
    const T* h_prev;
    T* h_new;
    T* out;          // the layer's output row, or nullptr (cells)
    T* c;            // lstm: the cell state, updated in place
    T* c_kept;       // lstm: the workspace's copy of the new c, or nullptr
    const T* b_hn;   // gru: the n gate's recurrent bias, or nullptr
    T* rh;           // gru_orig: r*h for the n product
    const T* h_masked;  // gru_orig with recurrent dropout: h_prev * hmask (r*h_masked feeds W_hn), else nullptr
    const T* peep;   // lstm with peepholes: [p_i, p_f, p_o] ([3*H])
};

// One batch row of a backward step. dh_carry: the gradient reaching h from
// the step processed before (it is consumed: rows leave it 0 or the part
// that flows through z); sums: dG·W_hh of that step or nullptr; grad_out:
// the output's gradient or nullptr. dg: the gates' pre-activation gradients
// (ld G*H); dg_n: gru's n block of the recurrent product's gradient.
template <class T>
struct BackwardRow {
    const T* kept;
    const T* h_prev;
    const T* c_prev;   // lstm
    const T* c_new;    // lstm
    const T* sums;
    const T* grad_out;
    T* dh_carry;
    T* dc;             // lstm: the cell state's gradient, updated in place
    T* dg;
    T* dg_n;           // gru
    const T* drh;      // gru_orig: dan · W_hn (second phase)
    const T* hmask;    // gru_orig with recurrent dropout: the row's mask (W_hn saw r*h*hmask), else nullptr
    const T* peep;     // lstm with peepholes: [p_i, p_f, p_o] ([3*H])
};

// dh = dh_carry + sums + grad_out for units [j, j + n) (sums, grad_out may be null: zero).
template <class T>
inline typename V<T>::v load_dh(const T* dh_carry, const T* sums, const T* grad_out, int64_t j, int n) {
    typename V<T>::v dh = vloadn(dh_carry + j, n);
    if (sums) dh += vloadn(sums + j, n);
    if (grad_out) dh += vloadn(grad_out + j, n);
    return dh;
}

// Padded step of a row in backward: dh is carried, no gate gradient.
template <class T>
void pad_bwd_row(int64_t u0, int64_t u1, const T* sums, T* dh_carry) {
    if (sums)
        for (int64_t j = u0; j < u1; ++j) dh_carry[j] += sums[j];
}

// The policies' defaults: a kind overrides what it has.
struct CellDefaults {
    static constexpr bool has_cell_state = false;
    static constexpr bool has_peepholes = false;
    static constexpr bool kept_gates_are_state = false;
    static constexpr bool n_product_after_reset = false;
    static constexpr bool n_bias_inside_reset = false;
    static constexpr bool separate_n_grad = false;
    static constexpr int unread_gate = -1;
    template <class T>
    static void forward_padded(const ForwardRow<T>&, int64_t, int64_t, int64_t) {}
};

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
