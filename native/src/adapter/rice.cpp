// Golomb–Rice encoder and decoder (rice.h): k found by walking the convex bit count; the decoder refuses truncated,
// over-long and out-of-range streams.
#include "adapter/rice.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/errors.h"
#include "core/indices.h"

namespace {

struct BitWriter {
    std::vector<uint8_t> bytes;
    uint64_t             acc  = 0;
    int                  nacc = 0;                         // pending bits in the low end of acc, < 8 between calls
    void                 put(uint64_t value, int nbits) {  // nbits <= 56
        acc = (acc << nbits) | value;
        nacc += nbits;
        while (nacc >= 8) {
                            nacc -= 8;
                            bytes.push_back((uint8_t)(acc >> nacc));
        }
        acc &= (1ull << nacc) - 1;
    }
    void finish() {
        if (nacc > 0) bytes.push_back((uint8_t)(acc << (8 - nacc)));
        nacc = 0;
    }
};

}  // namespace

RiceCode rice_encode(const torch::Tensor& idx_in) {
    torch::Tensor         idx = idx_in.to(torch::kCPU, torch::kInt64).contiguous();
    const int64_t         K   = idx.numel();
    const int64_t*        p   = idx.data_ptr<int64_t>();
    std::vector<uint64_t> gaps(K);
    for (int64_t i = 0; i < K; ++i) {
        const int64_t g = i == 0 ? p[0] : p[i] - p[i - 1] - 1;
        if (g < 0) throw WorkerError(ERROR_TYPE_INTERNAL, "rice_encode needs sorted unique non-negative indices");
        gaps[i] = (uint64_t)g;
    }
    // bits(k) = Σ (g >> k) + K·(k + 1) is convex in k: bits(k) − bits(k+1) = Σ ⌈(g >> k) / 2⌉ − K never
    // grows with k. So walk downhill from k ≈ log2(mean gap) to the smallest minimiser.
    auto bits = [&](int k) {
        uint64_t s = 0;
        for (uint64_t g : gaps) s += g >> k;
        return s + (uint64_t)K * (uint64_t)(k + 1);
    };
    RiceCode code;
    if (K > 0) {
        const double mean = p[K - 1] / (double)K;
        int          k    = std::max(0, std::min(40, (int)std::floor(std::log2(mean + 1.0))));
        uint64_t     here = bits(k);
        while (k > 0) {
            const uint64_t down = bits(k - 1);
            if (down > here) break;
            --k;
            here = down;
        }
        while (k < 40) {
            const uint64_t up = bits(k + 1);
            if (up >= here) break;
            ++k;
            here = up;
        }
        code.k = k;
        BitWriter w;
        w.bytes.reserve((here + 7) / 8);
        const uint64_t low = (1ull << k) - 1;
        for (uint64_t g : gaps) {
            uint64_t q = g >> k;
            for (; q >= 32; q -= 32) w.put(0xffffffffull, 32);
            w.put(((1ull << q) - 1) << 1, (int)q + 1);  // q ones, then the terminating zero
            if (k > 0) w.put(g & low, k);
        }
        w.finish();
        code.bytes = torch::empty({(int64_t)w.bytes.size()}, torch::kUInt8);
        if (!w.bytes.empty()) std::memcpy(code.bytes.data_ptr<uint8_t>(), w.bytes.data(), w.bytes.size());
    } else {
        code.bytes = torch::empty({0}, torch::kUInt8);
    }
    return code;
}

torch::Tensor rice_decode(const torch::Tensor& bytes_in, int k, int64_t K, int64_t numel, const std::string& what) {
    if (k < 0 || k > 40) throw_bad_input(what + ": Rice parameter k=" + std::to_string(k) + " is outside 0..40");
    torch::Tensor  bytes  = bytes_in.to(torch::kCPU).contiguous();
    const uint8_t* data   = bytes.data_ptr<uint8_t>();
    const int64_t  nbytes = bytes.numel();
    int64_t        next   = 0;  // next byte to load
    uint64_t       buf    = 0;  // unread bits, MSB-aligned
    int            nbuf   = 0;
    auto           refill = [&] {
        while (nbuf <= 56 && next < nbytes) {
            buf |= (uint64_t)data[next++] << (56 - nbuf);
            nbuf += 8;
        }
    };
    auto truncated = [&] { throw_bad_input(what + ": Rice-coded indices end early (file truncated or corrupt)"); };
    std::vector<int64_t> out(K);
    int64_t              prev = -1;
    const uint64_t       qmax = (uint64_t)numel >> k;  // any larger quotient is out of range anyway
    for (int64_t i = 0; i < K; ++i) {
        uint64_t q = 0;
        for (;;) {
            refill();
            if (nbuf == 0) truncated();
            const int ones = ~buf == 0 ? 64 : __builtin_clzll(~buf);
            if (ones >= nbuf) {
                q += (uint64_t)nbuf;
                buf  = 0;
                nbuf = 0;
            } else {
                q += (uint64_t)ones;
                buf = ones + 1 >= 64 ? 0 : buf << (ones + 1);
                nbuf -= ones + 1;
                break;
            }
            if (q > qmax) break;
        }
        if (q > qmax)
            throw_bad_input(what + ": Rice-coded index " + std::to_string(i) + " is out of range (corrupt data)");
        uint64_t r = 0;
        if (k > 0) {
            refill();
            if (nbuf < k) truncated();
            r = buf >> (64 - k);
            buf <<= k;
            nbuf -= k;
        }
        const uint64_t g = (q << k) | r;
        if (g >= (uint64_t)numel || prev + 1 + (int64_t)g >= numel) {
            throw_bad_input(what + ": Rice-coded index " + std::to_string(i) + " is out of range (corrupt data)");
        }
        prev   = prev + 1 + (int64_t)g;
        out[i] = prev;
    }
    // What is left must be the zero padding of the last byte: no further bytes, no set bits.
    const int64_t used_bits = next * 8 - nbuf;
    if ((used_bits + 7) / 8 != nbytes) {
        throw_bad_input(what + ": Rice-coded indices have " + std::to_string(nbytes - (used_bits + 7) / 8) +
                        " bytes past the last index (corrupt data)");
    }
    if (nbuf > 0 && buf != 0) throw_bad_input(what + ": Rice padding bits are not zero (corrupt data)");
    return index_tensor(std::move(out));
}
