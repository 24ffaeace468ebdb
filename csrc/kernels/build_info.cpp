#include "fastrnn/build_info.h"

#ifndef FASTRNN_VERSION
#define FASTRNN_VERSION "unknown"
#endif
#ifndef FASTRNN_CXX_FLAGS
#define FASTRNN_CXX_FLAGS "unknown"
#endif
#ifndef FASTRNN_BUILD_TYPE
#define FASTRNN_BUILD_TYPE "unknown"
#endif

namespace fastrnn {

namespace {

std::string compiler_name() {
#if defined(__clang__)
    return std::string("Clang ") + __clang_version__;
#elif defined(__GNUC__)
    return "GCC " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) + "." +
           std::to_string(__GNUC_PATCHLEVEL__);
#elif defined(_MSC_VER)
    return "MSVC " + std::to_string(_MSC_VER);
#else
    return "unknown";
#endif
}

std::string simd_level() {
#if defined(__AVX512F__)
    return "AVX-512";
#elif defined(__AVX2__) && defined(__FMA__)
    return "AVX2+FMA";
#elif defined(__AVX__)
    return "AVX";
#elif defined(__SSE4_2__)
    return "SSE4.2";
#elif defined(__SSE2__) || defined(_M_X64)
    return "SSE2";
#elif defined(__ARM_NEON)
    return "NEON";
#else
    return "scalar";
#endif
}

}  // namespace

BuildInfo build_info() {
    const std::string flags = FASTRNN_CXX_FLAGS;  // with the sanitizer flags in a sanitizer build
    return BuildInfo{FASTRNN_VERSION, compiler_name(), flags, FASTRNN_BUILD_TYPE, simd_level()};
}

}  // namespace fastrnn
