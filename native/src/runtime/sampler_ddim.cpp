// DDIM with η = 0 (Song et al. 2021, arXiv 2010.02502, eq. 12), as diffusers' DDIMScheduler with clip_sample:
// x̂_0 is clipped to the pixel range and ε̂ re-derived from it. ε- or v-prediction (with σ_d, runtime/schedule.h).
#include <cmath>

#include "runtime/sampler_steps.h"

torch::Tensor sample_ddim(const SamplerSteps& steps, torch::Tensor x) {
    const NoiseSchedule& s = steps.schedule;
    for (int64_t i = steps.params.steps - 1; i >= 0; --i) {
        steps.check_stop();
        const int64_t t      = steps.timestep(i);
        const int64_t t_prev = t - steps.ratio();
        // 1. compute alphas
        const double alpha_prod_t      = s.alphas_cumprod[t].item<double>();
        const double alpha_prod_t_prev = t_prev >= 0 ? s.alphas_cumprod[t_prev].item<double>() : 1.0;
        const double beta_prod_t       = 1.0 - alpha_prod_t;
        // 2. model output with classifier-free guidance: ε̂ = ε_u + w (ε_c − ε_u)
        const bool    v_pred       = s.prediction_type == PREDICTION_TYPE_V;
        const VScales vs           = v_scales(alpha_prod_t, v_pred ? s.sigma_data : 1.0);
        torch::Tensor model_output = steps.guided_output(vs.in == 1.0 ? x : x * vs.in, t);
        // 3. predicted x_0 (DDIM eq. 12, "predicted x_0") from either parameterisation; ε̂ follows from it below
        torch::Tensor pred_x0, pred_eps;
        if (!v_pred) {
            pred_eps = model_output;
            pred_x0  = (x - std::sqrt(beta_prod_t) * pred_eps) / std::sqrt(alpha_prod_t);
        } else {
            pred_x0 = vs.skip * x - vs.out * model_output;
        }
        // Pixel space: clip x̂_0 to the data range and re-derive ε̂ (diffusers' clip_sample).
        pred_x0  = pred_x0.clamp(-1.0, 1.0);
        pred_eps = (x - std::sqrt(alpha_prod_t) * pred_x0) / std::sqrt(beta_prod_t);
        // 4. x_{t-1} = √ᾱ_{t-1} x̂_0 + √(1-ᾱ_{t-1}) ε̂  (DDIM eq. 12 with σ_t = 0)
        x = std::sqrt(alpha_prod_t_prev) * pred_x0 + std::sqrt(1.0 - alpha_prod_t_prev) * pred_eps;
    }
    return x;
}
