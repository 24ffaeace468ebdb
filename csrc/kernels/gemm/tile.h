// The register tile (micro kernel) of every packed product, and packed panels.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/scratch.h"
#include "simd/vec.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// Register tile: C[m, panel p] (+)= sum_k A[m, k] * P_p[k, 0..NR) for MR rows
// and NP panels, A[m, k] at A[m*rs + k*cs] where either rs == 1 (A read
// transposed: one pointer stepping by cs) or cs == 1 (MR row pointers indexed
// by k); every output element accumulates over k in order 0..K-1 (starting
// from C when ACC).
template <class T, int MR, int NP, bool ACC>
inline void micro(int64_t K, const T* __restrict A, int64_t rs, int64_t cs, const T* const* P,
                  T* const* C, int64_t ldc, const T* const* Cin, int64_t ldcin) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    constexpr int NR = 2 * W;
    v acc[MR][NP][2];
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
        for (int p = 0; p < NP; ++p) {
            if (ACC) {  // start from Cin (C itself, or a bias row with ldcin = 0)
                acc[m][p][0] = vload(Cin[p] + m * ldcin);
                acc[m][p][1] = vload(Cin[p] + m * ldcin + W);
            } else {
                acc[m][p][0] = acc[m][p][1] = v{};
            }
        }
    const T* pp[NP];
#pragma GCC unroll 16
    for (int p = 0; p < NP; ++p) pp[p] = P[p];
    if (cs == 1) {
        const T* ap[MR];
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) ap[m] = A + m * rs;
#pragma GCC unroll 2
        for (int64_t k = 0; k < K; ++k) {
            v b[NP][2];
#pragma GCC unroll 16
            for (int p = 0; p < NP; ++p) {
                __builtin_prefetch(pp[p] + (k + 16) * NR);
                b[p][0] = vload(pp[p] + k * NR);
                b[p][1] = vload(pp[p] + k * NR + W);
            }
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) {
                v av = broadcast(ap[m][k]);
#pragma GCC unroll 16
                for (int p = 0; p < NP; ++p) {
                    acc[m][p][0] += av * b[p][0];
                    acc[m][p][1] += av * b[p][1];
                }
            }
        }
    } else {  // rs == 1
        const T* a = A;
#pragma GCC unroll 2
        for (int64_t k = 0; k < K; ++k, a += cs) {
            v b[NP][2];
#pragma GCC unroll 16
            for (int p = 0; p < NP; ++p) {
                __builtin_prefetch(pp[p] + (k + 16) * NR);
                b[p][0] = vload(pp[p] + k * NR);
                b[p][1] = vload(pp[p] + k * NR + W);
            }
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) {
                v av = broadcast(a[m]);
#pragma GCC unroll 16
                for (int p = 0; p < NP; ++p) {
                    acc[m][p][0] += av * b[p][0];
                    acc[m][p][1] += av * b[p][1];
                }
            }
        }
    }
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
        for (int p = 0; p < NP; ++p) {
            vstore(C[p] + m * ldc, acc[m][p][0]);
            vstore(C[p] + m * ldc + W, acc[m][p][1]);
        }
}

template <class T, int NP, bool ACC>
inline void micro_rows(int mr, int64_t K, const T* A, int64_t rs, int64_t cs, const T* const* P,
                       T* const* C, int64_t ldc, const T* const* Cin, int64_t ldcin) {
    switch (mr) {
#if FASTRNN_VECTOR_BYTES == 64
        case 6: micro<T, 6, NP, ACC>(K, A, rs, cs, P, C, ldc, Cin, ldcin); break;
        case 5: micro<T, 5, NP, ACC>(K, A, rs, cs, P, C, ldc, Cin, ldcin); break;
#endif
        case 4: micro<T, 4, NP, ACC>(K, A, rs, cs, P, C, ldc, Cin, ldcin); break;
        case 3: micro<T, 3, NP, ACC>(K, A, rs, cs, P, C, ldc, Cin, ldcin); break;
        case 2: micro<T, 2, NP, ACC>(K, A, rs, cs, P, C, ldc, Cin, ldcin); break;
        default: micro<T, 1, NP, ACC>(K, A, rs, cs, P, C, ldc, Cin, ldcin); break;
    }
}

template <class T, bool ACC>
inline void micro_any(int np, int mr, int64_t K, const T* A, int64_t rs, int64_t cs,
                      const T* const* P, T* const* C, int64_t ldc, const T* const* Cin = nullptr,
                      int64_t ldcin = 0) {
    if (!Cin) {
        Cin = C;
        ldcin = ldc;
    }
    if (np == 4)
        micro_rows<T, 4, ACC>(mr, K, A, rs, cs, P, C, ldc, Cin, ldcin);
    else if (np == 2)
        micro_rows<T, 2, ACC>(mr, K, A, rs, cs, P, C, ldc, Cin, ldcin);
    else
        micro_rows<T, 1, ACC>(mr, K, A, rs, cs, P, C, ldc, Cin, ldcin);
}

// Rows per register tile (AVX-512 has 32 vector registers: 6 x 2 panels x 2
// vectors of accumulators; AVX2 and SSE have 16: 4 x 1 x 2).
#if FASTRNN_VECTOR_BYTES == 64
constexpr int kTileRows = 6;
#else
constexpr int kTileRows = 4;
#endif

// Panels per register tile for a block of `rows` rows.
inline int panels_per_tile(int64_t rows) {
#if FASTRNN_VECTOR_BYTES == 64
    return rows >= 2 ? 2 : 4;
#else
    return rows >= 3 ? 1 : (rows == 2 ? 2 : 4);
#endif
}

// Weights packed into panels: panel p holds columns [p*NR, p*NR+NR) of the
// logical [Ktot, ncols] matrix as a contiguous [Ktot, NR] block.
template <class T>
struct Packed {
    Scratch<T> data;
    int64_t ktot = 0;
    int64_t npanels = 0;
    // Panels are ktot+1 rows apart: a power-of-two distance would map the
    // same row of every panel to the same cache sets.
    int64_t pstride() const { return (ktot + 1) * (2 * V<T>::W); }
    T* panel_w(int64_t p) { return data.p + p * pstride(); }
    void alloc() { data.alloc(checked_mul(npanels, pstride())); }
    const T* panel(int64_t p, int64_t k0) const {
        return data.p + (p * pstride() + k0 * (2 * V<T>::W));
    }
};

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
