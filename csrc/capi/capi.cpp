// The C ABI of fastrnn.h over the templated kernels of fastrnn/rnn.h.
//
// Every entry point checks its arguments (null pointers, kinds, sizes and
// their products, lengths, bias pairs) before any kernel runs, and catches
// every C++ exception: a status code comes back, never an exception.
#include "fastrnn/fastrnn.h"

#include <cstdint>
#include <exception>
#include <new>

#include "fastrnn/build_info.h"
#include "fastrnn/rnn.h"
#include "fastrnn/workspace.h"

namespace {

using fastrnn::Kind;

bool valid_kind(int kind) { return kind >= FASTRNN_RNN_TANH && kind <= FASTRNN_LSTM_CIFG; }

// The LSTM kinds (valid ones): a cell state, and peepholes and a projection allowed.
bool lstm_kind(int kind) { return fastrnn::has_cell_state(static_cast<Kind>(kind)); }

// The size rule of fastrnn/workspace.h (the same as the Python bindings').
bool valid_sizes(int64_t T, int64_t B, int64_t I, int64_t H) {
    return fastrnn::check_sizes(T, B, I, H) == fastrnn::SizeCheck::ok;
}

int check_lengths(const int64_t* lengths, int64_t T, int64_t B) {
    if (!lengths) return FASTRNN_OK;
    for (int64_t b = 0; b < B; ++b)
        if (lengths[b] < 1 || lengths[b] > T) return FASTRNN_ERR_BAD_LENGTHS;
    return FASTRNN_OK;
}

// Run `f`, turning any exception into a status code.
template <typename F>
int guarded(F&& f) noexcept {
    try {
        f();
        return FASTRNN_OK;
    } catch (const std::bad_alloc&) {
        return FASTRNN_ERR_NO_MEMORY;
    } catch (...) {
        return FASTRNN_ERR_INTERNAL;
    }
}

#define FR_REQUIRE(cond, code) \
    do {                       \
        if (!(cond)) return (code); \
    } while (0)

template <typename T>
int cell_forward(int kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,
                 const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, T* h_new, T* c_new,
                 T* ws, const T* peep = nullptr, const T* hmask = nullptr) noexcept {
    FR_REQUIRE(valid_kind(kind), FASTRNN_ERR_BAD_KIND);
    FR_REQUIRE(!peep || lstm_kind(kind), FASTRNN_ERR_UNSUPPORTED);
    FR_REQUIRE(valid_sizes(1, B, I, H), FASTRNN_ERR_BAD_SIZE);
    const bool lstm = lstm_kind(kind);
    FR_REQUIRE(x && h && w_ih && w_hh && h_new, FASTRNN_ERR_NULL_POINTER);
    FR_REQUIRE(!lstm || (c && c_new), FASTRNN_ERR_NULL_POINTER);
    FR_REQUIRE((b_ih == nullptr) == (b_hh == nullptr), FASTRNN_ERR_BAD_BIAS);
    return guarded([&] {
        fastrnn::cell_forward<T>(static_cast<Kind>(kind), B, I, H, x, h, c, w_ih, w_hh, b_ih, b_hh,
                                 peep, hmask, h_new, c_new, ws);
    });
}

template <typename T>
int cell_backward(int kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,
                  const T* c_new, const T* w_ih, const T* w_hh, const T* ws, const T* grad_h,
                  const T* grad_c, T* dx, T* dh, T* dc, T* dw_ih, T* dw_hh, T* db_ih,
                  T* db_hh, const T* peep = nullptr, T* dpeep = nullptr,
                  const T* hmask = nullptr) noexcept {
    FR_REQUIRE(valid_kind(kind), FASTRNN_ERR_BAD_KIND);
    FR_REQUIRE(!peep || lstm_kind(kind), FASTRNN_ERR_UNSUPPORTED);
    FR_REQUIRE(!peep || dpeep, FASTRNN_ERR_NULL_POINTER);
    FR_REQUIRE(valid_sizes(1, B, I, H), FASTRNN_ERR_BAD_SIZE);
    const bool lstm = lstm_kind(kind);
    FR_REQUIRE(x && h && w_ih && w_hh && ws && dx && dh && dw_ih && dw_hh, FASTRNN_ERR_NULL_POINTER);
    FR_REQUIRE(!lstm || (c && c_new && dc), FASTRNN_ERR_NULL_POINTER);
    FR_REQUIRE((db_ih == nullptr) == (db_hh == nullptr), FASTRNN_ERR_BAD_BIAS);
    return guarded([&] {
        fastrnn::cell_backward<T>(static_cast<Kind>(kind), B, I, H, x, h, c, c_new, w_ih, w_hh, peep, hmask,
                                  ws, grad_h, grad_c, dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh, dpeep);
    });
}

// The layer workspace is one buffer laid out as fastrnn/workspace.h says.
template <typename T>
struct LayerWs {
    T* gates;
    T* h;
    T* c;
};

template <typename T>
LayerWs<T> split_ws(T* ws, int kind, int64_t T_, int64_t B, int64_t H, int64_t P) {
    if (!ws) return {nullptr, nullptr, nullptr};
    const fastrnn::LayerWorkspaceLayout w = fastrnn::layer_workspace_layout(static_cast<Kind>(kind), T_, B, H, P);
    T* gates = ws;
    T* h = gates + w.gates_elems;
    T* c = w.c_steps ? h + w.h_elems : nullptr;
    return {gates, h, c};
}

// The variants a kind takes, and P (the state's units): in [1, H] with a projection, else H.
int check_variants(int kind, int64_t H, int64_t P, const void* peep, const void* w_hr) {
    FR_REQUIRE(!peep || lstm_kind(kind), FASTRNN_ERR_UNSUPPORTED);
    FR_REQUIRE(!w_hr || lstm_kind(kind), FASTRNN_ERR_UNSUPPORTED);
    FR_REQUIRE(w_hr ? P >= 1 && P <= H : P == H, FASTRNN_ERR_BAD_SIZE);
    return FASTRNN_OK;
}

template <typename T>
int layer_forward(int kind, int64_t T_, int64_t B, int64_t I, int64_t H, const T* x, const T* h0,
                  const T* c0, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh,
                  const int64_t* lengths, int reverse, T* out, T* h_n, T* c_n, T* ws,
                  const T* peep, const T* hmask, int64_t P, const T* w_hr) noexcept {
    FR_REQUIRE(valid_kind(kind), FASTRNN_ERR_BAD_KIND);
    FR_REQUIRE(valid_sizes(T_, B, I, H), FASTRNN_ERR_BAD_SIZE);
    const int variants = check_variants(kind, H, P, peep, w_hr);
    if (variants != FASTRNN_OK) return variants;
    const bool lstm = lstm_kind(kind);
    FR_REQUIRE(x && h0 && w_ih && w_hh && out && h_n, FASTRNN_ERR_NULL_POINTER);
    FR_REQUIRE(!lstm || (c0 && c_n), FASTRNN_ERR_NULL_POINTER);
    FR_REQUIRE((b_ih == nullptr) == (b_hh == nullptr), FASTRNN_ERR_BAD_BIAS);
    const int st = check_lengths(lengths, T_, B);
    if (st != FASTRNN_OK) return st;
    const LayerWs<T> w = split_ws(ws, kind, T_, B, H, P);
    return guarded([&] {
        fastrnn::layer_forward<T>(static_cast<Kind>(kind), T_, B, I, H, x, h0, c0, w_ih, w_hh, b_ih,
                                  b_hh, peep, hmask, P, w_hr, lengths, reverse != 0, out, B * P, P, h_n, c_n,
                                  w.gates, w.h, w.c);  // out dense: [T, B, P]
    });
}

template <typename T>
int layer_backward(int kind, int64_t T_, int64_t B, int64_t I, int64_t H, const T* x, const T* c0,
                   const T* w_ih, const T* w_hh, const int64_t* lengths, int reverse, const T* ws,
                   const T* grad_out, const T* grad_h_n, const T* grad_c_n, T* dx, T* dh0, T* dc0,
                   T* dw_ih, T* dw_hh, T* db_ih, T* db_hh, const T* peep,
                   T* dpeep, const T* hmask, int64_t P, const T* w_hr, T* dw_hr) noexcept {
    FR_REQUIRE(valid_kind(kind), FASTRNN_ERR_BAD_KIND);
    FR_REQUIRE(valid_sizes(T_, B, I, H), FASTRNN_ERR_BAD_SIZE);
    const int variants = check_variants(kind, H, P, peep, w_hr);
    if (variants != FASTRNN_OK) return variants;
    FR_REQUIRE(!peep || dpeep, FASTRNN_ERR_NULL_POINTER);
    FR_REQUIRE(!w_hr || dw_hr, FASTRNN_ERR_NULL_POINTER);
    const bool lstm = lstm_kind(kind);
    FR_REQUIRE(x && w_ih && w_hh && ws && dx && dh0 && dw_ih && dw_hh, FASTRNN_ERR_NULL_POINTER);
    FR_REQUIRE(!lstm || (c0 && dc0), FASTRNN_ERR_NULL_POINTER);
    FR_REQUIRE((db_ih == nullptr) == (db_hh == nullptr), FASTRNN_ERR_BAD_BIAS);
    const int st = check_lengths(lengths, T_, B);
    if (st != FASTRNN_OK) return st;
    const LayerWs<const T> w = split_ws(ws, kind, T_, B, H, P);
    return guarded([&] {
        fastrnn::layer_backward<T>(static_cast<Kind>(kind), T_, B, I, H, x, c0, w_ih, w_hh, peep, hmask, P, w_hr,
                                   lengths, reverse != 0, w.gates, w.h, w.c, grad_out, B * P, P,  // dense
                                   grad_h_n, grad_c_n, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dpeep, dw_hr);
    });
}

}  // namespace

