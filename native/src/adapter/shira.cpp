#include "adapter/shira.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "runtime/sampler.h"
#include "model_io/safetensors.h"

using json = nlohmann::json;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int64_t cols_of(const torch::Tensor& w) { return w.numel() / w.size(0); }

void set_requires_grad(DiffusionModel& model, bool on) {
    for (auto& [name, p] : model.named_parameters()) p.set_requires_grad(on);
}

std::vector<std::pair<std::string, std::shared_ptr<LayerImpl>>> target_layers(DiffusionModel& model,
                                                                              const std::vector<std::string>& targets) {
    std::vector<std::pair<std::string, std::shared_ptr<LayerImpl>>> out;
    for (auto& [name, layer] : model.layers()) {
        if (layer_matches(name, targets)) out.emplace_back(name, layer);
    }
    if (out.empty()) throw_bad_input("no layer matches the target patterns");
    return out;
}

// dL/dδ_k = Σ_n g[n, i_k]·x[n, j_k] for the entries (rows, cols), streaming over N in bounded chunks.
torch::Tensor gather_grad(const torch::Tensor& gt, const torch::Tensor& xt, const torch::Tensor& rows, const torch::Tensor& cols) {
    // gt [m, N], xt [n, N]: each gathered row is contiguous over N, so the product streams memory.
    const int64_t N = gt.size(1), K = rows.numel();
    torch::Tensor out = torch::empty({K}, gt.options());
    // Bounds the [chunk, N] temporaries to ~16 MiB each regardless of K.
    const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(N, 1));
    for (int64_t b = 0; b < K; b += chunk) {
        const int64_t e = std::min(K, b + chunk);
        out.slice(0, b, e).copy_((gt.index_select(0, rows.slice(0, b, e)) * xt.index_select(0, cols.slice(0, b, e))).sum(1));
    }
    return out;
}

void prepare_row_split(ShiraSlot& s, int64_t m, int64_t n) {
    torch::Tensor counts = torch::bincount(s.rows.cpu(), {}, m);
    torch::Tensor full   = counts.eq(n);
    torch::Tensor in_full = full.index_select(0, s.rows.cpu());
    s.full_rows       = full.nonzero().reshape(-1).to(s.idx.device());
    s.full_pos        = in_full.nonzero().reshape(-1).to(s.idx.device());
    s.rest_pos        = (~in_full).nonzero().reshape(-1).to(s.idx.device());
    s.row_split_ready = true;
}

torch::Tensor sparse_path(const torch::Tensor& g, const torch::Tensor& x, const ShiraSlot& slot_in) {
    auto& s = const_cast<ShiraSlot&>(slot_in);  // the row split is a cache of the (fixed) mask
    // g [N, m], x [N, n].
    if (!s.row_split_ready) prepare_row_split(s, g.size(1), x.size(1));
    torch::Tensor out = torch::empty({s.idx.numel()}, g.options());
    if (s.full_rows.numel()) {
        // Struct: d× the FLOPs of the full dW, one GEMM.
        out.index_put_({s.full_pos}, g.index_select(1, s.full_rows).t().mm(x).reshape(-1));
    }
    if (s.rest_pos.numel() && s.rest_pos.numel() <= g.size(1) + x.size(1)) {
        // A few entries (Struct's diagonal): gather their columns directly instead of transposing all of g and x.
        torch::Tensor r = s.rows.index_select(0, s.rest_pos), c = s.cols.index_select(0, s.rest_pos);
        out.index_put_({s.rest_pos}, (g.index_select(1, r) * x.index_select(1, c)).sum(0));
    } else if (s.rest_pos.numel()) {
        torch::Tensor gt = g.t().contiguous(), xt = x.t().contiguous();
        out.index_put_({s.rest_pos}, gather_grad(gt, xt, s.rows.index_select(0, s.rest_pos), s.cols.index_select(0, s.rest_pos)));
    }
    return out;
}

torch::Tensor dense_path(const torch::Tensor& g, const torch::Tensor& x, const ShiraSlot& s) {
    return g.t().mm(x).view(-1).index_select(0, s.idx);
}

struct ShiraFunction : torch::autograd::Function<ShiraFunction> {
    // The layer pointer travels as an int64 because saved_data only holds IValues; the layer outlives
    // the graph (it owns the slot for the whole training run).
    static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor values, int64_t layer_ptr) {
        auto* layer = reinterpret_cast<LayerImpl*>(layer_ptr);
        ctx->saved_data["layer"] = layer_ptr;
        // Under CUDA bf16 autocast the backward multiplies in bf16 anyway (x.to(g.dtype) below), so an fp32 input
        // (after a norm, which autocast keeps in fp32) is saved already cast: half its activation memory, the same
        // gradients. Elsewhere x is saved as it came.
        const bool cast = x.is_cuda() && x.scalar_type() == torch::kFloat32 && CudaAutocast::active();
        ctx->save_for_backward({cast ? x.to(torch::kBFloat16) : x});
        return layer->base_forward(x);  // weight already holds W0 + S (fused invariant)
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        auto*         layer  = reinterpret_cast<LayerImpl*>(ctx->saved_data["layer"].toInt());
        ShiraSlot&    slot   = *layer->shira;
        torch::Tensor x      = ctx->get_saved_variables()[0];
        torch::Tensor g      = grads[0];
        const bool    need_x = ctx->needs_input_grad(0);
        const auto&   W      = layer->weight;
        torch::Tensor grad_x, grad_values;
        const bool pointwise = layer->kind == LAYER_KIND_CONV && layer->kernel == 1 && layer->stride == 1 && layer->padding == 0;
        if (layer->kind == LAYER_KIND_LINEAR || pointwise) {
            torch::Tensor g2, x2;
            if (layer->kind == LAYER_KIND_LINEAR) {
                if (need_x) grad_x = g.matmul(W.to(g.scalar_type()));
                g2 = g.reshape({-1, layer->out_features});
                x2 = x.reshape({-1, layer->in_features}).to(g.scalar_type());  // bf16 autocast: g is bf16, x may be fp32
            } else {  // a 1x1 conv is a Linear over channels: [B, C, H, W] -> [B·H·W, C]
                if (need_x) grad_x = torch::conv2d(g, W.to(g.scalar_type()).transpose(0, 1));
                g2 = g.permute({0, 2, 3, 1}).reshape({-1, layer->out_features});
                x2 = x.permute({0, 2, 3, 1}).reshape({-1, layer->in_features}).to(g.scalar_type());
            }
            grad_values = shira_matrix_grad(g2, x2, slot, slot.path);
        } else {
            // General convs take the dense path: unfold would need [B·H·W, in·kh·kw] per step, which costs
            // more than the weight gradient it avoids for the kernel sizes used here.
            auto res = at::convolution_backward(g, x.to(g.scalar_type()), W.to(g.scalar_type()), c10::nullopt, {layer->stride, layer->stride},
                                                {layer->padding, layer->padding}, {1, 1}, false, {0, 0}, 1,
                                                {need_x, true, false});
            grad_x      = std::get<0>(res);
            grad_values = std::get<1>(res).reshape(-1).index_select(0, slot.idx);
            slot.chosen = GRAD_PATH_DENSE;
        }
        return {grad_x, grad_values.to(torch::kFloat32), torch::Tensor()};
    }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Gradient paths

