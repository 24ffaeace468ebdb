// Implementation of the recurrent kernels, compiled once per instruction set.
//
// This file is included by rnn_generic.cpp, rnn_avx2.cpp and rnn_avx512.cpp,
// each compiled with its own target flags and defining FASTRNN_ISA_NS, the
// namespace its copy lives in. rnn.cpp picks one at runtime
// (__builtin_cpu_supports). SIMD is written with GCC/Clang vector extensions
// so one source serves every width.
//
// Layout of the fast path (see DESIGN.md, "How the fast path gets its speed"):
//  * Gx = x · W_ih^T + bias for all T steps: one BLAS GEMM before the loop.
//    In training it is written straight into the workspace and each step's
//    pointwise pass overwrites the pre-activations with the post-activations.
//  * W_hh is packed once per call into panels of NR = 2 vectors columns,
//    [K, NR] each, so the per-step product streams each panel contiguously
//    and keeps an MR x NR tile of results in registers.
//  * Per step: the recurrent product into S (panel-interleaved layout, still
//    in L1/L2), then one fused pointwise pass that reads Gx and S, applies
//    the activations and writes the new state, the output and the kept gates.
//  * Threads: over batch rows (no barrier at all) or over panels of hidden
//    units (one barrier per step; two for gru_orig), or one thread. Each
//    result element is computed by the same sequence of operations whatever
//    the partition, so results do not depend on the thread count.
//  * Backward: per step the pointwise gate gradients dG and dh = dG · W_hh;
//    dx, dW_ih, dW_hh as BLAS GEMMs over all T*B rows and bias gradients as
//    column sums after the loop.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <type_traits>
#include <vector>

#include "fastrnn/blas.h"
#include "fastrnn/memory.h"
#include "fastrnn/rnn.h"
#include "fastrnn/threads.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define FR_VB 64
#elif defined(__AVX__)
#define FR_VB 32
#else
#define FR_VB 16
#endif

namespace fastrnn {
namespace FASTRNN_ISA_NS {

namespace {

// ---------------------------------------------------------------- vectors
template <class T>
struct V;
template <>
struct V<float> {
    typedef float v __attribute__((vector_size(FR_VB)));
    typedef float vu __attribute__((vector_size(FR_VB), aligned(4), may_alias));
    typedef int32_t vi __attribute__((vector_size(FR_VB)));
    static constexpr int W = FR_VB / 4;
};
template <>
struct V<double> {
    typedef double v __attribute__((vector_size(FR_VB)));
    typedef double vu __attribute__((vector_size(FR_VB), aligned(8), may_alias));
    typedef int64_t vi __attribute__((vector_size(FR_VB)));
    static constexpr int W = FR_VB / 8;
};

typedef V<float>::v vf;
typedef V<float>::vi vfi;
typedef V<double>::v vd;
typedef V<double>::vi vdi;

template <class T>
inline typename V<T>::v vload(const T* p) {
    return *reinterpret_cast<const typename V<T>::vu*>(p);
}
template <class T>
inline void vstore(T* p, typename V<T>::v x) {
    *reinterpret_cast<typename V<T>::vu*>(p) = x;
}
// Load n <= W elements (n >= 1), zero-fill the rest; store n elements. A
// partial vector (the tail of a row whose length is not a multiple of W,
// e.g. H = 51) is one masked instruction on AVX2/AVX-512: a memcpy of
// variable size there cost ~40 % of a small-H LSTM step.
#if defined(__AVX512F__)
template <class T>
inline typename V<T>::v load_tail(const T* p, int n) {
    if constexpr (std::is_same<T, float>::value)
        return (typename V<T>::v)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
    else
        return (typename V<T>::v)_mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1), p);
}
template <class T>
inline void store_tail(T* p, typename V<T>::v x, int n) {
    if constexpr (std::is_same<T, float>::value)
        _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)x);
    else
        _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1), (__m512d)x);
}
#elif defined(__AVX2__)
template <class T>
inline __m256i lane_mask(int n) {  // all ones in lanes i < n
    typename V<T>::vi idx;
    for (int i = 0; i < V<T>::W; ++i) idx[i] = i;
    return (__m256i)(idx < n);
}
template <class T>
inline typename V<T>::v load_tail(const T* p, int n) {
    if constexpr (std::is_same<T, float>::value)
        return (typename V<T>::v)_mm256_maskload_ps(p, lane_mask<T>(n));
    else
        return (typename V<T>::v)_mm256_maskload_pd(p, lane_mask<T>(n));
}
template <class T>
inline void store_tail(T* p, typename V<T>::v x, int n) {
    if constexpr (std::is_same<T, float>::value)
        _mm256_maskstore_ps(p, lane_mask<T>(n), (__m256)x);
    else
        _mm256_maskstore_pd(p, lane_mask<T>(n), (__m256d)x);
}
#else
template <class T>
inline typename V<T>::v load_tail(const T* p, int n) {
    typename V<T>::v r = {};
    std::memcpy(&r, p, sizeof(T) * n);
    return r;
}
template <class T>
inline void store_tail(T* p, typename V<T>::v x, int n) {
    std::memcpy(p, &x, sizeof(T) * n);
}
#endif
template <class T>
inline typename V<T>::v vloadn(const T* p, int n) {
    return n == V<T>::W ? vload(p) : load_tail(p, n);
}
template <class T>
inline void vstoren(T* p, typename V<T>::v x, int n) {
    if (n == V<T>::W)
        vstore(p, x);
    else
        store_tail(p, x, n);
}
template <class T>
inline typename V<T>::v vbc(T s) {
    // s * ones folds to one broadcast ({} + s would keep an addition for
    // the sake of -0.0).
    const typename V<T>::v ones = typename V<T>::v{} + T(1);
    return s * ones;
}

// ---------------------------------------------------------------- math
// exp with Cody-Waite reduction; float: Cephes minimax polynomial (< 1 ulp
// on the reduced range), double: Taylor series to r^13 (< 1 ulp). The result
// is built as p * 2^(n-1) * 2 so that the exponent field never overflows.
// NaN propagates, exp(+inf) = inf, exp(-inf) = 0. Arguments below -86.5
// (float) / -707 (double) flush to 0 (absolute error < 3e-38 / 1e-307).
__attribute__((always_inline)) inline vf vexp(vf x) {
    const vf hi = vbc(88.7f), lo = vbc(-86.5f);
    vf xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    const float magic = 12582912.0f;  // 1.5 * 2^23
    vf kd = xc * 1.44269504088896341f + magic;
    vfi ki = (vfi)kd;
    kd = kd - magic;
    vf r = xc - kd * 0.693359375f;
    r = r - kd * -2.12194440e-4f;
    vf p = vbc(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * (r * r) + r + 1.0f;
    vfi n = ki - 0x4B400000;
    vf s = (vf)((n + 126) << 23);
    vf res = p * s * 2.0f;
    res = x > hi ? vbc(std::numeric_limits<float>::infinity()) : res;
    res = x < lo ? vbc(0.0f) : res;
    res = x != x ? x : res;
    return res;
}

__attribute__((always_inline)) inline vd vexp(vd x) {
    const vd hi = vbc(709.0), lo = vbc(-707.0);
    vd xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    const double magic = 6755399441055744.0;  // 1.5 * 2^52
    vd kd = xc * 1.4426950408889634074 + magic;
    vdi ki = (vdi)kd;
    kd = kd - magic;
    vd r = xc - kd * 6.93145751953125E-1;
    r = r - kd * 1.42860682030941723212E-6;
    vd p = vbc(1.0 / 6227020800.0);
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
    vdi n = ki - (vdi)(vbc(magic));
    vd s = (vd)((n + 1022) << 52);
    vd res = p * s * 2.0;
    res = x > hi ? vbc(std::numeric_limits<double>::infinity()) : res;
    res = x < lo ? vbc(0.0) : res;
    res = x != x ? x : res;
    return res;
}

template <class VT>
__attribute__((always_inline)) inline VT vsigmoid(VT x) {
    return 1 / (1 + vexp(-x));
}

inline vf vabs(vf x) { return (vf)((vfi)x & 0x7fffffff); }
inline vd vabs(vd x) { return (vd)((vdi)x & 0x7fffffffffffffffLL); }

// tanh: |x| < 0.625 odd polynomial / rational (Cephes tanhf / tanh, < 1 ulp),
// else 1 - 2 / (exp(2|x|) + 1) with the sign restored. NaN propagates.
__attribute__((always_inline)) inline vf vtanh(vf x) {
    vf ax = vabs(x);
    vf e = vexp(ax * 2.0f);
    vf big = 1.0f - 2.0f / (e + 1.0f);
    big = x < 0 ? -big : big;
    vf z = x * x;
    vf p = vbc(-5.70498872745E-3f);
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    vf small = p * z * x + x;
    return ax < 0.625f ? small : big;
}

__attribute__((always_inline)) inline vd vtanh(vd x) {
    vd ax = vabs(x);
    vd e = vexp(ax * 2.0);
    vd big = 1.0 - 2.0 / (e + 1.0);
    big = x < 0 ? -big : big;
    vd z = x * x;
    vd p = (vbc(-9.64399179425052238628E-1) * z - 9.92877231001918586564E1) * z -
           1.61468768441708447952E3;
    vd q = ((z + 1.12811678491632931402E2) * z + 2.23548839060100448583E3) * z +
           4.84406305325125486048E3;
    vd small = x + x * z * (p / q);
    return ax < 0.625 ? small : big;
}

template <class VT>
inline VT vrelu(VT x) {
    return x < 0 ? VT{} : x;  // NaN stays NaN
}

// ---------------------------------------------------------------- buffers
inline size_t mul(size_t a, size_t b) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) throw std::bad_alloc();
    return r;
}

