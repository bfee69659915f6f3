// The DDPM training objective L_simple (Ho et al. 2020, arXiv 2006.11239, eq. 14 and Algorithm 1) with ε- or
// v-prediction targets (Salimans & Ho 2022, §4, generalised to σ_d by v_scales). Mirrored by
// tests/reference/model.py's diffusion_loss (the PyTorch oracle of the gradients).
#pragma once

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include "model/diffusion_model.h"
#include "runtime/schedule.h"

// Simple loss L_simple (DDPM eq. 14) on a batch: x0 [B, 3, H, W] in [-1, 1], context [B, L, D]. The draws of
// t and ε come from `gen` (a CPU generator: the same noise on every device), t first.
torch::Tensor diffusion_loss(DiffusionModel& model, const NoiseSchedule& schedule, const torch::Tensor& x0,
                             const torch::Tensor& context, at::Generator& gen);
