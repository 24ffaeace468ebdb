// The large-block cache (see fastrnn/memory.h).
#include "fastrnn/memory.h"

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <utility>
#include <vector>

#include "fastrnn/testing.h"
#include "platform/platform.h"

namespace fastrnn {

namespace {

size_t default_limit() {
    if (const char* s = std::getenv("FASTRNN_CACHE_MB")) {
        char* end = nullptr;
        long long v = std::strtoll(s, &end, 10);
        if (end != s && *end == '\0' && v >= 0 && v <= (1LL << 30)) return size_t(v) << 20;
    }
    return size_t(1) << 30;
}

struct Cache {
    std::mutex mu;
    std::vector<std::pair<size_t, void*>> blocks;  // free blocks, oldest first
    size_t total = 0;
    size_t limit = default_limit();

    void drop_oldest_locked() {
        platform::aligned_free(blocks.front().second);
        total -= blocks.front().first;
        blocks.erase(blocks.begin());
    }
    void drop_all_locked() {
        for (auto& b : blocks) platform::aligned_free(b.second);
        blocks.clear();
        total = 0;
    }
};

Cache& cache() {
    static Cache* c = [] {
        Cache* p = new Cache();  // never destroyed: usable during exit
        // held across fork, so a child never inherits it taken by another thread
        platform::at_fork([] { cache().mu.lock(); }, [] { cache().mu.unlock(); },
                       [] { cache().mu.unlock(); });
        return p;
    }();
    return *c;
}

size_t rounded(size_t bytes) { return (bytes + 63) / 64 * 64; }

// A cached block of s bytes handed to a request of `bytes` (up to half of it
// unused): give the unused whole pages back to the system (they read as zeros
// if a later, larger request touches them), so the block's resident memory is
// what the request uses (e.g. dx of a GRU layer with H = I = 1024 took the 12
// MB block of the forward's packed weights: 6 MB resident for nothing).
void release_tail(void* p, size_t bytes, size_t s) {
    static const uintptr_t page = platform::page_size();
    const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + bytes + page - 1) & ~(page - 1);
    const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + s) & ~(page - 1);
    if (b > a) platform::release_pages(reinterpret_cast<void*>(a), b - a);
}


// The smallest cached block of `bytes` to 2 * `bytes` (taken out of the cache,
// its size in *block_bytes), or nullptr after freeing at least `bytes` of
// cached blocks (oldest first), so cache + blocks in use never exceed the most
// the calls ever had in use at once.
void* take_cached(size_t bytes, size_t* block_bytes) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    size_t best = c.blocks.size();
    for (size_t i = 0; i < c.blocks.size(); ++i) {
        const size_t s = c.blocks[i].first;
        if (s >= bytes && s <= 2 * bytes && (best == c.blocks.size() || s < c.blocks[best].first))
            best = i;
    }
    if (best != c.blocks.size()) {
        void* p = c.blocks[best].second;
        *block_bytes = c.blocks[best].first;
        c.total -= c.blocks[best].first;
        c.blocks.erase(c.blocks.begin() + (std::ptrdiff_t)best);
        return p;
    }
    size_t freed = 0;
    while (freed < bytes && !c.blocks.empty()) {
        freed += c.blocks.front().first;
        c.drop_oldest_locked();
    }
    return nullptr;
}

}  // namespace

void* cache_alloc(size_t bytes, size_t* block_bytes) {
    if (testing::injected_failure(testing::Failure::allocation)) return nullptr;
    if (bytes == 0) bytes = 1;
    if (bytes > (size_t)-1 - 64) return nullptr;
    bytes = rounded(bytes);
    *block_bytes = bytes;
    if (bytes >= kCacheMinBytes) {
        if (void* p = take_cached(bytes, block_bytes)) {  // *block_bytes: the caller gives it back
            if (*block_bytes > bytes + bytes / 4) release_tail(p, bytes, *block_bytes);
            return p;
        }
    }
    return platform::aligned_alloc64(bytes);
}

void cache_free(void* p, size_t bytes) {  // bytes: the block's real size (from cache_alloc)
    if (!p) return;
    if (bytes >= kCacheMinBytes) {
        Cache& c = cache();
        std::lock_guard<std::mutex> lock(c.mu);
        if (bytes <= c.limit) {
            while (c.total + bytes > c.limit && !c.blocks.empty()) c.drop_oldest_locked();
            c.blocks.emplace_back(bytes, p);
            c.total += bytes;
            return;
        }
    }
    platform::aligned_free(p);
}

void set_cache_limit(size_t bytes) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    c.limit = bytes;
    while (c.total > c.limit && !c.blocks.empty()) c.drop_oldest_locked();
}

size_t get_cache_limit() {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    return c.limit;
}

size_t cached_bytes() {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    return c.total;
}

void release_cache() {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    c.drop_all_locked();
}

}  // namespace fastrnn
