// Mask builders (masks.h; paper §3.1, App. B). Rand replays torch::randperm's draws in O(K); Struct builds only the K
// entries it keeps; both therefore regenerate cheaply when a v2 file loads.
#include "adapter/masks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>

#include "core/errors.h"
#include "core/hash.h"
#include "core/indices.h"

const char* mask_type_name(MaskType type) {
    switch (type) {
        case MASK_TYPE_STRUCT: return "struct";
        case MASK_TYPE_RAND: return "rand";
        case MASK_TYPE_WM: return "wm";
        case MASK_TYPE_GRAD: return "grad";
        default: return "snip";
    }
}

MaskType str_to_mask_type(const std::string& name) {
    for (MaskType t : {MASK_TYPE_STRUCT, MASK_TYPE_RAND, MASK_TYPE_WM, MASK_TYPE_GRAD, MASK_TYPE_SNIP}) {
        if (name == mask_type_name(t)) return t;
    }
    throw_bad_input("unknown mask '" + name + "' (allowed: struct, rand, wm, grad, snip)");
}

int64_t shira_k(int64_t numel, double density) {
    if (!(density > 0.0 && density <= 1.0)) throw_bad_input("density must be in (0, 1]");
    return std::min(numel, std::max<int64_t>(1, std::llround(density * (double)numel)));
}

