// Mixing (mix.h; paper §3.2): validate everything, restore the layers whose signature changed, blend the new ones.
// CPU fp32 weights take one fused, blocked pass over the weight addresses (restore + capture + scatter, parallel
// over blocks of every changed layer); other weights libtorch's index ops, with the same arithmetic. Mirrored by
// src/main/core/ort/patch.ts.
#include "adapter/mix.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/indices.h"
#include "core/timing.h"

#if defined(_MSC_VER)
#include <intrin.h>
#endif

namespace {

// CPU fp32 weights take raw loops over the sorted indices: no TensorIterator set-up or temporaries, which makes a
// SHiRA switch memory-bound (the libtorch index ops cost ~4× more per entry, plus ~10 µs per call and layer).
bool raw_path(const torch::Tensor& W) {
    return W.device().is_cpu() && W.scalar_type() == torch::kFloat32 && W.is_contiguous();
}
// New-union entries per block of the fused pass: a block's old and new entries span ~100k weights at 2 % density
// (a few hundred KiB of cache lines), so the lines the restore touches are still in L2 when the scatter reaches them.
constexpr int64_t kMixBlock = 2048;
// Unstructured masks touch a new cache line per entry (mean gap 1/d weights): fetching a few dozen entries ahead
// keeps enough misses in flight to stream at the memory's bandwidth instead of waiting out its latency.
constexpr int64_t kPrefetch   = 32;
constexpr size_t  kMergedKept = 3;
#if defined(__GNUC__) || defined(__clang__)
#define SHIRA_PREFETCH(p) __builtin_prefetch((p), 1)
inline int popcount64(uint64_t x) { return __builtin_popcountll(x); }
inline int ctz64(uint64_t x) { return __builtin_ctzll(x); }
#else
#define SHIRA_PREFETCH(p) ((void)0)
inline int popcount64(uint64_t x) { return (int)__popcnt64(x); }
inline int ctz64(uint64_t x) {
    unsigned long i;
    _BitScanForward64(&i, x);
    return (int)i;
}
#endif

// f(lo, hi) over [0, n) split into at::get_num_threads() contiguous parts (the worker's OMP_NUM_THREADS, which the
// app sets), run on libtorch's inter-op pool and this thread. Not at::parallel_for: that is header-only and our
// sources are not compiled with OpenMP, so it runs serially here (it did for every earlier mix); at::launch is
// compiled into libtorch and works whatever its parallel backend.
template <class F>
void parallel_range(int64_t n, const F& f) {
    const int64_t T = std::min<int64_t>(at::get_num_threads(), n);
    if (T <= 1) {
        if (n > 0) f(0, n);
        return;
    }
    std::mutex              mu;
    std::condition_variable cv;
    int64_t                 left = T - 1;
    std::exception_ptr      error;
    auto                    part = [&](int64_t t) {
        try {
            f(n * t / T, n * (t + 1) / T);
        } catch (...) {
            std::lock_guard<std::mutex> g(mu);
            if (!error) error = std::current_exception();
        }
    };
    for (int64_t t = 1; t < T; ++t) {
        at::launch([&, t] {
            part(t);
            std::lock_guard<std::mutex> g(mu);  // notify under the lock: the waiter cannot return before we are done
            if (--left == 0) cv.notify_one();
        });
    }
    part(0);
    std::unique_lock<std::mutex> g(mu);
    cv.wait(g, [&] { return left == 0; });
    if (error) std::rethrow_exception(error);
}

// The tensor itself when it already is CPU `dtype` and contiguous (the decoded adapters are), else a converted copy.
torch::Tensor cpu_contiguous(const torch::Tensor& t, torch::ScalarType dtype) {
    if (t.device().is_cpu() && t.scalar_type() == dtype && t.is_contiguous()) return t;
    return t.to(torch::kCPU, dtype).contiguous();
}

int64_t last_index(const torch::Tensor& idx) {
    if (idx.device().is_cpu() && idx.scalar_type() == torch::kInt64 && idx.is_contiguous())
        return idx.data_ptr<int64_t>()[idx.numel() - 1];
    return idx[idx.numel() - 1].item<int64_t>();
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
    std::vector<uint64_t>                              shira_uids;  // the SHiRA adapters' uids, mix order
};

// The union of sorted unique index lists through a bitmap of the layer (numel/8 bytes) with a popcount prefix per
// word: O(numel/64 + total) whatever the number of lists, and each entry's union position is a rank query.
std::shared_ptr<const MergedUnion> merge_union(const LayerParts& parts, int64_t numel) {
    if (numel > std::numeric_limits<int32_t>::max()) throw_bad_input("a layer over 2^31 weights cannot be blended");
    auto                       m     = std::make_shared<MergedUnion>();
    const int64_t              words = (numel + 63) / 64;
    std::vector<uint64_t>      bits(words, 0);
    std::vector<int64_t>       before(words);
    std::vector<torch::Tensor> idx;
    for (const auto& [t, _] : parts.shira) {
        idx.push_back(cpu_contiguous(t->idx, torch::kInt64));
        const int64_t* p = idx.back().data_ptr<int64_t>();
        for (int64_t k = 0, K = idx.back().numel(); k < K; ++k) bits[p[k] >> 6] |= uint64_t(1) << (p[k] & 63);
    }
    int64_t total = 0;
    for (int64_t w = 0; w < words; ++w) {
        before[w] = total;
        total += popcount64(bits[w]);
    }
    m->uids     = parts.shira_uids;
    m->uni      = torch::empty({total}, torch::kInt64);
    int64_t* up = m->uni.data_ptr<int64_t>();
    for (int64_t w = 0; w < words; ++w) {
        for (uint64_t x = bits[w]; x; x &= x - 1) *up++ = w * 64 + ctz64(x);
    }
    for (const auto& t : idx) {
        torch::Tensor  pos = torch::empty({t.numel()}, torch::kInt32);
        int32_t*       pp  = pos.data_ptr<int32_t>();
        const int64_t* p   = t.data_ptr<int64_t>();
        for (int64_t k = 0, K = t.numel(); k < K; ++k) {
            const int64_t w = p[k] >> 6;
            pp[k]           = (int32_t)(before[w] + popcount64(bits[w] & ((uint64_t(1) << (p[k] & 63)) - 1)));
        }
        m->pos.push_back(pos);
    }
    return m;
}

// The cached merged union of this layer's adapter list (moved to the front), or null.
std::shared_ptr<const MergedUnion> find_merged(std::vector<std::shared_ptr<const MergedUnion>>& list,
                                               const std::vector<uint64_t>&                     uids) {
    for (size_t i = 0; i < list.size(); ++i) {
        if (list[i]->uids != uids) continue;
        std::rotate(list.begin(), list.begin() + (int64_t)i, list.begin() + (int64_t)i + 1);
        return list.front();
    }
    return nullptr;
}

// `t` itself when it already lives on `device`, else its cached copy there (made once).
const torch::Tensor& on_device(const torch::Tensor& t, torch::Tensor& mirror, torch::Device device) {
    if (t.device() == device) return t;
    if (!mirror.defined() || mirror.device() != device) mirror = t.to(device);
    return mirror;
}

// One layer's share of the fused CPU pass. New entries get w = base + Σ αᵢ·vᵢ with base captured from the weight
// (W0, or W0 plus LoRA terms) after the old union's entries in the same block were written back; when the union is
// the one already applied (only α's changed) base is the kept one and nothing is restored.
struct Job {
    float*         w      = nullptr;
    const int64_t* uo     = nullptr;  // old union and its base values, restored in the pass (none: no = 0)
    const float*   bo     = nullptr;
    int64_t        no     = 0;
    const int64_t* un     = nullptr;  // new union
    int64_t        nn     = 0;
    float*         bn     = nullptr;  // receives the base at un (capture), or
    const float*   rebase = nullptr;  // the kept base at un (same union)
    // Adapters on the layer, mix order: values, α, and (two or more) their entries' positions in the union.
    std::vector<const float*>   v;
    std::vector<const int32_t*> pos;
    std::vector<int64_t>        k;
    std::vector<float>          a;
    std::vector<torch::Tensor>  keep;  // what the pointers point into
    // Applied to the layer's state after the pass.
    LayerBlend*                        b = nullptr;
    torch::Tensor                      new_union;
    std::shared_ptr<const MergedUnion> new_merged;
    int64_t                            blocks() const { return ((nn > 0 ? nn : no) + kMixBlock - 1) / kMixBlock; }
};

// Block c of a job: blocks partition the weight's addresses at every kMixBlock-th new entry (old entries when there
// are no new ones), so blocks are independent and any thread may take any of them.
void run_block(const Job& j, int64_t c) {
    const bool     by_new = j.nn > 0;
    const int64_t* P      = by_new ? j.un : j.uo;
    const int64_t  np     = by_new ? j.nn : j.no;
    const int64_t  p0 = c * kMixBlock, p1 = std::min(np, p0 + kMixBlock);
    float*         w = j.w;
    if (j.no) {
        int64_t o0 = p0, o1 = p1;
        if (by_new) {
            o0 = c == 0 ? 0 : std::lower_bound(j.uo, j.uo + j.no, P[p0]) - j.uo;
            o1 = p1 == np ? j.no : std::lower_bound(j.uo, j.uo + j.no, P[p1]) - j.uo;
        }
        const int64_t* u = j.uo;
        for (int64_t k = o0; k < o1; ++k) {
            if (k + kPrefetch < o1) SHIRA_PREFETCH(&w[u[k + kPrefetch]]);
            w[u[k]] = j.bo[k];
        }
    }
    if (!by_new) return;
    // Σ αᵢ·vᵢ for the block's entries, as the ONNX mirror computes it: one adapter adds fp32(v·α); several start
    // from 0 and add fp32(vᵢ·αᵢ) in mix order (a separate pass, so no compiler fuses the product into the sum).
    float         add[kMixBlock];
    const int64_t cnt = p1 - p0;
    if (j.v.size() == 1) {
        const float* v = j.v[0] + p0;
        for (int64_t k = 0; k < cnt; ++k) add[k] = v[k] * j.a[0];
    } else {
        std::fill(add, add + cnt, 0.0f);
        for (size_t i = 0; i < j.v.size(); ++i) {
            const int32_t* pos = j.pos[i];
            const int64_t  q0  = std::lower_bound(pos, pos + j.k[i], (int32_t)p0) - pos;
            const int64_t  q1  = std::lower_bound(pos + q0, pos + j.k[i], (int32_t)p1) - pos;
            const float*   v   = j.v[i];
            const float    a   = j.a[i];
            for (int64_t q = q0; q < q1; ++q) add[pos[q] - p0] += v[q] * a;
        }
    }
    const int64_t* u = j.un + p0;
    if (j.bn) {
        float* bn = j.bn + p0;
        for (int64_t k = 0; k < cnt; ++k) {
            if (k + kPrefetch < cnt) SHIRA_PREFETCH(&w[u[k + kPrefetch]]);
            const float old = w[u[k]];
            bn[k]           = old;
            w[u[k]]         = old + add[k];
        }
    } else {
        const float* base = j.rebase + p0;
        for (int64_t k = 0; k < cnt; ++k) {
            if (k + kPrefetch < cnt) SHIRA_PREFETCH(&w[u[k + kPrefetch]]);
            w[u[k]] = base[k] + add[k];
        }
    }
}

// Every block of every job, split evenly over the threads, then the layers' states updated.
void run_jobs(std::vector<Job>& jobs) {
    std::vector<std::pair<int32_t, int64_t>> blocks;
    for (size_t i = 0; i < jobs.size(); ++i) {
        for (int64_t c = 0, n = jobs[i].blocks(); c < n; ++c) blocks.emplace_back((int32_t)i, c);
    }
    parallel_range((int64_t)blocks.size(), [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) run_block(jobs[blocks[i].first], blocks[i].second);
    });
    for (Job& j : jobs) {
        if (!j.b) continue;
        if (j.bn) std::swap(j.b->base, j.b->spare);
        j.b->shira_union = j.new_union;
        j.b->merged      = j.new_merged;
    }
}