// Scratch memory from the large-block cache (fastrnn/memory.h).
template <class T>
struct Buf {
    T* p = nullptr;
    size_t bytes = 0;
    Buf() = default;
    explicit Buf(size_t n) { alloc(n); }
    void alloc(size_t n) {
        free();
        // cache_alloc rounds, refuses impossible sizes, and reports the real size
        p = static_cast<T*>(cache_alloc(mul(n, sizeof(T)), &bytes));
        if (!p) throw std::bad_alloc();
    }
    void zero(size_t n) { std::memset(p, 0, n * sizeof(T)); }
    void free() {
        cache_free(p, bytes);
        p = nullptr;
    }
    ~Buf() { free(); }
    Buf(const Buf&) = delete;
    Buf& operator=(const Buf&) = delete;
};

// ---------------------------------------------------------------- threading plan
enum class Mode { serial, batch, units };

struct Plan {
    Mode mode = Mode::serial;
    int nthreads = 1;
    std::shared_ptr<SpinBarrier> bar;  // units mode: the team's barrier
};

// How a layer's time loop is shared among threads.
//   step_work: multiply-adds of one step's recurrent product (B*G*H*H)
//   steps:     time steps T
//   wbytes:    bytes of the packed recurrent weights
// * batch: each thread owns a slice of the batch rows for the whole sequence:
//   no synchronisation at all inside the loop (rows are independent), so it
//   is used whenever each thread gets a couple of rows and the whole call is
//   worth a fork (the join can cost a time slice on a busy machine). Each
//   thread streams all the weights,
//   so when they do not fit a core's L2 and the batch is small, units wins.
// * units: each thread owns panels of hidden units, one barrier per step
//   (two for gru_orig). From 64K multiply-adds a step (~3 us: LSTM B=1
//   H=128): such a step streams its weights from L2, and each core then
//   reads only its half (LSTM B=1 I=64 H=128 T=100 inference, 2 threads:
//   0.31 -> 0.25 ms; at 256K it was serial). It is also the mode that
//   suffers most when the machine is oversubscribed (a descheduled thread
//   stalls the others every step).
//   Long steps (>= 4M multiply-adds) whose weights do not fit L2 also take
//   units: each core then streams only its half of W_hh from L3 (2 threads:
//   LSTM B=32 I=H=512 T=50 inference 37.5 -> 26.2 ms, training 94 -> 80 ms;
//   B=64 I=H=1024 T=25 inference 122 -> 101 ms).
// * serial otherwise (small steps: the latency path).
inline Plan make_plan(int64_t B, int64_t npg, int64_t step_work, int64_t steps, int64_t wbytes) {
    Plan p;
    const int P = get_num_threads();
    if (P <= 1) return p;
    const double total = (double)step_work * (double)steps;
    const bool fits_l2 = wbytes <= (int64_t)1024 * 1024;
    const bool batch_ok = B >= 2 * P && total >= 4e6;
    const bool long_step = step_work >= (int64_t)1 << 22;
    if (batch_ok && (fits_l2 || (B >= 8 * P && !long_step))) {
        p.mode = Mode::batch;
        p.nthreads = P;
        return p;
    }
    if (npg >= P && step_work >= 65536) {
        p.mode = Mode::units;
        p.nthreads = (int)std::min<int64_t>(P, npg);
        p.bar = std::make_shared<SpinBarrier>(p.nthreads);
        return p;
    }
    if (batch_ok) {
        p.mode = Mode::batch;
        p.nthreads = P;
    }
    return p;
}

inline void barrier(const Plan& pl) {
    if (pl.mode == Mode::units) pl.bar->wait();
}

inline void split(int64_t n, int parts, int id, int64_t* lo, int64_t* hi) {
    int64_t q = n / parts, r = n % parts;
    *lo = id * q + std::min<int64_t>(id, r);
    *hi = *lo + q + (id < r ? 1 : 0);
}

// ---------------------------------------------------------------- step product
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
                v av = vbc(ap[m][k]);
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
                v av = vbc(a[m]);
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
#if FR_VB == 64
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
#if FR_VB == 64
constexpr int MRMAX = 6;
#else
constexpr int MRMAX = 4;
#endif

// Panels per register tile for a block of `rows` rows.
inline int panels_per_tile(int64_t rows) {
#if FR_VB == 64
    return rows >= 2 ? 2 : 4;
#else
    return rows >= 3 ? 1 : (rows == 2 ? 2 : 4);
#endif
}

