// The per-step recurrent product on W_hh packed into panels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "gemm/tile.h"
#include "parallel/plan.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// S[m, p*NR + c] (+)= sum_{k<K} A[m, k] * panel_p[k0 + k, c] for rows [m0, m1)
// and the panels in plist (acc: add to S). Panels outer so each panel group
// stays in L1 while all rows stream past it.
template <class T>
void panels_gemm(int64_t m0, int64_t m1, int64_t K, const T* A, int64_t lda, const Packed<T>& pk,
                 int64_t k0, const int* plist, int np, T* S, int64_t lds, bool acc = false) {
    constexpr int NR = 2 * V<T>::W;
    const int64_t rows = m1 - m0;
    if (rows <= 0) return;
    const int npw = panels_per_tile(rows);
    const bool several = rows > kTileRows;
    const T* P[4];
    T* C[4];
    int i = 0;
    while (i < np) {
        int g = np - i;
        g = g >= npw ? npw : (g >= 2 && npw >= 2 ? 2 : 1);
        // With several row blocks, K is cut so the panel group (~32 KB) stays
        // in L1 across them; partial sums go through S (same order of
        // operations, so the same result).
        const int64_t kcb =
            several ? std::max<int64_t>(32, 32768 / (g * NR * (int64_t)sizeof(T))) : K;
        for (int64_t kk = 0; kk < K; kk += kcb) {
            const int64_t kc = std::min<int64_t>(kcb, K - kk);
            for (int q = 0; q < g; ++q) P[q] = pk.panel(plist[i + q], k0 + kk);
            for (int64_t m = m0; m < m1; m += kTileRows) {
                int mr = (int)std::min<int64_t>(kTileRows, m1 - m);
                for (int q = 0; q < g; ++q) C[q] = S + m * lds + (int64_t)plist[i + q] * NR;
                if (kk == 0 && !acc)
                    micro_any<T, false>(g, mr, kc, A + m * lda, lda, 1, P, C, lds);
                else
                    micro_any<T, true>(g, mr, kc, A + m * lda + kk, lda, 1, P, C, lds);
            }
        }
        i += g;
    }
}

// The panel list 0, 1, ..., n-1 (a contiguous range of panels is a slice of it).
inline std::vector<int> panel_ids(int64_t n) {
    std::vector<int> ids((size_t)n);
    std::iota(ids.begin(), ids.end(), 0);
    return ids;
}

// Pack W ([G*N, K]) for the forward product A · W^T, part `id` of `nt`:
// panel p = jp*G + g holds outputs [jp*NR, jp*NR+NR) of block g, [K, NR]
// (W_hh: N = H units, K = the state's units; the projection: G = 1).
template <class T>
void pack_forward(const T* w, int64_t N, int64_t K, int G, Packed<T>& pk, int id, int nt) {
    constexpr int NR = 2 * V<T>::W;
    const int64_t unit_panels = (N + NR - 1) / NR;
    int64_t p0, p1;
    split(unit_panels * G, nt, id, &p0, &p1);
    for (int64_t p = p0; p < p1; ++p) {
        int64_t jp = p / G, g = p % G;
        T* dst = pk.panel_w(p);
        for (int64_t c = 0; c < NR; ++c) {
            int64_t j = jp * NR + c;
            if (j < N) {
                const T* src = w + (g * N + j) * K;
                for (int64_t k = 0; k < K; ++k) dst[k * NR + c] = src[k];
            } else {
                for (int64_t k = 0; k < K; ++k) dst[k * NR + c] = 0;
            }
        }
    }
}

// Pack W ([K, N]) for the backward product A · W, part `id` of `nt`: panel
// jp holds its columns [jp*NR, jp*NR+NR), [K, NR] (W_hh: K = G*H rows, N = the
// state's units; the projection: K = P, N = H).
template <class T>
void pack_backward(const T* w, int64_t K, int64_t N, Packed<T>& pk, int id, int nt) {
    constexpr int NR = 2 * V<T>::W;
    const int64_t unit_panels = (N + NR - 1) / NR;
    int64_t p0, p1;
    split(unit_panels, nt, id, &p0, &p1);
    for (int64_t jp = p0; jp < p1; ++jp) {
        T* dst = pk.panel_w(jp);
        int64_t nc = std::min<int64_t>(NR, N - jp * NR);
        for (int64_t k = 0; k < K; ++k) {
            const T* src = w + k * N + jp * NR;
            T* d = dst + k * NR;
            int64_t c = 0;
            for (; c < nc; ++c) d[c] = src[c];
            for (; c < NR; ++c) d[c] = 0;
        }
    }
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
