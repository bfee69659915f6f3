// What every sampler shares, set up once per call by sample_images (runtime/sampler.cpp): the "leading" timestep
// spacing, classifier-free guidance on one batched UNet call, and the per-step cancel check. Each
// sampler_<name>.cpp turns x_T into x_0 with these; none draws random numbers (x_T is the only draw).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>

#include <torch/types.h>

#include "model/diffusion_model.h"
#include "runtime/sampler.h"
#include "runtime/schedule.h"

struct SamplerSteps {
    DiffusionModel&              model;
    const NoiseSchedule&         schedule;
    const SampleParams&          params;
    torch::Tensor                context;  // [2B, L, D]: the negative prompts (unconditional branch), then the prompts
    const std::function<bool()>& should_stop;

    // "leading" spacing with steps_offset = 1, as SD's scheduler configs: t_i = i·⌊T/steps⌋ + 1, i = steps−1 .. 0.
    int64_t ratio() const { return schedule.num_train_timesteps / params.steps; }
    int64_t timestep(int64_t i) const { return std::min(i * ratio() + 1, schedule.num_train_timesteps - 1); }
    void    check_stop() const;  // CANCELLED when should_stop says so
    // Model output with classifier-free guidance: out_u + w (out_c − out_u). The two branches share one
    // batched UNet call on [x; x] with context [uncond; cond] ([2B, L, D]).
    torch::Tensor guided_output(const torch::Tensor& x_in, int64_t t) const;
};

torch::Tensor sample_ddim(const SamplerSteps& steps, torch::Tensor x_T);   // sampler_ddim.cpp
torch::Tensor sample_euler(const SamplerSteps& steps, torch::Tensor x_T);  // sampler_euler.cpp