// Weights packed into panels: panel p holds columns [p*NR, p*NR+NR) of the
// logical [Ktot, ncols] matrix as a contiguous [Ktot, NR] block.
template <class T>
struct Packed {
    Buf<T> data;
    int64_t ktot = 0;
    int64_t npanels = 0;
    // Panels are ktot+1 rows apart: a power-of-two distance would map the
    // same row of every panel to the same cache sets.
    int64_t pstride() const { return (ktot + 1) * (2 * V<T>::W); }
    T* panel_w(int64_t p) { return data.p + p * pstride(); }
    void alloc() { data.alloc(mul(npanels, pstride())); }
    const T* panel(int64_t p, int64_t k0) const {
        return data.p + (p * pstride() + k0 * (2 * V<T>::W));
    }
};

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
    const bool several = rows > MRMAX;
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
            for (int64_t m = m0; m < m1; m += MRMAX) {
                int mr = (int)std::min<int64_t>(MRMAX, m1 - m);
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

// ---------------------------------------------------------------- own GEMM

// C[M, N] (+)= A[M, K] · B[K, N] with A[m, k] at A[m*rs + k*cs] and B[k, n]
// at B[k*brs + n*bcs] (so either operand may be transposed). B is packed into
// panels once, K is blocked by KC so a group of panels stays in L1 while rows
// of A stream past it. Threads split rows (or panels when rows are few); each
// element's sum runs over k in the same order whatever the split, so the
// result does not depend on the thread count.
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
// A[m*rs + k*cs] (cs == 1), or from `apack` (blocks of MRMAX rows, [K, MRMAX]
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
    alignas(64) T tile[MRMAX * NR];
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
            for (int64_t m = m0; m < m1; m += MRMAX) {
                const int mr = (int)std::min<int64_t>(MRMAX, m1 - m);
                const T* a = apack ? apack + ((m - am0) / MRMAX) * K * MRMAX + k0 * MRMAX
                                   : A + m * rs + k0 * cs;
                const int64_t ars = apack ? 1 : rs;
                const int64_t acs = apack ? MRMAX : cs;
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
// panels KB rows of K at a time (a [KB, N] buffer, not [K, N]: dx = dG · W_ih
// of a GRU layer with H = I = 1024 packed 12 MB of W_ih per backward chunk),
// and within gemm_block K is blocked again so a group of panels stays in L2
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
    // MRMAX rows, [kc, MRMAX] each, so the tile streams it contiguously
    // instead of touching a new page at every k.
    const bool pack_a = cs != 1;
    const int64_t nmb = (M + MRMAX - 1) / MRMAX;
    // Threads for products of ~8 MFLOP (~0.3 ms) or more: e.g. the weight
    // gradients of one backward chunk (13 steps of the seed shape, B=97
    // H=51, 2 threads: layer backward 279 -> 232 ms at I=51).
    const int P = get_num_threads();
    const bool threaded = P > 1 && (double)M * N * K >= 4e6;
    // Row blocks [b0, b1) of A, k in [k0, k0 + kc), into dst ([b1 - b0][kc][MRMAX]).
    auto pack_a_blocks = [&](int64_t b0, int64_t b1, int64_t k0, int64_t kc, T* dst) {
        // k in chunks so the rows being read stay in L1 across the blocks
        for (int64_t kb = 0; kb < kc; kb += 16) {
            const int64_t ke = std::min<int64_t>(kc, kb + 16);
            for (int64_t mb = b0; mb < b1; ++mb) {
                T* d = dst + (mb - b0) * kc * MRMAX;
                const int64_t nr = std::min<int64_t>(MRMAX, M - mb * MRMAX);
                for (int64_t k = kb; k < ke; ++k) {
                    const T* src = A + (k0 + k) * cs + mb * MRMAX * rs;
                    if (rs == 1 && nr == MRMAX) {
                        std::memcpy(d + k * MRMAX, src, sizeof(T) * MRMAX);
                        continue;
                    }
                    int64_t r = 0;
                    for (; r < nr; ++r) d[k * MRMAX + r] = src[r * rs];
                    for (; r < MRMAX; ++r) d[k * MRMAX + r] = 0;
                }
            }
        }
    };
    // Rows [b0*MRMAX, b1*MRMAX) x panels [p0, p1) for the k block at k0.
    auto rows_task = [&](int64_t b0, int64_t b1, int64_t p0, int64_t p1, int64_t k0, int64_t kc,
                         const T* shared_apack) {
        const int64_t m0 = b0 * MRMAX, m1 = std::min(M, b1 * MRMAX);
        const bool acc = accumulate || k0 > 0;
        const T* bias0 = (acc || !bias) ? nullptr : bias;
        if (!pack_a) {
            gemm_block<T>(m0, m1, p0, p1, N, kc, A + k0 * cs, rs, cs, nullptr, 0, pk, acc, bias0, C, ldc);
        } else if (shared_apack) {
            gemm_block<T>(m0, m1, p0, p1, N, kc, A, rs, cs, shared_apack, 0, pk, acc, bias0, C, ldc);
        } else {
            Buf<T> ap(mul(mul(b1 - b0, kc), MRMAX));
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
        Buf<T> apack(pack_a && !split_rows ? mul(mul(nmb, kc), MRMAX) : 1);
        const int64_t ab = std::max<int64_t>(1, nmb / (4 * P));
        const int64_t nat = pack_a && !split_rows ? (nmb + ab - 1) / ab : 0;
        parallel_for(npt + nat, [&](int64_t i) {
            if (i < npt) {
                pack_b_panels(Bk, brs, bcs, kc, N, pk, i * pb, std::min(npan, (i + 1) * pb));
            } else {
                const int64_t b0 = (i - npt) * ab, b1 = std::min(nmb, b0 + ab);
                pack_a_blocks(b0, b1, k0, kc, apack.p + b0 * kc * MRMAX);
            }
        });
        if (split_rows) {
            const int64_t rb = std::max<int64_t>(1, nmb / (4 * P));  // row blocks of MRMAX per task
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

// Row-major C = op(A) · op(B) (+ C) on the own GEMM, or SciPy's BLAS when
// chosen with set_gemm_backend (the own kernels are the default: they
// measure faster here and thread with the kernels' own thread count).
// With `bias` ([N], only without `accumulate`): C = bias + op(A) · op(B).
template <class T>
void mm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
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

// ---------------------------------------------------------------- small products
// For cells (one step): no packing, direct loops over the row-major weights.

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
        mm<T>(false, true, M, N, K, A, lda, Wt, ldw, acc, C, ldc);
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
        mm<T>(false, false, M, N, K, A, lda, Wm, ldw, acc, C, ldc);
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
                const v av = vbc(a[k]);
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
            for (int64_t k = 0; k < K; ++k) s += vbc(a[k]) * vloadn(Wm + k * ldw + n, cnt);
            vstoren(c + n, s, cnt);
        }
    }
}

// C[n, :] = sum_m A[m, n] * X[m, :]     (C = A^T · X), C: [N, L]
template <class T>
void small_tn(int64_t M, int64_t N, int64_t L, const T* A, int64_t lda, const T* X, int64_t ldx,
              T* C, int64_t ldc) {
    if (M > 4) {
        mm<T>(true, false, N, L, M, A, lda, X, ldx, false, C, ldc);
        return;
    }
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t n = 0; n < N; ++n) {
        T* c = C + n * ldc;
        for (int64_t l = 0; l < L; l += W) {
            int cnt = (int)std::min<int64_t>(W, L - l);
            v s = {};
            for (int64_t m = 0; m < M; ++m) s += vbc(A[m * lda + n]) * vloadn(X + m * ldx + l, cnt);
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

// ---------------------------------------------------------------- pointwise rows
// Each function handles units [u0, u1) of one batch row in chunks of W lanes.
// `gx` is the row of pre-activations (x·W_ih^T + folded bias), gate g at
// gx[g*H + j]; in training `gk` (same layout; may be gx itself) receives the
// post-activations, else it is nullptr. The
// recurrent product of gate g for unit j sits at s[jp*sA + g*sB + c] with
// jp = j / NR, c = j % NR (panel layout: sA = G*NR, sB = NR; natural layout:
// sA = NR, sB = H).
template <class T>
struct SL {
    const T* s;
    int64_t sA, sB;
    const T* at(int64_t j, int g) const {
        constexpr int NR = 2 * V<T>::W;
        int64_t jp = j / NR;
        return s + jp * sA + g * sB + (j - jp * NR);
    }
};

template <class T>
void rnn_fwd_row(bool relu, int64_t u0, int64_t u1, const T* gx, T* gk, SL<T> s, T* hnew, T* out) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v a = vloadn(gx + j, n) + vloadn(s.at(j, 0), n);
        v h = relu ? vrelu(a) : vtanh(a);
        vstoren(hnew + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (gk) vstoren(gk + j, h, n);
    }
}

template <class T>
void lstm_fwd_row(int64_t H, int64_t u0, int64_t u1, const T* gx, T* gk, SL<T> s, T* c, T* hnew,
                  T* out, T* ckeep) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v i = vsigmoid(vloadn(gx + j, n) + vloadn(s.at(j, 0), n));
        v f = vsigmoid(vloadn(gx + H + j, n) + vloadn(s.at(j, 1), n));
        v g = vtanh(vloadn(gx + 2 * H + j, n) + vloadn(s.at(j, 2), n));
        v o = vsigmoid(vloadn(gx + 3 * H + j, n) + vloadn(s.at(j, 3), n));
        v cn = f * vloadn(c + j, n) + i * g;
        v h = o * vtanh(cn);
        vstoren(c + j, cn, n);
        vstoren(hnew + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (gk) {
            vstoren(gk + j, i, n);
            vstoren(gk + H + j, f, n);
            vstoren(gk + 2 * H + j, g, n);
            vstoren(gk + 3 * H + j, o, n);
        }
        if (ckeep) vstoren(ckeep + j, cn, n);
    }
}

// PyTorch GRU. bhn: [H] recurrent bias of the n gate or nullptr.
template <class T>
void gru_fwd_row(int64_t H, int64_t u0, int64_t u1, const T* gx, T* gk, SL<T> s, const T* bhn,
                 const T* hprev, T* hnew, T* out) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v r = vsigmoid(vloadn(gx + j, n) + vloadn(s.at(j, 0), n));
        v z = vsigmoid(vloadn(gx + H + j, n) + vloadn(s.at(j, 1), n));
        v hn = vloadn(s.at(j, 2), n);
        if (bhn) hn += vloadn(bhn + j, n);
        v nn = vtanh(vloadn(gx + 2 * H + j, n) + r * hn);
        v hp = vloadn(hprev + j, n);
        v h = nn + z * (hp - nn);
        vstoren(hnew + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (gk) {
            vstoren(gk + j, r, n);
            vstoren(gk + H + j, z, n);
            vstoren(gk + 2 * H + j, nn, n);
            vstoren(gk + 3 * H + j, hn, n);
        }
    }
}

// gru_orig, phase 1: r, z (stored in place) and rh = r*h.
template <class T>
void gruo_fwd_row1(int64_t H, int64_t u0, int64_t u1, T* gx, SL<T> s, const T* hprev, T* rh) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v r = vsigmoid(vloadn(gx + j, n) + vloadn(s.at(j, 0), n));
        v z = vsigmoid(vloadn(gx + H + j, n) + vloadn(s.at(j, 1), n));
        vstoren(gx + j, r, n);
        vstoren(gx + H + j, z, n);
        vstoren(rh + j, r * vloadn(hprev + j, n), n);
    }
}

// gru_orig, phase 2: n from W_hn (r*h), state update.
template <class T>
void gruo_fwd_row2(int64_t H, int64_t u0, int64_t u1, T* gx, bool keep, SL<T> s, const T* hprev,
                   T* hnew, T* out) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v nn = vtanh(vloadn(gx + 2 * H + j, n) + vloadn(s.at(j, 2), n));
        v z = vloadn(gx + H + j, n);
        v hp = vloadn(hprev + j, n);
        v h = nn + z * (hp - nn);
        vstoren(hnew + j, h, n);
        if (out) vstoren(out + j, h, n);
        if (keep) vstoren(gx + 2 * H + j, nn, n);
    }
}

// ---- backward rows. dh = dd + s + go (s, go may be null: zero). `dg` is the
// row of pre-activation gradients (ld G*H); `dgh` the gradients seen by the
// recurrent product (gru: n block is dan*r), may alias dg.
template <class T>
inline typename V<T>::v load_dh(const T* dd, const T* s, const T* go, int64_t j, int n) {
    typename V<T>::v dh = vloadn(dd + j, n);
    if (s) dh += vloadn(s + j, n);
    if (go) dh += vloadn(go + j, n);
    return dh;
}

template <class T>
void rnn_bwd_row(bool relu, int64_t u0, int64_t u1, const T* gk, const T* s, const T* go, T* dd,
                 T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dd, s, go, j, n);
        v h = vloadn(gk + j, n);
        v da = relu ? (h > 0 ? dh : v{}) : dh * (1 - h * h);
        vstoren(dg + j, da, n);
        vstoren(dd + j, v{}, n);
    }
}

template <class T>
void lstm_bwd_row(int64_t H, int64_t u0, int64_t u1, const T* gk, const T* cprev, const T* ct,
                  const T* s, const T* go, T* dd, T* dc, T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dd, s, go, j, n);
        v i = vloadn(gk + j, n), f = vloadn(gk + H + j, n);
        v g = vloadn(gk + 2 * H + j, n), o = vloadn(gk + 3 * H + j, n);
        v tc = vtanh(vloadn(ct + j, n));
        v dcv = vloadn(dc + j, n) + dh * o * (1 - tc * tc);
        v di = dcv * g, dgg = dcv * i, df = dcv * vloadn(cprev + j, n), dov = dh * tc;
        vstoren(dc + j, dcv * f, n);
        vstoren(dg + j, di * i * (1 - i), n);
        vstoren(dg + H + j, df * f * (1 - f), n);
        vstoren(dg + 2 * H + j, dgg * (1 - g * g), n);
        vstoren(dg + 3 * H + j, dov * o * (1 - o), n);
        vstoren(dd + j, v{}, n);
    }
}

