// Large-block memory of the kernels and of the arrays the bindings return.
// No Python here.
//
// A fresh mmap'ed block costs a page fault and a page clear per 4 KB the
// first time it is touched: on a training step of a long sequence (the
// workspace of a 2-layer LSTM at B=97, T=999, H=51 in float64 is ~560 MB)
// that is 10-20 % of the step. Blocks of at least 1 MB are therefore
// kept in a process-wide cache after use and handed out again to a request
// of the same size class (at most twice the requested size; the whole pages
// beyond the request of a block more than 1.25 times it are given back to the
// system, so they are not resident while unused).
//
// The cache does not raise peak memory above what the same calls had in use
// at once without it: a request that finds no fitting block first frees at
// least as many cached bytes (oldest blocks first), then allocates. What it
// holds is capped (default 1 GiB; the environment variable FASTRNN_CACHE_MB
// at start-up, or set_cache_limit; 0 turns the cache off).
#pragma once

#include <cstddef>

namespace fastrnn {

// Blocks of at least this size go through the cache; smaller ones are plain
// aligned_alloc (glibc serves them from its heap, which it keeps mapped).
constexpr size_t kCacheMinBytes = size_t(1) << 20;

// 64-byte aligned block of at least `bytes` bytes (uninitialised), or nullptr
// when the system has no memory for it. *block_bytes receives the block's
// real size (a cached block may be up to twice the request).
void* cache_alloc(size_t bytes, size_t* block_bytes);
// Give back a block from cache_alloc with its real size (*block_bytes);
// p may be nullptr.
void cache_free(void* p, size_t block_bytes);

// Bytes the cache may hold while unused (0: no caching).
void set_cache_limit(size_t bytes);
size_t get_cache_limit();
// Bytes held by the cache right now (free blocks, not in use).
size_t cached_bytes();
// Return every cached block to the system.
void release_cache();

}  // namespace fastrnn