torch::Tensor shira_layer_forward(LayerImpl& layer, const torch::Tensor& x) {
    return ShiraFunction::apply(x, layer.shira->values, reinterpret_cast<int64_t>(&layer));
}

torch::Tensor shira_matrix_grad(const torch::Tensor& g, const torch::Tensor& x, const ShiraSlot& slot_in, GradPath path) {
    auto& slot = const_cast<ShiraSlot&>(slot_in);  // AUTO records its measurement in the slot
    if (path == GRAD_PATH_SPARSE) return sparse_path(g, x, slot);
    if (path == GRAD_PATH_DENSE) return dense_path(g, x, slot);
    if (slot.chosen != GRAD_PATH_AUTO) return shira_matrix_grad(g, x, slot, slot.chosen);
    // First backward of this layer: one warm-up and one timed run of each path, keep the faster.
    sparse_path(g, x, slot);
    dense_path(g, x, slot);
    // On CUDA the clock must start with the stream drained: otherwise the first timed path also pays for the
    // warm-ups and the rest of the backward still queued, and sparse would lose every time.
    if (g.is_cuda()) g.reshape(-1).slice(0, 0, 1).cpu();
    double        t0 = now_ms();
    torch::Tensor a  = sparse_path(g, x, slot);
    if (a.is_cuda()) a.cpu();  // forces completion before reading the clock
    double        t1 = now_ms();
    torch::Tensor b  = dense_path(g, x, slot);
    if (b.is_cuda()) b.cpu();
    double t2      = now_ms();
    slot.sparse_ms = t1 - t0;
    slot.dense_ms  = t2 - t1;
    slot.chosen    = slot.sparse_ms <= slot.dense_ms ? GRAD_PATH_SPARSE : GRAD_PATH_DENSE;
    return a;
}

GradPathTiming shira_time_grad_paths(int64_t N, int64_t m, int64_t n, const torch::Tensor& idx, int reps) {
    torch::manual_seed(0);
    torch::Tensor g = torch::randn({N, m}), x = torch::randn({N, n});
    ShiraSlot     s;
    s.idx  = idx;
    s.rows = torch::div(idx, n, "floor");
    s.cols = idx.remainder(n);
    double best_sparse = 1e30, best_dense = 1e30;
    torch::Tensor a, b;
    for (int r = 0; r < reps + 1; ++r) {  // rep 0 warms caches and allocator
        double t0 = now_ms();
        a         = sparse_path(g, x, s);
        double t1 = now_ms();
        b         = dense_path(g, x, s);
        double t2 = now_ms();
        if (r > 0) {
            best_sparse = std::min(best_sparse, t1 - t0);
            best_dense  = std::min(best_dense, t2 - t1);
        }
    }
    return {best_sparse, best_dense, (a - b).abs().max().item<double>(), m * n * (int64_t)sizeof(float)};
}

// ---------------------------------------------------------------------------------------------
// Masks

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
    const uint64_t top    = (uint64_t)*std::max_element(v.begin(), v.end());
    const int      bits   = top == 0 ? 1 : 64 - __builtin_clzll(top);
    const int      passes = (bits + 11) / 12, width = (bits + passes - 1) / passes;
    const uint64_t mask   = (1ull << width) - 1;
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

torch::Tensor to_index_tensor(std::vector<int64_t>&& v) {
    auto holder = new std::vector<int64_t>(std::move(v));
    return torch::from_blob(holder->data(), {(int64_t)holder->size()}, [holder](void*) { delete holder; },
                            torch::TensorOptions().dtype(torch::kInt64));
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
        z[i] = i + (wide ? (int64_t)(impl->random64() % (uint64_t)(n - i)) : (int64_t)(impl->random() % (uint32_t)(n - i)));
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
    uint64_t h = 1469598103934665603ull ^ seed;
    for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
    return h;
}

torch::Tensor mask_struct(int64_t m, int64_t n, int64_t K, const torch::Tensor& exclude) {
    const auto    i64  = torch::TensorOptions().dtype(torch::kInt64);
    const int64_t dmin = std::min(m, n);
    // Rows past dmin hold no diagonal entry, so n-1 new entries per row is the worst case.
    const int64_t remaining   = std::max<int64_t>(0, K - dmin);
    const int64_t rows_needed = remaining == 0 ? 1 : (remaining + std::max<int64_t>(1, n - 1) - 1) / std::max<int64_t>(1, n - 1);
    const int64_t f           = std::max<int64_t>(1, m / rows_needed);
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
        return to_index_tensor(std::move(out));
    }
    std::vector<torch::Tensor> phases;
    for (int64_t p = 0; p < f; ++p) phases.push_back(torch::arange(p, m, f, i64));
    torch::Tensor rows    = torch::cat(phases);
    torch::Tensor entries = (rows.unsqueeze(1) * n + torch::arange(n, i64).unsqueeze(0)).reshape(-1);
    torch::Tensor r = torch::div(entries, n, "floor"), c = entries.remainder(n);
    entries = entries.masked_select(~(r.eq(c) & r.lt(dmin)));  // diagonal entries are already first
    torch::Tensor diag = torch::arange(dmin, i64) * (n + 1);
    torch::Tensor cand = torch::cat({diag, entries});
    cand = cand.masked_select(~exclude.reshape(-1).index_select(0, cand));
    check_room(cand.numel(), K);
    return finish_mask(cand.slice(0, 0, K));
}

torch::Tensor mask_rand(int64_t numel, int64_t K, uint64_t seed, const torch::Tensor& exclude) {
    if (!exclude.defined()) {
        check_room(numel, K);
        std::vector<int64_t> idx = randperm_prefix(numel, K, seed);
        radix_sort_indices(idx);
        return to_index_tensor(std::move(idx));
    }
    torch::Tensor allowed = (~exclude.reshape(-1)).nonzero().reshape(-1);
    check_room(allowed.numel(), K);
    std::vector<int64_t> pick = randperm_prefix(allowed.numel(), K, seed);
    return finish_mask(allowed.index_select(0, to_index_tensor(std::move(pick))));
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

// ---------------------------------------------------------------------------------------------
// Index checksum and Golomb–Rice code

uint64_t shira_index_checksum(const torch::Tensor& idx_in) {
    torch::Tensor  idx = idx_in.to(torch::kCPU, torch::kInt64).contiguous();
    const int64_t* p   = idx.data_ptr<int64_t>();
    uint64_t       h   = 14695981039346656037ull;
    for (int64_t i = 0; i < idx.numel(); ++i) {
        const uint64_t v = (uint64_t)p[i];
        for (int b = 0; b < 64; b += 8) h = (h ^ ((v >> b) & 0xff)) * 1099511628211ull;
    }
    return h;
}

std::string checksum_hex(uint64_t checksum) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)checksum);
    return buf;
}

