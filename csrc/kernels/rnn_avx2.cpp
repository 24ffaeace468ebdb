// The recurrent kernels compiled for one instruction set (avx2); the flags
// are set per file in CMakeLists.txt and rnn.cpp picks a copy at runtime.
#define FASTRNN_ISA_NS isa_avx2
#include "rnn_impl.inl"
