// The sizes the kernels accept and the layout of the training workspaces:
// one rule for the Python bindings and the C ABI. No Python here.
#pragma once

#include <cstdint>
#include <limits>

#include "fastrnn/rnn.h"

namespace fastrnn {

// Every matrix dimension a GEMM sees (T*B rows, up to 4*H columns, I) fits a
// 32-bit int, so SciPy's BLAS can take it; and every array's element count
// stays far from int64 overflow (its byte count, with room for padding).
constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxElements = std::numeric_limits<int64_t>::max() / 16;

// a * b, or -1 when a or b is negative or the product exceeds kMaxElements.
constexpr int64_t checked_elements(int64_t a, int64_t b) {
    if (a < 0 || b < 0) return -1;
    if (a != 0 && b > kMaxElements / a) return -1;
    return a * b;
}

enum class SizeCheck { ok, not_positive, too_large };

// The size rule of every entry point, for T steps (1 for a cell) of B rows,
// I inputs and H hidden units. It holds for every kind: 4*H is the widest
// weight matrix (LSTM), 6*H the widest workspace row (K + 2H).
constexpr SizeCheck check_sizes(int64_t T, int64_t B, int64_t I, int64_t H) {
    if (T < 1 || B < 1 || I < 1 || H < 1) return SizeCheck::not_positive;
    if (T > kMaxDim / B || H > kMaxDim / 4 || I > kMaxDim) return SizeCheck::too_large;
    const int64_t rows = T * B, cols = 4 * H;
    if (checked_elements(rows, I) < 0 || checked_elements(rows, cols + 2 * H) < 0 ||
        checked_elements(cols, I) < 0 || checked_elements(cols, H) < 0)
        return SizeCheck::too_large;
    return SizeCheck::ok;
}

// The training workspace of a layer (layer_forward's ws_* in fastrnn/rnn.h),
// as the C ABI lays it out in one buffer, in this order:
//   gates [T, B, K]        K = kept_gates(kind) * H
//   h     [h_steps, B, P]  the state entering each step; h_steps = 1 (h0
//                          only) for kinds whose kept gates are their states;
//                          P the state's units (an LSTM's projection's, else H)
//   c     [c_steps, B, H]  lstm: the cell after each step (c_steps = T), else none
struct LayerWorkspaceLayout {
    int64_t gates_cols;  // K
    int64_t h_steps;
    int64_t c_steps;
    int64_t gates_elems, h_elems, c_elems, total;  // -1 when a count overflows
};

constexpr LayerWorkspaceLayout layer_workspace_layout(Kind kind, int64_t T, int64_t B, int64_t H, int64_t P) {
    LayerWorkspaceLayout w{};
    w.gates_cols = checked_elements(kept_gates(kind), H);
    w.h_steps = kept_gates_are_states(kind) ? 1 : T;
    w.c_steps = has_cell_state(kind) ? T : 0;
    const int64_t rows = checked_elements(T, B);
    w.gates_elems = checked_elements(rows, w.gates_cols);
    w.h_elems = checked_elements(checked_elements(w.h_steps, B), P);
    w.c_elems = checked_elements(checked_elements(w.c_steps, B), H);
    const bool bad = rows < 0 || w.gates_cols < 0 || w.gates_elems < 0 || w.h_elems < 0 || w.c_elems < 0 ||
                     w.gates_elems > kMaxElements - w.h_elems - w.c_elems;
    w.total = bad ? -1 : w.gates_elems + w.h_elems + w.c_elems;
    return w;
}

// Elements of a cell's training workspace: the kept gates [B, K].
constexpr int64_t cell_workspace_elements(Kind kind, int64_t B, int64_t H) {
    return checked_elements(B, checked_elements(kept_gates(kind), H));
}

}  // namespace fastrnn