// A job that only writes the layer's applied SHiRA union back (the layer leaves the mix, or LoRA is re-fused).
Job restore_job(torch::Tensor& W, const LayerBlend& b) {
    Job j;
    j.w  = W.data_ptr<float>();
    j.uo = b.shira_union.data_ptr<int64_t>();
    j.bo = b.base.data();
    j.no = b.shira_union.numel();
    return j;
}

// Back to W0 on a path other than the fused CPU pass: the LoRA backup is all of W0, else only the SHiRA union changed.
void restore_layer(torch::Tensor& W, LayerBlend& b) {
    if (b.lora_backup.defined()) {
        W.copy_(b.lora_backup);
    } else if (b.shira_union.defined()) {
        if (raw_path(W)) {
            std::vector<Job> one{restore_job(W, b)};
            run_jobs(one);
        } else {
            W.view(-1).index_put_({b.shira_union}, b.shira_base);
        }
    }
    b.shira_union = torch::Tensor();
    b.shira_base  = torch::Tensor();
    b.merged      = nullptr;
}

// W0 -> W0 + Σ LoRA terms, keeping (or reusing) the full W0 copy that restores it.
void blend_lora(torch::Tensor& W, const LayerParts& parts, LayerBlend& b) {
    if (!b.lora_backup.defined()) b.lora_backup = W.detach().clone();
    for (const auto& [t, alpha] : parts.lora) {
        const torch::Tensor& A  = on_device(t->A, t->A_on_device, W.device());
        const torch::Tensor& B  = on_device(t->B, t->B_on_device, W.device());
        torch::Tensor        BA = B.reshape({B.size(0), -1}).mm(A.reshape({A.size(0), -1}));
        W.add_(BA.view(W.sizes()).to(W.scalar_type()), alpha * t->alpha / (double)t->rank());
    }
}

