// The input projection gx = x · W_ih^T + folded bias, shared by the layers
// and the cells.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cells/common.h"
#include "fastrnn/rnn.h"
#include "gemm/gemm.h"
#include "gemm/small.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// Elements [n0, n0 + n) of the input projection's folded bias: b_ih + b_hh,
// but only b_in in the n block of a cell whose b_hn stays inside
// r * (W_hn h + b_hn) (PyTorch's GRU); zeros without bias (b_ih == nullptr).
template <class Cell, class T>
void folded_bias(int64_t H, const T* b_ih, const T* b_hh, int64_t n0, int64_t n, T* out) {
    if (!b_ih) {
        std::memset(out, 0, n * sizeof(T));
        return;
    }
    // the n block starts at element e
    const int64_t e = Cell::n_bias_inside_reset ? std::clamp<int64_t>(2 * H - n0, 0, n) : n;
    for (int64_t j = 0; j < e; ++j) out[j] = b_ih[n0 + j] + b_hh[n0 + j];
    if (e < n) std::memcpy(out + e, b_ih + n0 + e, (n - e) * sizeof(T));
}

// gx (rows, ld) = x · W_ih^T + folded bias.
template <class Cell, class T>
void input_projection(int64_t rows, int64_t I, int64_t H, const T* x, const T* w_ih, const T* b_ih,
                      const T* b_hh, T* gx, int64_t ld) {
    const int64_t GH = num_gates(Cell::kind) * H;
    if (rows <= 4) {
        for (int64_t r = 0; r < rows; ++r) folded_bias<Cell>(H, b_ih, b_hh, 0, GH, gx + r * ld);
        small_nt<T>(rows, GH, I, x, I, w_ih, I, gx, ld, true);
    } else {
        // the bias seeds the accumulators: no separate pass over gx
        std::vector<T> b(b_ih ? GH : 0);
        if (b_ih) folded_bias<Cell>(H, b_ih, b_hh, 0, GH, b.data());
        large_product<T>(false, true, rows, GH, I, x, I, w_ih, I, false, gx, ld, b_ih ? b.data() : nullptr);
    }
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
