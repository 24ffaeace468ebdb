/* fastrnn C ABI: plain C entry points over the fused recurrent kernels.
 *
 * Stable, exception-free, callable from C, from any language with a C FFI,
 * and from Numba nopython code through cffi (see fastrnn/capi.py). The
 * functions are exported from the compiled module the package builds
 * (fastrnn/_core*.so); this header is installed beside it as
 * fastrnn/include/fastrnn.h.
 *
 * Conventions
 *   - Arrays are dense, row-major (C order); each pointer's shape is given
 *     beside it. T steps, B batch, I input features, H hidden units,
 *     G gates (fastrnn_num_gates: 1 rnn, 4 lstm, 3 gru).
 *   - Every function returns a status: FASTRNN_OK (0) or an error code, and
 *     writes nothing on error. fastrnn_status_message() names each code. No
 *     C++ exception crosses this ABI.
 *   - "optional" pointers may be NULL: biases (no bias: both NULL), the cell
 *     state c of non-LSTM kinds, incoming gradients (NULL = zeros), lengths
 *     (NULL = every sequence has T steps), workspaces (NULL = inference, for
 *     the forwards only).
 *   - Outputs must not overlap inputs.
 *   - Large products use fastrnn's own packed GEMM, the same as the Python
 *     path (which can switch both to SciPy's BLAS: fastrnn._core.set_gemm).
 *
 * Gate layout and equations are PyTorch's (LSTM i,f,g,o; GRU r,z,n); kind
 * FASTRNN_GRU_ORIG is the GRU of the original paper (ONNX
 * linear_before_reset=0); kind FASTRNN_LSTM_CIFG (version 4) the LSTM with
 * coupled input and forget gates (ONNX input_forget=1): f = 1 - i, the f
 * rows of the weights and biases take no part in the results and get a zero
 * gradient. Every function that takes FASTRNN_LSTM takes it, with the same
 * arrays; "lstm" below means either.
 */
#ifndef FASTRNN_H
#define FASTRNN_H

#include <stdint.h>

#if defined(_WIN32)
#define FASTRNN_API __declspec(dllexport)
#else
#define FASTRNN_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* FASTRNN_CDEF_BEGIN (fastrnn/capi.py hands the text up to FASTRNN_CDEF_END to cffi) */

#define FASTRNN_ABI_VERSION 5 /* 2: the _ex functions (peepholes, recurrent dropout); 3: the _proj ones;
                                 4: FASTRNN_LSTM_CIFG, and hmask for FASTRNN_GRU_ORIG;
                                 5: the _masked cell functions (recurrent dropout in a cell) */

enum fastrnn_status_code {
    FASTRNN_OK = 0,
    FASTRNN_ERR_NULL_POINTER = 1, /* a required pointer is NULL */
    FASTRNN_ERR_BAD_KIND = 2,     /* kind is not one of fastrnn_kind */
    FASTRNN_ERR_BAD_SIZE = 3,     /* a size is < 1 or a product of sizes overflows */
    FASTRNN_ERR_BAD_LENGTHS = 4,  /* a length is outside [1, T] */
    FASTRNN_ERR_BAD_BIAS = 5,     /* exactly one of b_ih, b_hh is NULL */
    FASTRNN_ERR_NO_MEMORY = 6,    /* an allocation failed */
    FASTRNN_ERR_INTERNAL = 7,     /* an unexpected internal error */
    FASTRNN_ERR_UNSUPPORTED = 8   /* the kind does not take an argument given (version 2) */
};

enum fastrnn_kind {
    FASTRNN_RNN_TANH = 0,
    FASTRNN_RNN_RELU = 1,
    FASTRNN_LSTM = 2,
    FASTRNN_GRU = 3,
    FASTRNN_GRU_ORIG = 4,
    FASTRNN_LSTM_CIFG = 5 /* version 4: the LSTM with f = 1 - i (ONNX input_forget=1) */
};

/* Version of this ABI (FASTRNN_ABI_VERSION of the library) and of fastrnn. */
FASTRNN_API int fastrnn_abi_version(void);
FASTRNN_API const char* fastrnn_version(void);
/* A static message for a status code (never NULL). */
FASTRNN_API const char* fastrnn_status_message(int status);

/* G of a kind, or -1 for an unknown kind. */
FASTRNN_API int64_t fastrnn_num_gates(int kind);
/* Elements of the workspace a training forward fills and backward reads, or
 * -1 for a bad kind or size. Cell: for B rows. Layer: for T steps of B rows. */
FASTRNN_API int64_t fastrnn_cell_workspace_size(int kind, int64_t B, int64_t H);
FASTRNN_API int64_t fastrnn_layer_workspace_size(int kind, int64_t T, int64_t B, int64_t H);

