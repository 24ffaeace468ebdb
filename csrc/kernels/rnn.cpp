// Public entry points of the kernels (fastrnn/rnn.h): each forwards to the
// copy compiled for the widest instruction set this CPU supports (runtime
// dispatch; a distributable build never assumes more than baseline x86-64).
#include <cstdlib>
#include <cstring>
#include <string>

#include "entry_points.h"
#include "fastrnn/rnn.h"

namespace fastrnn {

// The copies of the kernels, one namespace per instruction set (rnn_<isa>.cpp).
#define FASTRNN_DECLARE_ISA(ns)                                        \
    namespace ns {                                                     \
    FASTRNN_KERNEL_ENTRY_POINTS(FASTRNN_DECLARE_ENTRY, float)          \
    FASTRNN_KERNEL_ENTRY_POINTS(FASTRNN_DECLARE_ENTRY, double)         \
    }
FASTRNN_DECLARE_ISA(isa_generic)
FASTRNN_DECLARE_ISA(isa_avx2)
FASTRNN_DECLARE_ISA(isa_avx512)
#undef FASTRNN_DECLARE_ISA

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

const char* simd_path() {
    switch (isa()) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "generic";
    }
}

const char* reduced_precision_features() {
    static const std::string v = [] {
        std::string s;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_cpu_init();
        // __builtin_cpu_supports takes a literal: one line per feature, in
        // kReducedPrecisionFeatures' order
        const bool has[] = {
            (bool)__builtin_cpu_supports("avx512vnni"), (bool)__builtin_cpu_supports("avxvnni"),
            (bool)__builtin_cpu_supports("avx512bf16"), (bool)__builtin_cpu_supports("avx512fp16"),
            (bool)__builtin_cpu_supports("amx-tile"),   (bool)__builtin_cpu_supports("amx-int8"),
            (bool)__builtin_cpu_supports("amx-bf16")};
        const char* names = kReducedPrecisionFeatures;
        for (bool h : has) {
            const char* end = std::strchr(names, ' ');
            const size_t len = end ? size_t(end - names) : std::strlen(names);
            if (h) s.append(s.empty() ? "" : " ").append(names, len);
            names = end ? end + 1 : names + len;
        }
#endif
        return s;
    }();
    return v.c_str();
}

bool parse_kind(const char* name, Kind* out) {
    static const struct {
        const char* name;
        Kind kind;
    } table[] = {{"rnn_tanh", Kind::rnn_tanh},
                 {"rnn_relu", Kind::rnn_relu},
                 {"lstm", Kind::lstm},
                 {"gru", Kind::gru},
                 {"gru_orig", Kind::gru_orig},
                 {"lstm_cifg", Kind::lstm_cifg}};
    for (const auto& e : table)
        if (std::strcmp(e.name, name) == 0) {
            *out = e.kind;
            return true;
        }
    return false;
}

// Each entry point: the template of fastrnn/rnn.h, calling the chosen copy.
#define FASTRNN_DISPATCH_ENTRY(name, params, args)             \
    template <typename T>                                      \
    void name params {                                         \
        switch (isa()) {                                       \
            case Isa::avx512: return isa_avx512::name args;    \
            case Isa::avx2: return isa_avx2::name args;        \
            default: return isa_generic::name args;            \
        }                                                      \
    }
FASTRNN_KERNEL_ENTRY_POINTS(FASTRNN_DISPATCH_ENTRY, T)
#undef FASTRNN_DISPATCH_ENTRY

#define FASTRNN_INSTANTIATE_ENTRY(name, params, args) template void name params;
FASTRNN_KERNEL_ENTRY_POINTS(FASTRNN_INSTANTIATE_ENTRY, float)
FASTRNN_KERNEL_ENTRY_POINTS(FASTRNN_INSTANTIATE_ENTRY, double)
#undef FASTRNN_INSTANTIATE_ENTRY

}  // namespace fastrnn
