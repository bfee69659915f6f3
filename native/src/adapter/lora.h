// LoRA training on the model's adaptable layers (Hu et al. 2021, arXiv 2106.09685): y = base(x) + (alpha/r)·B(A(x)),
// unfused while training; LoCon-style for convolutions (A a conv with the base kernel, B a 1×1 conv). Initialised as
// PEFT does (kaiming-uniform A, zero B), and parameter-matched to SHiRA on request: r(m+n) ≈ K at the same density,
// the comparison the paper makes (§5). Blending a trained LoRA into the weights: adapter/mix.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "adapter/adapter.h"
#include "model/diffusion_model.h"

struct LoraOptions {
    int64_t                  rank          = 4;
    double                   alpha         = 4.0;
    double                   match_density = 0;  // > 0: parameter-matched, r = max(1, round(d·m·n / (m+n)))
    uint64_t                 seed          = 0;
    std::vector<std::string> targets       = kDefaultTargets;
};
std::vector<torch::Tensor> lora_attach(DiffusionModel& model, const LoraOptions& options);
Adapter                    lora_detach(DiffusionModel& model);