namespace {

struct BitWriter {
    std::vector<uint8_t> bytes;
    uint64_t             acc = 0;
    int                  nacc = 0;  // pending bits in the low end of acc, < 8 between calls
    void put(uint64_t value, int nbits) {  // nbits <= 56
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
    torch::Tensor  idx = idx_in.to(torch::kCPU, torch::kInt64).contiguous();
    const int64_t  K   = idx.numel();
    const int64_t* p   = idx.data_ptr<int64_t>();
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
    int64_t        next = 0;  // next byte to load
    uint64_t       buf  = 0;  // unread bits, MSB-aligned
    int            nbuf = 0;
    auto refill = [&] {
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
                buf  = ones + 1 >= 64 ? 0 : buf << (ones + 1);
                nbuf -= ones + 1;
                break;
            }
            if (q > qmax) break;
        }
        if (q > qmax) throw_bad_input(what + ": Rice-coded index " + std::to_string(i) + " is out of range (corrupt data)");
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
        prev    = prev + 1 + (int64_t)g;
        out[i]  = prev;
    }
    // What is left must be the zero padding of the last byte: no further bytes, no set bits.
    const int64_t used_bits = next * 8 - nbuf;
    if ((used_bits + 7) / 8 != nbytes) {
        throw_bad_input(what + ": Rice-coded indices have " + std::to_string(nbytes - (used_bits + 7) / 8) +
                        " bytes past the last index (corrupt data)");
    }
    if (nbuf > 0 && buf != 0) throw_bad_input(what + ": Rice padding bits are not zero (corrupt data)");
    return to_index_tensor(std::move(out));
}

// ---------------------------------------------------------------------------------------------
// Adapters: attach / detach

namespace {
uint64_t next_adapter_uid() {
    static std::atomic<uint64_t> counter{0};
    return ++counter;
}
}  // namespace

Adapter::Adapter() : uid(next_adapter_uid()) {}

Adapter::Adapter(const Adapter& o)
    : kind(o.kind), shira(o.shira), lora(o.lora), metadata(o.metadata), format_version(o.format_version),
      storage(o.storage), uid(next_adapter_uid()) {}

Adapter& Adapter::operator=(const Adapter& o) {
    if (this == &o) return *this;
    kind           = o.kind;
    shira          = o.shira;
    lora           = o.lora;
    metadata       = o.metadata;
    format_version = o.format_version;
    storage        = o.storage;
    uid            = next_adapter_uid();
    return *this;
}

int64_t Adapter::trainable() const {
    int64_t n = 0;
    for (const auto& [_, t] : shira) n += t.values.numel();
    for (const auto& [_, t] : lora) n += t.A.numel() + t.B.numel();
    return n;
}

int64_t Adapter::decoded_bytes() const {
    int64_t n = 0;
    for (const auto& [_, t] : shira) n += t.idx.nbytes() + t.values.nbytes();
    for (const auto& [_, t] : lora) n += t.A.nbytes() + t.B.nbytes();
    return n;
}

std::string Adapter::base_identity() const {
    auto it = metadata.find("base_identity");
    return it == metadata.end() ? "" : it->second;
}

std::map<std::string, torch::Tensor> shira_calibrate(DiffusionModel& model, const std::vector<std::string>& targets,
                                                     MaskType mask, int64_t batches,
                                                     const std::function<torch::Tensor()>& loss_fn) {
    if (batches < 1 || batches > 1000) throw_bad_input("calibration batches must be in 1..1000");
    auto layers = target_layers(model, targets);
    set_requires_grad(model, false);
    std::vector<torch::Tensor> weights;
    for (auto& [_, l] : layers) {
        l->weight.set_requires_grad(true);
        weights.push_back(l->weight);
    }
    std::map<std::string, torch::Tensor> scores;
    for (int64_t b = 0; b < batches; ++b) {
        auto grads = torch::autograd::grad({loss_fn()}, weights);
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < layers.size(); ++i) {
            // Σ_b |g_b| (Grad) and Σ_b |W ⊙ g_b| (SNIP, eq. 2): per-batch magnitudes so that gradients of
            // opposite sign in different batches do not cancel (the paper leaves this open, notes §1.2).
            torch::Tensor s = mask == MASK_TYPE_SNIP ? (weights[i] * grads[i]).abs() : grads[i].abs();
            auto [it, fresh] = scores.emplace(layers[i].first, s.to(torch::kFloat32));
            if (!fresh) it->second.add_(s);
        }
    }
    for (auto& w : weights) w.set_requires_grad(false);
    return scores;
}

std::vector<torch::Tensor> shira_attach(DiffusionModel& model, const ShiraOptions& o,
                                        const std::map<std::string, torch::Tensor>& scores) {
    auto layers = target_layers(model, o.targets);
    set_requires_grad(model, false);
    std::vector<torch::Tensor> params;
    for (auto& [name, layer] : layers) {
        const torch::Tensor& W = layer->weight;
        const int64_t numel = W.numel(), m = W.size(0), n = cols_of(W), K = shira_k(numel, o.density);
        torch::Tensor exclude;
        for (const Adapter* a : o.exclude) {
            auto it = a->shira.find(name);
            if (it == a->shira.end()) continue;
            if (!exclude.defined()) exclude = torch::zeros({numel}, torch::kBool);
            if (it->second.idx.numel() && it->second.idx.max().item<int64_t>() >= numel) {
                throw_bad_input("excluded adapter does not fit layer '" + name + "'");
            }
            exclude.index_fill_(0, it->second.idx, true);
        }
        torch::Tensor idx;
        switch (o.mask) {
            case MASK_TYPE_STRUCT: idx = mask_struct(m, n, K, exclude); break;
            case MASK_TYPE_RAND: idx = mask_rand(numel, K, shira_layer_seed(o.seed, name), exclude); break;
            case MASK_TYPE_WM: idx = mask_topk(W.abs(), K, exclude); break;
            default: {
                auto it = scores.find(name);
                if (it == scores.end()) throw WorkerError(ERROR_TYPE_INTERNAL, "no calibration scores for '" + name + "'");
                idx = mask_topk(it->second, K, exclude);
            }
        }
        auto slot       = std::make_shared<ShiraSlot>();
        slot->idx       = idx.to(W.device());
        slot->rows      = torch::div(slot->idx, n, "floor");
        slot->cols      = slot->idx.remainder(n);
        slot->base_vals = W.detach().reshape(-1).index_select(0, slot->idx).clone();
        slot->values    = torch::zeros({K}, torch::TensorOptions().dtype(torch::kFloat32).device(W.device())).requires_grad_(true);
        slot->path      = o.grad_path;
        layer->shira    = slot;
        params.push_back(slot->values);
    }
    return params;
}

void shira_write_values(DiffusionModel& model) {
    torch::NoGradGuard no_grad;
    for (auto& [name, layer] : model.layers()) {
        if (!layer->shira) continue;
        const ShiraSlot& s = *layer->shira;
        // W0 + S computed as base + δ in the weight dtype: the same arithmetic as an unfused W0.index_add(δ).
        layer->weight.view(-1).index_put_({s.idx}, s.base_vals + s.values.detach().to(s.base_vals.scalar_type()));
    }
}

Adapter shira_detach(DiffusionModel& model) {
    torch::NoGradGuard no_grad;
    Adapter            a;
    a.kind = ADAPTER_KIND_SHIRA;
    for (auto& [name, layer] : model.layers()) {
        if (!layer->shira) continue;
        const ShiraSlot& s = *layer->shira;
        ShiraTensor& t = a.shira[name];
        t.idx          = s.idx.cpu();
        t.values       = s.values.detach().to(torch::kCPU, torch::kFloat32).clone();
        t.cols         = cols_of(layer->weight);
        t.shape        = layer->weight.sizes().vec();
        layer->weight.view(-1).index_put_({s.idx}, s.base_vals);
        layer->shira.reset();
    }
    return a;
}

