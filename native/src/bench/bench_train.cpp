// The "train" benchmark: per-step time and peak memory of every training method on one model (bench.h).
#include <algorithm>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "adapter/lora.h"
#include "adapter/shira.h"
#include "adapter/sparse_grad.h"
#include "bench/bench_cases.h"
#include "core/autocast.h"
#include "core/device.h"
#include "core/errors.h"
#include "core/json_args.h"
#include "core/memory.h"
#include "core/timing.h"
#include "runtime/loss.h"

using Json = nlohmann::json;

namespace {

struct TrainCase {
    std::string method;  // shira | lora | full
    MaskType    mask = MASK_TYPE_STRUCT;
    GradPath    path = GRAD_PATH_DENSE;
};

Json bench_train_case(DiffusionModel& model, const std::string& model_name, const TrainCase& c, const Json& common,
                      int64_t batch, int64_t warmup, int64_t reps, double density, bool bf16, torch::Device device,
                      const std::function<bool()>& should_stop) {
    const int64_t S   = model.config.unet.sample_size;
    at::Generator gen = at::detail::createCPUGenerator(0);
    // A fixed random batch: step time does not depend on the pixel values.
    torch::Tensor            x0 = (torch::rand({batch, 3, S, S}, gen) * 2 - 1).to(device);
    std::vector<std::string> caps(batch, "a red square");
    NoiseSchedule            noise   = noise_schedule_init(model.config.diffusion);
    auto                     loss_fn = [&] { return diffusion_loss(model, noise, x0, model.text->encode(caps), gen); };

    Json row         = common;
    row["name"]      = "train";
    row["method"]    = c.method;
    row["batch"]     = batch;
    row["size"]      = S;
    row["precision"] = bf16 ? "bf16" : "fp32";
    if (c.method == "shira") {
        row["mask"]      = mask_type_name(c.mask);
        row["grad_path"] = grad_path_name(c.path);
        row["density"]   = density;
    }
    if (c.method == "lora") row["match_density"] = density;

    int64_t model_params = 0;
    for (const auto& [_, p] : model.named_parameters()) model_params += p.numel();
    if (c.method == "full" && !device.is_cuda()) {
        // fp32 weights + grads + two AdamW moments = 16 B/param before activations; skip rather than swap/OOM.
        const int64_t need = model_params * 16, avail = mem_available_bytes();
        if (avail > 0 && need > avail * 8 / 10) {
            row["skipped"] = "needs ~" + std::to_string(need >> 20) + " MiB for weights+grads+AdamW, " +
                             std::to_string(avail >> 20) + " MiB available";
            return row;
        }
    }

    const double               t_setup = now_ms();
    std::vector<torch::Tensor> params;
    if (c.method == "shira") {
        ShiraOptions o;
        o.mask      = c.mask;
        o.density   = density;
        o.grad_path = c.path;
        std::map<std::string, torch::Tensor> scores;
        if (c.mask == MASK_TYPE_GRAD || c.mask == MASK_TYPE_SNIP)
            scores = shira_calibrate(model, o.targets, c.mask, 1, loss_fn);
        params = shira_attach(model, o, scores);
    } else if (c.method == "lora") {
        LoraOptions o;
        o.match_density = density;
        params          = lora_attach(model, o);
    } else {
        for (auto& [_, p] : model.named_parameters()) {
            p.set_requires_grad(true);
            params.push_back(p);
        }
    }
    row["setup_ms"]   = now_ms() - t_setup;
    int64_t trainable = 0;
    for (const auto& p : params) trainable += p.numel();
    row["trainable"]    = trainable;
    row["model_params"] = model_params;

    std::vector<double> times;
    MemProbe            mem;
    try {
        torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-4).weight_decay(0.0));
        CudaAutocast        autocast_scope(bf16);  // the whole step, as in `train`
        mem_peak_reset(device, mem);
        for (int64_t i = 0; i < warmup + reps; ++i) {
            if (should_stop && should_stop()) throw WorkerError(ERROR_TYPE_CANCELLED, "bench cancelled");
            device_sync(device);
            const double  t0   = now_ms();
            torch::Tensor loss = loss_fn();
            loss.backward();
            opt.step();
            opt.zero_grad();
            if (c.method == "shira") shira_write_values(model);
            device_sync(device);
            if (i >= warmup) times.push_back(now_ms() - t0);
        }
        mem_peak_read(device, mem);
    } catch (...) {
        if (c.method == "shira") shira_detach(model);
        if (c.method == "lora") lora_detach(model);
        for (auto& [_, p] : model.named_parameters()) p.set_requires_grad(false);
        throw;
    }
    if (c.method == "shira") {
        // What the dense dW of every targeted weight would have needed (fp32) — the sparse path's saving.
        int64_t dense_dw = 0, sparse_layers = 0, layers = 0;
        for (auto& [_, l] : model.layers()) {
            if (!l->shira) continue;
            ++layers;
            dense_dw += l->weight.numel() * 4;
            if (l->shira->chosen == GRAD_PATH_SPARSE) ++sparse_layers;
        }
        row["dense_dw_bytes"] = dense_dw;
        row["layers"]         = layers;
        if (c.path == GRAD_PATH_AUTO) row["auto_sparse_layers"] = sparse_layers;
        shira_detach(model);
    }
    if (c.method == "lora") lora_detach(model);
    for (auto& [_, p] : model.named_parameters()) p.set_requires_grad(false);
    row["step_ms"]              = median(times);
    row["step_ms_min"]          = *std::min_element(times.begin(), times.end());
    row["steps_timed"]          = (int64_t)times.size();
    row["warmup"]               = warmup;
    row["peak_mem_bytes"]       = mem.peak_bytes;
    row["peak_mem_kind"]        = mem.kind;
    row["base_mem_bytes"]       = mem.base_bytes;
    row["peak_over_base_bytes"] = mem.peak_bytes - mem.base_bytes;
    return row;
}

}  // namespace

void bench_train_model(DiffusionModel& model, const std::string& name, const Json& common, const BenchContext& ctx) {
    const Json&            args   = ctx.args;
    const bool             quick  = ctx.quick;
    const int64_t          batch  = get_int(args, "batch", name == "sd15" ? 1 : (quick ? 2 : 4), 1, 256);
    const int64_t          warmup = get_int(args, "warmup", 1, 0, 100);
    const int64_t          reps   = get_int(args, "reps", quick ? 2 : (name == "sd15" ? 3 : 5), 1, 1000);
    std::vector<TrainCase> cases;
    for (MaskType m : {MASK_TYPE_STRUCT, MASK_TYPE_RAND, MASK_TYPE_WM, MASK_TYPE_GRAD, MASK_TYPE_SNIP})
        cases.push_back({"shira", m, GRAD_PATH_DENSE});
    if (!quick) {
        // End-to-end comparison of the gradient paths (sparse everywhere it applies; auto = per-layer timing).
        for (MaskType m : {MASK_TYPE_STRUCT, MASK_TYPE_RAND}) {
            cases.push_back({"shira", m, GRAD_PATH_SPARSE});
            cases.push_back({"shira", m, GRAD_PATH_AUTO});
        }
    }
    cases.push_back({"lora", MASK_TYPE_STRUCT, GRAD_PATH_DENSE});
    cases.push_back({"full", MASK_TYPE_STRUCT, GRAD_PATH_DENSE});  // last: it changes the weights
    for (const auto& c : cases) {
        ctx.stop_check();
        ctx.push(bench_train_case(model, name, c, common, batch, warmup, reps, ctx.density, ctx.bf16, ctx.device,
                                  ctx.should_stop));
    }
}