/* One step.
 *   x [B, I], h [B, H], c [B, H] (lstm; else ignored, may be NULL),
 *   w_ih [G*H, I], w_hh [G*H, H], b_ih [G*H] and b_hh [G*H] (optional pair),
 *   h_new [B, H], c_new [B, H] (lstm; else ignored),
 *   ws [fastrnn_cell_workspace_size] (optional; needed for backward). */
FASTRNN_API int fastrnn_cell_forward_f32(int kind, int64_t B, int64_t I, int64_t H,
    const float* x, const float* h, const float* c, const float* w_ih, const float* w_hh,
    const float* b_ih, const float* b_hh, float* h_new, float* c_new, float* ws);
FASTRNN_API int fastrnn_cell_forward_f64(int kind, int64_t B, int64_t I, int64_t H,
    const double* x, const double* h, const double* c, const double* w_ih, const double* w_hh,
    const double* b_ih, const double* b_hh, double* h_new, double* c_new, double* ws);

/* Backward of one step (same x, h, c, weights; c_new and ws from the forward).
 *   grad_h [B, H] and grad_c [B, H] (lstm) optional (NULL = zeros);
 *   writes dx [B, I], dh [B, H], dc [B, H] (lstm; else ignored),
 *   dw_ih [G*H, I], dw_hh [G*H, H], db_ih [G*H], db_hh [G*H] (NULL without bias).
 *   Gradients are written, not accumulated. */
FASTRNN_API int fastrnn_cell_backward_f32(int kind, int64_t B, int64_t I, int64_t H,
    const float* x, const float* h, const float* c, const float* c_new, const float* w_ih,
    const float* w_hh, const float* ws, const float* grad_h, const float* grad_c, float* dx,
    float* dh, float* dc, float* dw_ih, float* dw_hh, float* db_ih, float* db_hh);
FASTRNN_API int fastrnn_cell_backward_f64(int kind, int64_t B, int64_t I, int64_t H,
    const double* x, const double* h, const double* c, const double* c_new, const double* w_ih,
    const double* w_hh, const double* ws, const double* grad_h, const double* grad_c, double* dx,
    double* dh, double* dc, double* dw_ih, double* dw_hh, double* db_ih, double* db_hh);

/* Whole sequence, one layer, one direction.
 *   x [T, B, I], h0 [B, H], c0 [B, H] (lstm), weights as above,
 *   lengths [B] optional (padded batch: sequence b valid at t < lengths[b]),
 *   reverse: 0 or 1 (run t = T-1 .. 0),
 *   out [T, B, H], h_n [B, H], c_n [B, H] (lstm),
 *   ws [fastrnn_layer_workspace_size] optional (needed for backward). */
FASTRNN_API int fastrnn_layer_forward_f32(int kind, int64_t T, int64_t B, int64_t I, int64_t H,
    const float* x, const float* h0, const float* c0, const float* w_ih, const float* w_hh,
    const float* b_ih, const float* b_hh, const int64_t* lengths, int reverse, float* out,
    float* h_n, float* c_n, float* ws);
FASTRNN_API int fastrnn_layer_forward_f64(int kind, int64_t T, int64_t B, int64_t I, int64_t H,
    const double* x, const double* h0, const double* c0, const double* w_ih, const double* w_hh,
    const double* b_ih, const double* b_hh, const int64_t* lengths, int reverse, double* out,
    double* h_n, double* c_n, double* ws);

/* Backward of a layer forward (same inputs, its ws).
 *   grad_out [T, B, H], grad_h_n [B, H], grad_c_n [B, H] (lstm) optional;
 *   writes dx [T, B, I], dh0 [B, H], dc0 [B, H] (lstm), dw_ih, dw_hh, db_ih, db_hh
 *   (bias gradients NULL without bias). */
FASTRNN_API int fastrnn_layer_backward_f32(int kind, int64_t T, int64_t B, int64_t I, int64_t H,
    const float* x, const float* c0, const float* w_ih, const float* w_hh, const int64_t* lengths,
    int reverse, const float* ws, const float* grad_out, const float* grad_h_n,
    const float* grad_c_n, float* dx, float* dh0, float* dc0, float* dw_ih, float* dw_hh,
    float* db_ih, float* db_hh);
FASTRNN_API int fastrnn_layer_backward_f64(int kind, int64_t T, int64_t B, int64_t I, int64_t H,
    const double* x, const double* c0, const double* w_ih, const double* w_hh,
    const int64_t* lengths, int reverse, const double* ws, const double* grad_out,
    const double* grad_h_n, const double* grad_c_n, double* dx, double* dh0, double* dc0,
    double* dw_ih, double* dw_hh, double* db_ih, double* db_hh);