// dg: the gates' gradients [3H]; dgh: the recurrent projection's n block, dan * r
// ([H]; its r and z blocks are dg's own).
template <class T>
void gru_bwd_row(int64_t H, int64_t u0, int64_t u1, const T* gk, const T* hprev, const T* s,
                 const T* go, T* dd, T* dg, T* dgh) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dd, s, go, j, n);
        v r = vloadn(gk + j, n), z = vloadn(gk + H + j, n);
        v nn = vloadn(gk + 2 * H + j, n), hn = vloadn(gk + 3 * H + j, n);
        v hp = vloadn(hprev + j, n);
        v dn = dh * (1 - z);
        v dz = dh * (hp - nn);
        v dan = dn * (1 - nn * nn);
        v dar = dan * hn * r * (1 - r);
        v daz = dz * z * (1 - z);
        vstoren(dd + j, dh * z, n);
        vstoren(dg + j, dar, n);
        vstoren(dg + H + j, daz, n);
        vstoren(dg + 2 * H + j, dan, n);
        vstoren(dgh + j, dan * r, n);
    }
}

// gru_orig backward, phase A: z and n gates, dd = dh*z.
template <class T>
void gruo_bwd_rowA(int64_t H, int64_t u0, int64_t u1, const T* gk, const T* hprev, const T* s,
                   const T* go, T* dd, T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v dh = load_dh(dd, s, go, j, n);
        v z = vloadn(gk + H + j, n), nn = vloadn(gk + 2 * H + j, n);
        v hp = vloadn(hprev + j, n);
        v dn = dh * (1 - z);
        v dz = dh * (hp - nn);
        vstoren(dd + j, dh * z, n);
        vstoren(dg + H + j, dz * z * (1 - z), n);
        vstoren(dg + 2 * H + j, dn * (1 - nn * nn), n);
    }
}

// gru_orig backward, phase B: drh = dan · W_hn (in s2); r gate, dd += drh*r.
template <class T>
void gruo_bwd_rowB(int64_t u0, int64_t u1, const T* gk, const T* hprev, const T* s2, T* dd,
                   T* dg) {
    typedef typename V<T>::v v;
    constexpr int W = V<T>::W;
    for (int64_t j = u0; j < u1; j += W) {
        int n = (int)std::min<int64_t>(W, u1 - j);
        v drh = vloadn(s2 + j, n);
        v r = vloadn(gk + j, n);
        v dr = drh * vloadn(hprev + j, n);
        vstoren(dg + j, dr * r * (1 - r), n);
        vstoren(dd + j, vloadn(dd + j, n) + drh * r, n);
    }
}

// Padded step of a row in backward: dh carried, no gate gradient.
template <class T>
void pad_bwd_row(int64_t u0, int64_t u1, const T* s, T* dd) {
    if (s)
        for (int64_t j = u0; j < u1; ++j) dd[j] += s[j];
}

// Pack W (logical [ktot, ncols] accessed through `get`) into panels. For the
// forward pass panel p = jp*G + g holds units [jp*NR, jp*NR+NR) of gate g.
template <class T>
void pack_forward(const T* w_hh, int64_t H, int G, Packed<T>& pk, int id, int nt) {
    constexpr int NR = 2 * V<T>::W;
    const int64_t npg = (H + NR - 1) / NR;
    int64_t p0, p1;
    split(npg * G, nt, id, &p0, &p1);
    for (int64_t p = p0; p < p1; ++p) {
        int64_t jp = p / G, g = p % G;
        T* dst = pk.panel_w(p);
        for (int64_t c = 0; c < NR; ++c) {
            int64_t j = jp * NR + c;
            if (j < H) {
                const T* src = w_hh + (g * H + j) * H;
                for (int64_t k = 0; k < H; ++k) dst[k * NR + c] = src[k];
            } else {
                for (int64_t k = 0; k < H; ++k) dst[k * NR + c] = 0;
            }
        }
    }
}

// Backward: panel jp holds columns [jp*NR, jp*NR+NR) of W_hh [G*H, H].
template <class T>
void pack_backward(const T* w_hh, int64_t GH, int64_t H, Packed<T>& pk, int id, int nt) {
    constexpr int NR = 2 * V<T>::W;
    const int64_t npg = (H + NR - 1) / NR;
    int64_t p0, p1;
    split(npg, nt, id, &p0, &p1);
    for (int64_t jp = p0; jp < p1; ++jp) {
        T* dst = pk.panel_w(jp);
        int64_t nc = std::min<int64_t>(NR, H - jp * NR);
        for (int64_t k = 0; k < GH; ++k) {
            const T* src = w_hh + k * H + jp * NR;
            T* d = dst + k * NR;
            int64_t c = 0;
            for (; c < nc; ++c) d[c] = src[c];
            for (; c < NR; ++c) d[c] = 0;
        }
    }
}

// Elements [n0, n0 + n) of the input projection's folded bias: b_ih + b_hh,
// but only b_in in the n block of the PyTorch GRU (b_hn stays inside
// r * (W_hn h + b_hn)); zeros without bias (b_ih == nullptr).
template <class T>
void folded_bias(Kind kind, int64_t H, const T* b_ih, const T* b_hh, int64_t n0, int64_t n, T* out) {
    if (!b_ih) {
        std::memset(out, 0, n * sizeof(T));
        return;
    }
    const int64_t e = kind == Kind::gru ? std::clamp<int64_t>(2 * H - n0, 0, n) : n;  // n block from e
    for (int64_t j = 0; j < e; ++j) out[j] = b_ih[n0 + j] + b_hh[n0 + j];
    if (e < n) std::memcpy(out + e, b_ih + n0 + e, (n - e) * sizeof(T));
}

// gx (rows, ld) = x · W_ih^T + folded bias.
template <class T>
void input_projection(Kind kind, int64_t rows, int64_t I, int64_t H, const T* x, const T* w_ih,
                      const T* b_ih, const T* b_hh, T* gx, int64_t ld) {
    const int64_t GH = num_gates(kind) * H;
    if (rows <= 4) {
        for (int64_t r = 0; r < rows; ++r) folded_bias(kind, H, b_ih, b_hh, 0, GH, gx + r * ld);
        small_nt<T>(rows, GH, I, x, I, w_ih, I, gx, ld, true);
    } else {
        // the bias seeds the accumulators: no separate pass over gx
        std::vector<T> b(b_ih ? GH : 0);
        if (b_ih) folded_bias(kind, H, b_ih, b_hh, 0, GH, b.data());
        mm<T>(false, true, rows, GH, I, x, I, w_ih, I, false, gx, ld, b_ih ? b.data() : nullptr);
    }
}

