// The kernels compiled for one instruction set.
//
// rnn_generic.cpp, rnn_avx2.cpp and rnn_avx512.cpp each define FASTRNN_ISA_NS
// (the namespace of their copy), are compiled with their own target flags
// (CMakeLists.txt) and include this file; rnn.cpp picks a copy at runtime.
// The SIMD code is written with GCC/Clang vector extensions, so one source
// serves every vector width. docs/DESIGN.md walks through the parts.
#include "cell/cell.h"
#include "cells/dispatch.h"
#include "entry_points.h"
#include "gemm/gemm.h"
#include "layer/backward.h"
#include "layer/forward.h"
#include "simd/math.h"

namespace fastrnn::FASTRNN_ISA_NS {

namespace {

// The variants' arguments a kind cannot take (the bindings refuse them first, with the
// argument's name): peepholes and projections are the LSTM's. P is H without a projection.
inline void check_variants(Kind kind, bool peep, int64_t H, int64_t P, bool w_hr) {
    if (peep && !has_cell_state(kind)) throw std::invalid_argument("peep: peepholes are the LSTM's");
    if (w_hr && !has_cell_state(kind)) throw std::invalid_argument("w_hr: projections are the LSTM's");
    if (w_hr ? P < 1 || P > H : P != H) throw std::invalid_argument("P: 1 <= P <= H with w_hr, else P == H");
}

// The kind is chosen here, once per call: each driver is compiled per cell policy.
template <class T>
void run_layer_forward(Kind kind, int64_t steps, int64_t B, int64_t I, int64_t H, const T* x,
                       const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* b_ih,
                       const T* b_hh, const T* peep, const T* hmask, int64_t P, const T* w_hr,
                       const int64_t* lengths, bool reverse, T* out,
                       int64_t out_t_stride, int64_t out_b_stride, T* h_n, T* c_n, T* ws_gates,
                       T* ws_h, T* ws_c) {
    const LayerForwardArgs<T> args{steps, B,    I,    H,    P,     x,     h0,   c0,      w_ih,
                                   w_hh,  b_ih, b_hh, peep, hmask, w_hr,  lengths,      reverse,
                                   out,   out_t_stride,     out_b_stride, h_n, c_n, ws_gates,
                                   ws_h,  ws_c};
    check_variants(kind, peep != nullptr, H, P, w_hr != nullptr);
    with_cell(kind, peep != nullptr, [&](auto cell) { LayerForward<decltype(cell), T>(args).run(); });
}

template <class T>
void run_layer_backward(Kind kind, int64_t steps, int64_t B, int64_t I, int64_t H, const T* x,
                        const T* c0, const T* w_ih, const T* w_hh, const T* peep, const T* hmask,
                        int64_t P, const T* w_hr, const int64_t* lengths, bool reverse, const T* ws_gates,
                        const T* ws_h, const T* ws_c, const T* grad_out, int64_t grad_out_t_stride,
                        int64_t grad_out_b_stride, const T* grad_h_n, const T* grad_c_n, T* dx,
                        T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh, T* dpeep, T* dw_hr,
                        bool add_dw) {
    const LayerBackwardArgs<T> args{steps,    B,        I,        H,        P,        x,        c0,
                                    w_ih,     w_hh,     peep,     hmask,    w_hr,     lengths,  reverse,
                                    ws_gates, ws_h,     ws_c,     grad_out, grad_out_t_stride,  grad_out_b_stride,
                                    grad_h_n, grad_c_n, dx,       dh0,      dc0,      dw_ih,
                                    dw_hh,    db_ih,    db_hh,    dpeep,    dw_hr,    add_dw};
    check_variants(kind, peep != nullptr, H, P, w_hr != nullptr);
    with_cell(kind, peep != nullptr, [&](auto cell) { LayerBackward<decltype(cell), T>(args).run(); });
}

template <class T>
void run_cell_forward(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,
                      const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, const T* peep,
                      const T* hmask, T* h_new, T* c_new, T* ws_gates) {
    const CellForwardArgs<T> args{B, I, H, x, h, c, w_ih, w_hh, b_ih, b_hh, peep, hmask, h_new, c_new, ws_gates};
    check_variants(kind, peep != nullptr, H, H, false);
    with_cell(kind, peep != nullptr, [&](auto cell) { cell_forward_driver<decltype(cell)>(args); });
}

template <class T>
void run_cell_backward(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h,
                       const T* c, const T* c_new, const T* w_ih, const T* w_hh, const T* peep,
                       const T* hmask, const T* ws_gates, const T* grad_h, const T* grad_c, T* dx,
                       T* dh, T* dc, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh, T* dpeep) {
    const CellBackwardArgs<T> args{B,     I,        H,      x,      h,  c,  c_new, w_ih,  w_hh,  peep,  hmask,
                                   ws_gates, grad_h, grad_c, dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh, dpeep};
    check_variants(kind, peep != nullptr, H, H, false);
    with_cell(kind, peep != nullptr, [&](auto cell) { cell_backward_driver<decltype(cell)>(args); });
}

// The GEMM of the layers' large products alone (for tests and timing).
template <class T>
void run_matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
                const T* B, int64_t ldb, T* C) {
    large_product<T>(ta, tb, M, N, K, A, lda, B, ldb, false, C, N);
}

// The vectorized activations over n elements (for tests of the math).
template <class T>
void run_apply_activation(Activation fn, const T* in, T* out, int64_t n) {
    constexpr int W = V<T>::W;
    for (int64_t i = 0; i < n; i += W) {
        const int c = (int)std::min<int64_t>(W, n - i);
        const typename V<T>::v a = vloadn(in + i, c);
        vstoren(out + i, fn == Activation::sigmoid ? vsigmoid(a) : fn == Activation::tanh ? vtanh(a) : vexp(a), c);
    }
}

}  // namespace

#define FASTRNN_DEFINE_ENTRY(name, params, args) \
    void name params { run_##name args; }
FASTRNN_KERNEL_ENTRY_POINTS(FASTRNN_DEFINE_ENTRY, float)
FASTRNN_KERNEL_ENTRY_POINTS(FASTRNN_DEFINE_ENTRY, double)
#undef FASTRNN_DEFINE_ENTRY

}  // namespace fastrnn::FASTRNN_ISA_NS

#undef FASTRNN_VECTOR_BYTES
