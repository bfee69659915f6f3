// The DDPM noise schedule (Ho et al. 2020, arXiv 2006.11239, §2: β_t, ᾱ_t = Π_{s≤t} (1 − β_s)) with SD's
// "scaled_linear" betas (linear in √β) or plain "linear" ones, and the v-prediction scales generalised to EDM's
// data standard deviation σ_d (Salimans & Ho 2022, arXiv 2202.00512, §4; Karras et al. 2022, arXiv 2206.00364,
// Table 1). Shared by the training loss and every sampler. Mirrored by src/main/core/ort/sampler.ts (fp64 scalars).
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "model/config.h"

struct NoiseSchedule {
    torch::Tensor  alphas_cumprod;  // [T] fp64 on CPU: ᾱ_t = Π_{s≤t} (1 − β_s)
    int64_t        num_train_timesteps = 1000;
    PredictionType prediction_type     = PREDICTION_TYPE_EPSILON;
    double         sigma_data          = 1.0;  // v-prediction's σ_d (DiffusionConfig::sigma_data)
};

NoiseSchedule noise_schedule_init(const DiffusionConfig& config);

// v-prediction with σ_d in DDPM terms at ᾱ (D = 1 − ᾱ + ᾱσ_d²): the UNet input is `in`·x_t,
// x̂_0 = skip·x_t − out·v̂, and the training target is v = eps·ε − x0·x_0. σ_d = 1 gives exactly
// in = 1, skip = √ᾱ, out = √(1−ᾱ), v = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho).
struct VScales {
    double in, skip, out, eps, x0;
};
VScales v_scales(double alpha_prod, double sigma_data);
