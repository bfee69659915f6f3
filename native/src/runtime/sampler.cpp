// sample_images (sampler.h): checks, the CFG context, x_T from the seed, the chosen sampler's loop, images.
#include "runtime/sampler.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "model_io/images.h"
#include "runtime/sampler_steps.h"

SamplerType str_to_sampler_type(const std::string& name) {
    if (name == "ddim") return SAMPLER_TYPE_DDIM;
    if (name == "euler") return SAMPLER_TYPE_EULER;
    throw_bad_input("unknown sampler '" + name + "' (allowed: ddim, euler)");
}

void SamplerSteps::check_stop() const {
    if (should_stop && should_stop()) throw WorkerError(ERROR_TYPE_CANCELLED, "sample cancelled");
}

torch::Tensor SamplerSteps::guided_output(const torch::Tensor& x_in, int64_t t) const {
    const int64_t B   = x_in.size(0);
    torch::Tensor tt  = torch::full({2 * B}, t, torch::TensorOptions().dtype(torch::kInt64).device(model.device));
    auto          out = model.predict(torch::cat({x_in, x_in}, 0), tt, context).chunk(2, 0);
    return out[0] + params.guidance * (out[1] - out[0]);
}

torch::Tensor sample_images(DiffusionModel& model, const NoiseSchedule& s, const SampleParams& p,
                            const std::function<bool()>& should_stop) {
    if (p.batch < 1 || p.batch > 64) throw_bad_input("sample: batch must be in 1..64");
    if (p.steps < 1 || p.steps > s.num_train_timesteps)
        throw_bad_input("sample: steps must be in 1..num_train_timesteps");
    const int64_t size = p.size > 0 ? p.size : model.config.unet.sample_size;
    const int64_t down = 1ll << (model.config.unet.block_out_channels.size() - 1);
    if (size % down != 0 || size > 1024)
        throw_bad_input("sample: size must be a multiple of " + std::to_string(down) + " up to 1024");

    torch::NoGradGuard       no_grad;
    std::vector<std::string> prompts;
    for (int64_t i = 0; i < p.batch; ++i) prompts.push_back(p.prompts.empty() ? "" : p.prompts[i % p.prompts.size()]);
    std::vector<std::string> negatives(p.batch, p.negative_prompt);
    torch::Tensor            context = model.text->encode(negatives);
    context                          = torch::cat({context, model.text->encode(prompts)}, 0);

    at::Generator gen = at::detail::createCPUGenerator(p.seed);
    // x_T ~ N(0, I) (the Euler sampler scales it by σ_max)
    torch::Tensor x =
        torch::randn({p.batch, model.config.unet.out_channels, size, size}, gen, torch::kFloat32).to(model.device);

    const SamplerSteps steps{model, s, p, context, should_stop};
    switch (p.sampler) {  // no default: a new SamplerType without a case here is a compiler warning
        case SAMPLER_TYPE_DDIM: x = sample_ddim(steps, x); break;
        case SAMPLER_TYPE_EULER: x = sample_euler(steps, x); break;
    }
    return images_from_model(x);
}
