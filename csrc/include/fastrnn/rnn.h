// fastrnn kernels: fused recurrent layers (vanilla RNN, LSTM, GRU) on the CPU.
//
// Pure C++17, no Python. Every kernel is templated on the scalar type T and
// explicitly instantiated for float and double. All arrays are dense,
// row-major (C order); the shape of every pointer argument is documented
// beside it in haste style, e.g. `x: [T, B, I]`.
//
// Symbols used in the shapes:
//   T  time steps          B  batch            I  input features
//   H  hidden units        G  gates (1 rnn, 4 lstm, 3 gru)
//   P  units of the state h: the projection's rows (LSTM with w_hr), else H
//   K  columns kept per step for backward: kept_gates(kind) * H
//
// Gate order follows PyTorch: LSTM i, f, g, o; GRU r, z, n.
//
// Preconditions (checked by the callers, csrc/python and csrc/capi, not
// here): the sizes satisfy fastrnn/workspace.h's rule (all >= 1), pointers
// are non-null unless documented as optional, 1 <= lengths[b] <= T, no
// aliasing between inputs and outputs unless documented.
#pragma once

#include <cstdint>
#include <stdexcept>

namespace fastrnn {

enum class Kind : int {
    rnn_tanh = 0,  // h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
    rnn_relu = 1,  // h' = relu(W_ih x + b_ih + W_hh h + b_hh)
    lstm = 2,      // c' = f*c + i*g ; h' = o*tanh(c')
    gru = 3,       // n = tanh(W_in x + b_in + r*(W_hn h + b_hn)); h' = (1-z)*n + z*h
    gru_orig = 4,  // n = tanh(W_in x + b_in + W_hn (r*h) + b_hn); h' = (1-z)*n + z*h
    lstm_cifg = 5, // f = 1 - i ; c' = f*c + i*g ; h' = o*tanh(c') (ONNX input_forget=1; f's rows unused)
};

// The LSTM kinds: they carry a cell state c, and alone take peepholes and a
// projection.
constexpr bool has_cell_state(Kind k) { return k == Kind::lstm || k == Kind::lstm_cifg; }

// Number of gates G (row blocks of H in the weight matrices).
constexpr int num_gates(Kind k) {
    return has_cell_state(k) ? 4 : (k == Kind::gru || k == Kind::gru_orig) ? 3 : 1;
}

// Number of H-wide blocks kept per step for backward (training forward):
//   rnn:      [h']                      (post-activation)
//   lstm:     [i, f, g, o]              (post-activation; lstm_cifg too, f = 1 - i)
//   gru:      [r, z, n, W_hn h + b_hn]
//   gru_orig: [r, z, n, r*h]
constexpr int kept_gates(Kind k) {
    return has_cell_state(k) ? 4 : (k == Kind::gru || k == Kind::gru_orig) ? 4 : 1;
}

// Whether the kept block of a step is the new state itself (the rnn kinds):
// then no state per step is stored apart (ws_h holds h0 only).
constexpr bool kept_gates_are_states(Kind k) { return num_gates(k) == 1; }

// LSTM peepholes: per-unit weights peep = [p_i, p_f, p_o] ([3*H], blocks
// of H) through which the gates see the cell state (ONNX's P, there in the
// order i, o, f):
//   i = sigmoid(... + p_i*c) ; f = sigmoid(... + p_f*c) ; c' = f*c + i*g
//   o = sigmoid(... + p_o*c') ; h' = o*tanh(c')
constexpr int kPeepholes = 3;

// LSTM projection (PyTorch's proj_size): w_hr [P, H], 1 <= P <= H, makes the
// state from the H units' output, so h has P units and W_hh sees them:
//   h' = w_hr · (o*tanh(c'))        h0, h_n, out: [.., P]; w_hh: [G*H, P]
// (c keeps H units).

// Parse "rnn_tanh", "rnn_relu", "lstm", "gru", "gru_orig", "lstm_cifg". Returns false on
// an unknown name.
bool parse_kind(const char* name, Kind* out);

// ---------------------------------------------------------------------------
// Whole sequence, one layer, one direction.
//
// Forward. Sequence b is valid at steps t < lengths[b]; at padded steps its
// state is carried unchanged and out[t, b] = 0. With `reverse`, steps run
// t = T-1 .. 0 and sequence b starts from h0 at its own last step.
// With ws_gates == nullptr nothing for backward is stored (inference).
// out need not be dense: row out[t, b] (P contiguous values) starts at
// out + t * out_t_stride + b * out_b_stride (dense: B * P and P), so a
// direction can write its half of a bidirectional [T, B, 2P] buffer, or a
// batch-first [B, T, P] buffer, in place. The rows must not overlap.
template <typename T>
void layer_forward(Kind kind, int64_t steps, int64_t B, int64_t I, int64_t H,
                   const T* x,             // x: [T, B, I]
                   const T* h0,            // h0: [B, P]
                   const T* c0,            // c0: [B, H] (lstm), else ignored
                   const T* w_ih,          // w_ih: [G*H, I]
                   const T* w_hh,          // w_hh: [G*H, P]
                   const T* b_ih,          // b_ih: [G*H] or nullptr (no bias; then b_hh too)
                   const T* b_hh,          // b_hh: [G*H] or nullptr
                   const T* peep,          // peep: [3*H] (lstm peepholes) or nullptr (none)
                   const T* hmask,         // hmask: [B, P] or nullptr: the product sees h * hmask
                                           // (recurrent dropout; not gru_orig)
                   int64_t P,              // units of h: w_hr's rows, or H without w_hr
                   const T* w_hr,          // w_hr: [P, H] (lstm projection) or nullptr (none)
                   const int64_t* lengths, // lengths: [B] or nullptr (all T)
                   bool reverse,
                   T* out,                 // out: [T, B, P], rows at the strides below
                   int64_t out_t_stride,   // elements from out[t, b] to out[t + 1, b]
                   int64_t out_b_stride,   // elements from out[t, b] to out[t, b + 1]
                   T* h_n,                 // h_n: [B, P]
                   T* c_n,                 // c_n: [B, H] (lstm), else ignored
                   T* ws_gates,            // ws_gates: [T, B, K] or nullptr (inference)
                   T* ws_h,                // ws_h: [T, B, P] state entering each step (training;
                                           // rnn kinds: [B, H], h0 only - their kept gates
                                           // are the states after each step)
                   T* ws_c);               // ws_c: [T, B, H] lstm cell after each step (training)

// Backward of layer_forward (called with the same inputs and its ws_*).
// Gradients are written, not accumulated (but see add_dw). Padded steps give
// zero gradient into dx and ignore grad_out. grad_out's rows are read at
// strides as forward's out is written (any strides; dense: B * P and P).
template <typename T>
void layer_backward(Kind kind, int64_t steps, int64_t B, int64_t I, int64_t H,
                    const T* x,              // x: [T, B, I]
                    const T* c0,             // c0: [B, H] (lstm), else ignored
                    const T* w_ih,           // w_ih: [G*H, I]
                    const T* w_hh,           // w_hh: [G*H, P]
                    const T* peep,           // peep: [3*H] as forward's, or nullptr
                    const T* hmask,          // hmask: [B, P] as forward's, or nullptr
                    int64_t P,               // units of h, as forward's
                    const T* w_hr,           // w_hr: [P, H] as forward's, or nullptr
                    const int64_t* lengths,  // lengths: [B] or nullptr
                    bool reverse,
                    const T* ws_gates,       // ws_gates: [T, B, K]
                    const T* ws_h,           // ws_h: [T, B, P] (rnn kinds: [B, H])
                    const T* ws_c,           // ws_c: [T, B, H] (lstm)
                    const T* grad_out,       // grad_out: [T, B, P] or nullptr (zeros)
                    int64_t grad_out_t_stride,  // elements from grad_out[t, b] to [t + 1, b]
                    int64_t grad_out_b_stride,  // elements from grad_out[t, b] to [t, b + 1]
                    const T* grad_h_n,       // grad_h_n: [B, P] or nullptr (zeros)
                    const T* grad_c_n,       // grad_c_n: [B, H] (lstm) or nullptr (zeros)
                    T* dx,                   // dx: [T, B, I]
                    T* dh0,                  // dh0: [B, P]
                    T* dc0,                  // dc0: [B, H] (lstm), else ignored
                    T* dw_ih,                // dw_ih: [G*H, I]
                    T* dw_hh,                // dw_hh: [G*H, P]
                    T* db_ih,                // db_ih: [G*H] or nullptr (no bias)
                    T* db_hh,                // db_hh: [G*H] or nullptr
                    T* dpeep,                // dpeep: [3*H] with peep (written), else ignored
                    T* dw_hr,                // dw_hr: [P, H] with w_hr (written), else ignored
                    bool add_dw = false);    // true: dw_ih, dw_hh += the gradients (they hold
                                             // values to accumulate onto); false: overwritten

// What layer_backward throws when it fails (std::bad_alloc for a scratch buffer, a thread
// that cannot start) after it began adding into dw_ih / dw_hh (add_dw): they then hold part
// of this call's gradients, and a repeated call would add them twice. Any other error leaves
// dw_ih / dw_hh as they were. The kept ws_* and the other inputs are only read, so a call that
// failed with any other error may be repeated.
class PartialAccumulation : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------
// One step (cell). Same equations as one step of the layer, no lengths.
template <typename T>
void cell_forward(Kind kind, int64_t B, int64_t I, int64_t H,
                  const T* x,      // x: [B, I]
                  const T* h,      // h: [B, H]
                  const T* c,      // c: [B, H] (lstm), else ignored
                  const T* w_ih,   // w_ih: [G*H, I]
                  const T* w_hh,   // w_hh: [G*H, H]
                  const T* b_ih,   // b_ih: [G*H] or nullptr
                  const T* b_hh,   // b_hh: [G*H] or nullptr
                  const T* peep,   // peep: [3*H] (lstm peepholes) or nullptr
                  const T* hmask,  // hmask: [B, H] or nullptr: the product sees h * hmask, as the layer's
                  T* h_new,        // h_new: [B, H]
                  T* c_new,        // c_new: [B, H] (lstm), else ignored
                  T* ws_gates);    // ws_gates: [B, K] or nullptr (inference)

template <typename T>
void cell_backward(Kind kind, int64_t B, int64_t I, int64_t H,
                   const T* x,         // x: [B, I]
                   const T* h,         // h: [B, H]
                   const T* c,         // c: [B, H] (lstm), else ignored
                   const T* c_new,     // c_new: [B, H] (lstm), else ignored
                   const T* w_ih,      // w_ih: [G*H, I]
                   const T* w_hh,      // w_hh: [G*H, H]
                   const T* peep,      // peep: [3*H] as forward's, or nullptr
                   const T* hmask,     // hmask: [B, H] as forward's, or nullptr
                   const T* ws_gates,  // ws_gates: [B, K]
                   const T* grad_h,    // grad_h: [B, H] or nullptr (zeros)
                   const T* grad_c,    // grad_c: [B, H] (lstm) or nullptr (zeros)
                   T* dx,              // dx: [B, I]
                   T* dh,              // dh: [B, H]
                   T* dc,              // dc: [B, H] (lstm), else ignored
                   T* dw_ih,           // dw_ih: [G*H, I]
                   T* dw_hh,           // dw_hh: [G*H, H]
                   T* db_ih,           // db_ih: [G*H] or nullptr
                   T* db_hh,           // db_hh: [G*H] or nullptr
                   T* dpeep);          // dpeep: [3*H] with peep (written), else ignored

// Name of the SIMD code path chosen at runtime ("avx512", "avx2", "generic").
const char* simd_path();

// The reduced-precision instructions this CPU has, named as Linux's
// /proc/cpuinfo names them, space-separated, in the order of
// kReducedPrecisionFeatures: int8 dot products (avx512_vnni, avx_vnni),
// bfloat16 and float16 arithmetic (avx512_bf16, avx512_fp16) and AMX tiles
// (amx_tile, amx_int8, amx_bf16; the CPU's, whether or not the OS grants a
// process their state). Empty off x86. No kernel uses them yet: the kernels
// compute in float32 and float64.
const char* reduced_precision_features();
constexpr const char* kReducedPrecisionFeatures =
    "avx512_vnni avx_vnni avx512_bf16 avx512_fp16 amx_tile amx_int8 amx_bf16";

}  // namespace fastrnn

namespace fastrnn {
// The activations of the pointwise rows.
enum class Activation : int { sigmoid = 0, tanh = 1, exp = 2 };

// The vectorized activations of the kernels applied elementwise (for tests
// of their accuracy).
//   in: [n], out: [n]
template <typename T>
void apply_activation(Activation fn, const T* in, T* out, int64_t n);

// The GEMM of the layers' large products: C = op(A) · op(B), row-major.
//   A: [M, K] (lda) or, with ta, [K, M];  B: [K, N] (ldb) or, with tb, [N, K];
//   C: [M, N]
template <typename T>
void matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
            int64_t ldb, T* C);
}  // namespace fastrnn
