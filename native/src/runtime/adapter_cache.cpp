// The adapter cache (adapter_cache.h): stat first, decode on a miss; LRU eviction that spares the applied mix.
#include "runtime/adapter_cache.h"

#include <chrono>
#include <filesystem>
#include <set>

#include "core/errors.h"
#include "core/timing.h"
#include "model_io/adapter_file.h"

int64_t AdapterCache::bytes() const {
    int64_t n = 0;
    for (const auto& [_, e] : entries) n += e.bytes;
    return n;
}

void adapter_cache_evict(AdapterCache& c, const std::vector<std::string>& keep_paths) {
    const std::set<std::string> keep(keep_paths.begin(), keep_paths.end());
    while (c.bytes() > c.budget_bytes) {
        auto victim = c.entries.end();
        for (auto it = c.entries.begin(); it != c.entries.end(); ++it) {
            if (keep.count(it->first)) continue;
            if (victim == c.entries.end() || it->second.last_use < victim->second.last_use) victim = it;
        }
        if (victim == c.entries.end()) break;
        c.entries.erase(victim);
    }
}

std::shared_ptr<Adapter> adapter_cache_get(AdapterCache& c, const std::string& path, CacheCounters& n) {
    // Stat before reading: a file replaced while it is read then differs from the recorded stat next time.
    std::error_code ec;
    const auto      size = std::filesystem::file_size(path, ec);
    if (ec) throw WorkerError(ERROR_TYPE_NOT_FOUND, "adapter file '" + path + "' not found (" + ec.message() + ")");
    const auto mtime = std::filesystem::last_write_time(path, ec);
    if (ec) throw WorkerError(ERROR_TYPE_NOT_FOUND, "adapter file '" + path + "' not found (" + ec.message() + ")");
    const int64_t mtime_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(mtime.time_since_epoch()).count();
    auto          it       = c.entries.find(path);
    if (it != c.entries.end() && it->second.file_size == (int64_t)size && it->second.mtime_ns == mtime_ns) {
        ++n.hits;
        it->second.last_use = ++c.clock;
        return it->second.adapter;
    }
    const double t0 = now_ms();
    auto         a  = std::make_shared<Adapter>(adapter_load(path));
    n.load_ms += now_ms() - t0;
    ++n.misses;
    c.entries[path] = {a, (int64_t)size, mtime_ns, a->decoded_bytes(), ++c.clock};
    return a;
}
