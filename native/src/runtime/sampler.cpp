#include "runtime/sampler.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include "core/errors.h"

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
    return {1.0 / sD, d * d * std::sqrt(a) / D, std::sqrt(1.0 - a) * d / sD, d * std::sqrt(a) / sD, std::sqrt(1.0 - a) / (d * sD)};
}

torch::Tensor images_to_model(const torch::Tensor& images_u8) {
    return images_u8.permute({0, 3, 1, 2}).to(torch::kFloat32).div(127.5).sub(1.0);
}

torch::Tensor images_from_model(const torch::Tensor& x) {
    return x.detach().to(torch::kCPU, torch::kFloat32).add(1.0).mul(127.5).round().clamp(0, 255).to(torch::kUInt8)
        .permute({0, 2, 3, 1}).contiguous();
}

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

SamplerType str_to_sampler_type(const std::string& name) {
    if (name == "ddim") return SAMPLER_TYPE_DDIM;
    if (name == "euler") return SAMPLER_TYPE_EULER;
    throw_bad_input("unknown sampler '" + name + "' (allowed: ddim, euler)");
}

namespace {

// Model output with classifier-free guidance: out_u + w (out_c − out_u). The two branches share one
// batched UNet call on [x; x] with context [uncond; cond] ([2B, L, D]).
torch::Tensor guided_output(DiffusionModel& model, const torch::Tensor& x_in, int64_t t, const torch::Tensor& context,
                            double guidance) {
    const int64_t B  = x_in.size(0);
    torch::Tensor tt = torch::full({2 * B}, t, torch::TensorOptions().dtype(torch::kInt64).device(model.device));
    auto          out = model.predict(torch::cat({x_in, x_in}, 0), tt, context).chunk(2, 0);
    return out[0] + guidance * (out[1] - out[0]);
}

}  // namespace

