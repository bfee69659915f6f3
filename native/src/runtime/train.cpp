// The training loop (train.h), in numbered steps: what is trained; optimiser, EMA and samples; the steps;
// detach and write.
#include "runtime/train.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "adapter/lora.h"
#include "adapter/masks.h"
#include "adapter/shira.h"
#include "adapter/sparse_grad.h"
#include "core/autocast.h"
#include "core/errors.h"
#include "core/timing.h"
#include "model_io/adapter_file.h"
#include "model_io/model_file.h"
#include "model_io/safetensors.h"
#include "runtime/checkpoint.h"
#include "runtime/loss.h"
#include "runtime/sampler.h"
#include "runtime/train_data.h"

using Json = nlohmann::json;

Json train_run(DiffusionModel& model, const TrainParams& p, const Dataset& data, const std::string& base_identity,
               const TrainHooks& hooks) {
    NoiseSchedule noise = noise_schedule_init(model.config.diffusion);
    at::Generator gen   = at::detail::createCPUGenerator(p.seed);
    torch::manual_seed(p.seed);
    const int64_t N = data.images.size(0), batch = p.batch;
    if (p.category_balance > 0 && data.categories.empty())
        throw_bad_input("category_balance needs a dataset with metadata 'categories'");
    const torch::Tensor pick_weights =
        p.category_balance > 0 ? category_weights(data.categories, p.category_balance) : torch::Tensor();
    constexpr int64_t kMaxTags = 16;
    // Every random draw of a step comes from `gen` in a fixed order (pick, drop, [tags], flip, t, ε), so
    // its state alone fixes the rest of the run (checkpoint/resume). Options left at 0 draw nothing, so
    // runs without them keep the stream they always had.
    auto batch_loss = [&]() {
        torch::Tensor pick = p.category_balance > 0 ? torch::multinomial(pick_weights, batch, true, gen)
                                                    : torch::randint(0, N, {batch}, gen, torch::kInt64);
        torch::Tensor drop = torch::rand({batch}, gen);
        torch::Tensor tag_u =
            p.caption_tag_dropout > 0 ? torch::rand({batch, kMaxTags}, gen).contiguous() : torch::Tensor();
        std::vector<std::string> caps;
        for (int64_t i = 0; i < batch; ++i) {
            // Caption dropout trains the unconditional branch that classifier-free guidance needs.
            const std::string& caption = data.captions[pick[i].item<int64_t>()];
            if (drop[i].item<double>() < p.caption_dropout) {
                caps.push_back("");
            } else if (p.caption_tag_dropout > 0) {
                caps.push_back(caption_drop_tags(caption, tag_u.data_ptr<float>() + i * kMaxTags, kMaxTags,
                                                 p.caption_tag_dropout, p.caption_keep_words));
            } else {
                caps.push_back(caption);
            }
        }
        torch::Tensor x0 = data.images.index_select(0, pick.to(model.device));
        if (p.flip) {
            torch::Tensor f = (torch::rand({batch}, gen) < 0.5).to(model.device).view({batch, 1, 1, 1});
            x0              = torch::where(f, x0.flip({3}), x0);
        }
        return diffusion_loss(model, noise, x0, model.text->encode(caps), gen);
    };

    // 1. what is trained: the optimiser's parameters and, by checkpoint name, the tensors a checkpoint holds
    std::vector<torch::Tensor>                         params;
    std::vector<std::pair<std::string, torch::Tensor>> named;
    std::vector<Adapter>                               excluded;
    switch (p.method) {
        case TRAIN_METHOD_SHIRA: {
            ShiraOptions o = p.shira;
            for (const auto& path : p.exclude) excluded.push_back(adapter_load(path));
            for (const auto& a : excluded) o.exclude.push_back(&a);
            std::map<std::string, torch::Tensor> scores;
            if (o.mask == MASK_TYPE_GRAD || o.mask == MASK_TYPE_SNIP) {
                scores = shira_calibrate(model, o.targets, o.mask, p.calib_batches, batch_loss);
            }
            params = shira_attach(model, o, scores);
            break;
        }
        case TRAIN_METHOD_LORA: params = lora_attach(model, p.lora); break;
        case TRAIN_METHOD_FULL:
            for (auto& [name, w] : model.named_parameters()) {
                w.set_requires_grad(true);
                params.push_back(w);
                named.emplace_back(name, w);
            }
            break;
    }
    int64_t trainable = 0;
    for (const auto& w : params) trainable += w.numel();
    const Json     method_json = train_method_json(p);
    CheckpointInfo ck_info;
    ck_info.method = train_method_name(p.method);
    for (auto& [name, l] : model.layers()) {
        if (l->shira) {
            named.emplace_back(name, l->shira->values);
            ck_info.mask_checksums[name] = checksum_hex(shira_index_checksum(l->shira->idx));
        }
        if (l->lora) {
            named.emplace_back(name + ".lora_A", l->lora->A);
            named.emplace_back(name + ".lora_B", l->lora->B);
        }
    }
    if (p.method != TRAIN_METHOD_FULL) ck_info.settings = method_json.dump();
    // The path grad_path auto settled on per SHiRA layer, so a resumed run computes the same gradients.
    auto chosen_paths = [&] {
        Json j = Json::object();
        for (auto& [name, l] : model.layers()) {
            if (l->shira && l->shira->chosen != GRAD_PATH_AUTO) j[name] = grad_path_name(l->shira->chosen);
        }
        return j;
    };

    // 2. optimiser, EMA, samples
    // AdamW without weight decay (paper Table 9; decay would pull trained entries toward 0, not W0).
    torch::optim::AdamW opt(params, torch::optim::AdamWOptions(p.lr).weight_decay(0.0));
    // EMA of the full model's weights (what `out` saves when on). Decay warms up as min(d, (1+n)/(10+n)),
    // diffusers' EMAModel default, so early averages are not dominated by the random init.
    std::map<std::string, torch::Tensor> ema;
    if (p.ema > 0) {
        for (const auto& [name, w] : named) ema[name] = w.detach().clone();
    }
    auto ema_update = [&](int64_t n) {
        torch::NoGradGuard no_grad;
        const double       d = std::min(p.ema, (1.0 + (double)n) / (10.0 + (double)n));
        for (const auto& [name, w] : named) ema.at(name).mul_(d).add_(w.detach(), 1.0 - d);
    };
    // Samples of the weights as they are now (EMA weights when EMA is on); sampling draws only from its
    // own seeded generator, so it does not disturb the training stream.
    auto emit_sample = [&](int64_t step) {
        torch::NoGradGuard                   no_grad;
        std::map<std::string, torch::Tensor> live;
        if (!ema.empty()) {
            for (const auto& [name, w] : named) {
                live[name] = w.detach().clone();
                w.detach().copy_(ema.at(name));
            }
        }
        torch::Tensor images = sample_images(model, noise, p.sample, hooks.should_stop);
        for (const auto& [name, w] : live) model.named_parameters().at(name).detach().copy_(w);
        std::error_code ec;
        std::filesystem::create_directories(p.sample_dir, ec);
        if (ec)
            throw WorkerError(ERROR_TYPE_BAD_INPUT, "cannot create sample_dir '" + p.sample_dir + "': " + ec.message());
        const std::string path = p.sample_dir + "/step_" + std::to_string(step) + ".safetensors";
        safetensors_save(path, {{"images", images}},
                         {{"step", std::to_string(step)},
                          {"prompts", Json(p.sample.prompts).dump()},
                          {"seed", std::to_string(p.sample.seed)}});
        hooks.emit({{"event", "sample"}, {"step", step}, {"path", path}});
    };

    // bf16 autocast on CUDA (issue 3), for the whole run; CPU runs never enable it.
    const bool   use_autocast = model.device.is_cuda() && p.bf16;
    CudaAutocast autocast_scope(use_autocast);

    // 3. the steps (after restoring a checkpoint)
    const double t_start   = now_ms();
    double       last_loss = 0, first_loss = -1;
    bool         cancelled = false;
    int64_t      step = 0, start_step = 0;
    try {
        if (!p.resume.empty()) {
            std::map<std::string, std::string> ck_meta;
            start_step = checkpoint_load(p.resume, named, opt, ema, gen, p.steps, ck_info, ck_meta);
            if (p.method == TRAIN_METHOD_SHIRA) {
                Json saved = Json::parse(ck_meta.count("grad_paths") ? ck_meta["grad_paths"] : "{}", nullptr, false);
                for (auto& [name, l] : model.layers()) {
                    if (!l->shira || l->shira->path != GRAD_PATH_AUTO || !saved.is_object() || !saved.contains(name))
                        continue;
                    l->shira->chosen = saved[name] == "sparse" ? GRAD_PATH_SPARSE : GRAD_PATH_DENSE;
                }
                shira_write_values(model);  // the fused weights must hold W0 + the restored values
            }
        }
        for (step = start_step + 1; step <= p.steps; ++step) {
            if (hooks.should_stop && hooks.should_stop()) {
                cancelled = true;
                break;
            }
            const double lr_t = p.schedule == LR_SCHEDULE_COSINE
                                    ? p.lr * 0.5 * (1.0 + std::cos(M_PI * (double)(step - 1) / (double)p.steps))
                                    : p.lr;
            for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr_t);
            double loss_sum = 0;
            for (int64_t a = 0; a < p.grad_accum; ++a) {
                torch::Tensor loss = batch_loss() / (double)p.grad_accum;
                loss.backward();
                loss_sum += loss.item<double>();
            }
            opt.step();
            opt.zero_grad();
            if (p.method == TRAIN_METHOD_SHIRA) shira_write_values(model);
            if (!ema.empty()) ema_update(step);
            last_loss = loss_sum;
            if (first_loss < 0) first_loss = loss_sum;
            if (!std::isfinite(last_loss))
                throw WorkerError(ERROR_TYPE_INTERNAL, "loss became non-finite at step " + std::to_string(step));
            if (step % p.progress_every == 0 || step == p.steps) {
                const double elapsed = (now_ms() - t_start) / 1000.0,
                             it_s    = (double)(step - start_step) / std::max(elapsed, 1e-9);
                hooks.emit({{"event", "progress"},
                            {"step", step},
                            {"steps", p.steps},
                            {"loss", last_loss},
                            {"it_s", it_s},
                            {"eta_s", (double)(p.steps - step) / it_s}});
            }
            if (p.sample_every > 0 && (step % p.sample_every == 0 || step == p.steps)) emit_sample(step);
            if (p.checkpoint_every > 0 && (step % p.checkpoint_every == 0 || step == p.steps)) {
                checkpoint_save(p.checkpoint, model, named, opt, ema, gen, step, p.steps, p.seed, ck_info,
                                chosen_paths());
                hooks.emit({{"event", "checkpoint"}, {"step", step}, {"path", p.checkpoint}});
            }
        }
    } catch (...) {
        if (p.method == TRAIN_METHOD_SHIRA) shira_detach(model);
        if (p.method == TRAIN_METHOD_LORA) lora_detach(model);
        set_requires_grad(model, false);
        throw;
    }

    // 4. detach (W0 back bit for bit) and write `out`
    // Grad-path choices, reported so benchmarks can say which path won per layer shape.
    Json paths = Json::array();
    for (auto& [name, l] : model.layers()) {
        if (!l->shira) continue;
        const auto& s = *l->shira;
        paths.push_back({{"layer", name},
                         {"shape", l->weight.sizes().vec()},
                         {"k", s.idx.numel()},
                         {"path", grad_path_name(s.chosen)},
                         {"sparse_ms", s.sparse_ms},
                         {"dense_ms", s.dense_ms},
                         {"dense_dw_bytes", l->weight.numel() * 4}});
    }
    Adapter adapter;
    if (p.method == TRAIN_METHOD_SHIRA) adapter = shira_detach(model);
    if (p.method == TRAIN_METHOD_LORA) adapter = lora_detach(model);
    set_requires_grad(model, false);
    if (cancelled) throw WorkerError(ERROR_TYPE_CANCELLED, "train cancelled before step " + std::to_string(step));
    if (p.method == TRAIN_METHOD_FULL) {
        if (!ema.empty()) {
            torch::NoGradGuard no_grad;
            for (const auto& [name, w] : named) w.detach().copy_(ema.at(name));
        }
        model_save(model, p.out);
    } else {
        adapter.metadata = {{"model", model.config.name},       {"method", method_json.dump()},
                            {"steps", std::to_string(p.steps)}, {"seed", std::to_string(p.seed)},
                            {"lr", std::to_string(p.lr)},       {"base_identity", base_identity}};
        if (p.method == TRAIN_METHOD_SHIRA) {
            adapter.metadata["mask"]    = mask_type_name(p.shira.mask);
            adapter.metadata["density"] = std::to_string(p.shira.density);
            // Candidates only: adapter_save stores a mask as "rand" when it regenerates exactly (not with exclude).
            if (p.shira.mask == MASK_TYPE_RAND) {
                for (auto& [name, t] : adapter.shira) t.rand_seed = shira_layer_seed(p.seed, name);
            }
        }
        adapter_save(adapter, p.out, p.values_dtype);
    }
    return {{"out", p.out},
            {"steps", p.steps},
            {"start_step", start_step},
            {"first_loss", first_loss},
            {"final_loss", last_loss},
            {"trainable", trainable},
            {"ema", p.ema},
            {"autocast_bf16", use_autocast},
            {"seconds", (now_ms() - t_start) / 1000.0},
            {"grad_paths", paths}};
}
