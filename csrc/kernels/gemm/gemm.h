// The kernels' own GEMM for the large products, and the choice of SciPy's BLAS.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/scratch.h"
#include "fastrnn/blas.h"
#include "fastrnn/threads.h"
#include "gemm/tile.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// Pack panels [p0, p1) of B ([K, N], element (k, n) at B[k*brs + n*bcs]).
template <class T>
void pack_b_panels(const T* B, int64_t brs, int64_t bcs, int64_t K, int64_t N, Packed<T>& pk,
                   int64_t p0, int64_t p1) {
    constexpr int NR = 2 * V<T>::W;
    for (int64_t p = p0; p < p1; ++p) {
        T* dst = pk.panel_w(p);
        const int64_t nc = std::min<int64_t>(NR, N - p * NR);
        if (bcs == 1) {
            for (int64_t k = 0; k < K; ++k) {
                const T* src = B + k * brs + p * NR;
                T* d = dst + k * NR;
                int64_t c = 0;
                for (; c < nc; ++c) d[c] = src[c];
                for (; c < NR; ++c) d[c] = 0;
            }
        } else {  // B read transposed: walk each source row contiguously
            for (int64_t c = 0; c < NR; ++c) {
                if (c < nc) {
                    const T* src = B + (p * NR + c) * bcs;
                    for (int64_t k = 0; k < K; ++k) dst[k * NR + c] = src[k * brs];
                } else {
                    for (int64_t k = 0; k < K; ++k) dst[k * NR + c] = 0;
                }
            }
        }
    }
}

// C[m0:m1, panels p0:p1] (+)= A · packed B, one thread. A[m, k] at
// A[m*rs + k*cs] (cs == 1), or from `apack` (blocks of kTileRows rows, [K, kTileRows]
// each, the first one holding row am0) when given. Starts from C
// (accumulate), from the `bias` row, or 0.
template <class T>
void gemm_block(int64_t m0, int64_t m1, int64_t p0, int64_t p1, int64_t N, int64_t K, const T* A,
                int64_t rs, int64_t cs, const T* apack, int64_t am0, const Packed<T>& pk,
                bool accumulate, const T* bias, T* C, int64_t ldc) {
    constexpr int NR = 2 * V<T>::W;
    // K block: a 2-panel group of KC rows (256 KB at float) stays in L2 while
    // the rows of A stream past it; large enough that C is revisited rarely.
    constexpr int64_t KC = 1024;
    alignas(64) T tile[kTileRows * NR];
    const T* P[4];
    T* Cp[4];
    const T* Bi[4];
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int64_t kc = std::min<int64_t>(KC, K - k0);
        const bool acc = accumulate || k0 > 0;
        const int npw = panels_per_tile(m1 - m0);
        for (int64_t p = p0; p < p1;) {
            // full panels in groups; a partial last panel through a tile
            const bool partial = (p + 1) * NR > N;
            int g = partial ? 1 : (int)std::min<int64_t>(npw, p1 - p);
            if (!partial && g > 1 && (p + g) * NR > N) g = 1;
            if (g == 3) g = 2;
            for (int q = 0; q < g; ++q) P[q] = pk.panel(p + q, k0);
            for (int64_t m = m0; m < m1; m += kTileRows) {
                const int mr = (int)std::min<int64_t>(kTileRows, m1 - m);
                const T* a = apack ? apack + ((m - am0) / kTileRows) * K * kTileRows + k0 * kTileRows
                                   : A + m * rs + k0 * cs;
                const int64_t ars = apack ? 1 : rs;
                const int64_t acs = apack ? kTileRows : cs;
                if (!partial) {
                    for (int q = 0; q < g; ++q) Cp[q] = C + m * ldc + (p + q) * NR;
                    if (acc) {
                        micro_any<T, true>(g, mr, kc, a, ars, acs, P, Cp, ldc);
                    } else if (bias) {  // start every row from the bias
                        for (int q = 0; q < g; ++q) Bi[q] = bias + (p + q) * NR;
                        micro_any<T, true>(g, mr, kc, a, ars, acs, P, Cp, ldc, Bi, 0);
                    } else {
                        micro_any<T, false>(g, mr, kc, a, ars, acs, P, Cp, ldc);
                    }
                } else {
                    const int64_t nc = N - p * NR;
                    for (int r = 0; r < mr; ++r)
                        for (int64_t c = 0; c < NR; ++c)
                            tile[r * NR + c] = c >= nc ? T(0)
                                               : acc   ? C[(m + r) * ldc + p * NR + c]
                                               : bias  ? bias[p * NR + c]
                                                       : T(0);
                    Cp[0] = tile;
                    micro_any<T, true>(1, mr, kc, a, ars, acs, P, Cp, NR);
                    for (int r = 0; r < mr; ++r)
                        for (int64_t c = 0; c < nc; ++c)
                            C[(m + r) * ldc + p * NR + c] = tile[r * NR + c];
                }
            }
            p += g;
        }
    }
}

