// Noise schedule and v-prediction scales (schedule.h).
#include "runtime/schedule.h"

#include <cmath>

NoiseSchedule noise_schedule_init(const DiffusionConfig& c) {
    NoiseSchedule s;
    s.num_train_timesteps = c.num_train_timesteps;
    s.prediction_type     = c.prediction_type;
    s.sigma_data          = c.sigma_data;
    const auto    f64     = torch::TensorOptions().dtype(torch::kFloat64);
    torch::Tensor betas;
    if (c.beta_schedule == "scaled_linear") {
        // SD's schedule: linear in √β.
        betas = torch::linspace(std::sqrt(c.beta_start), std::sqrt(c.beta_end), c.num_train_timesteps, f64).pow(2);
    } else {
        betas = torch::linspace(c.beta_start, c.beta_end, c.num_train_timesteps, f64);
    }
    s.alphas_cumprod = torch::cumprod(1.0 - betas, 0);
    return s;
}

VScales v_scales(double a, double d) {
    if (d == 1.0) return {1.0, std::sqrt(a), std::sqrt(1.0 - a), std::sqrt(a), std::sqrt(1.0 - a)};
    const double D = 1.0 - a + a * d * d, sD = std::sqrt(D);
    return {1.0 / sD, d * d * std::sqrt(a) / D, std::sqrt(1.0 - a) * d / sD, d * std::sqrt(a) / sD,
            std::sqrt(1.0 - a) / (d * sD)};
}