std::vector<torch::Tensor> lora_attach(DiffusionModel& model, const LoraOptions& o) {
    if (o.rank < 1 || o.rank > 4096) throw_bad_input("lora rank must be in 1..4096");
    auto layers = target_layers(model, o.targets);
    set_requires_grad(model, false);
    at::Generator              gen = at::detail::createCPUGenerator(o.seed);
    std::vector<torch::Tensor> params;
    for (auto& [name, layer] : layers) {
        const torch::Tensor& W = layer->weight;
        const int64_t        m = W.size(0), n = cols_of(W);
        int64_t r = o.rank;
        if (o.match_density > 0) {
            // Parameter-matched: r(m+n) ≈ K of SHiRA at the same density, per layer.
            r = std::max<int64_t>(1, std::llround((double)shira_k(W.numel(), o.match_density) / (double)(m + n)));
        }
        r = std::min(r, std::min(m, n));
        auto          slot = std::make_shared<LoraSlot>();
        const auto    opts = torch::TensorOptions().dtype(torch::kFloat32);
        const double  bound = 1.0 / std::sqrt((double)n);  // PEFT: kaiming_uniform(a=√5) on A, zeros on B
        if (layer->kind == LAYER_KIND_LINEAR) {
            slot->A = torch::rand({r, n}, gen, opts).mul_(2 * bound).sub_(bound);
            slot->B = torch::zeros({m, r}, opts);
        } else {
            slot->A = torch::rand({r, layer->in_features, layer->kernel, layer->kernel}, gen, opts).mul_(2 * bound).sub_(bound);
            slot->B = torch::zeros({m, r, 1, 1}, opts);
        }
        slot->A     = slot->A.to(W.device()).requires_grad_(true);
        slot->B     = slot->B.to(W.device()).requires_grad_(true);
        slot->scale = o.alpha / (double)r;
        layer->lora = slot;
        params.push_back(slot->A);
        params.push_back(slot->B);
    }
    return params;
}

Adapter lora_detach(DiffusionModel& model) {
    Adapter a;
    a.kind = ADAPTER_KIND_LORA;
    for (auto& [name, layer] : model.layers()) {
        if (!layer->lora) continue;
        const LoraSlot& s = *layer->lora;
        a.lora[name]      = {s.A.detach().cpu().clone(), s.B.detach().cpu().clone(), s.scale * (double)s.A.size(0)};
        layer->lora.reset();
    }
    return a;
}

// ---------------------------------------------------------------------------------------------
// Files

ValuesDtype str_to_values_dtype(const std::string& name) {
    if (name == "f16") return VALUES_DTYPE_F16;
    if (name == "f32") return VALUES_DTYPE_F32;
    throw_bad_input("values dtype must be 'f16' or 'f32', not '" + name + "'");
}

