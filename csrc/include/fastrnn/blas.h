// The optional BLAS of the large products. No Python here: the binding
// layer resolves SciPy's BLAS (scipy.linalg.cython_blas) when it is chosen
// and hands the function pointers to set_blas(); otherwise the kernels' own
// GEMM runs (csrc/kernels/gemm/gemm.h).
#pragma once

#include <cstdint>

namespace fastrnn {

// Fortran BLAS interface: column-major, every argument by pointer.
using sgemm_fn = void (*)(const char* transa, const char* transb, const int* m, const int* n,
                          const int* k, const float* alpha, const float* a, const int* lda,
                          const float* b, const int* ldb, const float* beta, float* c,
                          const int* ldc);
using dgemm_fn = void (*)(const char* transa, const char* transb, const int* m, const int* n,
                          const int* k, const double* alpha, const double* a, const int* lda,
                          const double* b, const int* ldb, const double* beta, double* c,
                          const int* ldc);

// Install (or, with nullptrs, remove) the BLAS used for large products.
void set_blas(sgemm_fn sgemm, dgemm_fn dgemm);
bool have_blas();

// Which GEMM the layer kernels use for their large products: false (default)
// the kernels' own packed GEMM, threaded on their pool; true the installed BLAS.
// The own GEMM is the faster one on the layer shapes and, unlike a BLAS with
// its own thread pool, follows fastrnn's thread count and never competes
// with the kernels' threads for cores.
void set_use_blas_gemm(bool use);
bool use_blas_gemm();

// Row-major C[M, N] = alpha * op(A)[M, K] · op(B)[K, N] + beta * C.
//   A: [M, K] (lda >= K) or, with trans_a, [K, M] (lda >= M)
//   B: [K, N] (ldb >= N) or, with trans_b, [N, K] (ldb >= K)
//   C: [M, N] (ldc >= N)
// Requires an installed BLAS (have_blas()). Dimensions must fit a 32-bit int
// (fastrnn/workspace.h). Call only from outside parallel regions: the BLAS
// may start its own threads.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace fastrnn
