#include "shira.h"

#include <chrono>
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include "common.h"
#include "safetensors.h"

using json = nlohmann::json;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Per-layer seeds derived from the adapter seed and the layer path, so a Rand mask is regenerable
// from (seed, path) alone and layers of equal shape do not get the same pattern.
uint64_t layer_seed(uint64_t seed, const std::string& name) {
    uint64_t h = 1469598103934665603ull ^ seed;
    for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
    return h;
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
        ctx->save_for_backward({x});
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

}  // namespace

torch::Tensor mask_struct(int64_t m, int64_t n, int64_t K, const torch::Tensor& exclude) {
    const auto    i64  = torch::TensorOptions().dtype(torch::kInt64);
    const int64_t dmin = std::min(m, n);
    torch::Tensor diag = torch::arange(dmin, i64) * (n + 1);
    // Rows past dmin hold no diagonal entry, so n-1 new entries per row is the worst case.
    const int64_t remaining   = std::max<int64_t>(0, K - dmin);
    const int64_t rows_needed = remaining == 0 ? 1 : (remaining + std::max<int64_t>(1, n - 1) - 1) / std::max<int64_t>(1, n - 1);
    const int64_t f           = std::max<int64_t>(1, m / rows_needed);
    std::vector<torch::Tensor> phases;
    for (int64_t p = 0; p < f; ++p) phases.push_back(torch::arange(p, m, f, i64));
    torch::Tensor rows    = torch::cat(phases);
    torch::Tensor entries = (rows.unsqueeze(1) * n + torch::arange(n, i64).unsqueeze(0)).reshape(-1);
    torch::Tensor r = torch::div(entries, n, "floor"), c = entries.remainder(n);
    entries = entries.masked_select(~(r.eq(c) & r.lt(dmin)));  // diagonal entries are already first
    torch::Tensor cand = torch::cat({diag, entries});
    if (exclude.defined()) cand = cand.masked_select(~exclude.reshape(-1).index_select(0, cand));
    check_room(cand.numel(), K);
    return finish_mask(cand.slice(0, 0, K));
}