// The SHiRA scatter with libtorch's index ops (CUDA or non-fp32 weights), the CPU pass's arithmetic. When the union
// is the one applied (only α's changed) the kept base is rewritten with the new sum, on the device, restoring nothing.
void blend_shira_indexed(torch::Tensor& W, const LayerParts& parts, const std::shared_ptr<const MergedUnion>& m,
                         LayerBlend& b) {
    torch::Tensor flat = W.view(-1), uni, add;
    if (!m) {
        const ShiraTensor& t = *parts.shira[0].first;
        uni                  = on_device(t.idx, t.idx_on_device, W.device());
        add                  = on_device(t.values, t.values_on_device, W.device()) * parts.shira[0].second;
    } else {
        if (!m->uni_on_device.defined() || m->uni_on_device.device() != W.device()) {
            m->uni_on_device = m->uni.to(W.device());
            m->pos_on_device.clear();
            for (const auto& p : m->pos) m->pos_on_device.push_back(p.to(W.device()));
        }
        uni = m->uni.device() == W.device() ? m->uni : m->uni_on_device;
        add = torch::zeros({uni.numel()}, torch::TensorOptions().dtype(torch::kFloat32).device(W.device()));
        for (size_t i = 0; i < parts.shira.size(); ++i) {
            const ShiraTensor& t   = *parts.shira[i].first;
            const auto&        pos = m->uni.device() == W.device() ? m->pos[i] : m->pos_on_device[i];
            add.index_add_(0, pos, on_device(t.values, t.values_on_device, W.device()) * parts.shira[i].second);
        }
    }
    // (A layer with LoRA terms arrives here restored and re-fused, its union undefined.)
    const bool same_union =
        b.shira_union.defined() && b.shira_base.defined() && (m ? b.merged == m : b.shira_union.is_same(uni));
    if (!same_union) {
        if (b.shira_union.defined()) flat.index_put_({b.shira_union}, b.shira_base);
        b.shira_base = flat.index_select(0, uni);
    }
    flat.index_put_({uni}, (b.shira_base.to(torch::kFloat32) + add).to(W.scalar_type()));
    b.shira_union = uni;
    b.merged      = m;
}

}  // namespace

