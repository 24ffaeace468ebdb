// The kernels compiled for one instruction set.
//
// rnn_generic.cpp, rnn_avx2.cpp and rnn_avx512.cpp each define FASTRNN_ISA_NS
// (the namespace of their copy), are compiled with their own target flags
// (CMakeLists.txt) and include this file; rnn.cpp picks a copy at runtime.
// The SIMD code is written with GCC/Clang vector extensions, so one source
// serves every vector width. docs/DESIGN.md walks through the parts.
#include "cell/cell.h"
#include "entry_points.h"
#include "gemm/gemm.h"
#include "layer/backward.h"
#include "layer/forward.h"
#include "simd/math.h"

namespace fastrnn::FASTRNN_ISA_NS {

namespace {

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