// ================================================================ layer forward
template <class T>
void layer_forward_impl(Kind kind, int64_t Tn, int64_t B, int64_t I, int64_t H, const T* x,
                        const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* b_ih,
                        const T* b_hh, const int64_t* lengths, bool reverse, T* out, T* h_n,
                        T* c_n, T* ws_gates, T* ws_h, T* ws_c) {
    constexpr int NR = 2 * V<T>::W;
    const int G = num_gates(kind);
    const int64_t GH = G * H;
    const bool keep = ws_gates != nullptr;
    const int64_t ldg = keep ? kept_gates(kind) * H : GH;
    const bool lstm = kind == Kind::lstm, gruk = kind == Kind::gru, gruo = kind == Kind::gru_orig;
    const bool rnn = G == 1, relu = kind == Kind::rnn_relu;

    const T* bhn = (gruk && b_hh) ? b_hh + 2 * H : nullptr;
    const int64_t npg = (H + NR - 1) / NR;
    const int64_t Hp = npg * NR;
    const int64_t lds = G * Hp + V<T>::W;  // padded: no power-of-two row distance
    Packed<T> pk;
    pk.ktot = H;
    pk.npanels = npg * G;
    pk.alloc();
    Plan pl = make_plan(B, npg, B * GH * H, Tn, pk.npanels * H * NR * (int64_t)sizeof(T));
    // Units mode computes the input projection of all T steps up front; in
    // inference that buffer is extra memory (training keeps it anyway), so a
    // long sequence whose projection would pass 64 MB stays on one thread
    // with the 1 MB chunks instead (e.g. LSTM B=1 H=128 T=10^6: 2 GB).
    if (!keep && pl.mode == Mode::units && Tn * B * GH * (int64_t)sizeof(T) > ((int64_t)64 << 20)) {
        pl.mode = Mode::serial;
        pl.nthreads = 1;
    }

    // Input projection. A small Gx: all T steps in one GEMM (straight into
    // the workspace in training). A large Gx: in chunks of Tc steps computed
    // by each thread for its own rows just before they are used, so Gx never
    // leaves the cache (a 512 KB buffer instead of T*B*G*H values); training
    // then writes each workspace row once, with the post-activations, instead
    // of the projection followed by a second pass over it (gru_orig keeps
    // the single GEMM: its r*h slot is read back by the second phase).
    const int64_t step_bytes = B * GH * (int64_t)sizeof(T);
    // 512 KB chunks from 512 KB of projection (were 1 MB from 2 MB): with the
    // whole 800 KB projection of RNN B=16 H=128 T=100 in one buffer next to x
    // and out (~2 MB, this CPU's L2), some processes ran that layer 2x slower
    // for their whole life, depending on where their pages fell (PYTHONHASHSEED
    // decided it); in 512 KB chunks 4 of 4 such processes ran at full speed,
    // and other shapes measured level.
    constexpr int64_t kProjChunkBytes = int64_t(512) << 10;
    const bool chunked = !(keep && gruo) && pl.mode != Mode::units && Tn * step_bytes > kProjChunkBytes;
    const int64_t Tc = chunked ? std::max<int64_t>(1, std::min<int64_t>(Tn, kProjChunkBytes / step_bytes)) : Tn;
    Buf<T> gxbuf;
    T* gx = ws_gates;
    if (!keep || chunked) {
        gxbuf.alloc(mul(mul(Tc, B), GH));
        gx = gxbuf.p;
    }
    Packed<T> pki;
    std::vector<T> fbias;
    if (!chunked) {
        input_projection(kind, Tn * B, I, H, x, w_ih, b_ih, b_hh, gx, ldg);
    } else {
        pki.ktot = I;
        pki.npanels = (GH + NR - 1) / NR;
        pki.alloc();
        if (b_ih) {
            fbias.resize(GH);
            folded_bias(kind, H, b_ih, b_hh, 0, GH, fbias.data());
        }
    }
    const T* fb = fbias.empty() ? nullptr : fbias.data();

    // Variable lengths: the recurrent state lives in rows sorted by decreasing
    // length (row r holds sequence perm[r]), so the sequences still running at
    // step t are the rows [0, nact[t]) and the step's product skips the
    // finished ones; x, out and the workspace stay in batch order. Without
    // lengths perm is the identity. (A row's result does not depend on which
    // rows share its product, so this changes no value.)
    const bool permuted = lengths != nullptr;
    std::vector<int64_t> perm(B), nact(permuted ? Tn : 0);
    for (int64_t b = 0; b < B; ++b) perm[b] = b;
    if (permuted) {
        std::stable_sort(perm.begin(), perm.end(),
                         [&](int64_t p, int64_t q) { return lengths[p] > lengths[q]; });
        for (int64_t b = 0; b < B; ++b)  // histogram of lengths, then suffix sums
            if (lengths[b] >= 1 && lengths[b] <= Tn) ++nact[lengths[b] - 1];
        for (int64_t t = Tn - 2; t >= 0; --t) nact[t] += nact[t + 1];
    }
    Buf<T> hbuf(mul(2 * B, H)), cbuf(lstm ? mul(B, H) : 1), S(mul(B, lds));
    Buf<T> rhbuf(gruo ? mul(B, H) : 1);
    Buf<T> xg((chunked && permuted) ? mul(B, I) : 1);  // x rows of a step, in state order
    for (int64_t r = 0; r < B; ++r) {
        std::memcpy(hbuf.p + r * H, h0 + perm[r] * H, H * sizeof(T));
        if (lstm) std::memcpy(cbuf.p + r * H, c0 + perm[r] * H, H * sizeof(T));
    }
    // rnn kinds keep no per-step states: the kept gates are the states after each step
    // (carried through padded steps), and ws_h keeps h0 only ([B, H]).
    if (keep && rnn) std::memcpy(ws_h, h0, B * H * sizeof(T));

    // Batch mode: slices of rows, each running the whole sequence, claimed by
    // whichever thread is free (parallel_for), so a thread that is late on a
    // busy machine never holds the others up.
    const int64_t nsl = pl.mode == Mode::batch ? (B >= 8 * pl.nthreads ? 2 * pl.nthreads : pl.nthreads) : 1;
    // No allocation (nor anything that may throw) inside the parallel region.
    std::vector<int> lists((size_t)std::max<int64_t>(pl.nthreads, nsl) * 3 * pk.npanels);

    auto pack_task = [&](int64_t i, int64_t n) {
        pack_forward(w_hh, H, G, pk, (int)i, (int)n);
        if (chunked) {
            int64_t p0, p1;
            split(pki.npanels, (int)n, (int)i, &p0, &p1);
            pack_b_panels(w_ih, 1, I, I, GH, pki, p0, p1);  // W_ih^T
        }
    };
    // The time loop for state rows [m0, m1) and hidden-unit panels [jp0, jp1).
    auto loop = [&](int64_t lid, int64_t m0, int64_t m1, int64_t jp0, int64_t jp1) {
        const int64_t u0 = jp0 * NR, u1 = std::min<int64_t>(H, jp1 * NR);
        // Panel lists: all gates (phase 1 of gru_orig: r, z; phase 2: n).
        int* pl_all = lists.data() + (size_t)lid * 3 * pk.npanels;
        int* pl_rz = pl_all + pk.npanels;
        int* pl_n = pl_rz + pk.npanels;
        int n_all = 0, n_rz = 0, n_n = 0;
        for (int64_t jp = jp0; jp < jp1; ++jp)
            for (int g = 0; g < G; ++g) {
                pl_all[n_all++] = (int)(jp * G + g);
                if (g < 2)
                    pl_rz[n_rz++] = (int)(jp * G + g);
                else
                    pl_n[n_n++] = (int)(jp * G + g);
            }
        const SL<T> sl{S.p, G * NR, NR};
        for (int64_t st = 0; st < Tn; ++st) {
            const int64_t t = reverse ? Tn - 1 - st : st;
            const T* hp = hbuf.p + (st & 1) * B * H;
            T* hn = hbuf.p + ((st + 1) & 1) * B * H;
            // the chunk buffer is in state order, the full projection in batch order
            T* gxt = chunked ? gx + (st % Tc) * B * GH : gx + t * B * ldg;
            const int64_t ldx = chunked ? GH : ldg;  // row stride of gxt
            T* gkt = keep ? ws_gates + t * B * ldg : nullptr;
            T* outt = out + t * B * H;
            if (chunked && st % Tc == 0) {
                const int64_t ns = std::min<int64_t>(Tc, Tn - st);
                if (!permuted && !reverse && m0 == 0 && m1 == B) {  // the chunk's rows are contiguous
                    gemm_block<T>(0, ns * B, 0, pki.npanels, GH, I, x + t * B * I, I, 1, nullptr,
                                  0, pki, false, fb, gx, GH);
                } else {
                    for (int64_t s2 = 0; s2 < ns; ++s2) {
                        const int64_t t2 = reverse ? t - s2 : t + s2;
                        const T* xs = x + t2 * B * I;
                        if (permuted) {
                            for (int64_t r = m0; r < m1; ++r)
                                std::memcpy(xg.p + r * I, xs + perm[r] * I, I * sizeof(T));
                            xs = xg.p;
                        }
                        gemm_block<T>(m0, m1, 0, pki.npanels, GH, I, xs, I, 1, nullptr, 0, pki,
                                      false, fb, gx + s2 * B * GH, GH);
                    }
                }
            }
            // rows [m0, ma) still run at step t
            const int64_t ma = permuted ? std::min(m1, std::max(m0, nact[t])) : m1;
            if (ma > m0) {
                if (!gruo)
                    panels_gemm<T>(m0, ma, H, hp, H, pk, 0, pl_all, n_all, S.p, lds);
                else
                    panels_gemm<T>(m0, ma, H, hp, H, pk, 0, pl_rz, n_rz, S.p, lds);
            }
            for (int64_t r = m0; r < m1; ++r) {
                const int64_t b = perm[r];
                T* g = gxt + (chunked ? r : b) * ldx;
                T* gk = keep ? gkt + b * ldg : nullptr;
                const SL<T> sb{sl.s + r * lds, sl.sA, sl.sB};
                const T* hpb = hp + r * H;
                T* hnb = hn + r * H;
                T* cb = cbuf.p + r * H;
                if (keep && !rnn)
                    std::memcpy(ws_h + (t * B + b) * H + u0, hpb + u0, (u1 - u0) * sizeof(T));
                if (r >= ma) {  // finished: the state is carried, the output is zero
                    std::memcpy(hnb + u0, hpb + u0, (u1 - u0) * sizeof(T));
                    if (keep && rnn) std::memcpy(gk + u0, hpb + u0, (u1 - u0) * sizeof(T));
                    std::memset(outt + b * H + u0, 0, (u1 - u0) * sizeof(T));
                    if (keep && lstm)
                        std::memcpy(ws_c + (t * B + b) * H + u0, cb + u0, (u1 - u0) * sizeof(T));
                    if (keep && gruo) std::memset(gk + 3 * H + u0, 0, (u1 - u0) * sizeof(T));
                    continue;
                }
                if (rnn)
                    rnn_fwd_row<T>(relu, u0, u1, g, gk, sb, hnb, outt + b * H);
                else if (lstm)
                    lstm_fwd_row<T>(H, u0, u1, g, gk, sb, cb, hnb, outt + b * H,
                                    keep ? ws_c + (t * B + b) * H : nullptr);
                else if (gruk)
                    gru_fwd_row<T>(H, u0, u1, g, gk, sb, bhn, hpb, hnb, outt + b * H);
                else {
                    gruo_fwd_row1<T>(H, u0, u1, g, sb, hpb, rhbuf.p + r * H);
                    if (keep)  // backward reads r*h from the workspace
                        std::memcpy(gk + 3 * H + u0, rhbuf.p + r * H + u0, (u1 - u0) * sizeof(T));
                }
            }
            if (gruo) {
                barrier(pl);
                if (ma > m0) panels_gemm<T>(m0, ma, H, rhbuf.p, H, pk, 0, pl_n, n_n, S.p, lds);
                for (int64_t r = m0; r < ma; ++r) {
                    const int64_t b = perm[r];
                    const SL<T> sb{sl.s + r * lds, sl.sA, sl.sB};
                    gruo_fwd_row2<T>(H, u0, u1, gxt + (chunked ? r : b) * ldx, keep, sb, hp + r * H,
                                     hn + r * H, outt + b * H);
                }
            }
            barrier(pl);
        }
    };
    if (pl.mode == Mode::units) {
        parallel_team(pl.nthreads, [&](int id) {
            pack_task(id, pl.nthreads);
            barrier(pl);
            int64_t jp0, jp1;
            split(npg, pl.nthreads, id, &jp0, &jp1);
            loop(id, 0, B, jp0, jp1);
        });
    } else if (pl.mode == Mode::batch) {
        parallel_for(2 * pl.nthreads, [&](int64_t i) { pack_task(i, 2 * pl.nthreads); });
        parallel_for(nsl, [&](int64_t i) {
            int64_t m0, m1;
            split(B, (int)nsl, (int)i, &m0, &m1);
            loop(i, m0, m1, 0, npg);
        });
    } else {
        pack_task(0, 1);
        loop(0, 0, B, 0, npg);
    }
    const T* hfin = hbuf.p + (Tn & 1) * B * H;
    for (int64_t r = 0; r < B; ++r) {
        std::memcpy(h_n + perm[r] * H, hfin + r * H, H * sizeof(T));
        if (lstm) std::memcpy(c_n + perm[r] * H, cbuf.p + r * H, H * sizeof(T));
    }
}

