// Euler on the variance-exploding view of the DDPM chain (Karras et al. 2022, arXiv 2206.00364, Algorithm 1
// without churn; k-diffusion's sample_euler): x = x_0 + σ ε with σ_t = √((1−ᾱ_t)/ᾱ_t), the UNet sees
// x/√(σ²+σ_d²) (= the DDPM x_t for σ_d = 1), and the denoised estimate is clipped to the pixel range like DDIM's.
#include <cmath>

#include "runtime/sampler_steps.h"

torch::Tensor sample_euler(const SamplerSteps& steps, torch::Tensor x) {
    const NoiseSchedule& s        = steps.schedule;
    auto                 sigma_of = [&](int64_t t) {
        const double a = s.alphas_cumprod[t].item<double>();
        return std::sqrt((1.0 - a) / a);
    };
    x = x * sigma_of(steps.timestep(steps.params.steps - 1));  // x_T at σ_max
    for (int64_t i = steps.params.steps - 1; i >= 0; --i) {
        steps.check_stop();
        const int64_t t          = steps.timestep(i);
        const double  sigma      = sigma_of(t);
        const double  sigma_next = i > 0 ? sigma_of(steps.timestep(i - 1)) : 0.0;
        const double  sd         = s.prediction_type == PREDICTION_TYPE_EPSILON ? 1.0 : s.sigma_data;
        const double  c_in       = 1.0 / std::sqrt(sigma * sigma + sd * sd);
        torch::Tensor out        = steps.guided_output(x * c_in, t);
        // Denoised D(x; σ): ε-pred x − σ ε̂; v-pred c_skip x + c_out v̂ with c_skip = σ_d²/(σ²+σ_d²),
        // c_out = −σσ_d/√(σ²+σ_d²) (σ_d = 1: plain v-prediction).
        torch::Tensor denoised = s.prediction_type == PREDICTION_TYPE_EPSILON
                                     ? x - sigma * out
                                     : x * (sd * sd * c_in * c_in) - out * (sigma * sd * c_in);
        denoised               = denoised.clamp(-1.0, 1.0);  // pixel space: same clip as DDIM's clip_sample
        // dx/dσ = (x − D)/σ, one Euler step to σ_next (σ_next = 0 lands on D).
        x = x + (x - denoised) / sigma * (sigma_next - sigma);
    }
    return x;
}
