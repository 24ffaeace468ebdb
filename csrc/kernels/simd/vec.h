// SIMD vectors of the kernels: GCC/Clang vector extensions of the width the
// translation unit is compiled for, loads and stores, masked tails.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define FASTRNN_VECTOR_BYTES 64
#elif defined(__AVX__)
#define FASTRNN_VECTOR_BYTES 32
#else
#define FASTRNN_VECTOR_BYTES 16
#endif

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

template <class T>
struct V;
template <>
struct V<float> {
    typedef float v __attribute__((vector_size(FASTRNN_VECTOR_BYTES)));
    typedef float vu __attribute__((vector_size(FASTRNN_VECTOR_BYTES), aligned(4), may_alias));
    typedef int32_t vi __attribute__((vector_size(FASTRNN_VECTOR_BYTES)));
    static constexpr int W = FASTRNN_VECTOR_BYTES / 4;
};
template <>
struct V<double> {
    typedef double v __attribute__((vector_size(FASTRNN_VECTOR_BYTES)));
    typedef double vu __attribute__((vector_size(FASTRNN_VECTOR_BYTES), aligned(8), may_alias));
    typedef int64_t vi __attribute__((vector_size(FASTRNN_VECTOR_BYTES)));
    static constexpr int W = FASTRNN_VECTOR_BYTES / 8;
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
// e.g. H = 51) is one masked instruction on AVX2/AVX-512: a variable-size
// memcpy would be a library call in every row of a small-H step.
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
// a * b + c rounded once: the FMA instruction, whatever the compiler would
// contract.
template <class T>
inline typename V<T>::v fma_once(typename V<T>::v a, typename V<T>::v b, typename V<T>::v c) {
    if constexpr (std::is_same<T, float>::value)
        return (typename V<T>::v)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
    else
        return (typename V<T>::v)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
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
// a * b rounded to the vector type, a value the compiler cannot fuse into
// a following addition (-ffp-contract=fast would, where it sees both in one
// basic block): the empty asm hands the product over in a register.
template <class VT>
inline VT product_rounded(VT a, VT b) {
    VT p = a * b;
    __asm__("" : "+x"(p));
    return p;
}
template <class T>
inline typename V<T>::v broadcast(T s) {
    // s * ones folds to one broadcast ({} + s would keep an addition for
    // the sake of -0.0).
    const typename V<T>::v ones = typename V<T>::v{} + T(1);
    return s * ones;
}

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