/* Version 2: the functions above with the variants' optional arrays (NULL:
 * none, the version-1 function's result).
 *   peep [3*H]: the LSTM's peepholes (p_i, p_f, p_o), the LSTM kinds only
 *     (else FASTRNN_ERR_UNSUPPORTED): i = sigmoid(... + p_i*c),
 *     f = sigmoid(... + p_f*c), c' = f*c + i*g, o = sigmoid(... + p_o*c'),
 *     h' = o*tanh(c') (ONNX's P holds the same blocks in the order i, o, f);
 *     backward then writes dpeep [3*H] (required with peep).
 *   hmask [B, H]: recurrent dropout, layers (cells: the version-5 _masked
 *     functions): each step's recurrent product sees h * hmask
 *     (FASTRNN_GRU_ORIG: W_hn sees r * (h * hmask);
 *     before version 4 it returned FASTRNN_ERR_UNSUPPORTED for that kind);
 *     backward takes the forward's hmask.
 * The workspaces are the version-1 ones. */
FASTRNN_API int fastrnn_layer_forward_ex_f32(int kind, int64_t T, int64_t B, int64_t I, int64_t H,
    const float* x, const float* h0, const float* c0, const float* w_ih, const float* w_hh,
    const float* b_ih, const float* b_hh, const float* peep, const float* hmask, const int64_t* lengths,
    int reverse, float* out, float* h_n, float* c_n, float* ws);
FASTRNN_API int fastrnn_layer_forward_ex_f64(int kind, int64_t T, int64_t B, int64_t I, int64_t H,
    const double* x, const double* h0, const double* c0, const double* w_ih, const double* w_hh,
    const double* b_ih, const double* b_hh, const double* peep, const double* hmask,
    const int64_t* lengths, int reverse, double* out, double* h_n, double* c_n, double* ws);
FASTRNN_API int fastrnn_layer_backward_ex_f32(int kind, int64_t T, int64_t B, int64_t I, int64_t H,
    const float* x, const float* c0, const float* w_ih, const float* w_hh, const float* peep,
    const float* hmask, const int64_t* lengths, int reverse, const float* ws, const float* grad_out,
    const float* grad_h_n, const float* grad_c_n, float* dx, float* dh0, float* dc0, float* dw_ih,
    float* dw_hh, float* db_ih, float* db_hh, float* dpeep);
FASTRNN_API int fastrnn_layer_backward_ex_f64(int kind, int64_t T, int64_t B, int64_t I, int64_t H,
    const double* x, const double* c0, const double* w_ih, const double* w_hh, const double* peep,
    const double* hmask, const int64_t* lengths, int reverse, const double* ws, const double* grad_out,
    const double* grad_h_n, const double* grad_c_n, double* dx, double* dh0, double* dc0,
    double* dw_ih, double* dw_hh, double* db_ih, double* db_hh, double* dpeep);
FASTRNN_API int fastrnn_cell_forward_ex_f32(int kind, int64_t B, int64_t I, int64_t H,
    const float* x, const float* h, const float* c, const float* w_ih, const float* w_hh,
    const float* b_ih, const float* b_hh, const float* peep, float* h_new, float* c_new, float* ws);
FASTRNN_API int fastrnn_cell_forward_ex_f64(int kind, int64_t B, int64_t I, int64_t H,
    const double* x, const double* h, const double* c, const double* w_ih, const double* w_hh,
    const double* b_ih, const double* b_hh, const double* peep, double* h_new, double* c_new,
    double* ws);
FASTRNN_API int fastrnn_cell_backward_ex_f32(int kind, int64_t B, int64_t I, int64_t H,
    const float* x, const float* h, const float* c, const float* c_new, const float* w_ih,
    const float* w_hh, const float* peep, const float* ws, const float* grad_h, const float* grad_c,
    float* dx, float* dh, float* dc, float* dw_ih, float* dw_hh, float* db_ih, float* db_hh,
    float* dpeep);
FASTRNN_API int fastrnn_cell_backward_ex_f64(int kind, int64_t B, int64_t I, int64_t H,
    const double* x, const double* h, const double* c, const double* c_new, const double* w_ih,
    const double* w_hh, const double* peep, const double* ws, const double* grad_h,
    const double* grad_c, double* dx, double* dh, double* dc, double* dw_ih, double* dw_hh,
    double* db_ih, double* db_hh, double* dpeep);