extern "C" {

FASTRNN_API int fastrnn_abi_version(void) { return FASTRNN_ABI_VERSION; }

FASTRNN_API const char* fastrnn_version(void) {
    static const std::string v = fastrnn::build_info().version;
    return v.c_str();
}

FASTRNN_API const char* fastrnn_status_message(int status) {
    switch (status) {
        case FASTRNN_OK: return "ok";
        case FASTRNN_ERR_NULL_POINTER: return "a required pointer argument is NULL";
        case FASTRNN_ERR_BAD_KIND: return "kind must be one of FASTRNN_RNN_TANH, FASTRNN_RNN_RELU, FASTRNN_LSTM, FASTRNN_GRU, FASTRNN_GRU_ORIG, FASTRNN_LSTM_CIFG";
        case FASTRNN_ERR_BAD_SIZE: return "sizes must be >= 1 and their products must fit the kernels (T*B, 4*H and I within int32)";
        case FASTRNN_ERR_BAD_LENGTHS: return "every length must lie in [1, T]";
        case FASTRNN_ERR_BAD_BIAS: return "b_ih and b_hh (and their gradients) must both be given or both be NULL";
        case FASTRNN_ERR_NO_MEMORY: return "out of memory";
        case FASTRNN_ERR_INTERNAL: return "internal error in the kernels";
        case FASTRNN_ERR_UNSUPPORTED: return "the kind does not take this argument (peep, w_hr: the LSTM kinds only)";
        default: return "unknown status code";
    }
}

FASTRNN_API int64_t fastrnn_num_gates(int kind) {
    return valid_kind(kind) ? fastrnn::num_gates(static_cast<Kind>(kind)) : -1;
}

FASTRNN_API int64_t fastrnn_cell_workspace_size(int kind, int64_t B, int64_t H) {
    if (!valid_kind(kind) || B < 1 || H < 1) return -1;
    return fastrnn::cell_workspace_elements(static_cast<Kind>(kind), B, H);
}

FASTRNN_API int64_t fastrnn_layer_workspace_size(int kind, int64_t T, int64_t B, int64_t H) {
    return fastrnn_layer_workspace_size_proj(kind, T, B, H, H);
}

FASTRNN_API int64_t fastrnn_layer_workspace_size_proj(int kind, int64_t T, int64_t B, int64_t H, int64_t P) {
    if (!valid_kind(kind) || T < 1 || B < 1 || H < 1 || P < 1 || P > H) return -1;
    if (P != H && !lstm_kind(kind)) return -1;  // projections are the LSTM's
    return fastrnn::layer_workspace_layout(static_cast<Kind>(kind), T, B, H, P).total;
}

#define FR_CELL_FWD(SUFFIX, T)                                                                      \
    FASTRNN_API int fastrnn_cell_forward_##SUFFIX(int kind, int64_t B, int64_t I, int64_t H,       \
                                                  const T* x, const T* h, const T* c,              \
                                                  const T* w_ih, const T* w_hh, const T* b_ih,      \
                                                  const T* b_hh, T* h_new, T* c_new, T* ws) {       \
        return cell_forward<T>(kind, B, I, H, x, h, c, w_ih, w_hh, b_ih, b_hh, h_new, c_new, ws); \
    }
