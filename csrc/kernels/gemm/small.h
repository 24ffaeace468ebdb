// Products of the cells (a few rows): no packing, direct loops over the
// row-major weights; more than 4 rows go to the large-product GEMM.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "gemm/gemm.h"
#include "simd/vec.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// Horizontal sums of W vectors at once: out[i] = sum_l v[i][l], by a tree of
// even/odd lane shuffles (log2 W levels of W/2... adds instead of W*W scalar
// adds). The lane order of the tree is fixed, so results are reproducible.
template <class VT, size_t... I>
inline VT evens(VT a, VT b, std::index_sequence<I...>) {
    return __builtin_shufflevector(a, b, (2 * I)...);
}
template <class VT, size_t... I>
inline VT odds(VT a, VT b, std::index_sequence<I...>) {
    return __builtin_shufflevector(a, b, (2 * I + 1)...);
}
template <class T>
inline typename V<T>::v hsum_many(typename V<T>::v* v) {
    constexpr int W = V<T>::W;
    typedef std::make_index_sequence<W> seq;
#pragma GCC unroll 8
    for (int n = W; n > 1; n /= 2)
#pragma GCC unroll 8
        for (int j = 0; j < n / 2; ++j) v[j] = evens(v[2 * j], v[2 * j + 1], seq{}) + odds(v[2 * j], v[2 * j + 1], seq{});
    return v[0];
}

// C[m, n] = (acc ? C[m, n] : 0) + sum_k A[m, k] * W[n, k]     (C = A · W^T)
// Small M (cells): dot products against W rows, W rows at a time, so each
// block of W stays in L1 across the M rows and the sums are reduced together.
template <class T>
void small_nt(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Wt, int64_t ldw,
              T* C, int64_t ldc, bool acc) {
    if (M > 4) {
        large_product<T>(false, true, M, N, K, A, lda, Wt, ldw, acc, C, ldc);
        return;
    }
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    const int64_t Kf = K / W * W;
    const int kt = (int)(K - Kf);
    int64_t n = 0;
    for (; n + W <= N; n += W) {
        const T* w0 = Wt + n * ldw;
        for (int64_t m = 0; m < M; ++m) {
            const T* a = A + m * lda;
            v s[W];
#pragma GCC unroll 16
            for (int r = 0; r < W; ++r) s[r] = v{};
            for (int64_t k = 0; k < Kf; k += W) {
                const v av = vload(a + k);
#pragma GCC unroll 16
                for (int r = 0; r < W; ++r) s[r] += av * vload(w0 + r * ldw + k);
            }
            if (kt) {
                const v av = vloadn(a + Kf, kt);
#pragma GCC unroll 16
                for (int r = 0; r < W; ++r) s[r] += av * vloadn(w0 + r * ldw + Kf, kt);
            }
            v tot = hsum_many<T>(s);
            T* c = C + m * ldc + n;
            if (acc) tot += vload(c);
            vstore(c, tot);
        }
    }
    for (; n < N; ++n) {
        const T* w0 = Wt + n * ldw;
        for (int64_t m = 0; m < M; ++m) {
            const T* a = A + m * lda;
            v s0 = {};
            for (int64_t k = 0; k < K; k += W) {
                int cnt = (int)std::min<int64_t>(W, K - k);
                s0 += vloadn(a + k, cnt) * vloadn(w0 + k, cnt);
            }
            T r0 = 0;
            for (int l = 0; l < W; ++l) r0 += s0[l];
            T* c = C + m * ldc + n;
            *c = acc ? *c + r0 : r0;
        }
    }
}

// C[m, :] = (acc ? C[m, :] : 0) + sum_k A[m, k] * W[k, :]     (C = A · W)
template <class T>
void small_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Wm, int64_t ldw,
              T* C, int64_t ldc, bool acc) {
    if (M > 4) {
        large_product<T>(false, false, M, N, K, A, lda, Wm, ldw, acc, C, ldc);
        return;
    }
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    constexpr int NB = 8;  // vectors of C kept in registers: independent FMA chains
    for (int64_t m = 0; m < M; ++m) {
        T* c = C + m * ldc;
        const T* a = A + m * lda;
        int64_t n = 0;
        for (; n + NB * W <= N; n += NB * W) {
            v s[NB];
#pragma GCC unroll 8
            for (int j = 0; j < NB; ++j) s[j] = acc ? vload(c + n + j * W) : v{};
            for (int64_t k = 0; k < K; ++k) {
                const v av = broadcast(a[k]);
                const T* w = Wm + k * ldw + n;
#pragma GCC unroll 8
                for (int j = 0; j < NB; ++j) s[j] += av * vload(w + j * W);
            }
#pragma GCC unroll 8
            for (int j = 0; j < NB; ++j) vstore(c + n + j * W, s[j]);
        }
        for (; n < N; n += W) {
            int cnt = (int)std::min<int64_t>(W, N - n);
            v s = acc ? vloadn(c + n, cnt) : v{};
            for (int64_t k = 0; k < K; ++k) s += broadcast(a[k]) * vloadn(Wm + k * ldw + n, cnt);
            vstoren(c + n, s, cnt);
        }
    }
}

// C[n, :] = sum_m A[m, n] * X[m, :]     (C = A^T · X), C: [N, L]
template <class T>
void small_tn(int64_t M, int64_t N, int64_t L, const T* A, int64_t lda, const T* X, int64_t ldx,
              T* C, int64_t ldc) {
    if (M > 4) {
        large_product<T>(true, false, N, L, M, A, lda, X, ldx, false, C, ldc);
        return;
    }
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t n = 0; n < N; ++n) {
        T* c = C + n * ldc;
        for (int64_t l = 0; l < L; l += W) {
            int cnt = (int)std::min<int64_t>(W, L - l);
            v s = {};
            for (int64_t m = 0; m < M; ++m) s += broadcast(A[m * lda + n]) * vloadn(X + m * ldx + l, cnt);
            vstoren(c + l, s, cnt);
        }
    }
}

// db[n] = sum_r A[r, n], rows in order.
template <class T>
void colsum(int64_t R, int64_t N, const T* A, int64_t lda, T* out) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    constexpr int CB = 8 * W;  // column block kept in registers
    for (int64_t n0 = 0; n0 < N; n0 += CB) {
        int64_t n1 = std::min<int64_t>(N, n0 + CB);
        if (n1 - n0 == CB) {
            v s[8] = {};
            for (int64_t r = 0; r < R; ++r) {
                const T* a = A + r * lda + n0;
#pragma GCC unroll 8
                for (int q = 0; q < 8; ++q) s[q] += vload(a + q * W);
            }
            for (int q = 0; q < 8; ++q) vstore(out + n0 + q * W, s[q]);
        } else {
            for (int64_t n = n0; n < n1; ++n) out[n] = 0;
            for (int64_t r = 0; r < R; ++r) {
                const T* a = A + r * lda;
                for (int64_t n = n0; n < n1; ++n) out[n] += a[n];
            }
        }
    }
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