torch::Tensor mask_rand(int64_t numel, int64_t K, uint64_t seed, const torch::Tensor& exclude) {
    torch::Tensor allowed = exclude.defined() ? (~exclude.reshape(-1)).nonzero().reshape(-1)
                                              : torch::arange(numel, torch::TensorOptions().dtype(torch::kInt64));
    check_room(allowed.numel(), K);
    at::Generator gen  = at::detail::createCPUGenerator(seed);
    torch::Tensor perm = torch::randperm(allowed.numel(), gen, torch::TensorOptions().dtype(torch::kInt64));
    return finish_mask(allowed.index_select(0, perm.slice(0, 0, K)));
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
// Adapters: attach / detach

int64_t Adapter::trainable() const {
    int64_t n = 0;
    for (const auto& [_, t] : shira) n += t.values.numel();
    for (const auto& [_, t] : lora) n += t.A.numel() + t.B.numel();
    return n;
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
            case MASK_TYPE_RAND: idx = mask_rand(numel, K, layer_seed(o.seed, name), exclude); break;
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
        a.shira[name]      = {s.idx.cpu(), s.values.detach().to(torch::kCPU, torch::kFloat32).clone(), cols_of(layer->weight)};
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

void adapter_save(const Adapter& a, const std::string& path) {
    std::map<std::string, torch::Tensor> tensors;
    std::map<std::string, std::string>   meta = a.metadata;
    json                                 alphas = json::object(), cols = json::object();
    meta["kind"] = a.kind == ADAPTER_KIND_SHIRA ? "shira" : "lora";
    for (const auto& [name, t] : a.shira) {
        // PEFT layout: int32 [2, K] rows then columns. n goes to metadata so loading can rebuild flat indices.
        if (t.cols <= 0) throw WorkerError(ERROR_TYPE_INTERNAL, "SHiRA tensor '" + name + "' has no column count");
        tensors[name + ".shira_weight"]  = t.values.to(torch::kFloat32);
        tensors[name + ".shira_indices"] = torch::stack({torch::div(t.idx, t.cols, "floor"), t.idx.remainder(t.cols)}).to(torch::kInt32);
        cols[name]                       = t.cols;
    }
    if (!a.shira.empty()) meta["shira_cols"] = cols.dump();
    for (const auto& [name, t] : a.lora) {
        tensors[name + ".lora_A.weight"] = t.A;
        tensors[name + ".lora_B.weight"] = t.B;
        alphas[name]                     = t.alpha;
    }
    if (!a.lora.empty()) meta["alphas"] = alphas.dump();
    safetensors_save(path, tensors, meta);
}

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

Adapter adapter_load(const std::string& path) {
    SafeTensors st = safetensors_load(path);
    Adapter     a;
    a.metadata = st.metadata;
    const std::string kind = st.metadata.count("kind") ? st.metadata["kind"] : "";
    if (kind != "shira" && kind != "lora") throw_bad_input("adapter '" + path + "' has no kind 'shira' or 'lora'");
    a.kind = kind == "shira" ? ADAPTER_KIND_SHIRA : ADAPTER_KIND_LORA;
    json alphas = json::object(), cols = json::object();
    try {
        if (st.metadata.count("alphas")) alphas = json::parse(st.metadata["alphas"]);
        if (st.metadata.count("shira_cols")) cols = json::parse(st.metadata["shira_cols"]);
    } catch (const std::exception&) {
        throw_bad_input("adapter '" + path + "' has malformed metadata");
    }
    for (const auto& [key, t] : st.tensors) {
        if (ends_with(key, ".shira_weight")) {
            const std::string name = key.substr(0, key.size() - 13);
            auto              it   = st.tensors.find(name + ".shira_indices");
            if (it == st.tensors.end() || t.dim() != 1 || it->second.dim() != 2 || it->second.size(0) != 2 ||
                it->second.size(1) != t.size(0) || t.scalar_type() != torch::kFloat32 ||
                !cols.contains(name) || !cols[name].is_number_unsigned()) {
                throw_bad_input("adapter '" + path + "': bad SHiRA entry for '" + name + "'");
            }
            const int64_t n  = cols[name].get<int64_t>();
            torch::Tensor ij = it->second.to(torch::kInt64);
            if (n < 1 || (t.numel() && (ij.min().item<int64_t>() < 0 || ij[1].max().item<int64_t>() >= n))) {
                throw_bad_input("adapter '" + path + "': SHiRA indices out of range for '" + name + "'");
            }
            // Mixing relies on sorted, unique indices (PEFT writes row-major order; other writers may not).
            auto [idx, order] = (ij[0] * n + ij[1]).sort();
            if (idx.numel() > 1 && idx.slice(0, 1).eq(idx.slice(0, 0, -1)).any().item<bool>()) {
                throw_bad_input("adapter '" + path + "': duplicate SHiRA indices for '" + name + "'");
            }
            a.shira[name] = {idx.contiguous(), t.index_select(0, order).contiguous(), n};
        } else if (ends_with(key, ".lora_A.weight")) {
            const std::string name = key.substr(0, key.size() - 14);
            auto              it   = st.tensors.find(name + ".lora_B.weight");
            if (it == st.tensors.end() || t.dim() < 2 || it->second.dim() != t.dim() || it->second.size(1) != t.size(0)) {
                throw_bad_input("adapter '" + path + "': bad LoRA entry for '" + name + "'");
            }
            double alpha = (double)t.size(0);
            if (alphas.contains(name) && alphas[name].is_number()) alpha = alphas[name].get<double>();
            a.lora[name] = {t.to(torch::kFloat32), it->second.to(torch::kFloat32), alpha};
        } else if (!ends_with(key, ".shira_indices") && !ends_with(key, ".lora_B.weight")) {
            throw_bad_input("adapter '" + path + "' has unknown tensor '" + key + "'");
        }
    }
    return a;
}

// ---------------------------------------------------------------------------------------------
// Mixing

double mix_clear(DiffusionModel& model, MixState& state) {
    const double       t0 = now_ms();
    torch::NoGradGuard no_grad;
    auto               layers = model.layers();
    // SHiRA first: its saved bases were read after any LoRA fuse, and the LoRA copies below are W0.
    for (auto& [name, idx] : state.shira_union) layers.at(name)->weight.view(-1).index_put_({idx}, state.shira_base.at(name));
    for (auto& [name, w] : state.lora_backup) layers.at(name)->weight.copy_(w);
    state.shira_union.clear();
    state.shira_base.clear();
    state.lora_backup.clear();
    return now_ms() - t0;
}

double mix_apply(DiffusionModel& model, MixState& state, const std::vector<std::pair<const Adapter*, double>>& mix) {
    const double t0 = now_ms();
    auto         layers = model.layers();
    // 1. validate everything before touching a weight, so a bad adapter never leaves half a mix
    for (const auto& [a, alpha] : mix) {
        if (!std::isfinite(alpha)) throw_bad_input("mix alpha must be finite");
        for (const auto& [name, t] : a->shira) {
            auto it = layers.find(name);
            if (it == layers.end()) throw_bad_input("adapter layer '" + name + "' is not in the model");
            // idx is sorted (adapter_load / shira_detach guarantee it), so its last entry is the maximum.
            if (t.cols != cols_of(it->second->weight) ||
                (t.idx.numel() && t.idx[t.idx.numel() - 1].item<int64_t>() >= it->second->weight.numel())) {
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
    mix_clear(model, state);
    torch::NoGradGuard no_grad;
    // 2. LoRA: W0 + Σ αᵢ·(alpha/r)·BᵢAᵢ, with a full copy of each touched tensor for the restore
    for (const auto& [a, alpha] : mix) {
        for (const auto& [name, t] : a->lora) {
            torch::Tensor& W = layers.at(name)->weight;
            if (!state.lora_backup.count(name)) state.lora_backup[name] = W.detach().clone();
            torch::Tensor BA = t.B.reshape({t.B.size(0), -1}).mm(t.A.reshape({t.A.size(0), -1})).to(W.device());
            W.add_(BA.view(W.sizes()).to(W.scalar_type()), alpha * t.alpha / (double)t.rank());
        }
    }
    // 3. SHiRA: over the union U of indices, W[U] = W0[U] + Σ αᵢ Sᵢ (overlaps accumulate via the inverse map).
    // One adapter on a layer (the common switch A → B) needs no union: its indices are already sorted and unique.
    std::map<std::string, std::vector<std::pair<const ShiraTensor*, double>>> per_layer;
    for (const auto& [a, alpha] : mix) {
        for (const auto& [name, t] : a->shira) per_layer[name].emplace_back(&t, alpha);
    }
    for (auto& [name, parts] : per_layer) {
        torch::Tensor& W    = layers.at(name)->weight;
        torch::Tensor  flat = W.view(-1);
        if (parts.size() == 1) {
            const ShiraTensor& t   = *parts[0].first;
            torch::Tensor      idx = t.idx.to(W.device());
            torch::Tensor      base = flat.index_select(0, idx);
            flat.index_put_({idx}, (base.to(torch::kFloat32) + t.values.to(W.device()) * parts[0].second).to(W.scalar_type()));
            state.shira_union[name] = idx;
            state.shira_base[name]  = base;
            continue;
        }
        std::vector<torch::Tensor> idxs, vals;
        for (auto& [t, alpha] : parts) {
            idxs.push_back(t->idx);
            vals.push_back(t->values * alpha);
        }
        torch::Tensor all_idx = torch::cat(idxs).to(W.device());
        auto [uni, inverse, counts] = torch::_unique2(all_idx, true, true, false);
        torch::Tensor acc = torch::zeros({uni.numel()}, torch::TensorOptions().dtype(torch::kFloat32).device(W.device()));
        acc.index_add_(0, inverse, torch::cat(vals).to(W.device()));
        torch::Tensor base = flat.index_select(0, uni);
        flat.index_put_({uni}, (base.to(torch::kFloat32) + acc).to(W.scalar_type()));
        state.shira_union[name] = uni;
        state.shira_base[name]  = base;
    }
    return now_ms() - t0;
}