FR_CELL_FWD(f32, float)
FR_CELL_FWD(f64, double)

#define FR_CELL_BWD(SUFFIX, T)                                                                     \
    FASTRNN_API int fastrnn_cell_backward_##SUFFIX(                                                \
        int kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,             \
        const T* c_new, const T* w_ih, const T* w_hh, const T* ws, const T* grad_h,                \
        const T* grad_c, T* dx, T* dh, T* dc, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh) {           \
        return cell_backward<T>(kind, B, I, H, x, h, c, c_new, w_ih, w_hh, ws, grad_h, grad_c, dx, \
                                dh, dc, dw_ih, dw_hh, db_ih, db_hh);                               \
    }
FR_CELL_BWD(f32, float)
FR_CELL_BWD(f64, double)

#define FR_LAYER_FWD(SUFFIX, T)                                                                    \
    FASTRNN_API int fastrnn_layer_forward_##SUFFIX(                                                \
        int kind, int64_t T_, int64_t B, int64_t I, int64_t H, const T* x, const T* h0,            \
        const T* c0, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh,                   \
        const int64_t* lengths, int reverse, T* out, T* h_n, T* c_n, T* ws) {                      \
        return layer_forward<T>(kind, T_, B, I, H, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,     \
                                reverse, out, h_n, c_n, ws, nullptr, nullptr, H, nullptr);          \
    }