namespace {

void check_room(int64_t available, int64_t K) {
    if (available < K) {
        throw_bad_input("mask needs " + std::to_string(K) + " entries but only " + std::to_string(available) +
                        " are left after excluding other adapters' indices");
    }
}

torch::Tensor finish_mask(torch::Tensor idx) { return std::get<0>(idx.sort()).contiguous(); }

// Sorts non-negative indices in place: LSD radix, at most 12 bits per pass (a 32 KiB histogram). Regenerating
// a Rand mask sorts millions of indices per file, several times faster than a comparison sort.
void radix_sort_indices(std::vector<int64_t>& v) {
    if (v.size() < 2) return;
    const uint64_t                    top    = (uint64_t)*std::max_element(v.begin(), v.end());
    const int                         bits   = top == 0 ? 1 : 64 - __builtin_clzll(top);
    const int                         passes = (bits + 11) / 12, width = (bits + passes - 1) / passes;
    const uint64_t                    mask = (1ull << width) - 1;
    thread_local std::vector<int64_t> tmp;  // reused: see randperm_prefix
    tmp.resize(v.size());
    std::vector<size_t> count((size_t)mask + 2);
    for (int pass = 0, shift = 0; pass < passes; ++pass, shift += width) {
        std::fill(count.begin(), count.end(), 0);
        for (int64_t x : v) ++count[(((uint64_t)x >> shift) & mask) + 1];
        for (size_t b = 0; b + 1 < count.size(); ++b) count[b + 1] += count[b];
        for (int64_t x : v) tmp[count[((uint64_t)x >> shift) & mask]++] = x;
        v.swap(tmp);
    }
}

// Open-addressing int64 -> int64 map for at most `max_entries` keys >= 0 (no erase): the displaced slots of a
// partial Fisher–Yates shuffle.
struct SlotMap {
    explicit SlotMap(int64_t max_entries) {
        while (capacity_ < 2 * (uint64_t)max_entries + 1) capacity_ <<= 1;
        keys_.assign(capacity_, -1);
        vals_.resize(capacity_);
    }
    // The value at `key`, created as `key` itself (an untouched slot of the identity permutation).
    int64_t& at(int64_t key) {
        uint64_t h = ((uint64_t)key * 0x9E3779B97F4A7C15ull) & (capacity_ - 1);
        while (keys_[h] != -1 && keys_[h] != key) h = (h + 1) & (capacity_ - 1);
        if (keys_[h] == -1) {
            keys_[h] = key;
            vals_[h] = key;
        }
        return vals_[h];
    }
    uint64_t             capacity_ = 16;
    std::vector<int64_t> keys_, vals_;
};

// The first K entries of torch::randperm(n, generator seeded with `seed`). randperm's CPU kernel is the
// forward Fisher–Yates r[i] <-> r[i + random() % (n − i)] for i = 0..n−2 (random() = 32-bit mt19937 draw;
// libtorch 2.x switches to 64-bit draws only for n >= 2^32/20), so entry i is final after step i and K
// steps suffice. Slots < K live in a dense array. A slot >= K hit only once still holds its own index then,
// and what it receives is never read again, so only slots hit twice or more (found by a first pass over the
// draws, ~K²/2n of them) need a hash: that keeps the random accesses within two n-bit bitmaps.
std::vector<int64_t> randperm_prefix(int64_t n, int64_t K, uint64_t seed) {
    at::Generator gen   = at::detail::createCPUGenerator(seed);
    auto*         impl  = at::check_generator<at::CPUGeneratorImpl>(gen);
    const bool    wide  = (uint64_t)n >= std::numeric_limits<uint32_t>::max() / 20;
    const int64_t steps = std::min(K, n - 1);
    // Scratch reused across calls (a file regenerates many layers): fresh pages cost more than the work here.
    thread_local std::vector<int64_t>  z;
    thread_local std::vector<uint64_t> seen, multi;
    z.resize(std::max<int64_t>(steps, 0));
    seen.assign((n - K + 63) / 64 + 1, 0);
    multi.assign(seen.size(), 0);
    int64_t nmulti = 0;
    for (int64_t i = 0; i < steps; ++i) {
        // 32-bit modulo when it is exact (draw and n − i both fit): several times cheaper than 64-bit division.
        z[i] = i +
               (wide ? (int64_t)(impl->random64() % (uint64_t)(n - i)) : (int64_t)(impl->random() % (uint32_t)(n - i)));
        if (z[i] < K) continue;
        const uint64_t p = (uint64_t)(z[i] - K), bit = 1ull << (p & 63);
        if (!(seen[p >> 6] & bit)) {
            seen[p >> 6] |= bit;
        } else if (!(multi[p >> 6] & bit)) {
            multi[p >> 6] |= bit;
            ++nmulti;
        }
    }
    std::vector<int64_t> low(K);
    for (int64_t i = 0; i < K; ++i) low[i] = i;
    SlotMap high(nmulti);
    for (int64_t i = 0; i < steps; ++i) {
        const int64_t zi = z[i], vi = low[i];
        if (zi < K) {
            low[i]  = low[zi];
            low[zi] = vi;
            continue;
        }
        const uint64_t p = (uint64_t)(zi - K);
        if (!(multi[p >> 6] & (1ull << (p & 63)))) {
            low[i] = zi;
        } else {
            int64_t& slot = high.at(zi);
            low[i]        = slot;
            slot          = vi;
        }
    }
    return low;
}

}  // namespace

uint64_t shira_layer_seed(uint64_t seed, const std::string& name) {
    // The basis is 1469598103934665603, one digit short of FNV's offset basis: a slip made before any adapter
    // was saved, kept because every Rand mask trained since (and its stored rand_seed) depends on it.
    return fnv1a64(name, 1469598103934665603ull ^ seed);
}

