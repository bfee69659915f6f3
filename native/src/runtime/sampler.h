// DDPM training objective and DDIM sampling with classifier-free guidance.
//
// References: DDPM, Ho et al. 2020 (arXiv 2006.11239); DDIM, Song et al. 2021 (arXiv 2010.02502);
// v-prediction, Salimans & Ho 2022 (arXiv 2202.00512); CFG, Ho & Salimans 2022 (arXiv 2207.12598).
// All random draws come from a CPU generator and are then moved to the model's device, so a seed
// gives the same noise on every device (results are still only bit-stable on one device).
#pragma once

#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "model/diffusion_model.h"

struct NoiseSchedule {
    torch::Tensor  alphas_cumprod;  // [T] fp64 on CPU: ᾱ_t = Π_{s≤t} (1 − β_s)
    int64_t        num_train_timesteps = 1000;
    PredictionType prediction_type = PREDICTION_TYPE_EPSILON;
    double         sigma_data = 1.0;  // v-prediction's σ_d (DiffusionConfig::sigma_data)
};

NoiseSchedule noise_schedule_init(const DiffusionConfig& config);

// v-prediction with σ_d in DDPM terms at ᾱ (D = 1 − ᾱ + ᾱσ_d²): the UNet input is `in`·x_t,
// x̂_0 = skip·x_t − out·v̂, and the training target is v = eps·ε − x0·x_0. σ_d = 1 gives exactly
// in = 1, skip = √ᾱ, out = √(1−ᾱ), v = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho).
struct VScales {
    double in, skip, out, eps, x0;
};
VScales v_scales(double alpha_prod, double sigma_data);

// uint8 [N, H, W, 3] -> fp32 [N, 3, H, W] in [-1, 1] (and back, clamped and rounded).
torch::Tensor images_to_model(const torch::Tensor& images_u8);
torch::Tensor images_from_model(const torch::Tensor& x);

// bf16 autocast on CUDA for one scope (a training run, a benchmark case): matmuls and convolutions run in bf16
// while weights, SHiRA values, LoRA factors and optimiser state stay fp32. Autocast is thread-local; `on` is
// false on CPU (never enabled there), and the destructor switches it off and drops its cast cache on every exit.
class CudaAutocast {
public:
    explicit CudaAutocast(bool on);
    ~CudaAutocast();
    // Whether CUDA autocast is on in this thread (a scope above, or anything else that enabled it).
    static bool active();
    CudaAutocast(const CudaAutocast&)            = delete;
    CudaAutocast& operator=(const CudaAutocast&) = delete;

private:
    bool on_;
};

// Simple loss L_simple (DDPM eq. 14) on a batch: x0 [B, 3, H, W] in [-1, 1], context [B, L, D].
torch::Tensor diffusion_loss(DiffusionModel& model, const NoiseSchedule& schedule, const torch::Tensor& x0,
                             const torch::Tensor& context, at::Generator& gen);

enum SamplerType {
    SAMPLER_TYPE_DDIM,   // DDIM η = 0 (Song et al. eq. 12)
    SAMPLER_TYPE_EULER,  // Euler on the DDPM σ_t = √((1−ᾱ_t)/ᾱ_t) (Karras et al. 2022, Alg. 1 without churn)
};
SamplerType str_to_sampler_type(const std::string& name);  // "ddim" | "euler", else BAD_INPUT

struct SampleParams {
    SamplerType              sampler = SAMPLER_TYPE_DDIM;
    std::vector<std::string> prompts;          // one per image; repeated to fill `batch` if shorter
    std::string              negative_prompt;  // the unconditional branch of CFG
    int64_t                  batch = 1;
    int64_t                  steps = 20;
    double                   guidance = 5.0;
    int64_t                  size = 0;  // 0 = model sample_size
    uint64_t                 seed = 0;
};

// DDIM (η = 0) or Euler, both with "leading" timestep spacing as in SD and classifier-free guidance.
// Returns uint8 [B, H, W, 3]. `should_stop` is polled once per step (may be empty). Deterministic for a
// seed on one device: the only random draw is x_T from a CPU generator seeded with params.seed.
torch::Tensor sample_images(DiffusionModel& model, const NoiseSchedule& schedule, const SampleParams& params,
                            const std::function<bool()>& should_stop = {});
// Kept name: sample_images with whatever params.sampler says.
inline torch::Tensor ddim_sample(DiffusionModel& model, const NoiseSchedule& schedule, const SampleParams& params,
                                 const std::function<bool()>& should_stop = {}) {
    return sample_images(model, schedule, params, should_stop);
}