FR_LAYER_FWD(f32, float)
FR_LAYER_FWD(f64, double)

#define FR_LAYER_BWD(SUFFIX, T)                                                                     \
    FASTRNN_API int fastrnn_layer_backward_##SUFFIX(                                                \
        int kind, int64_t T_, int64_t B, int64_t I, int64_t H, const T* x, const T* c0,             \
        const T* w_ih, const T* w_hh, const int64_t* lengths, int reverse, const T* ws,             \
        const T* grad_out, const T* grad_h_n, const T* grad_c_n, T* dx, T* dh0, T* dc0, T* dw_ih,   \
        T* dw_hh, T* db_ih, T* db_hh) {                                                             \
        return layer_backward<T>(kind, T_, B, I, H, x, c0, w_ih, w_hh, lengths, reverse, ws,        \
                                 grad_out, grad_h_n, grad_c_n, dx, dh0, dc0, dw_ih, dw_hh, db_ih,   \
                                 db_hh, nullptr, nullptr, nullptr, H, nullptr, nullptr);            \
    }
FR_LAYER_BWD(f32, float)
FR_LAYER_BWD(f64, double)

// The extended functions (ABI version 2): the version-1 functions with the
// variants' optional arrays (peep: the LSTM's peepholes; hmask: recurrent dropout).
#define FR_LAYER_FWD_EX(SUFFIX, T)                                                                  \
    FASTRNN_API int fastrnn_layer_forward_ex_##SUFFIX(                                              \
        int kind, int64_t T_, int64_t B, int64_t I, int64_t H, const T* x, const T* h0,             \
        const T* c0, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, const T* peep,     \
        const T* hmask, const int64_t* lengths, int reverse, T* out, T* h_n, T* c_n, T* ws) {       \
        return layer_forward<T>(kind, T_, B, I, H, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,      \
                                reverse, out, h_n, c_n, ws, peep, hmask, H, nullptr);               \
    }
FR_LAYER_FWD_EX(f32, float)
FR_LAYER_FWD_EX(f64, double)

#define FR_LAYER_BWD_EX(SUFFIX, T)                                                                  \
    FASTRNN_API int fastrnn_layer_backward_ex_##SUFFIX(                                             \
        int kind, int64_t T_, int64_t B, int64_t I, int64_t H, const T* x, const T* c0,             \
        const T* w_ih, const T* w_hh, const T* peep, const T* hmask, const int64_t* lengths,        \
        int reverse, const T* ws, const T* grad_out, const T* grad_h_n, const T* grad_c_n, T* dx,   \
        T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh, T* dpeep) {                         \
        return layer_backward<T>(kind, T_, B, I, H, x, c0, w_ih, w_hh, lengths, reverse, ws,        \
                                 grad_out, grad_h_n, grad_c_n, dx, dh0, dc0, dw_ih, dw_hh, db_ih,   \
                                 db_hh, peep, dpeep, hmask, H, nullptr, nullptr);                   \
    }
FR_LAYER_BWD_EX(f32, float)
FR_LAYER_BWD_EX(f64, double)

#define FR_CELL_FWD_EX(SUFFIX, T)                                                                   \
    FASTRNN_API int fastrnn_cell_forward_ex_##SUFFIX(                                               \
        int kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,              \
        const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, const T* peep, T* h_new,        \
        T* c_new, T* ws) {                                                                           \
        return cell_forward<T>(kind, B, I, H, x, h, c, w_ih, w_hh, b_ih, b_hh, h_new, c_new, ws,    \
                               peep);                                                                \
    }
FR_CELL_FWD_EX(f32, float)
FR_CELL_FWD_EX(f64, double)