torch::Tensor sample_images(DiffusionModel& model, const NoiseSchedule& s, const SampleParams& p,
                            const std::function<bool()>& should_stop) {
    if (p.batch < 1 || p.batch > 64) throw_bad_input("sample: batch must be in 1..64");
    if (p.steps < 1 || p.steps > s.num_train_timesteps) throw_bad_input("sample: steps must be in 1..num_train_timesteps");
    const int64_t size = p.size > 0 ? p.size : model.config.unet.sample_size;
    const int64_t down = 1ll << (model.config.unet.block_out_channels.size() - 1);
    if (size % down != 0 || size > 1024) throw_bad_input("sample: size must be a multiple of " + std::to_string(down) + " up to 1024");

    torch::NoGradGuard no_grad;
    std::vector<std::string> prompts;
    for (int64_t i = 0; i < p.batch; ++i) prompts.push_back(p.prompts.empty() ? "" : p.prompts[i % p.prompts.size()]);
    std::vector<std::string> negatives(p.batch, p.negative_prompt);
    torch::Tensor context = model.text->encode(negatives);
    context               = torch::cat({context, model.text->encode(prompts)}, 0);

    at::Generator gen = at::detail::createCPUGenerator(p.seed);
    // x_T ~ N(0, I) (scaled by σ_max for Euler below)
    torch::Tensor x = torch::randn({p.batch, model.config.unet.out_channels, size, size}, gen, torch::kFloat32).to(model.device);

    // "leading" spacing with steps_offset = 1, as SD's scheduler configs: t_i = i·⌊T/steps⌋ + 1.
    const int64_t ratio = s.num_train_timesteps / p.steps;
    auto timestep = [&](int64_t i) { return std::min(i * ratio + 1, s.num_train_timesteps - 1); };

    if (p.sampler == SAMPLER_TYPE_EULER) {
        // Variance-exploding view of the DDPM chain: x = x_0 + σ ε with σ_t = √((1−ᾱ_t)/ᾱ_t); the UNet sees
        // x/√(σ²+1) (= the DDPM x_t). Karras et al. 2022 Alg. 1 (no churn) / k-diffusion sample_euler.
        auto sigma_of = [&](int64_t t) {
            const double a = s.alphas_cumprod[t].item<double>();
            return std::sqrt((1.0 - a) / a);
        };
        x = x * sigma_of(timestep(p.steps - 1));
        for (int64_t i = p.steps - 1; i >= 0; --i) {
            if (should_stop && should_stop()) throw WorkerError(ERROR_TYPE_CANCELLED, "sample cancelled");
            const int64_t t          = timestep(i);
            const double  sigma      = sigma_of(t);
            const double  sigma_next = i > 0 ? sigma_of(timestep(i - 1)) : 0.0;
            const double  sd         = s.prediction_type == PREDICTION_TYPE_EPSILON ? 1.0 : s.sigma_data;
            const double  c_in       = 1.0 / std::sqrt(sigma * sigma + sd * sd);
            torch::Tensor out        = guided_output(model, x * c_in, t, context, p.guidance);
            // Denoised D(x; σ): ε-pred x − σ ε̂; v-pred c_skip x + c_out v̂ with c_skip = σ_d²/(σ²+σ_d²),
            // c_out = −σσ_d/√(σ²+σ_d²) (σ_d = 1: plain v-prediction).
            torch::Tensor denoised = s.prediction_type == PREDICTION_TYPE_EPSILON
                                         ? x - sigma * out
                                         : x * (sd * sd * c_in * c_in) - out * (sigma * sd * c_in);
            denoised = denoised.clamp(-1.0, 1.0);  // pixel space: same clip as DDIM's clip_sample
            // dx/dσ = (x − D)/σ, one Euler step to σ_next (σ_next = 0 lands on D).
            x = x + (x - denoised) / sigma * (sigma_next - sigma);
        }
        return images_from_model(x);
    }

    for (int64_t i = p.steps - 1; i >= 0; --i) {
        if (should_stop && should_stop()) throw WorkerError(ERROR_TYPE_CANCELLED, "sample cancelled");
        const int64_t t      = timestep(i);
        const int64_t t_prev = t - ratio;
        // 1. compute alphas
        const double alpha_prod_t      = s.alphas_cumprod[t].item<double>();
        const double alpha_prod_t_prev = t_prev >= 0 ? s.alphas_cumprod[t_prev].item<double>() : 1.0;
        const double beta_prod_t       = 1.0 - alpha_prod_t;
        // 2. model output with classifier-free guidance: ε̂ = ε_u + w (ε_c − ε_u)
        const bool    v_pred       = s.prediction_type == PREDICTION_TYPE_V;
        const VScales vs           = v_scales(alpha_prod_t, v_pred ? s.sigma_data : 1.0);
        torch::Tensor model_output = guided_output(model, vs.in == 1.0 ? x : x * vs.in, t, context, p.guidance);
        // 3. predicted x_0 (DDIM eq. 12, "predicted x_0") from either parameterisation; ε̂ follows from it below
        torch::Tensor pred_x0, pred_eps;
        if (!v_pred) {
            pred_eps = model_output;
            pred_x0  = (x - std::sqrt(beta_prod_t) * pred_eps) / std::sqrt(alpha_prod_t);
        } else {
            pred_x0  = vs.skip * x - vs.out * model_output;
        }
        // Pixel space: clip x̂_0 to the data range and re-derive ε̂ (diffusers' clip_sample).
        pred_x0  = pred_x0.clamp(-1.0, 1.0);
        pred_eps = (x - std::sqrt(alpha_prod_t) * pred_x0) / std::sqrt(beta_prod_t);
        // 4. x_{t-1} = √ᾱ_{t-1} x̂_0 + √(1-ᾱ_{t-1}) ε̂  (DDIM eq. 12 with σ_t = 0)
        x = std::sqrt(alpha_prod_t_prev) * pred_x0 + std::sqrt(1.0 - alpha_prod_t_prev) * pred_eps;
    }
    return images_from_model(x);
}

// libtorch 2.4 replaced the CUDA-only set_enabled/set_autocast_gpu_dtype/is_enabled with per-device calls and
// deprecated the old ones (a warning on every use), so each libtorch gets its own spelling.
#define SHIRA_PER_DEVICE_AUTOCAST (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))

namespace {
void set_cuda_autocast(bool on) {
#if SHIRA_PER_DEVICE_AUTOCAST
    if (on) at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, on);
#else
    if (on) at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(on);
#endif
}
}  // namespace

CudaAutocast::CudaAutocast(bool on) : on_(on) {
    if (on_) set_cuda_autocast(true);
}

bool CudaAutocast::active() {
#if SHIRA_PER_DEVICE_AUTOCAST
    return at::autocast::is_autocast_enabled(at::kCUDA);
#else
    return at::autocast::is_enabled();
#endif
}

CudaAutocast::~CudaAutocast() {
    if (!on_) return;
    set_cuda_autocast(false);
    at::autocast::clear_cache();
}
