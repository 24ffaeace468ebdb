// Facts about how this copy of the kernels was compiled. No Python here.
#pragma once

#include <string>

namespace fastrnn {

struct BuildInfo {
    std::string version;     // fastrnn version the kernels were built for
    std::string compiler;    // compiler id and version, e.g. "GCC 12.2.0"
    std::string cxx_flags;   // optimisation flags the kernels were compiled with
    std::string build_type;  // CMake build type
    std::string simd;        // widest SIMD instruction set enabled at compile time
};

// The facts of this build.
BuildInfo build_info();

}  // namespace fastrnn