namespace {

constexpr const char* kFormatName = "shira-studio-adapter";

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int64_t numel_of(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

std::string shape_str(const std::vector<int64_t>& shape) { return json(shape).dump(); }

// f16 when asked for and every value fits (|v| <= 65504), else f32: an overflow to inf is never silent.
torch::Tensor stored_values(const torch::Tensor& v, ValuesDtype want, std::string& dtype_name) {
    torch::Tensor f = v.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    if (want == VALUES_DTYPE_F16 && (f.numel() == 0 || f.abs().max().item<float>() <= 65504.0f)) {
        dtype_name = "f16";
        return f.to(torch::kFloat16);
    }
    dtype_name = "f32";
    return f;
}

// v1 files keep the method, mask, density, ... as separate plain strings; v2's "method" is one JSON object.
std::string method_json(const Adapter& a) {
    auto it = a.metadata.find("method");
    if (it != a.metadata.end()) {
        try {
            json j = json::parse(it->second);
            if (j.is_object()) return j.dump();
        } catch (const std::exception&) {
        }
    }
    json j = {{"method", a.kind == ADAPTER_KIND_SHIRA ? "shira" : "lora"}};
    auto num = [&](const char* key) {
        auto m = a.metadata.find(key);
        if (m == a.metadata.end()) return;
        try {
            size_t used = 0;
            double v    = std::stod(m->second, &used);
            if (used == m->second.size()) j[key] = v;
        } catch (const std::exception&) {
        }
    };
    if (a.metadata.count("mask")) j["mask"] = a.metadata.at("mask");
    for (const char* key : {"density", "seed", "steps", "lr"}) num(key);
    return j.dump();
}

}  // namespace

void adapter_save(const Adapter& a, const std::string& path, ValuesDtype want) {
    std::map<std::string, torch::Tensor> tensors;
    std::map<std::string, std::string>   meta = a.metadata;
    meta.erase("shira_cols");  // v1 keys, superseded by "tensors"
    meta.erase("alphas");
    json entries = json::object();
    for (const auto& [name, t] : a.shira) {
        const int64_t K = t.idx.numel();
        if (t.shape.empty()) {
            throw_bad_input("SHiRA layer '" + name + "' has no known shape (v1/PEFT files store none): load the model it belongs to first");
        }
        if (t.values.numel() != K) throw WorkerError(ERROR_TYPE_INTERNAL, "SHiRA layer '" + name + "' has " + std::to_string(t.values.numel()) + " values for " + std::to_string(K) + " indices");
        const int64_t numel = numel_of(t.shape), m = t.shape[0], n = numel / std::max<int64_t>(m, 1);
        torch::Tensor idx   = t.idx.to(torch::kCPU, torch::kInt64).contiguous();
        if (K < 1 || K > numel || idx[K - 1].item<int64_t>() >= numel || idx[0].item<int64_t>() < 0) {
            throw_bad_input("SHiRA layer '" + name + "': " + std::to_string(K) + " indices do not fit its shape " + shape_str(t.shape));
        }
        json e = {{"shape", t.shape}, {"k", K}, {"checksum", checksum_hex(shira_index_checksum(idx))}};
        if (torch::equal(mask_struct(m, n, K), idx)) {
            e["index"] = "struct";
        } else if (t.rand_seed && torch::equal(mask_rand(numel, K, *t.rand_seed), idx)) {
            e["index"]     = "rand";
            e["rand_seed"] = std::to_string(*t.rand_seed);
        } else {
            RiceCode code            = rice_encode(idx);
            e["index"]               = "rice";
            e["rice_k"]              = code.k;
            tensors[name + ".index"] = code.bytes;
        }
        std::string dtype;
        tensors[name + ".values"] = stored_values(t.values, want, dtype);
        e["values"]               = dtype;
        entries[name]             = e;
    }
    for (const auto& [name, t] : a.lora) {
        std::string   da, db;
        torch::Tensor A = stored_values(t.A, want, da), B = stored_values(t.B, want, db);
        if (da != db) {  // one dtype per layer: both f32 when either factor overflows f16
            A  = stored_values(t.A, VALUES_DTYPE_F32, da);
            B  = stored_values(t.B, VALUES_DTYPE_F32, db);
        }
        tensors[name + ".lora_A"] = A;
        tensors[name + ".lora_B"] = B;
        entries[name] = {{"a_shape", t.A.sizes().vec()}, {"b_shape", t.B.sizes().vec()}, {"alpha", t.alpha}, {"values", da}};
    }
    meta["format"]         = kFormatName;
    meta["format_version"] = "2";
    meta["kind"]           = a.kind == ADAPTER_KIND_SHIRA ? "shira" : "lora";
    meta["base_identity"]  = a.base_identity();
    meta["method"]         = method_json(a);
    meta["tensors"]        = entries.dump();
    safetensors_save(path, tensors, meta);
}

namespace {

const char* dtype_label(torch::ScalarType t) {
    return t == torch::kFloat16 ? "f16" : t == torch::kBFloat16 ? "bf16" : t == torch::kFloat32 ? "f32" : "other";
}

// Shapes in the tensors JSON: 2 or 4 positive dimensions (Linear / Conv2d weights), numel < 2^40.
std::vector<int64_t> json_shape(const json& v, const std::string& what) {
    if (!v.is_array() || (v.size() != 2 && v.size() != 4)) throw_bad_input(what + " must be an array of 2 or 4 dimensions");
    std::vector<int64_t> shape;
    int64_t              numel = 1;
    for (const auto& d : v) {
        if (!d.is_number_unsigned() || d.get<uint64_t>() < 1 || d.get<uint64_t>() > (1ull << 40)) throw_bad_input(what + " has a bad dimension");
        shape.push_back(d.get<int64_t>());
        if (numel > (int64_t(1) << 40) / shape.back()) throw_bad_input(what + " is too large");
        numel *= shape.back();
    }
    return shape;
}

Adapter load_v2(const std::string& path, SafeTensors& st) {
    Adapter a;
    a.metadata       = st.metadata;
    a.format_version = 2;
    const std::string version = st.metadata.count("format_version") ? st.metadata["format_version"] : "";
    if (version != "2") {
        throw_bad_input("adapter '" + path + "' has format_version '" + version + "'; this worker reads version 2 (and PEFT-layout v1 files)");
    }
    const std::string kind = st.metadata.count("kind") ? st.metadata["kind"] : "";
    if (kind != "shira" && kind != "lora") throw_bad_input("adapter '" + path + "' has no kind 'shira' or 'lora'");
    a.kind = kind == "shira" ? ADAPTER_KIND_SHIRA : ADAPTER_KIND_LORA;
    json entries;
    try {
        entries = json::parse(st.metadata.count("tensors") ? st.metadata["tensors"] : "");
    } catch (const std::exception&) {
        throw_bad_input("adapter '" + path + "' has no valid 'tensors' metadata (JSON object of layers)");
    }
    if (!entries.is_object() || entries.empty()) throw_bad_input("adapter '" + path + "' lists no layers in its 'tensors' metadata");
    std::set<std::string> claimed;
    auto take = [&](const std::string& key, const std::string& layer) -> torch::Tensor& {
        auto it = st.tensors.find(key);
        if (it == st.tensors.end()) throw_bad_input("adapter '" + path + "': layer '" + layer + "' lacks tensor '" + key + "'");
        claimed.insert(key);
        return it->second;
    };
    auto dtype_of = [&](const json& e, const std::string& what) {
        if (!e.contains("values") || !e["values"].is_string() || (e["values"] != "f16" && e["values"] != "f32")) {
            throw_bad_input(what + ": 'values' must be \"f16\" or \"f32\"");
        }
        return e["values"] == "f16" ? torch::kFloat16 : torch::kFloat32;
    };
    for (const auto& [name, e] : entries.items()) {
        const std::string what = "adapter '" + path + "': layer '" + name + "'";
        if (!e.is_object()) throw_bad_input(what + ": entry is not an object");
        const torch::ScalarType dt = dtype_of(e, what);
        TensorStorage           info;
        info.values = dt == torch::kFloat16 ? "f16" : "f32";
        if (a.kind == ADAPTER_KIND_SHIRA) {
            const std::vector<int64_t> shape = json_shape(e.value("shape", json()), what + ": 'shape'");
            const int64_t numel = numel_of(shape), m = shape[0], n = numel / m;
            if (!e.contains("k") || !e["k"].is_number_unsigned() || e["k"].get<uint64_t>() < 1 || e["k"].get<uint64_t>() > (uint64_t)numel) {
                throw_bad_input(what + ": 'k' must be an integer in 1.." + std::to_string(numel));
            }
            const int64_t     K        = e["k"].get<int64_t>();
            const std::string checksum = e.value("checksum", json("")).is_string() ? e.value("checksum", std::string()) : "";
            if (checksum.size() != 16 || checksum.find_first_not_of("0123456789abcdef") != std::string::npos) {
                throw_bad_input(what + ": 'checksum' must be 16 lowercase hex digits");
            }
            const json&   index = e.value("index", json());
            torch::Tensor idx;
            ShiraTensor   t;
            if (index == "struct") {
                idx = mask_struct(m, n, K);
            } else if (index == "rand") {
                const json& seed = e.value("rand_seed", json());
                const std::string digits = seed.is_string() ? seed.get<std::string>() : "";
                if (digits.empty() || digits.size() > 20 || digits.find_first_not_of("0123456789") != std::string::npos ||
                    (digits.size() == 20 && digits > "18446744073709551615")) {
                    throw_bad_input(what + ": 'rand_seed' must be a decimal uint64 string");
                }
                t.rand_seed = std::stoull(digits);
                idx         = mask_rand(numel, K, *t.rand_seed);
            } else if (index == "rice") {
                if (!e.contains("rice_k") || !e["rice_k"].is_number_integer()) throw_bad_input(what + ": 'rice_k' must be an integer");
                const torch::Tensor& bytes = take(name + ".index", name);
                if (bytes.scalar_type() != torch::kUInt8 || bytes.dim() != 1) throw_bad_input(what + ": '.index' must be U8 [nbytes]");
                info.rice_k      = e["rice_k"].get<int>();
                info.bytes_index = bytes.numel();
                idx              = rice_decode(bytes, info.rice_k, K, numel, what);
            } else {
                throw_bad_input(what + ": 'index' must be \"struct\", \"rand\" or \"rice\"");
            }
            if (checksum_hex(shira_index_checksum(idx)) != checksum) {
                throw_bad_input(index == "rice" ? what + ": Rice-coded indices do not match the stored checksum (corrupt data)"
                                                : what + ": the " + std::string(index == "rand" ? "Rand" : "Struct") +
                                                      " indices no longer regenerate from the stored parameters (checksum mismatch)");
            }
            const torch::Tensor& v = take(name + ".values", name);
            if (v.scalar_type() != dt || v.dim() != 1 || v.size(0) != K) {
                throw_bad_input(what + ": '.values' must be " + info.values + " [" + std::to_string(K) + "]");
            }
            info.index        = index.get<std::string>();
            info.bytes_values = v.nbytes();
            t.idx             = idx;
            t.values          = v.to(torch::kFloat32).contiguous();
            t.cols            = n;
            t.shape           = shape;
            a.shira[name]     = std::move(t);
        } else {
            const std::vector<int64_t> as = json_shape(e.value("a_shape", json()), what + ": 'a_shape'");
            const std::vector<int64_t> bs = json_shape(e.value("b_shape", json()), what + ": 'b_shape'");
            if (as.size() != bs.size() || bs[1] != as[0] || (bs.size() == 4 && (bs[2] != 1 || bs[3] != 1))) {
                throw_bad_input(what + ": a_shape " + shape_str(as) + " and b_shape " + shape_str(bs) + " do not form a LoRA pair");
            }
            if (!e.contains("alpha") || !e["alpha"].is_number() || !std::isfinite(e["alpha"].get<double>())) {
                throw_bad_input(what + ": 'alpha' must be a finite number");
            }
            const torch::Tensor& A = take(name + ".lora_A", name);
            const torch::Tensor& B = take(name + ".lora_B", name);
            if (A.scalar_type() != dt || B.scalar_type() != dt || A.sizes().vec() != as || B.sizes().vec() != bs) {
                throw_bad_input(what + ": lora_A/lora_B must be " + info.values + " " + shape_str(as) + " / " + shape_str(bs));
            }
            info.bytes_values = A.nbytes() + B.nbytes();
            a.lora[name]      = {A.to(torch::kFloat32).contiguous(), B.to(torch::kFloat32).contiguous(), e["alpha"].get<double>()};
        }
        a.storage[name] = info;
    }
    for (const auto& [key, _] : st.tensors) {
        if (!claimed.count(key)) throw_bad_input("adapter '" + path + "' has tensor '" + key + "' that no layer in 'tensors' describes");
    }
    return a;
}

// The model layer a v1/PEFT tensor name refers to: the name itself, or PEFT's "base_model.model.<module>"
// relative to the UNet or the text encoder.
std::string resolve_layer(const std::string& name, const DiffusionModel* model, const std::string& path) {
    const std::string peft = "base_model.model.";
    if (name.rfind(peft, 0) != 0) return name;
    if (!model) throw_bad_input("adapter '" + path + "' is a PEFT file: load the model it belongs to first (PEFT stores neither component nor shapes)");
    const std::string module = name.substr(peft.size());
    for (const char* component : {"unet.", "text_encoder."}) {
        if (model->layers().count(component + module)) return component + module;
    }
    throw_bad_input("adapter '" + path + "': PEFT module '" + module + "' is not a layer of the loaded model");
}

// v1 (this app's PEFT layout, metadata "kind" + "shira_cols"/"alphas") and PEFT's adapter_model.safetensors.
Adapter load_v1(const std::string& path, SafeTensors& st, const DiffusionModel* model) {
    Adapter a;
    a.metadata       = st.metadata;
    a.format_version = 1;
    std::string kind = st.metadata.count("kind") ? st.metadata["kind"] : "";
    if (kind.empty()) {  // PEFT: the tensor names say what it is
        for (const auto& [key, _] : st.tensors) {
            if (ends_with(key, ".shira_weight")) kind = "shira";
            if (ends_with(key, ".lora_A.weight")) kind = "lora";
        }
        if (!kind.empty()) a.metadata["kind"] = kind;
    }
    if (kind != "shira" && kind != "lora") throw_bad_input("adapter '" + path + "' is not a SHiRA or LoRA adapter (no kind, no known tensor names)");
    a.kind = kind == "shira" ? ADAPTER_KIND_SHIRA : ADAPTER_KIND_LORA;
    json alphas = json::object(), cols = json::object();
    try {
        if (st.metadata.count("alphas")) alphas = json::parse(st.metadata["alphas"]);
        if (st.metadata.count("shira_cols")) cols = json::parse(st.metadata["shira_cols"]);
    } catch (const std::exception&) {
        throw_bad_input("adapter '" + path + "' has malformed metadata");
    }
    // PEFT keeps lora_alpha in the adapter_config.json beside the weights.
    double peft_alpha = -1;
    {
        std::ifstream in(std::filesystem::path(path).parent_path() / "adapter_config.json");
        if (in) {
            try {
                json cfg = json::parse(in);
                if (cfg.contains("lora_alpha") && cfg["lora_alpha"].is_number()) peft_alpha = cfg["lora_alpha"].get<double>();
            } catch (const std::exception&) {
            }
        }
    }
    // A Rand adapter trained by this app records its seed: each layer's mask_rand seed is a candidate that
    // adapter_save verifies (masks built with exclusions do not regenerate and are Rice-coded instead).
    std::optional<uint64_t> rand_seed;
    if (st.metadata.count("mask") && st.metadata["mask"] == "rand" && st.metadata.count("seed")) {
        const std::string& d = st.metadata["seed"];
        if (!d.empty() && d.size() < 20 && d.find_first_not_of("0123456789") == std::string::npos) rand_seed = std::stoull(d);
    }
    auto model_shape = [&](const std::string& layer) -> std::vector<int64_t> {
        if (!model) return {};
        auto it = model->layers().find(layer);
        return it == model->layers().end() ? std::vector<int64_t>() : it->second->weight.sizes().vec();
    };
    for (const auto& [key, t] : st.tensors) {
        if (ends_with(key, ".shira_weight")) {
            const std::string base = key.substr(0, key.size() - 13), name = resolve_layer(base, model, path);
            const std::string what = "adapter '" + path + "': SHiRA layer '" + name + "'";
            auto              it   = st.tensors.find(base + ".shira_indices");
            const auto        it_t = it == st.tensors.end() ? torch::kFloat32 : it->second.scalar_type();
            if (it == st.tensors.end() || t.dim() != 1 || it->second.dim() != 2 || it->second.size(0) != 2 || it->second.size(1) != t.size(0) ||
                !t.is_floating_point() || (it_t != torch::kInt32 && it_t != torch::kInt64 && it_t != torch::kFloat32)) {
                throw_bad_input(what + ": needs float shira_weight [K] and int shira_indices [2, K]");
            }
            std::vector<int64_t> shape = model_shape(name);
            int64_t              n     = shape.empty() ? 0 : numel_of(shape) / shape[0];
            if (cols.contains(base)) {
                if (!cols[base].is_number_unsigned() || cols[base].get<int64_t>() < 1) throw_bad_input(what + ": bad column count");
                if (n && n != cols[base].get<int64_t>()) throw_bad_input(what + " has " + std::to_string(cols[base].get<int64_t>()) + " columns but the model's layer has " + std::to_string(n));
                n = cols[base].get<int64_t>();
            }
            if (n < 1) throw_bad_input(what + ": the column count is unknown (not in the file's metadata and no model layer of that name)");
            // Windows PEFT saves the indices as float32; they must still be whole numbers.
            torch::Tensor ij = it->second.to(torch::kInt64);
            if (it_t == torch::kFloat32 && !torch::equal(ij.to(torch::kFloat32), it->second)) throw_bad_input(what + ": float indices are not whole numbers");
            if (t.numel() && (ij.min().item<int64_t>() < 0 || ij[1].max().item<int64_t>() >= n ||
                              (!shape.empty() && ij[0].max().item<int64_t>() >= shape[0]))) {
                throw_bad_input(what + ": indices out of range");
            }
            // Mixing relies on sorted, unique indices (PEFT writes row-major order; other writers may not).
            auto [idx, order] = (ij[0] * n + ij[1]).sort();
            if (idx.numel() > 1 && idx.slice(0, 1).eq(idx.slice(0, 0, -1)).any().item<bool>()) throw_bad_input(what + ": duplicate indices");
            ShiraTensor s;
            s.idx           = idx.contiguous();
            s.values        = t.to(torch::kFloat32).index_select(0, order).contiguous();
            s.cols          = n;
            s.shape         = shape;
            if (rand_seed) s.rand_seed = shira_layer_seed(*rand_seed, name);
            a.shira[name]   = std::move(s);
            a.storage[name] = {"peft", dtype_label(t.scalar_type()), (int64_t)t.nbytes(), (int64_t)it->second.nbytes(), -1};
        } else if (ends_with(key, ".lora_A.weight")) {
            const std::string base = key.substr(0, key.size() - 14), name = resolve_layer(base, model, path);
            auto              it   = st.tensors.find(base + ".lora_B.weight");
            if (it == st.tensors.end() || t.dim() < 2 || it->second.dim() != t.dim() || it->second.size(1) != t.size(0)) {
                throw_bad_input("adapter '" + path + "': bad LoRA entry for '" + name + "'");
            }
            double alpha = peft_alpha > 0 ? peft_alpha : (double)t.size(0);
            if (alphas.contains(base) && alphas[base].is_number()) alpha = alphas[base].get<double>();
            a.lora[name]    = {t.to(torch::kFloat32), it->second.to(torch::kFloat32), alpha};
            a.storage[name] = {"", dtype_label(t.scalar_type()), (int64_t)(t.nbytes() + it->second.nbytes()), 0, -1};
        } else if (!ends_with(key, ".shira_indices") && !ends_with(key, ".lora_B.weight")) {
            throw_bad_input("adapter '" + path + "' has unknown tensor '" + key + "'");
        }
    }
    if (a.shira.empty() && a.lora.empty()) throw_bad_input("adapter '" + path + "' holds no adapter tensors");
    return a;
}

}  // namespace

Adapter adapter_load(const std::string& path, const DiffusionModel* model) {
    SafeTensors st  = safetensors_load(path);
    auto        fmt = st.metadata.find("format");
    if (fmt != st.metadata.end() && fmt->second == kFormatName) return load_v2(path, st);
    return load_v1(path, st, model);
}

// ---------------------------------------------------------------------------------------------
// Mixing

namespace {

// CPU fp32 weights take raw loops over the sorted indices: one pass, no TensorIterator set-up or
// temporaries, which makes a SHiRA switch memory-bound (the libtorch index ops cost ~4× more per entry).
bool raw_path(const torch::Tensor& W) { return W.device().is_cpu() && W.scalar_type() == torch::kFloat32 && W.is_contiguous(); }
constexpr int64_t kScatterGrain = 1 << 15;
// Unstructured masks touch a new cache line per entry (mean gap 1/d weights): fetching a few dozen
// entries ahead hides most of the memory latency that bounds a Rand/WM switch.
constexpr int64_t kPrefetch = 32;
#if defined(__GNUC__) || defined(__clang__)
#define SHIRA_PREFETCH(p) __builtin_prefetch((p), 1)
#else
#define SHIRA_PREFETCH(p) ((void)0)
#endif

void restore_layer(torch::Tensor& W, const LayerBlend& b) {
    // A LoRA backup is all of W0; otherwise only the SHiRA union changed.
    if (b.lora_backup.defined()) {
        W.copy_(b.lora_backup);
    } else if (b.shira_union.defined()) {
        if (raw_path(W) && b.shira_base.scalar_type() == torch::kFloat32) {
            float*         w    = W.data_ptr<float>();
            const int64_t* u    = b.shira_union.data_ptr<int64_t>();
            const float*   base = b.shira_base.data_ptr<float>();
            at::parallel_for(0, b.shira_union.numel(), kScatterGrain, [&](int64_t lo, int64_t hi) {
                for (int64_t k = lo; k < hi; ++k) {
                    if (k + kPrefetch < hi) SHIRA_PREFETCH(&w[u[k + kPrefetch]]);
                    w[u[k]] = base[k];
                }
            });
        } else {
            W.view(-1).index_put_({b.shira_union}, b.shira_base);
        }
    }
}

// w[u_k] += add_k·scale, returning the previous w[u_k] (the restore copy); u sorted and unique.
torch::Tensor scatter_add_keep(torch::Tensor& W, const torch::Tensor& uni, const torch::Tensor& add, double scale) {
    torch::Tensor  u = uni.contiguous(), a = add.to(torch::kFloat32).contiguous();
    torch::Tensor  base = torch::empty({u.numel()}, torch::kFloat32);
    float*         w = W.data_ptr<float>();
    float*         bp = base.data_ptr<float>();
    const int64_t* up = u.data_ptr<int64_t>();
    const float*   ap = a.data_ptr<float>();
    const float    s = (float)scale;
    at::parallel_for(0, u.numel(), kScatterGrain, [&](int64_t lo, int64_t hi) {
        for (int64_t k = lo; k < hi; ++k) {
            if (k + kPrefetch < hi) SHIRA_PREFETCH(&w[up[k + kPrefetch]]);
            const float old = w[up[k]];
            bp[k]           = old;
            w[up[k]]        = old + ap[k] * s;
        }
    });
    return base;
}

bool same_signature(const std::vector<std::pair<uint64_t, double>>& a, const std::vector<std::pair<uint64_t, double>>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        // Bitwise: 0.0 and -0.0 can give different sums.
        if (a[i].first != b[i].first || std::memcmp(&a[i].second, &b[i].second, sizeof(double)) != 0) return false;
    }
    return true;
}

struct LayerParts {
    std::vector<std::pair<const LoraTensor*, double>>  lora;
    std::vector<std::pair<const ShiraTensor*, double>> shira;
    std::vector<std::pair<uint64_t, double>>           signature;
};

// Union of sorted unique index lists (k-way merge, O(total · lists)) and Σ αᵢ·valuesᵢ accumulated on it in
// list order, so a layer's sum depends only on its signature.
void shira_union_sum(const std::vector<std::pair<const ShiraTensor*, double>>& parts, torch::Tensor& uni_out, torch::Tensor& acc_out) {
    const size_t N = parts.size();
    std::vector<torch::Tensor>   idx(N), val(N);
    std::vector<const int64_t*>  ip(N);
    std::vector<int64_t>         size(N), head(N, 0);
    std::vector<std::vector<int64_t>> pos(N);
    int64_t total = 0;
    for (size_t i = 0; i < N; ++i) {
        idx[i]  = parts[i].first->idx.to(torch::kCPU, torch::kInt64).contiguous();
        val[i]  = parts[i].first->values.to(torch::kCPU, torch::kFloat32).contiguous();
        ip[i]   = idx[i].data_ptr<int64_t>();
        size[i] = idx[i].numel();
        pos[i].resize(size[i]);
        total += size[i];
    }
    std::vector<int64_t> uni;
    uni.reserve(total);
    for (;;) {
        int64_t cur = std::numeric_limits<int64_t>::max();
        for (size_t i = 0; i < N; ++i) {
            if (head[i] < size[i]) cur = std::min(cur, ip[i][head[i]]);
        }
        if (cur == std::numeric_limits<int64_t>::max()) break;
        const int64_t u = (int64_t)uni.size();
        uni.push_back(cur);
        for (size_t i = 0; i < N; ++i) {
            if (head[i] < size[i] && ip[i][head[i]] == cur) pos[i][head[i]++] = u;
        }
    }
    torch::Tensor acc = torch::zeros({(int64_t)uni.size()}, torch::kFloat32);
    float*        ap  = acc.data_ptr<float>();
    for (size_t i = 0; i < N; ++i) {
        const float  a  = (float)parts[i].second;
        const float* vp = val[i].data_ptr<float>();
        for (int64_t k = 0; k < size[i]; ++k) ap[pos[i][k]] += vp[k] * a;
    }
    uni_out = to_index_tensor(std::move(uni));
    acc_out = acc;
}

// `t` itself when it already lives on `device`, else its cached copy there (made once).
const torch::Tensor& on_device(const torch::Tensor& t, torch::Tensor& mirror, torch::Device device) {
    if (t.device() == device) return t;
    if (!mirror.defined() || mirror.device() != device) mirror = t.to(device);
    return mirror;
}

// W0 (current weight) -> W0 + Σ LoRA terms, then the SHiRA scatter; records what restore needs.
void blend_layer(torch::Tensor& W, const LayerParts& parts, LayerBlend& b) {
    if (!parts.lora.empty()) {
        if (!b.lora_backup.defined()) b.lora_backup = W.detach().clone();
        for (const auto& [t, alpha] : parts.lora) {
            const torch::Tensor& A = on_device(t->A, t->A_on_device, W.device());
            const torch::Tensor& B = on_device(t->B, t->B_on_device, W.device());
            torch::Tensor BA = B.reshape({B.size(0), -1}).mm(A.reshape({A.size(0), -1}));
            W.add_(BA.view(W.sizes()).to(W.scalar_type()), alpha * t->alpha / (double)t->rank());
        }
    }
    if (!parts.shira.empty()) {
        torch::Tensor flat = W.view(-1), uni, add;
        if (raw_path(W)) {
            // Same arithmetic as below (fp32 base + fp32 α·values), so both paths give identical weights.
            double scale = 1.0;
            if (parts.shira.size() == 1) {
                uni   = parts.shira[0].first->idx.to(torch::kInt64);
                add   = parts.shira[0].first->values;
                scale = parts.shira[0].second;
                add   = add.to(torch::kFloat32) * (float)scale;
                scale = 1.0;
            } else {
                shira_union_sum(parts.shira, uni, add);
            }
            b.shira_base  = scatter_add_keep(W, uni, add, scale);
            b.shira_union = uni.contiguous();
            b.signature   = parts.signature;
            return;
        }
        if (parts.shira.size() == 1) {
            // The common switch A -> B: one adapter's indices are already sorted and unique.
            const ShiraTensor& t = *parts.shira[0].first;
            uni = on_device(t.idx, t.idx_on_device, W.device());
            add = on_device(t.values, t.values_on_device, W.device()) * parts.shira[0].second;
        } else {
            shira_union_sum(parts.shira, uni, add);
            uni = uni.to(W.device());
            add = add.to(W.device());
        }
        torch::Tensor base = flat.index_select(0, uni);
        flat.index_put_({uni}, (base.to(torch::kFloat32) + add).to(W.scalar_type()));
        b.shira_union = uni;
        b.shira_base  = base;
    }
    b.signature = parts.signature;
}

}  // namespace

