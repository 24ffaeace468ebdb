// Row-major GEMM on top of a Fortran (column-major) BLAS handed in by the
// binding layer (fastrnn._core.set_gemm("scipy")).
#include <atomic>

#include "fastrnn/blas.h"

namespace fastrnn {

namespace {
std::atomic<sgemm_fn> g_sgemm{nullptr};
std::atomic<dgemm_fn> g_dgemm{nullptr};

inline void call_blas(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                      const float* alpha, const float* a, const int* lda, const float* b,
                      const int* ldb, const float* beta, float* c, const int* ldc) {
    g_sgemm.load()(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void call_blas(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                      const double* alpha, const double* a, const int* lda, const double* b,
                      const int* ldb, const double* beta, double* c, const int* ldc) {
    g_dgemm.load()(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

std::atomic<bool> g_use_blas{false};
}  // namespace

void set_use_blas_gemm(bool use) { g_use_blas.store(use); }
bool use_blas_gemm() { return g_use_blas.load(); }

void set_blas(sgemm_fn sgemm, dgemm_fn dgemm) {
    g_sgemm.store(sgemm);
    g_dgemm.store(dgemm);
}

bool have_blas() { return g_sgemm.load() != nullptr && g_dgemm.load() != nullptr; }

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) C[m * ldc + n] = beta == T(0) ? T(0) : beta * C[m * ldc + n];
        return;
    }
    // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap
    // the operands, keep the transpose flags.
    const char ta = trans_b ? 'T' : 'N';
    const char tb = trans_a ? 'T' : 'N';
    const int m = (int)N, n = (int)M, k = (int)K;
    const int la = (int)ldb, lb = (int)lda, lc = (int)ldc;
    call_blas(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

}  // namespace fastrnn