// ================================================================ layer backward
// The backward keeps dG for chunks of steps: about this many bytes (at least
// kBwdChunkRows rows of T*B: shorter chunks measured slower on wide layers,
// e.g. LSTM B=32 I=H=512, where each chunk re-reads and re-writes dW).
constexpr int64_t kBwdChunkBytes = int64_t(2) << 20;
constexpr int64_t kBwdChunkRows = 1024;

template <class T>
void layer_backward_impl(Kind kind, int64_t Tn, int64_t B, int64_t I, int64_t H, const T* x,
                         const T* c0, const T* w_ih, const T* w_hh, const int64_t* lengths,
                         bool reverse, const T* ws_gates, const T* ws_h, const T* ws_c,
                         const T* grad_out, const T* grad_h_n, const T* grad_c_n, T* dx, T* dh0,
                         T* dc0, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh, bool add_dw) {
    constexpr int NR = 2 * V<T>::W;
    const int G = num_gates(kind);
    const int64_t GH = G * H;
    const int64_t ldg = kept_gates(kind) * H;
    const bool lstm = kind == Kind::lstm, gruk = kind == Kind::gru, gruo = kind == Kind::gru_orig;
    const bool rnn = G == 1, relu = kind == Kind::rnn_relu;
    const int64_t TB = Tn * B;

    (void)TB;
    // dG is kept for a chunk of Tc steps only (not all T): after each chunk its
    // rows go through the large products (dx rows, dW, db accumulate), so the
    // buffer stays small (a few MB, reused from the block cache) instead of
    // T*B*G*H (page faults on fresh memory dominated at large T*B). Tc depends
    // on the shapes only, never on the thread count.
    const int64_t step_bytes = std::max<int64_t>(1, B * (GH + (gruk ? H : 0)) * (int64_t)sizeof(T));
    const int64_t Tc = std::max<int64_t>(
        1, std::min<int64_t>(Tn, std::max<int64_t>(kBwdChunkBytes / step_bytes,
                                                   (kBwdChunkRows + B - 1) / std::max<int64_t>(1, B))));
    // gru: the recurrent projection's gradient differs from dG only in its n
    // block (dan * r), kept apart as dGn [Tc*B, H].
    Buf<T> dG(mul(mul(Tc, B), GH));
    Buf<T> dGn(gruk ? mul(mul(Tc, B), H) : 1);

    const int64_t npg = (H + NR - 1) / NR;
    const int64_t Hp = npg * NR + V<T>::W;  // row stride of S, S2 (padded)
    Packed<T> pk;
    pk.ktot = GH;
    pk.npanels = npg;
    pk.alloc();

    Buf<T> dd(mul(B, H)), S(mul(B, Hp)), S2(gruo ? mul(B, Hp) : 1), dc(lstm ? mul(B, H) : 1);
    if (grad_h_n)
        std::memcpy(dd.p, grad_h_n, B * H * sizeof(T));
    else
        dd.zero(B * H);
    S.zero(B * Hp);
    if (lstm) {
        if (grad_c_n)
            std::memcpy(dc.p, grad_c_n, B * H * sizeof(T));
        else
            dc.zero(B * H);
    }

    const Plan pl = make_plan(B, npg, B * GH * H, Tn, npg * GH * NR * (int64_t)sizeof(T));
    const int64_t nsl = pl.mode == Mode::batch ? (B >= 8 * pl.nthreads ? 2 * pl.nthreads : pl.nthreads) : 1;
    std::vector<int> lists((size_t)std::max<int64_t>(pl.nthreads, nsl) * npg);

    // The time loop (backwards) for rows [m0, m1) and unit panels [jp0, jp1),
    // steps st in [s0, s1) (processed st = s1-1 down to s0); the chunk's
    // steps have t in [t0, t0 + s1 - s0), stored at dG row (t - t0) * B.
    auto loop = [&](int64_t lid, int64_t m0, int64_t m1, int64_t jp0, int64_t jp1, int64_t s0,
                    int64_t s1, int64_t t0) {
        const int64_t u0 = jp0 * NR, u1 = std::min<int64_t>(H, jp1 * NR);
        int* plist = lists.data() + (size_t)lid * npg;
        int np = 0;
        for (int64_t jp = jp0; jp < jp1; ++jp) plist[np++] = (int)jp;
        for (int64_t st = s1 - 1; st >= s0; --st) {
            const int64_t t = reverse ? Tn - 1 - st : st;
            const int64_t tprev = reverse ? t + 1 : t - 1;  // step processed before t
            const T* gkt = ws_gates + t * B * ldg;
            const T* go = grad_out ? grad_out + t * B * H : nullptr;
            T* dgt = dG.p + (t - t0) * B * GH;
            T* dgnt = dGn.p + (t - t0) * B * H;
            for (int64_t b = m0; b < m1; ++b) {
                const bool active = !lengths || t < lengths[b];
                const T* sb = S.p + b * Hp;
                T* ddb = dd.p + b * H;
                if (!active) {
                    pad_bwd_row<T>(u0, u1, sb, ddb);
                    for (int g = 0; g < G; ++g)
                        std::memset(dgt + b * GH + g * H + u0, 0, (u1 - u0) * sizeof(T));
                    if (gruk) std::memset(dgnt + b * H + u0, 0, (u1 - u0) * sizeof(T));
                    continue;
                }
                const T* gob = go ? go + b * H : nullptr;
                const T* gk = gkt + b * ldg;
                if (rnn)
                    rnn_bwd_row<T>(relu, u0, u1, gk, sb, gob, ddb, dgt + b * GH);
                else if (lstm) {
                    const T* cprev = st == 0 ? c0 + b * H : ws_c + (tprev * B + b) * H;
                    lstm_bwd_row<T>(H, u0, u1, gk, cprev, ws_c + (t * B + b) * H, sb, gob, ddb,
                                    dc.p + b * H, dgt + b * GH);
                } else if (gruk)
                    gru_bwd_row<T>(H, u0, u1, gk, ws_h + (t * B + b) * H, sb, gob, ddb,
                                   dgt + b * GH, dgnt + b * H);
                else
                    gruo_bwd_rowA<T>(H, u0, u1, gk, ws_h + (t * B + b) * H, sb, gob, ddb,
                                     dgt + b * GH);
            }
            if (gruo) {
                barrier(pl);
                // drh = dan · W_hn
                panels_gemm<T>(m0, m1, H, dgt + 2 * H, GH, pk, 2 * H, plist, np, S2.p, Hp);
                for (int64_t b = m0; b < m1; ++b) {
                    if (lengths && t >= lengths[b]) continue;
                    gruo_bwd_rowB<T>(u0, u1, gkt + b * ldg, ws_h + (t * B + b) * H, S2.p + b * Hp,
                                     dd.p + b * H, dgt + b * GH);
                }
            }
            barrier(pl);
            // S = dGh_t · W_hh (gru_orig: r, z rows only; n went through drh; gru: the n
            // block from dGn, the same sum in the same k order)
            panels_gemm<T>(m0, m1, (gruo || gruk) ? 2 * H : GH, dgt, GH, pk, 0, plist, np, S.p, Hp);
            if (gruk) panels_gemm<T>(m0, m1, H, dgnt, H, pk, 2 * H, plist, np, S.p, Hp, true);
        }
    };
    // dh0 = dd + S (own rows / units)
    auto finish = [&](int64_t m0, int64_t m1, int64_t jp0, int64_t jp1) {
        const int64_t u0 = jp0 * NR, u1 = std::min<int64_t>(H, jp1 * NR);
        for (int64_t b = m0; b < m1; ++b)
            for (int64_t j = u0; j < u1; ++j) dh0[b * H + j] = dd.p[b * H + j] + S.p[b * Hp + j];
    };

    // The weight and bias gradients accumulate over the chunks (and, with add_dw, onto what
    // dw_ih and dw_hh held: the caller's running sums, saving it a temporary and an add).
    if (!add_dw) {
        std::memset(dw_ih, 0, GH * I * sizeof(T));
        std::memset(dw_hh, 0, GH * H * sizeof(T));
    }
    if (db_ih) {
        std::memset(db_ih, 0, GH * sizeof(T));
        std::memset(db_hh, 0, GH * sizeof(T));
    }
    std::vector<T> csum(db_ih ? GH : 1);
    auto add_colsum = [&](int64_t R, const T* A, int64_t lda, int64_t ncols, T* out) {
        colsum<T>(R, ncols, A, lda, csum.data());
        for (int64_t n = 0; n < ncols; ++n) out[n] += csum[n];
    };

    if (pl.mode == Mode::batch)
        parallel_for(2 * pl.nthreads,
                     [&](int64_t i) { pack_backward(w_hh, GH, H, pk, (int)i, 2 * pl.nthreads); });
    else if (pl.mode == Mode::serial)
        pack_backward(w_hh, GH, H, pk, 0, 1);
    for (int64_t s1 = Tn; s1 > 0; s1 -= Tc) {
        const int64_t s0 = std::max<int64_t>(0, s1 - Tc);
        const int64_t t0 = reverse ? Tn - s1 : s0;  // the chunk's first time index
        const bool first = s1 == Tn, last = s0 == 0;
        if (pl.mode == Mode::units) {
            parallel_team(pl.nthreads, [&](int id) {
                if (first) {
                    pack_backward(w_hh, GH, H, pk, id, pl.nthreads);
                    barrier(pl);
                }
                int64_t jp0, jp1;
                split(npg, pl.nthreads, id, &jp0, &jp1);
                loop(id, 0, B, jp0, jp1, s0, s1, t0);
                if (last) finish(0, B, jp0, jp1);
            });
        } else if (pl.mode == Mode::batch) {
            parallel_for(nsl, [&](int64_t i) {
                int64_t m0, m1;
                split(B, (int)nsl, (int)i, &m0, &m1);
                loop(i, m0, m1, 0, npg, s0, s1, t0);
                if (last) finish(m0, m1, 0, npg);
            });
        } else {
            loop(0, 0, B, 0, npg, s0, s1, t0);
            if (last) finish(0, B, 0, npg);
        }

        // Large products over the chunk's rows (t in [t0, t0 + R / B)).
        const int64_t R = (s1 - s0) * B;
        mm<T>(false, false, R, I, GH, dG.p, GH, w_ih, I, false, dx + t0 * B * I, I);
        mm<T>(true, false, GH, I, R, dG.p, GH, x + t0 * B * I, I, true, dw_ih, I);
        const T* hp = rnn ? nullptr : ws_h + t0 * B * H;  // rnn kinds: ws_h is h0 only
        if (rnn) {
            // The state before step t is the kept state of the step processed before it
            // (t - 1, or t + 1 in reverse), h0 (ws_h) for the first step processed.
            const int64_t n = s1 - s0;
            const bool has_first = reverse ? t0 + n == Tn : t0 == 0;
            const int64_t tf = reverse ? Tn - 1 : 0;  // the first step processed
            if (has_first)
                mm<T>(true, false, GH, H, B, dG.p + (tf - t0) * B * GH, GH, ws_h, H, true, dw_hh, H);
            const int64_t r0 = (has_first && !reverse) ? 1 : 0;  // chunk steps [r0, r1) from gates
            const int64_t r1 = (has_first && reverse) ? n - 1 : n;
            if (r1 > r0) {
                const T* prev = ws_gates + (t0 + r0 + (reverse ? 1 : -1)) * B * ldg;
                mm<T>(true, false, GH, H, (r1 - r0) * B, dG.p + r0 * B * GH, GH, prev, ldg, true,
                      dw_hh, H);
            }
        } else if (gruo) {
            mm<T>(true, false, 2 * H, H, R, dG.p, GH, hp, H, true, dw_hh, H);
            mm<T>(true, false, H, H, R, dG.p + 2 * H, GH, ws_gates + t0 * B * ldg + 3 * H, ldg,
                  true, dw_hh + 2 * H * H, H);
        } else if (gruk) {
            mm<T>(true, false, 2 * H, H, R, dG.p, GH, hp, H, true, dw_hh, H);
            mm<T>(true, false, H, H, R, dGn.p, H, hp, H, true, dw_hh + 2 * H * H, H);
        } else {  // lstm
            mm<T>(true, false, GH, H, R, dG.p, GH, hp, H, true, dw_hh, H);
        }
        if (db_ih) {
            add_colsum(R, dG.p, GH, GH, db_ih);
            if (gruk) add_colsum(R, dGn.p, H, H, db_hh + 2 * H);  // r, z: db_ih's, below
        }
    }
    if (Tn <= 0) finish(0, B, 0, npg);
    if (lstm) std::memcpy(dc0, dc.p, B * H * sizeof(T));
    // db_hh equals db_ih but in gru's n block (accumulated from dGn above)
    if (db_ih) std::memcpy(db_hh, db_ih, (gruk ? 2 * H : GH) * sizeof(T));
}