double mix_clear(DiffusionModel& model, MixState& state) {
    const double       t0 = now_ms();
    torch::NoGradGuard no_grad;
    const auto&        layers = model.layers();
    for (auto& [name, b] : state.layers) restore_layer(layers.at(name)->weight, b);
    state.layers.clear();
    return now_ms() - t0;
}

double mix_apply(DiffusionModel& model, MixState& state, const std::vector<std::pair<const Adapter*, double>>& mix,
                 MixStats* stats) {
    const double t0     = now_ms();
    const auto&  layers = model.layers();
    // 1. validate everything before touching a weight, so a bad adapter never leaves half a mix
    for (const auto& [a, alpha] : mix) {
        if (!std::isfinite(alpha)) throw_bad_input("mix alpha must be finite");
        for (const auto& [name, t] : a->shira) {
            auto it = layers.find(name);
            if (it == layers.end()) throw_bad_input("adapter layer '" + name + "' is not in the model");
            const auto& W = it->second->weight;
            if (!t.shape.empty() && t.shape != W.sizes().vec()) {
                throw_bad_input("adapter layer '" + name + "' has shape " + shape_str(t.shape) + " but the model's is " + shape_str(W.sizes().vec()));
            }
            // idx is sorted (adapter_load / shira_detach guarantee it), so its last entry is the maximum.
            if (t.cols != cols_of(W) || (t.idx.numel() && t.idx[t.idx.numel() - 1].item<int64_t>() >= W.numel())) {
                throw_bad_input("adapter indices exceed layer '" + name + "'");
            }
        }
        for (const auto& [name, t] : a->lora) {
            auto it = layers.find(name);
            if (it == layers.end()) throw_bad_input("adapter layer '" + name + "' is not in the model");
            const auto& W = it->second->weight;
            if (t.B.size(0) != W.size(0) || t.A.numel() / t.A.size(0) != cols_of(W)) {
                throw_bad_input("LoRA shapes do not match layer '" + name + "'");
            }
        }
    }
    std::map<std::string, LayerParts> next;
    for (const auto& [a, alpha] : mix) {
        for (const auto& [name, t] : a->lora) {
            next[name].lora.emplace_back(&t, alpha);
            next[name].signature.emplace_back(a->uid, alpha);
        }
        for (const auto& [name, t] : a->shira) {
            next[name].shira.emplace_back(&t, alpha);
            next[name].signature.emplace_back(a->uid, alpha);
        }
    }
    torch::NoGradGuard no_grad;
    MixStats           s;
    // 2. restore the layers whose signature changed or that leave the mix; a LoRA backup (all of W0) is
    // kept for reuse when the layer stays LoRA-touched
    std::map<std::string, torch::Tensor> backups;
    for (auto it = state.layers.begin(); it != state.layers.end();) {
        auto n = next.find(it->first);
        if (n != next.end() && same_signature(n->second.signature, it->second.signature)) {
            ++it;
            continue;
        }
        restore_layer(layers.at(it->first)->weight, it->second);
        if (n == next.end()) {
            ++s.layers_reblended;
        } else if (it->second.lora_backup.defined() && !n->second.lora.empty()) {
            backups[it->first] = it->second.lora_backup;
        }
        it = state.layers.erase(it);
    }
    // 3. blend the new and changed layers from W0
    for (const auto& [name, parts] : next) {
        if (state.layers.count(name)) {
            ++s.layers_unchanged;
            continue;
        }
        LayerBlend b;
        auto       kept = backups.find(name);
        if (kept != backups.end()) b.lora_backup = kept->second;
        blend_layer(layers.at(name)->weight, parts, b);
        state.layers.emplace(name, std::move(b));
        ++s.layers_reblended;
    }
    if (stats) *stats = s;
    return now_ms() - t0;
}
