// Vector math of the pointwise rows: exp, sigmoid, tanh, relu.
#pragma once

#include <cstdint>
#include <limits>

#include "simd/vec.h"

namespace fastrnn::FASTRNN_ISA_NS {
namespace {

// exp with Cody-Waite reduction; float: Cephes minimax polynomial (< 1 ulp
// on the reduced range), double: Taylor series to r^13 (< 1 ulp). The result
// is built as p * 2^(n-1) * 2 so that the exponent field never overflows.
// NaN propagates, exp(+inf) = inf, exp(-inf) = 0. Arguments below -86.5
// (float) / -707 (double) flush to 0 (absolute error < 3e-38 / 1e-307).
__attribute__((always_inline)) inline vf vexp(vf x) {
    const vf hi = broadcast(88.7f), lo = broadcast(-86.5f);
    vf xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    const float magic = 12582912.0f;  // 1.5 * 2^23
    vf kd = xc * 1.44269504088896341f + magic;
    vfi ki = (vfi)kd;
    kd = kd - magic;
    vf r = xc - kd * 0.693359375f;
    r = r - kd * -2.12194440e-4f;
    vf p = broadcast(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * (r * r) + r + 1.0f;
    vfi n = ki - 0x4B400000;
    vf s = (vf)((n + 126) << 23);
    vf res = p * s * 2.0f;
    res = x > hi ? broadcast(std::numeric_limits<float>::infinity()) : res;
    res = x < lo ? broadcast(0.0f) : res;
    res = x != x ? x : res;
    return res;
}

__attribute__((always_inline)) inline vd vexp(vd x) {
    const vd hi = broadcast(709.0), lo = broadcast(-707.0);
    vd xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    const double magic = 6755399441055744.0;  // 1.5 * 2^52
    vd kd = xc * 1.4426950408889634074 + magic;
    vdi ki = (vdi)kd;
    kd = kd - magic;
    vd r = xc - kd * 6.93145751953125E-1;
    r = r - kd * 1.42860682030941723212E-6;
    vd p = broadcast(1.0 / 6227020800.0);
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
    vdi n = ki - (vdi)(broadcast(magic));
    vd s = (vd)((n + 1022) << 52);
    vd res = p * s * 2.0;
    res = x > hi ? broadcast(std::numeric_limits<double>::infinity()) : res;
    res = x < lo ? broadcast(0.0) : res;
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
    vf p = broadcast(-5.70498872745E-3f);
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
    vd p = (broadcast(-9.64399179425052238628E-1) * z - 9.92877231001918586564E1) * z -
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

}  // namespace
}  // namespace fastrnn::FASTRNN_ISA_NS
