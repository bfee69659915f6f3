// Sampling: x_T ~ N(0, I) from the seed, then one sampler's reverse steps over "leading" timesteps with
// classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598), decoded to uint8 images. One file per
// sampler (sampler_ddim.cpp, sampler_euler.cpp); what they share is in sampler_steps.h. A new sampler is an
// enum value here, a name in str_to_sampler_type, a sampler_<name>.cpp and a case in sample_images.
// Mirrored by src/main/core/ort/sampler.ts (the ONNX path draws the same image for the same noise; its parity
// tests in tests/unit/ort.test.ts fail when the two drift apart).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "model/diffusion_model.h"
#include "runtime/schedule.h"

enum SamplerType {
    SAMPLER_TYPE_DDIM,   // DDIM η = 0 (Song et al. 2021, arXiv 2010.02502, eq. 12)
    SAMPLER_TYPE_EULER,  // Euler on the DDPM σ_t = √((1−ᾱ_t)/ᾱ_t) (Karras et al. 2022, Alg. 1 without churn)
};
SamplerType str_to_sampler_type(const std::string& name);  // "ddim" | "euler", else BAD_INPUT

struct SampleParams {
    SamplerType              sampler = SAMPLER_TYPE_DDIM;
    std::vector<std::string> prompts;          // one per image; repeated to fill `batch` if shorter
    std::string              negative_prompt;  // the unconditional branch of CFG
    int64_t                  batch    = 1;
    int64_t                  steps    = 20;
    double                   guidance = 5.0;
    int64_t                  size     = 0;  // 0 = model sample_size
    uint64_t                 seed     = 0;
};

// DDIM (η = 0) or Euler, both with "leading" timestep spacing as in SD and classifier-free guidance.
// Returns uint8 [B, H, W, 3]. `should_stop` is polled once per step (may be empty). Deterministic for a
// seed on one device: the only random draw is x_T from a CPU generator seeded with params.seed.
torch::Tensor sample_images(DiffusionModel& model, const NoiseSchedule& schedule, const SampleParams& params,
                            const std::function<bool()>& should_stop = {});