torch::Tensor mask_struct(int64_t m, int64_t n, int64_t K, const torch::Tensor& exclude) {
    const auto    i64  = torch::TensorOptions().dtype(torch::kInt64);
    const int64_t dmin = std::min(m, n);
    // Rows past dmin hold no diagonal entry, so n-1 new entries per row is the worst case.
    const int64_t remaining = std::max<int64_t>(0, K - dmin);
    const int64_t rows_needed =
        remaining == 0 ? 1 : (remaining + std::max<int64_t>(1, n - 1) - 1) / std::max<int64_t>(1, n - 1);
    const int64_t f = std::max<int64_t>(1, m / rows_needed);
    if (!exclude.defined()) {
        // The first K candidates of the general path below (the diagonal, then rows in phase order minus their
        // diagonal entry), emitted row by row in sorted order without building the other m·n − K.
        const int64_t        ndiag = std::min(dmin, K);
        int64_t              left  = K - ndiag;
        std::vector<int64_t> take(m, 0);  // row entries taken besides the diagonal, in column order
        for (int64_t p = 0; p < f && left > 0; ++p) {
            for (int64_t r = p; r < m && left > 0; r += f) {
                take[r] = std::min(n - (r < dmin ? 1 : 0), left);
                left -= take[r];
            }
        }
        check_room(K - left, K);
        std::vector<int64_t> out(K);
        int64_t*             o = out.data();
        for (int64_t r = 0; r < m; ++r) {
            const bool    has_diag = r < ndiag;
            const int64_t t = take[r], base = r * n;
            if (r < dmin && t > r) {  // the taken columns skip the diagonal one: [0, r) ∪ (r, t]
                for (int64_t c = 0; c < r; ++c) *o++ = base + c;
                if (has_diag) *o++ = base + r;
                for (int64_t c = r + 1; c <= t; ++c) *o++ = base + c;
            } else {  // [0, t), then the diagonal (column r >= t) when selected
                for (int64_t c = 0; c < t; ++c) *o++ = base + c;
                if (has_diag) *o++ = base + r;
            }
        }
        if (o != out.data() + K) throw WorkerError(ERROR_TYPE_INTERNAL, "mask_struct emitted a wrong count");
        return index_tensor(std::move(out));
    }
    std::vector<torch::Tensor> phases;
    for (int64_t p = 0; p < f; ++p) phases.push_back(torch::arange(p, m, f, i64));
    torch::Tensor rows    = torch::cat(phases);
    torch::Tensor entries = (rows.unsqueeze(1) * n + torch::arange(n, i64).unsqueeze(0)).reshape(-1);
    torch::Tensor r = torch::div(entries, n, "floor"), c = entries.remainder(n);
    entries            = entries.masked_select(~(r.eq(c) & r.lt(dmin)));  // diagonal entries are already first
    torch::Tensor diag = torch::arange(dmin, i64) * (n + 1);
    torch::Tensor cand = torch::cat({diag, entries});
    cand               = cand.masked_select(~exclude.reshape(-1).index_select(0, cand));
    check_room(cand.numel(), K);
    return finish_mask(cand.slice(0, 0, K));
}

torch::Tensor mask_rand(int64_t numel, int64_t K, uint64_t seed, const torch::Tensor& exclude) {
    if (!exclude.defined()) {
        check_room(numel, K);
        std::vector<int64_t> idx = randperm_prefix(numel, K, seed);
        radix_sort_indices(idx);
        return index_tensor(std::move(idx));
    }
    torch::Tensor allowed = (~exclude.reshape(-1)).nonzero().reshape(-1);
    check_room(allowed.numel(), K);
    std::vector<int64_t> pick = randperm_prefix(allowed.numel(), K, seed);
    return finish_mask(allowed.index_select(0, index_tensor(std::move(pick))));
}

torch::Tensor mask_topk(const torch::Tensor& scores, int64_t K, const torch::Tensor& exclude) {
    torch::Tensor s = torch::nan_to_num(scores.detach().reshape(-1).to(torch::kCPU, torch::kFloat32), 0.0);
    if (exclude.defined()) {
        check_room(s.numel() - exclude.sum().item<int64_t>(), K);
        s = s.masked_fill(exclude.reshape(-1).to(torch::kCPU), -std::numeric_limits<float>::infinity());
    }
    check_room(s.numel(), K);
    return finish_mask(std::get<1>(s.topk(K)));
}

uint64_t shira_index_checksum(const torch::Tensor& idx_in) {
    torch::Tensor  idx = idx_in.to(torch::kCPU, torch::kInt64).contiguous();
    const int64_t* p   = idx.data_ptr<int64_t>();
    uint64_t       h   = kFnv1a64Offset;
    for (int64_t i = 0; i < idx.numel(); ++i) h = fnv1a64_u64le((uint64_t)p[i], h);
    return h;
}

std::string checksum_hex(uint64_t checksum) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)checksum);
    return buf;
}
