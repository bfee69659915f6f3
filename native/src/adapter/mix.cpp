// Mixing (mix.h; paper §3.2): validate everything, restore the layers whose signature changed, blend the new ones.
// CPU fp32 weights take raw loops over the sorted indices; other weights libtorch's index ops, with the same
// arithmetic. Mirrored by src/main/core/ort/patch.ts.
#include "adapter/mix.h"

#include <cmath>
#include <cstring>
#include <limits>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/indices.h"
#include "core/timing.h"

namespace {

// CPU fp32 weights take raw loops over the sorted indices: one pass, no TensorIterator set-up or
// temporaries, which makes a SHiRA switch memory-bound (the libtorch index ops cost ~4× more per entry).
bool raw_path(const torch::Tensor& W) {
    return W.device().is_cpu() && W.scalar_type() == torch::kFloat32 && W.is_contiguous();
}
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
    float*         w    = W.data_ptr<float>();
    float*         bp   = base.data_ptr<float>();
    const int64_t* up   = u.data_ptr<int64_t>();
    const float*   ap   = a.data_ptr<float>();
    const float    s    = (float)scale;
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

bool same_signature(const std::vector<std::pair<uint64_t, double>>& a,
                    const std::vector<std::pair<uint64_t, double>>& b) {
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
void shira_union_sum(const std::vector<std::pair<const ShiraTensor*, double>>& parts, torch::Tensor& uni_out,
                     torch::Tensor& acc_out) {
    const size_t                      N = parts.size();
    std::vector<torch::Tensor>        idx(N), val(N);
    std::vector<const int64_t*>       ip(N);
    std::vector<int64_t>              size(N), head(N, 0);
    std::vector<std::vector<int64_t>> pos(N);
    int64_t                           total = 0;
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
    uni_out = index_tensor(std::move(uni));
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
            const torch::Tensor& A  = on_device(t->A, t->A_on_device, W.device());
            const torch::Tensor& B  = on_device(t->B, t->B_on_device, W.device());
            torch::Tensor        BA = B.reshape({B.size(0), -1}).mm(A.reshape({A.size(0), -1}));
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
            uni                  = on_device(t.idx, t.idx_on_device, W.device());
            add                  = on_device(t.values, t.values_on_device, W.device()) * parts.shira[0].second;
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
                throw_bad_input("adapter layer '" + name + "' has shape " + shape_str(t.shape) +
                                " but the model's is " + shape_str(W.sizes().vec()));
            }
            // idx is sorted (adapter_load / shira_detach guarantee it), so its last entry is the maximum.
            if (t.cols != matrix_cols(W) || (t.idx.numel() && t.idx[t.idx.numel() - 1].item<int64_t>() >= W.numel())) {
                throw_bad_input("adapter indices exceed layer '" + name + "'");
            }
        }
        for (const auto& [name, t] : a->lora) {
            auto it = layers.find(name);
            if (it == layers.end()) throw_bad_input("adapter layer '" + name + "' is not in the model");
            const auto& W = it->second->weight;
            if (t.B.size(0) != W.size(0) || t.A.numel() / t.A.size(0) != matrix_cols(W)) {
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
