// LoRA attach / detach (lora.h): PEFT's initialisation (A ~ U(−1/√n, 1/√n), B = 0) and the parameter-matched rank.
#include "adapter/lora.h"

#include <algorithm>
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "adapter/masks.h"
#include "core/errors.h"
#include "core/indices.h"

std::vector<torch::Tensor> lora_attach(DiffusionModel& model, const LoraOptions& o) {
    if (o.rank < 1 || o.rank > 4096) throw_bad_input("lora rank must be in 1..4096");
    auto layers = target_layers(model, o.targets);
    set_requires_grad(model, false);
    at::Generator              gen = at::detail::createCPUGenerator(o.seed);
    std::vector<torch::Tensor> params;
    for (auto& [name, layer] : layers) {
        const torch::Tensor& W = layer->weight;
        const int64_t        m = W.size(0), n = matrix_cols(W);
        int64_t              r = o.rank;
        if (o.match_density > 0) {
            // Parameter-matched: r(m+n) ≈ K of SHiRA at the same density, per layer.
            r = std::max<int64_t>(1, std::llround((double)shira_k(W.numel(), o.match_density) / (double)(m + n)));
        }
        r                  = std::min(r, std::min(m, n));
        auto         slot  = std::make_shared<LoraSlot>();
        const auto   opts  = torch::TensorOptions().dtype(torch::kFloat32);
        const double bound = 1.0 / std::sqrt((double)n);  // PEFT: kaiming_uniform(a=√5) on A, zeros on B
        if (layer->kind == LAYER_KIND_LINEAR) {
            slot->A = torch::rand({r, n}, gen, opts).mul_(2 * bound).sub_(bound);
            slot->B = torch::zeros({m, r}, opts);
        } else {
            slot->A = torch::rand({r, layer->in_features, layer->kernel, layer->kernel}, gen, opts)
                          .mul_(2 * bound)
                          .sub_(bound);
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