#define FR_CELL_BWD_EX(SUFFIX, T)                                                                   \
    FASTRNN_API int fastrnn_cell_backward_ex_##SUFFIX(                                              \
        int kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,              \
        const T* c_new, const T* w_ih, const T* w_hh, const T* peep, const T* ws,                   \
        const T* grad_h, const T* grad_c, T* dx, T* dh, T* dc, T* dw_ih, T* dw_hh, T* db_ih,        \
        T* db_hh, T* dpeep) {                                                                        \
        return cell_backward<T>(kind, B, I, H, x, h, c, c_new, w_ih, w_hh, ws, grad_h, grad_c, dx,  \
                                dh, dc, dw_ih, dw_hh, db_ih, db_hh, peep, dpeep);                    \
    }
FR_CELL_BWD_EX(f32, float)
FR_CELL_BWD_EX(f64, double)

// The projection's functions (ABI version 3): the _ex layer functions with P and w_hr.
#define FR_LAYER_FWD_PROJ(SUFFIX, T)                                                                \
    FASTRNN_API int fastrnn_layer_forward_proj_##SUFFIX(                                            \
        int kind, int64_t T_, int64_t B, int64_t I, int64_t H, int64_t P, const T* x, const T* h0,  \
        const T* c0, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, const T* peep,     \
        const T* hmask, const T* w_hr, const int64_t* lengths, int reverse, T* out, T* h_n,         \
        T* c_n, T* ws) {                                                                            \
        return layer_forward<T>(kind, T_, B, I, H, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,      \
                                reverse, out, h_n, c_n, ws, peep, hmask, P, w_hr);                  \
    }
FR_LAYER_FWD_PROJ(f32, float)
FR_LAYER_FWD_PROJ(f64, double)

#define FR_LAYER_BWD_PROJ(SUFFIX, T)                                                                \
    FASTRNN_API int fastrnn_layer_backward_proj_##SUFFIX(                                           \
        int kind, int64_t T_, int64_t B, int64_t I, int64_t H, int64_t P, const T* x, const T* c0,  \
        const T* w_ih, const T* w_hh, const T* peep, const T* hmask, const T* w_hr,                 \
        const int64_t* lengths, int reverse, const T* ws, const T* grad_out, const T* grad_h_n,     \
        const T* grad_c_n, T* dx, T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh,           \
        T* dpeep, T* dw_hr) {                                                                       \
        return layer_backward<T>(kind, T_, B, I, H, x, c0, w_ih, w_hh, lengths, reverse, ws,        \
                                 grad_out, grad_h_n, grad_c_n, dx, dh0, dc0, dw_ih, dw_hh, db_ih,   \
                                 db_hh, peep, dpeep, hmask, P, w_hr, dw_hr);                        \
    }
FR_LAYER_BWD_PROJ(f32, float)
FR_LAYER_BWD_PROJ(f64, double)

// Recurrent dropout in a cell (ABI version 5): the _ex cell functions with hmask.
#define FR_CELL_FWD_MASKED(SUFFIX, T)                                                               \
    FASTRNN_API int fastrnn_cell_forward_masked_##SUFFIX(                                           \
        int kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,              \
        const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, const T* peep, const T* hmask,  \
        T* h_new, T* c_new, T* ws) {                                                                \
        return cell_forward<T>(kind, B, I, H, x, h, c, w_ih, w_hh, b_ih, b_hh, h_new, c_new, ws,    \
                               peep, hmask);                                                        \
    }
FR_CELL_FWD_MASKED(f32, float)
FR_CELL_FWD_MASKED(f64, double)

#define FR_CELL_BWD_MASKED(SUFFIX, T)                                                               \
    FASTRNN_API int fastrnn_cell_backward_masked_##SUFFIX(                                          \
        int kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h, const T* c,              \
        const T* c_new, const T* w_ih, const T* w_hh, const T* peep, const T* hmask, const T* ws,   \
        const T* grad_h, const T* grad_c, T* dx, T* dh, T* dc, T* dw_ih, T* dw_hh, T* db_ih,        \
        T* db_hh, T* dpeep) {                                                                       \
        return cell_backward<T>(kind, B, I, H, x, h, c, c_new, w_ih, w_hh, ws, grad_h, grad_c, dx,  \
                                dh, dc, dw_ih, dw_hh, db_ih, db_hh, peep, dpeep, hmask);            \
    }
FR_CELL_BWD_MASKED(f32, float)
FR_CELL_BWD_MASKED(f64, double)

}  // extern "C"
