// The kernels compiled for one instruction set (generic); its flags are set per
// file in CMakeLists.txt and rnn.cpp picks a copy at runtime.
#define FASTRNN_ISA_NS isa_generic
#include "isa_kernels.inl"
