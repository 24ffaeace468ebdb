// Public entry points of the recurrent kernels: choose the copy compiled for
// the widest instruction set this CPU supports (runtime dispatch; the default
// build never assumes more than baseline x86-64) and forward to it.
#include <cstdlib>
#include <cstring>

#include "fastrnn/rnn.h"

namespace fastrnn {

#define FR_DECL(NS)                                                                            \
    namespace NS {                                                                             \
    void layer_forward(Kind, int64_t, int64_t, int64_t, int64_t, const float*, const float*,  \
                       const float*, const float*, const float*, const float*, const float*,  \
                       const int64_t*, bool, float*, float*, float*, float*, float*, float*); \
    void layer_forward(Kind, int64_t, int64_t, int64_t, int64_t, const double*,               \
                       const double*, const double*, const double*, const double*,            \
                       const double*, const double*, const int64_t*, bool, double*, double*,  \
                       double*, double*, double*, double*);                                   \
    void layer_backward(Kind, int64_t, int64_t, int64_t, int64_t, const float*, const float*, \
                        const float*, const float*, const int64_t*, bool, const float*,       \
                        const float*, const float*, const float*, const float*, const float*, \
                        float*, float*, float*, float*, float*, float*, float*, bool);        \
    void layer_backward(Kind, int64_t, int64_t, int64_t, int64_t, const double*,              \
                        const double*, const double*, const double*, const int64_t*, bool,    \
                        const double*, const double*, const double*, const double*,           \
                        const double*, const double*, double*, double*, double*, double*,     \
                        double*, double*, double*, bool);                                     \
    void cell_forward(Kind, int64_t, int64_t, int64_t, const float*, const float*,            \
                      const float*, const float*, const float*, const float*, const float*,   \
                      float*, float*, float*);                                                \
    void cell_forward(Kind, int64_t, int64_t, int64_t, const double*, const double*,          \
                      const double*, const double*, const double*, const double*,             \
                      const double*, double*, double*, double*);                              \
    void cell_backward(Kind, int64_t, int64_t, int64_t, const float*, const float*,           \
                       const float*, const float*, const float*, const float*, const float*,  \
                       const float*, const float*, float*, float*, float*, float*, float*,     \
                       float*, float*);                                                       \
    void cell_backward(Kind, int64_t, int64_t, int64_t, const double*, const double*,         \
                       const double*, const double*, const double*, const double*,            \
                       const double*, const double*, const double*, double*, double*,         \
                       double*, double*, double*, double*, double*);                          \
    void apply_act(int, const float*, float*, int64_t);                                       \
    void matmul(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*,    \
                int64_t, float*);                                                             \
    void matmul(bool, bool, int64_t, int64_t, int64_t, const double*, int64_t, const double*,  \
                int64_t, double*);                                                            \
    void apply_act(int, const double*, double*, int64_t);                                     \
    }

FR_DECL(isa_generic)
FR_DECL(isa_avx2)
FR_DECL(isa_avx512)
#undef FR_DECL

namespace {

enum class Isa { generic, avx2, avx512 };

Isa detect() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma"))
        return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
    return Isa::generic;
}

// FASTRNN_SIMD=generic|avx2|avx512 narrows the choice (for testing the other
// code paths); it can never select more than the CPU supports.
Isa choose() {
    Isa best = detect();
    if (const char* e = std::getenv("FASTRNN_SIMD")) {
        if (std::strcmp(e, "generic") == 0) return Isa::generic;
        if (std::strcmp(e, "avx2") == 0 && best != Isa::generic) return Isa::avx2;
    }
    return best;
}

Isa isa() {
    static const Isa v = choose();
    return v;
}

}  // namespace

#define FR_DISPATCH(FN, ...)                                 \
    switch (isa()) {                                         \
        case Isa::avx512: return isa_avx512::FN(__VA_ARGS__); \
        case Isa::avx2: return isa_avx2::FN(__VA_ARGS__);     \
        default: return isa_generic::FN(__VA_ARGS__);         \
    }

const char* simd_path() {
    switch (isa()) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "generic";
    }
}

