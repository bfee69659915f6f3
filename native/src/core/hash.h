// FNV-1a 64 (Fowler–Noll–Vo; offset basis and prime from the published reference): the one hash behind the word
// tokenizer's spare buckets, the per-layer seed of a Rand mask and the v2 adapter file's index checksum. Each of
// those values is stored in files or decides trained weights, so the function may never change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

constexpr uint64_t kFnv1a64Offset = 14695981039346656037ull;
constexpr uint64_t kFnv1a64Prime  = 1099511628211ull;

// Continues the hash `h` over `n` bytes.
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnv1a64Offset) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnv1a64Prime;
    return h;
}

inline uint64_t fnv1a64(const std::string& s, uint64_t h = kFnv1a64Offset) { return fnv1a64(s.data(), s.size(), h); }

// Continues `h` over the 8 little-endian bytes of `v`, whatever the host's byte order.
inline uint64_t fnv1a64_u64le(uint64_t v, uint64_t h) {
    for (int b = 0; b < 64; b += 8) h = (h ^ ((v >> b) & 0xff)) * kFnv1a64Prime;
    return h;
}