double mix_clear(DiffusionModel& model, MixState& state) {
    const double       t0 = now_ms();
    torch::NoGradGuard no_grad;
    const auto&        layers = model.layers();
    std::vector<Job>   jobs;
    for (auto& [name, b] : state.layers) {
        torch::Tensor& W = layers.at(name)->weight;
        if (raw_path(W) && !b.lora_backup.defined() && b.shira_union.defined()) {
            jobs.push_back(restore_job(W, b));
        } else {
            restore_layer(W, b);
        }
    }
    run_jobs(jobs);
    state.layers.clear();
    state.merged.clear();
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
            if (t.values.numel() != t.idx.numel()) {
                throw_bad_input("adapter layer '" + name + "' has " + std::to_string(t.idx.numel()) + " indices but " +
                                std::to_string(t.values.numel()) + " values");
            }
            if (t.cols != matrix_cols(W) || (t.idx.numel() && last_index(t.idx) >= W.numel())) {
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
            next[name].shira_uids.push_back(a->uid);
        }
    }
    torch::NoGradGuard no_grad;
    MixStats           s;
    // 2. merge the unions of adapter lists not seen before on a layer (once per distinct list, then cached), in
    // parallel over layers
    {
        std::vector<std::pair<const std::string*, const LayerParts*>> todo;
        for (const auto& [name, parts] : next) {
            auto it = state.layers.find(name);
            if (parts.shira.size() < 2 ||
                (it != state.layers.end() && same_signature(parts.signature, it->second.signature)))
                continue;
            if (!find_merged(state.merged[name], parts.shira_uids)) todo.emplace_back(&name, &parts);
        }
        std::vector<std::shared_ptr<const MergedUnion>> built(todo.size());
        parallel_range((int64_t)todo.size(), [&](int64_t lo, int64_t hi) {
            for (int64_t i = lo; i < hi; ++i)
                built[i] = merge_union(*todo[i].second, layers.at(*todo[i].first)->weight.numel());
        });
        for (size_t i = 0; i < todo.size(); ++i) {
            auto& list = state.merged[*todo[i].first];
            list.insert(list.begin(), built[i]);
            if (list.size() > kMergedKept) list.pop_back();
        }
        s.layers_merged = (int64_t)todo.size();
    }
    // 3. plan: layers leaving the mix are restored; changed layers are re-blended (LoRA layers and non-CPU weights
    // here, one by one; the SHiRA part of CPU fp32 layers in the fused pass)
    std::vector<Job>         jobs;
    std::vector<std::string> leaving;
    for (auto& [name, b] : state.layers) {
        if (next.count(name)) continue;
        torch::Tensor& W = layers.at(name)->weight;
        if (raw_path(W) && !b.lora_backup.defined() && b.shira_union.defined()) {
            jobs.push_back(restore_job(W, b));
        } else {
            restore_layer(W, b);
        }
        leaving.push_back(name);
        ++s.layers_reblended;
    }
    for (const auto& [name, parts] : next) {
        auto found = state.layers.find(name);
        if (found != state.layers.end() && same_signature(parts.signature, found->second.signature)) {
            ++s.layers_unchanged;
            continue;
        }
        ++s.layers_reblended;
        LayerBlend&    b = state.layers[name];
        torch::Tensor& W = layers.at(name)->weight;
        b.signature      = parts.signature;
        std::shared_ptr<const MergedUnion> m =
            parts.shira.size() >= 2 ? find_merged(state.merged[name], parts.shira_uids) : nullptr;
        const bool raw = raw_path(W);
        if (!parts.lora.empty() || b.lora_backup.defined()) {
            // LoRA fuses densely: back to W0 (whole-tensor copy), then the LoRA terms; SHiRA then scatters on top.
            restore_layer(W, b);
            if (parts.lora.empty()) {
                b.lora_backup = torch::Tensor();
            } else {
                blend_lora(W, parts, b);
            }
        }
        if (parts.shira.empty()) continue;  // LoRA only: restored and fused above
        if (!raw) {
            blend_shira_indexed(W, parts, m, b);
            continue;
        }
        Job j;
        j.w = W.data_ptr<float>();
        j.b = &b;
        if (m) {
            j.new_union  = m->uni;
            j.new_merged = m;
            for (size_t i = 0; i < parts.shira.size(); ++i) j.pos.push_back(m->pos[i].data_ptr<int32_t>());
        } else {
            j.new_union = cpu_contiguous(parts.shira[0].first->idx, torch::kInt64);
        }
        for (const auto& [t, alpha] : parts.shira) {
            j.keep.push_back(cpu_contiguous(t->values, torch::kFloat32));
            j.v.push_back(j.keep.back().data_ptr<float>());
            j.k.push_back(t->values.numel());
            j.a.push_back((float)alpha);
        }
        j.un = j.new_union.data_ptr<int64_t>();
        j.nn = j.new_union.numel();
        if (b.shira_union.defined() && (m ? b.merged == m : b.shira_union.is_same(j.new_union))) {
            j.rebase = b.base.data();  // only α's changed: the kept base is W0 at this very union
        } else {
            if (b.shira_union.defined()) {
                j.uo = b.shira_union.data_ptr<int64_t>();
                j.bo = b.base.data();
                j.no = b.shira_union.numel();
            }
            b.spare.resize(j.nn);
            j.bn = b.spare.data();
        }
        jobs.push_back(std::move(j));
    }
    // 4. the fused pass, then the leaving layers' states dropped
    run_jobs(jobs);
    for (const auto& name : leaving) state.layers.erase(name);
    if (stats) *stats = s;
    return now_ms() - t0;
}