// C[M, N] (+)= A[M, K] · B[K, N] with A[m, k] at A[m*rs + k*cs] and B[k, n]
// at B[k*brs + n*bcs] (so either operand may be transposed). B is packed into
// panels KB rows of K at a time (a [KB, N] buffer, not [K, N], so the packed
// copy stays small however large K is), and within gemm_block K is blocked again so a group of panels stays in L2
// while rows of A stream past it. A read transposed (the weight gradients
// dG^T · x) is packed too, by each row task for its own rows only. Threads
// split rows (or panels when rows are few); each element's sum runs over k in
// the same order whatever the split, so the result does not depend on the
// thread count.
template <class T>
void own_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs, int64_t cs, const T* B,
              int64_t brs, int64_t bcs, bool accumulate, T* C, int64_t ldc,
              const T* bias = nullptr) {
    constexpr int NR = 2 * V<T>::W;
    constexpr int64_t KB = 1024;  // = gemm_block's KC: the same k blocks, the same sums
    const int64_t npan = (N + NR - 1) / NR;
    Packed<T> pk;
    pk.ktot = std::min(K, KB);
    pk.npanels = npan;
    pk.alloc();
    // A read transposed (rs == 1, cs = its row length): packed into blocks of
    // kTileRows rows, [kc, kTileRows] each, so the tile streams it contiguously
    // instead of touching a new page at every k.
    const bool pack_a = cs != 1;
    const int64_t nmb = (M + kTileRows - 1) / kTileRows;
    // Threads for products of ~8 MFLOP or more of tile work (such as the
    // weight gradients of one backward chunk): below that the fork and join
    // cost more. The tiles compute whole panels, so the work counts N padded
    // to them: a narrow product (dx and dW_ih of a layer with I = 1, one
    // column in a panel of NR) costs NR columns' time, and left to one thread
    // it also lets the other threads of the pool fall asleep between the
    // chunk's parallel steps.
    const int P = get_num_threads();
    const bool threaded = P > 1 && (double)M * (double)(npan * NR) * (double)K >= 4e6;
    // Row blocks [b0, b1) of A, k in [k0, k0 + kc), into dst ([b1 - b0][kc][kTileRows]).
    auto pack_a_blocks = [&](int64_t b0, int64_t b1, int64_t k0, int64_t kc, T* dst) {
        // k in chunks so the rows being read stay in L1 across the blocks
        for (int64_t kb = 0; kb < kc; kb += 16) {
            const int64_t ke = std::min<int64_t>(kc, kb + 16);
            for (int64_t mb = b0; mb < b1; ++mb) {
                T* d = dst + (mb - b0) * kc * kTileRows;
                const int64_t nr = std::min<int64_t>(kTileRows, M - mb * kTileRows);
                for (int64_t k = kb; k < ke; ++k) {
                    const T* src = A + (k0 + k) * cs + mb * kTileRows * rs;
                    if (rs == 1 && nr == kTileRows) {
                        std::memcpy(d + k * kTileRows, src, sizeof(T) * kTileRows);
                        continue;
                    }
                    int64_t r = 0;
                    for (; r < nr; ++r) d[k * kTileRows + r] = src[r * rs];
                    for (; r < kTileRows; ++r) d[k * kTileRows + r] = 0;
                }
            }
        }
    };
    // Rows [b0*kTileRows, b1*kTileRows) x panels [p0, p1) for the k block at k0.
    auto rows_task = [&](int64_t b0, int64_t b1, int64_t p0, int64_t p1, int64_t k0, int64_t kc,
                         const T* shared_apack) {
        const int64_t m0 = b0 * kTileRows, m1 = std::min(M, b1 * kTileRows);
        const bool acc = accumulate || k0 > 0;
        const T* bias0 = (acc || !bias) ? nullptr : bias;
        if (!pack_a) {
            gemm_block<T>(m0, m1, p0, p1, N, kc, A + k0 * cs, rs, cs, nullptr, 0, pk, acc, bias0, C, ldc);
        } else if (shared_apack) {
            gemm_block<T>(m0, m1, p0, p1, N, kc, A, rs, cs, shared_apack, 0, pk, acc, bias0, C, ldc);
        } else {
            Scratch<T> ap(checked_mul(checked_mul(b1 - b0, kc), kTileRows));
            pack_a_blocks(b0, b1, k0, kc, ap.p);
            gemm_block<T>(m0, m1, p0, p1, N, kc, A, rs, cs, ap.p, m0, pk, acc, bias0, C, ldc);
        }
    };
    for (int64_t k0 = 0; k0 < K; k0 += KB) {
        const int64_t kc = std::min(KB, K - k0);
        pk.ktot = kc;
        const T* Bk = B + k0 * brs;
        if (!threaded) {
            pack_b_panels(Bk, brs, bcs, kc, N, pk, 0, npan);
            // a transposed A in about 4 row pieces: a quarter of its pack at a time
            const int64_t rb = pack_a ? std::max<int64_t>(1, (nmb + 3) / 4) : nmb;
            for (int64_t b = 0; b < nmb; b += rb)
                rows_task(b, std::min(nmb, b + rb), 0, npan, k0, kc, nullptr);
            continue;
        }
        // Packing, then the product, each as tasks claimed by whichever thread
        // is free (see parallel_for): about four tasks per thread for balance.
        const int64_t pb = std::max<int64_t>(1, npan / (4 * P));
        const int64_t npt = (npan + pb - 1) / pb;
        const bool split_rows = nmb >= 4 * P || npan < 2 * P;
        // Few rows, panels split: every task needs all rows of A, packed once.
        Scratch<T> apack(pack_a && !split_rows ? checked_mul(checked_mul(nmb, kc), kTileRows) : 1);
        const int64_t ab = std::max<int64_t>(1, nmb / (4 * P));
        const int64_t nat = pack_a && !split_rows ? (nmb + ab - 1) / ab : 0;
        parallel_for(npt + nat, [&](int64_t i) {
            if (i < npt) {
                pack_b_panels(Bk, brs, bcs, kc, N, pk, i * pb, std::min(npan, (i + 1) * pb));
            } else {
                const int64_t b0 = (i - npt) * ab, b1 = std::min(nmb, b0 + ab);
                pack_a_blocks(b0, b1, k0, kc, apack.p + b0 * kc * kTileRows);
            }
        });
        if (split_rows) {
            const int64_t rb = std::max<int64_t>(1, nmb / (4 * P));  // row blocks of kTileRows per task
            parallel_for((nmb + rb - 1) / rb, [&](int64_t i) {
                rows_task(i * rb, std::min(nmb, (i + 1) * rb), 0, npan, k0, kc, nullptr);
            });
        } else {
            parallel_for((npan + pb - 1) / pb, [&](int64_t i) {
                rows_task(0, nmb, i * pb, std::min(npan, (i + 1) * pb), k0, kc,
                          pack_a ? apack.p : nullptr);
            });
        }
    }
}

// Row-major C = op(A) · op(B) (+ C), the product every large step of the
// layers goes through: the own GEMM above by default (it threads with the
// kernels' own thread count), or SciPy's BLAS when chosen with
// fastrnn._core.set_gemm("scipy") (fastrnn/blas.h).
// With `bias` ([N], only without `accumulate`): C = bias + op(A) · op(B).
template <class T>
void large_product(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
        int64_t ldb, bool accumulate, T* C, int64_t ldc, const T* bias = nullptr) {
    if (use_blas_gemm() && have_blas()) {
        if (bias)
            for (int64_t r = 0; r < M; ++r) std::memcpy(C + r * ldc, bias, N * sizeof(T));
        gemm<T>(ta, tb, M, N, K, T(1), A, lda, B, ldb, (accumulate || bias) ? T(1) : T(0), C, ldc);
        return;
    }
    own_gemm<T>(M, N, K, A, ta ? 1 : lda, ta ? lda : 1, B, tb ? 1 : ldb, tb ? ldb : 1, accumulate,
                C, ldc, accumulate ? nullptr : bias);
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
