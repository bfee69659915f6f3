// SHiRA calibrate / attach / write / detach (shira.h; masks §3.1, fused training §3.3, SNIP scores Eq. 2).
#include "adapter/shira.h"

#include <torch/torch.h>

#include "core/errors.h"
#include "core/indices.h"

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
        auto               grads = torch::autograd::grad({loss_fn()}, weights);
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < layers.size(); ++i) {
            // Σ_b |g_b| (Grad) and Σ_b |W ⊙ g_b| (SNIP, eq. 2): per-batch magnitudes so that gradients of
            // opposite sign in different batches do not cancel (the paper leaves this open, notes §1.2).
            torch::Tensor s  = mask == MASK_TYPE_SNIP ? (weights[i] * grads[i]).abs() : grads[i].abs();
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
        const torch::Tensor& W     = layer->weight;
        const int64_t        numel = W.numel(), m = W.size(0), n = matrix_cols(W), K = shira_k(numel, o.density);
        torch::Tensor        exclude;
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
                if (it == scores.end())
                    throw WorkerError(ERROR_TYPE_INTERNAL, "no calibration scores for '" + name + "'");
                idx = mask_topk(it->second, K, exclude);
            }
        }
        auto slot       = std::make_shared<ShiraSlot>();
        slot->idx       = idx.to(W.device());
        slot->rows      = torch::div(slot->idx, n, "floor");
        slot->cols      = slot->idx.remainder(n);
        slot->base_vals = W.detach().reshape(-1).index_select(0, slot->idx).clone();
        slot->values =
            torch::zeros({K}, torch::TensorOptions().dtype(torch::kFloat32).device(W.device())).requires_grad_(true);
        slot->path   = o.grad_path;
        layer->shira = slot;
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
        ShiraTensor&     t = a.shira[name];
        t.idx              = s.idx.cpu();
        t.values           = s.values.detach().to(torch::kCPU, torch::kFloat32).clone();
        t.cols             = matrix_cols(layer->weight);
        t.shape            = layer->weight.sizes().vec();
        layer->weight.view(-1).index_put_({s.idx}, s.base_vals);
        layer->shira.reset();
    }
    return a;
}