bool parse_kind(const char* name, Kind* out) {
    static const struct {
        const char* n;
        Kind k;
    } table[] = {{"rnn_tanh", Kind::rnn_tanh},
                 {"rnn_relu", Kind::rnn_relu},
                 {"lstm", Kind::lstm},
                 {"gru", Kind::gru},
                 {"gru_orig", Kind::gru_orig}};
    for (const auto& e : table)
        if (std::strcmp(e.n, name) == 0) {
            *out = e.k;
            return true;
        }
    return false;
}

template <typename T>
void layer_forward(Kind kind, int64_t steps, int64_t B, int64_t I, int64_t H, const T* x,
                   const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* b_ih,
                   const T* b_hh, const int64_t* lengths, bool reverse, T* out, T* h_n, T* c_n,
                   T* ws_gates, T* ws_h, T* ws_c) {
    FR_DISPATCH(layer_forward, kind, steps, B, I, H, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,
                reverse, out, h_n, c_n, ws_gates, ws_h, ws_c)
}

template <typename T>
void layer_backward(Kind kind, int64_t steps, int64_t B, int64_t I, int64_t H, const T* x,
                    const T* c0, const T* w_ih, const T* w_hh, const int64_t* lengths,
                    bool reverse, const T* ws_gates, const T* ws_h, const T* ws_c,
                    const T* grad_out, const T* grad_h_n, const T* grad_c_n, T* dx, T* dh0,
                    T* dc0, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh, bool add_dw) {
    FR_DISPATCH(layer_backward, kind, steps, B, I, H, x, c0, w_ih, w_hh, lengths, reverse,
                ws_gates, ws_h, ws_c, grad_out, grad_h_n, grad_c_n, dx, dh0, dc0, dw_ih, dw_hh,
                db_ih, db_hh, add_dw)
}

template <typename T>
void cell_forward(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,
                  const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, T* h_new, T* c_new,
                  T* ws_gates) {
    FR_DISPATCH(cell_forward, kind, B, I, H, x, h, c, w_ih, w_hh, b_ih, b_hh, h_new, c_new,
                ws_gates)
}

template <typename T>
void cell_backward(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,
                   const T* c_new, const T* w_ih, const T* w_hh, const T* ws_gates,
                   const T* grad_h, const T* grad_c, T* dx, T* dh, T* dc, T* dw_ih, T* dw_hh,
                   T* db_ih, T* db_hh) {
    FR_DISPATCH(cell_backward, kind, B, I, H, x, h, c, c_new, w_ih, w_hh, ws_gates, grad_h,
                grad_c, dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh)
}

template <typename T>
void apply_activation(int which, const T* in, T* out, int64_t n) {
    FR_DISPATCH(apply_act, which, in, out, n)
}

template <typename T>
void matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
            int64_t ldb, T* C) {
    FR_DISPATCH(matmul, ta, tb, M, N, K, A, lda, B, ldb, C)
}

#define FR_INST(T)                                                                             \
    template void layer_forward<T>(Kind, int64_t, int64_t, int64_t, int64_t, const T*,          \
                                   const T*, const T*, const T*, const T*, const T*, const T*,  \
                                   const int64_t*, bool, T*, T*, T*, T*, T*, T*);               \
    template void layer_backward<T>(Kind, int64_t, int64_t, int64_t, int64_t, const T*,         \
                                    const T*, const T*, const T*, const int64_t*, bool,         \
                                    const T*, const T*, const T*, const T*, const T*, const T*, \
                                    T*, T*, T*, T*, T*, T*, T*, bool);                          \
    template void cell_forward<T>(Kind, int64_t, int64_t, int64_t, const T*, const T*,          \
                                  const T*, const T*, const T*, const T*, const T*, T*, T*, T*); \
    template void cell_backward<T>(Kind, int64_t, int64_t, int64_t, const T*, const T*,         \
                                   const T*, const T*, const T*, const T*, const T*, const T*,  \
                                   const T*, T*, T*, T*, T*, T*, T*, T*);                       \
    template void apply_activation<T>(int, const T*, T*, int64_t);                             \
    template void matmul<T>(bool, bool, int64_t, int64_t, int64_t, const T*, int64_t, const T*, \
                            int64_t, T*);

FR_INST(float)
FR_INST(double)
#undef FR_INST

}  // namespace fastrnn