// ================================================================ cells
// One step for B <= 4 (the latency path; not gru_orig, whose second product
// needs all of r*h): each part computes its hidden units [u0, u1) of every
// gate - input and recurrent rows, then the pointwise step - from weight rows
// it alone reads. From 64K multiply-adds (GRU/LSTM B=1 I=64 H=128) the parts
// are parallel_for tasks: the caller takes the first, a worker that is awake
// the second (the same rows each call, so they stay in its core's L2), and a
// sleeping one finds nothing left. Units are split at multiples of the vector
// width, so each dot product is the same whatever the split.
template <class T>
void cell_forward_units(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h,
                        const T* c, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh,
                        T* h_new, T* c_new, T* gx, int64_t ldg, bool keep, T* S) {
    constexpr int W = V<T>::W;
    constexpr int NR = 2 * W;
    const int G = num_gates(kind);
    const int64_t GH = G * H;
    const bool lstm = kind == Kind::lstm, gruk = kind == Kind::gru;
    const bool rnn = G == 1, relu = kind == Kind::rnn_relu;
    const T* bhn = (gruk && b_hh) ? b_hh + 2 * H : nullptr;
    const int64_t nv = (H + W - 1) / W;
    const int P = get_num_threads();
    const int parts = (P > 1 && B * GH * (I + H) >= 65536) ? (int)std::min<int64_t>(P, nv) : 1;
    auto part = [&](int64_t id) {
        int64_t v0, v1;
        split(nv, parts, (int)id, &v0, &v1);
        const int64_t u0 = v0 * W, u1 = std::min(H, v1 * W), nu = u1 - u0;
        if (nu <= 0) return;
        for (int g = 0; g < G; ++g) {
            const int64_t n0 = g * H + u0;
            for (int64_t b = 0; b < B; ++b) folded_bias(kind, H, b_ih, b_hh, n0, nu, gx + b * ldg + n0);
            small_nt<T>(B, nu, I, x, I, w_ih + n0 * I, I, gx + n0, ldg, true);
            small_nt<T>(B, nu, H, h, H, w_hh + n0 * H, H, S + n0, GH, false);
        }
        for (int64_t b = 0; b < B; ++b) {
            T* g = gx + b * ldg;
            const SL<T> sb{S + b * GH, NR, H};
            if (rnn) {
                rnn_fwd_row<T>(relu, u0, u1, g, keep ? g : nullptr, sb, h_new + b * H, nullptr);
            } else if (lstm) {
                std::memcpy(c_new + b * H + u0, c + b * H + u0, nu * sizeof(T));
                lstm_fwd_row<T>(H, u0, u1, g, keep ? g : nullptr, sb, c_new + b * H, h_new + b * H,
                                nullptr, nullptr);
            } else {
                gru_fwd_row<T>(H, u0, u1, g, keep ? g : nullptr, sb, bhn, h + b * H, h_new + b * H,
                               nullptr);
            }
        }
    };
    if (parts > 1)
        parallel_for(parts, part);
    else
        part(0);
}

