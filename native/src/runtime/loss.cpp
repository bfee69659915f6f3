// L_simple (loss.h; DDPM eq. 14, Algorithm 1), with ε, v or σ_d-v targets.
#include "runtime/loss.h"

torch::Tensor diffusion_loss(DiffusionModel& model, const NoiseSchedule& s, const torch::Tensor& x0,
                             const torch::Tensor& context, at::Generator& gen) {
    const int64_t B = x0.size(0);
    // 1. sample t ~ U{0..T-1} and ε ~ N(0, I) (Algorithm 1, lines 3-4)
    torch::Tensor t   = torch::randint(0, s.num_train_timesteps, {B}, gen, torch::kInt64);
    torch::Tensor eps = torch::randn(x0.sizes(), gen, torch::kFloat32).to(x0.device());
    torch::Tensor a   = s.alphas_cumprod.index_select(0, t).to(torch::kFloat32).to(x0.device()).view({B, 1, 1, 1});
    // 2. forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I) (eq. 4)
    torch::Tensor x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps;
    // 3. target: ε, or v = √ᾱ_t ε − √(1-ᾱ_t) x_0 (Salimans & Ho §4), generalised to σ_d (v_scales)
    if (s.prediction_type == PREDICTION_TYPE_V && s.sigma_data != 1.0) {
        const auto    ti = t.accessor<int64_t, 1>();
        torch::Tensor in = torch::empty({B}, torch::kFloat64), te = torch::empty({B}, torch::kFloat64),
                      tx = torch::empty({B}, torch::kFloat64);
        for (int64_t i = 0; i < B; ++i) {
            const VScales v = v_scales(s.alphas_cumprod[ti[i]].item<double>(), s.sigma_data);
            in[i] = v.in, te[i] = v.eps, tx[i] = v.x0;
        }
        auto col = [&](const torch::Tensor& c) { return c.to(torch::kFloat32).to(x0.device()).view({B, 1, 1, 1}); };
        torch::Tensor pred = model.predict(x_t * col(in), t.to(x0.device()), context);
        return torch::mse_loss(pred, col(te) * eps - col(tx) * x0);
    }
    torch::Tensor target = s.prediction_type == PREDICTION_TYPE_EPSILON ? eps : a.sqrt() * eps - (1 - a).sqrt() * x0;
    torch::Tensor pred   = model.predict(x_t, t.to(x0.device()), context);
    return torch::mse_loss(pred, target);
}