/* Version 3: the LSTM's projection (PyTorch's proj_size), layers only: the
 * _ex layer functions with P, the units of h, and w_hr [P, H] (the LSTM kinds
 * only, else FASTRNN_ERR_UNSUPPORTED; 1 <= P <= H, else FASTRNN_ERR_BAD_SIZE):
 *   h' = w_hr · (o*tanh(c')), so h0, h_n, out, hmask and grad_out, grad_h_n,
 *   dh0 have P units and w_hh, dw_hh are [G*H, P]; c keeps H units.
 * backward then writes dw_hr [P, H] (required with w_hr). w_hr NULL: P must
 * be H, and the result is the _ex function's. The workspace: for P units. */
FASTRNN_API int64_t fastrnn_layer_workspace_size_proj(int kind, int64_t T, int64_t B, int64_t H, int64_t P);
FASTRNN_API int fastrnn_layer_forward_proj_f32(int kind, int64_t T, int64_t B, int64_t I, int64_t H, int64_t P,
    const float* x, const float* h0, const float* c0, const float* w_ih, const float* w_hh,
    const float* b_ih, const float* b_hh, const float* peep, const float* hmask, const float* w_hr,
    const int64_t* lengths, int reverse, float* out, float* h_n, float* c_n, float* ws);
FASTRNN_API int fastrnn_layer_forward_proj_f64(int kind, int64_t T, int64_t B, int64_t I, int64_t H, int64_t P,
    const double* x, const double* h0, const double* c0, const double* w_ih, const double* w_hh,
    const double* b_ih, const double* b_hh, const double* peep, const double* hmask, const double* w_hr,
    const int64_t* lengths, int reverse, double* out, double* h_n, double* c_n, double* ws);
FASTRNN_API int fastrnn_layer_backward_proj_f32(int kind, int64_t T, int64_t B, int64_t I, int64_t H, int64_t P,
    const float* x, const float* c0, const float* w_ih, const float* w_hh, const float* peep,
    const float* hmask, const float* w_hr, const int64_t* lengths, int reverse, const float* ws,
    const float* grad_out, const float* grad_h_n, const float* grad_c_n, float* dx, float* dh0, float* dc0,
    float* dw_ih, float* dw_hh, float* db_ih, float* db_hh, float* dpeep, float* dw_hr);
FASTRNN_API int fastrnn_layer_backward_proj_f64(int kind, int64_t T, int64_t B, int64_t I, int64_t H, int64_t P,
    const double* x, const double* c0, const double* w_ih, const double* w_hh, const double* peep,
    const double* hmask, const double* w_hr, const int64_t* lengths, int reverse, const double* ws,
    const double* grad_out, const double* grad_h_n, const double* grad_c_n, double* dx, double* dh0,
    double* dc0, double* dw_ih, double* dw_hh, double* db_ih, double* db_hh, double* dpeep, double* dw_hr);

/* Version 5: recurrent dropout in a cell: the _ex cell functions with hmask
 * [B, H] (NULL: none, the _ex function's result), every kind: the step's
 * recurrent product sees h * hmask, as one step of a layer with that hmask.
 * backward takes the forward's hmask. */
FASTRNN_API int fastrnn_cell_forward_masked_f32(int kind, int64_t B, int64_t I, int64_t H,
    const float* x, const float* h, const float* c, const float* w_ih, const float* w_hh,
    const float* b_ih, const float* b_hh, const float* peep, const float* hmask, float* h_new,
    float* c_new, float* ws);
FASTRNN_API int fastrnn_cell_forward_masked_f64(int kind, int64_t B, int64_t I, int64_t H,
    const double* x, const double* h, const double* c, const double* w_ih, const double* w_hh,
    const double* b_ih, const double* b_hh, const double* peep, const double* hmask, double* h_new,
    double* c_new, double* ws);
FASTRNN_API int fastrnn_cell_backward_masked_f32(int kind, int64_t B, int64_t I, int64_t H,
    const float* x, const float* h, const float* c, const float* c_new, const float* w_ih,
    const float* w_hh, const float* peep, const float* hmask, const float* ws, const float* grad_h,
    const float* grad_c, float* dx, float* dh, float* dc, float* dw_ih, float* dw_hh, float* db_ih,
    float* db_hh, float* dpeep);
FASTRNN_API int fastrnn_cell_backward_masked_f64(int kind, int64_t B, int64_t I, int64_t H,
    const double* x, const double* h, const double* c, const double* c_new, const double* w_ih,
    const double* w_hh, const double* peep, const double* hmask, const double* ws,
    const double* grad_h, const double* grad_c, double* dx, double* dh, double* dc, double* dw_ih,
    double* dw_hh, double* db_ih, double* db_hh, double* dpeep);

/* FASTRNN_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* FASTRNN_H */