template <class T>
void cell_forward_impl(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h,
                       const T* c, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh,
                       T* h_new, T* c_new, T* ws_gates) {
    constexpr int NR = 2 * V<T>::W;
    const int G = num_gates(kind);
    const int64_t GH = G * H;
    const bool keep = ws_gates != nullptr;
    const int64_t ldg = keep ? kept_gates(kind) * H : GH;
    const bool lstm = kind == Kind::lstm, gruk = kind == Kind::gru, gruo = kind == Kind::gru_orig;
    const bool rnn = G == 1, relu = kind == Kind::rnn_relu;

    Buf<T> gxbuf;
    T* gx = ws_gates;
    if (!keep) {
        gxbuf.alloc(mul(B, GH));
        gx = gxbuf.p;
    }
    Buf<T> S(mul(B, GH));
    if (B <= 4 && !gruo) {
        cell_forward_units(kind, B, I, H, x, h, c, w_ih, w_hh, b_ih, b_hh, h_new, c_new, gx, ldg,
                           keep, S.p);
        return;
    }
    input_projection(kind, B, I, H, x, w_ih, b_ih, b_hh, gx, ldg);
    small_nt<T>(B, gruo ? 2 * H : GH, H, h, H, w_hh, H, S.p, GH, false);
    const T* bhn = (gruk && b_hh) ? b_hh + 2 * H : nullptr;
    if (lstm) std::memcpy(c_new, c, B * H * sizeof(T));
    Buf<T> rhbuf(gruo && !keep ? mul(B, H) : 1);
    for (int64_t b = 0; b < B; ++b) {
        T* g = gx + b * ldg;
        const SL<T> sb{S.p + b * GH, NR, H};
        if (rnn)
            rnn_fwd_row<T>(relu, 0, H, g, keep ? g : nullptr, sb, h_new + b * H, nullptr);
        else if (lstm)
            lstm_fwd_row<T>(H, 0, H, g, keep ? g : nullptr, sb, c_new + b * H, h_new + b * H, nullptr, nullptr);
        else if (gruk)
            gru_fwd_row<T>(H, 0, H, g, keep ? g : nullptr, sb, bhn, h + b * H, h_new + b * H, nullptr);
        else
            gruo_fwd_row1<T>(H, 0, H, g, sb, h + b * H, keep ? g + 3 * H : rhbuf.p + b * H);
    }
    if (gruo) {
        const T* rh = keep ? gx + 3 * H : rhbuf.p;
        small_nt<T>(B, H, H, rh, keep ? ldg : H, w_hh + 2 * H * H, H, S.p + 2 * H, GH, false);
        for (int64_t b = 0; b < B; ++b) {
            const SL<T> sb{S.p + b * GH, NR, H};
            gruo_fwd_row2<T>(H, 0, H, gx + b * ldg, keep, sb, h + b * H, h_new + b * H, nullptr);
        }
    }
}

template <class T>
void cell_backward_impl(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h,
                        const T* c, const T* c_new, const T* w_ih, const T* w_hh,
                        const T* ws_gates, const T* grad_h, const T* grad_c, T* dx, T* dh, T* dc,
                        T* dw_ih, T* dw_hh, T* db_ih, T* db_hh) {
    const int G = num_gates(kind);
    const int64_t GH = G * H;
    const int64_t ldg = kept_gates(kind) * H;
    const bool lstm = kind == Kind::lstm, gruk = kind == Kind::gru, gruo = kind == Kind::gru_orig;
    const bool rnn = G == 1, relu = kind == Kind::rnn_relu;

    Buf<T> dG(mul(B, GH));
    Buf<T> dGn(gruk ? mul(B, H) : 1);  // gru: n block of the recurrent projection's gradient
    Buf<T> dd(mul(B, H));
    if (grad_h)
        std::memcpy(dd.p, grad_h, B * H * sizeof(T));
    else
        dd.zero(B * H);
    if (lstm) {
        if (grad_c)
            std::memcpy(dc, grad_c, B * H * sizeof(T));
        else
            std::memset(dc, 0, B * H * sizeof(T));
    }
    for (int64_t b = 0; b < B; ++b) {
        const T* gk = ws_gates + b * ldg;
        T* ddb = dd.p + b * H;
        if (rnn)
            rnn_bwd_row<T>(relu, 0, H, gk, nullptr, nullptr, ddb, dG.p + b * GH);
        else if (lstm)
            lstm_bwd_row<T>(H, 0, H, gk, c + b * H, c_new + b * H, nullptr, nullptr, ddb,
                            dc + b * H, dG.p + b * GH);
        else if (gruk)
            gru_bwd_row<T>(H, 0, H, gk, h + b * H, nullptr, nullptr, ddb, dG.p + b * GH,
                           dGn.p + b * H);
        else
            gruo_bwd_rowA<T>(H, 0, H, gk, h + b * H, nullptr, nullptr, ddb, dG.p + b * GH);
    }
    if (gruo) {
        Buf<T> S2(mul(B, H));
        small_nn<T>(B, H, H, dG.p + 2 * H, GH, w_hh + 2 * H * H, H, S2.p, H, false);
        for (int64_t b = 0; b < B; ++b)
            gruo_bwd_rowB<T>(0, H, ws_gates + b * ldg, h + b * H, S2.p + b * H, dd.p + b * H,
                             dG.p + b * GH);
    }
    // dh = dd + dGh · W_hh (gru_orig: n went through drh; gru: its n block from dGn)
    std::memcpy(dh, dd.p, B * H * sizeof(T));
    small_nn<T>(B, H, (gruo || gruk) ? 2 * H : GH, dG.p, GH, w_hh, H, dh, H, true);
    if (gruk) small_nn<T>(B, H, H, dGn.p, H, w_hh + 2 * H * H, H, dh, H, true);
    small_nn<T>(B, I, GH, dG.p, GH, w_ih, I, dx, I, false);
    small_tn<T>(B, GH, I, dG.p, GH, x, I, dw_ih, I);
    if (gruo) {
        small_tn<T>(B, 2 * H, H, dG.p, GH, h, H, dw_hh, H);
        small_tn<T>(B, H, H, dG.p + 2 * H, GH, ws_gates + 3 * H, ldg, dw_hh + 2 * H * H, H);
    } else if (gruk) {
        small_tn<T>(B, 2 * H, H, dG.p, GH, h, H, dw_hh, H);
        small_tn<T>(B, H, H, dGn.p, H, h, H, dw_hh + 2 * H * H, H);
    } else {
        small_tn<T>(B, GH, H, dG.p, GH, h, H, dw_hh, H);
    }
    if (db_ih) {
        colsum<T>(B, GH, dG.p, GH, db_ih);
        if (gruk) {
            std::memcpy(db_hh, db_ih, 2 * H * sizeof(T));
            colsum<T>(B, H, dGn.p, H, db_hh + 2 * H);
        } else {
            std::memcpy(db_hh, db_ih, GH * sizeof(T));
        }
    }
}

}  // namespace

// ---------------------------------------------------------------- entry table
#define FR_INST(T)                                                                             \
    void layer_forward(Kind kind, int64_t Tn, int64_t B, int64_t I, int64_t H, const T* x,     \
                       const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* b_ih,  \
                       const T* b_hh, const int64_t* lengths, bool reverse, T* out, T* h_n,    \
                       T* c_n, T* ws_gates, T* ws_h, T* ws_c) {                                \
        layer_forward_impl<T>(kind, Tn, B, I, H, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,   \
                              reverse, out, h_n, c_n, ws_gates, ws_h, ws_c);                   \
    }                                                                                          \
    void layer_backward(Kind kind, int64_t Tn, int64_t B, int64_t I, int64_t H, const T* x,    \
                        const T* c0, const T* w_ih, const T* w_hh, const int64_t* lengths,     \
                        bool reverse, const T* ws_gates, const T* ws_h, const T* ws_c,         \
                        const T* grad_out, const T* grad_h_n, const T* grad_c_n, T* dx,        \
                        T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh,                \
                        bool add_dw) {                                                         \
        layer_backward_impl<T>(kind, Tn, B, I, H, x, c0, w_ih, w_hh, lengths, reverse,         \
                               ws_gates, ws_h, ws_c, grad_out, grad_h_n, grad_c_n, dx, dh0,    \
                               dc0, dw_ih, dw_hh, db_ih, db_hh, add_dw);                       \
    }                                                                                          \
    void cell_forward(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h,      \
                      const T* c, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh,  \
                      T* h_new, T* c_new, T* ws_gates) {                                       \
        cell_forward_impl<T>(kind, B, I, H, x, h, c, w_ih, w_hh, b_ih, b_hh, h_new, c_new,     \
                             ws_gates);                                                        \
    }                                                                                          \
    void cell_backward(Kind kind, int64_t B, int64_t I, int64_t H, const T* x, const T* h,     \
                       const T* c, const T* c_new, const T* w_ih, const T* w_hh,               \
                       const T* ws_gates, const T* grad_h, const T* grad_c, T* dx, T* dh,      \
                       T* dc, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh) {                        \
        cell_backward_impl<T>(kind, B, I, H, x, h, c, c_new, w_ih, w_hh, ws_gates, grad_h,     \
                              grad_c, dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh);                 \
    }

FR_INST(float)
FR_INST(double)
#undef FR_INST

// The layers' GEMM (for tests and timing): C[M, N] = op(A) · op(B).
void matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
            const float* B, int64_t ldb, float* C) {
    mm<float>(ta, tb, M, N, K, A, lda, B, ldb, false, C, N);
}
void matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
            const double* B, int64_t ldb, double* C) {
    mm<double>(ta, tb, M, N, K, A, lda, B, ldb, false, C, N);
}

// Vectorized activations over n elements (for tests of the math).
void apply_act(int which, const float* in, float* out, int64_t n) {
    constexpr int W = V<float>::W;
    for (int64_t i = 0; i < n; i += W) {
        int c = (int)std::min<int64_t>(W, n - i);
        vf a = vloadn(in + i, c);
        vstoren(out + i, which == 0 ? vsigmoid(a) : which == 1 ? vtanh(a) : vexp(a), c);
    }
}
void apply_act(int which, const double* in, double* out, int64_t n) {
    constexpr int W = V<double>::W;
    for (int64_t i = 0; i < n; i += W) {
        int c = (int)std::min<int64_t>(W, n - i);
        vd a = vloadn(in + i, c);
        vstoren(out + i, which == 0 ? vsigmoid(a) : which == 1 ? vtanh(a) : vexp(a), c);
    }
}

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn

#undef FR_VB
