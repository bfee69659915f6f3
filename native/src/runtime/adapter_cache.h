// Decoded adapters for apply_mix, by path, so switching between adapters already seen costs only the blend (paper
// §3.2's rapid switching; reading and decoding a v2 file dominates a cold switch). An entry is stale once the
// file's size or mtime differs; the cache is an LRU bounded by budget_bytes of decoded tensors, except that the
// adapters of the applied mix always stay (mixing keeps pointers into them).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "adapter/adapter.h"

struct CachedAdapter {
    std::shared_ptr<Adapter> adapter;
    int64_t                  file_size = -1;
    int64_t                  mtime_ns  = 0;
    int64_t                  bytes     = 0;  // Adapter::decoded_bytes()
    uint64_t                 last_use  = 0;
};
struct AdapterCache {
    std::map<std::string, CachedAdapter> entries;
    int64_t                              budget_bytes = int64_t(2048) << 20;
    uint64_t                             clock        = 0;
    int64_t                              bytes() const;
};

struct CacheCounters {  // what one apply_mix reports
    int64_t hits = 0, misses = 0;
    double  load_ms = 0;
};

// The adapter at `path`, decoded now (a miss: NOT_FOUND for a missing file) or taken from the cache (a hit).
std::shared_ptr<Adapter> adapter_cache_get(AdapterCache& cache, const std::string& path, CacheCounters& counters);
// Drops least recently used adapters until the decoded bytes fit the budget; those at `keep` (the applied mix)
// stay even when they alone exceed it.
void adapter_cache_evict(AdapterCache& cache, const std::vector<std::string>& keep);
