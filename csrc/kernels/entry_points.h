// The list of the kernels' entry points, written once. Each entry is
//   X(name, (parameters with the scalar type T), (arguments))
// and the list is expanded for declaration, runtime dispatch and explicit
// instantiation (rnn.cpp) and for the definitions of each instruction set's
// copy (isa_kernels.inl). The documented declarations are in fastrnn/rnn.h;
// a list that disagrees with them fails to link.
#pragma once

#include <cstdint>

#include "fastrnn/rnn.h"

#define FASTRNN_KERNEL_ENTRY_POINTS(X, T)                                                        \
    X(layer_forward,                                                                             \
      (Kind kind, int64_t steps, int64_t B, int64_t I, int64_t H, const T* x, const T* h0,       \
       const T* c0, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, const T* peep,   \
       const T* hmask, int64_t P, const T* w_hr, const int64_t* lengths, bool reverse, T* out,   \
       int64_t out_t_stride, int64_t out_b_stride, T* h_n, T* c_n, T* ws_gates, T* ws_h,         \
       T* ws_c),                                                                                 \
      (kind, steps, B, I, H, x, h0, c0, w_ih, w_hh, b_ih, b_hh, peep, hmask, P, w_hr, lengths,   \
       reverse, out,                                                                             \
       out_t_stride, out_b_stride, h_n, c_n, ws_gates, ws_h, ws_c))                              \
    X(layer_backward,                                                                            \
      (Kind kind, int64_t steps, int64_t B, int64_t I, int64_t H, const T* x, const T* c0,       \
       const T* w_ih, const T* w_hh, const T* peep, const T* hmask, int64_t P, const T* w_hr,    \
       const int64_t* lengths, bool reverse,                                                     \
       const T* ws_gates, const T* ws_h, const T* ws_c, const T* grad_out,                       \
       int64_t grad_out_t_stride, int64_t grad_out_b_stride, const T* grad_h_n,                  \
       const T* grad_c_n, T* dx, T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh,         \
       T* dpeep, T* dw_hr, bool add_dw),                                                         \
      (kind, steps, B, I, H, x, c0, w_ih, w_hh, peep, hmask, P, w_hr, lengths, reverse,          \
       ws_gates, ws_h,                                                                           \
       ws_c,                                                                                     \
       grad_out, grad_out_t_stride, grad_out_b_stride, grad_h_n, grad_c_n, dx, dh0, dc0, dw_ih,  \
       dw_hh, db_ih, db_hh, dpeep, dw_hr, add_dw))                                               \
    X(cell_forward,                                                                              \
      (Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,           \
       const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, const T* peep,               \
       const T* hmask, T* h_new, T* c_new, T* ws_gates),                                         \
      (kind, B, I, H, x, h, c, w_ih, w_hh, b_ih, b_hh, peep, hmask, h_new, c_new, ws_gates))     \
    X(cell_backward,                                                                             \
      (Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,           \
       const T* c_new, const T* w_ih, const T* w_hh, const T* peep, const T* hmask,              \
       const T* ws_gates, const T* grad_h, const T* grad_c, T* dx, T* dh, T* dc, T* dw_ih,       \
       T* dw_hh, T* db_ih, T* db_hh, T* dpeep),                                                  \
      (kind, B, I, H, x, h, c, c_new, w_ih, w_hh, peep, hmask, ws_gates, grad_h, grad_c, dx, dh, \
       dc, dw_ih, dw_hh, db_ih, db_hh, dpeep))                                                   \
    X(apply_activation, (Activation fn, const T* in, T* out, int64_t n), (fn, in, out, n))       \
    X(matmul,                                                                                    \
      (bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,   \
       int64_t ldb, T* C),                                                                       \
      (ta, tb, M, N, K, A, lda, B, ldb, C))

// A plain declaration of one entry point (the ISA copies are overloads per T).
#define FASTRNN_DECLARE_ENTRY(name, params, args) void name params;
