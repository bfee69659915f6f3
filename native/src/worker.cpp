#include "worker.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <set>
#include <fstream>
#include <iostream>
#include <sys/stat.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>

#include "common.h"
#include "bench.h"
#include "diffusion.h"
#include "safetensors.h"

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// ---- argument access: every field is type- and range-checked, so bad input is a reply, not a crash

const Json& arg(const Json& args, const char* key) {
    if (!args.contains(key)) throw_bad_input(std::string("missing argument '") + key + "'");
    return args.at(key);
}

int64_t get_int(const Json& args, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
    if (!args.contains(key)) return fallback;
    const Json& v = args.at(key);
    if (!v.is_number_integer()) throw_bad_input(std::string("argument '") + key + "' must be an integer");
    if (v.is_number_unsigned() ? v.get<uint64_t>() > (uint64_t)hi : (v.get<int64_t>() < lo || v.get<int64_t>() > hi)) {
        throw_bad_input(std::string("argument '") + key + "' must be in " + std::to_string(lo) + ".." + std::to_string(hi));
    }
    return v.get<int64_t>();
}

double get_num(const Json& args, const char* key, double fallback, double lo, double hi) {
    if (!args.contains(key)) return fallback;
    const Json& v = args.at(key);
    if (!v.is_number()) throw_bad_input(std::string("argument '") + key + "' must be a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || d < lo || d > hi) {
        throw_bad_input(std::string("argument '") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return d;
}

std::string get_str(const Json& args, const char* key, const std::string& fallback) {
    if (!args.contains(key)) return fallback;
    if (!args.at(key).is_string()) throw_bad_input(std::string("argument '") + key + "' must be a string");
    return args.at(key).get<std::string>();
}

bool get_bool(const Json& args, const char* key, bool fallback) {
    if (!args.contains(key)) return fallback;
    if (!args.at(key).is_boolean()) throw_bad_input(std::string("argument '") + key + "' must be true or false");
    return args.at(key).get<bool>();
}

std::string need_str(const Json& args, const char* key) {
    arg(args, key);
    return get_str(args, key, "");
}

std::vector<std::string> get_str_list(const Json& args, const char* key, const std::vector<std::string>& fallback) {
    if (!args.contains(key)) return fallback;
    const Json& v = args.at(key);
    if (!v.is_array()) throw_bad_input(std::string("argument '") + key + "' must be an array of strings");
    std::vector<std::string> out;
    for (const auto& s : v) {
        if (!s.is_string()) throw_bad_input(std::string("argument '") + key + "' must be an array of strings");
        out.push_back(s.get<std::string>());
    }
    return out;
}

DiffusionModel& need_model(WorkerState& st) {
    if (!st.model) throw_bad_input("no model loaded (send load_model first)");
    return *st.model;
}

std::string temp_output(const std::string& stem) {
    static std::atomic<int> n{0};
    struct stat sb;
    const std::string dir = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
    return dir + "/shira-" + stem + "-" + std::to_string(getpid()) + "-" + std::to_string(n++) + ".safetensors";
}

int64_t rss_bytes() {
    const int64_t kib = proc_field_kib("/proc/self/status", "VmRSS:");
    return kib < 0 ? -1 : kib * 1024;
}

// ---- dataset: images uint8 [N, H, W, 3]; __metadata__["captions"] = JSON array of N strings

struct Dataset {
    torch::Tensor            images;  // fp32 [N, 3, H, W] in [-1, 1] on the model device
    std::vector<std::string> captions;
};

Dataset dataset_load(const std::string& path, const DiffusionModel& model) {
    SafeTensors st = safetensors_load(path);
    auto        it = st.tensors.find("images");
    if (it == st.tensors.end()) throw_bad_input("dataset '" + path + "' has no 'images' tensor");
    const torch::Tensor& im = it->second;
    if (im.scalar_type() != torch::kUInt8 || im.dim() != 4 || im.size(3) != 3 || im.size(0) < 1) {
        throw_bad_input("dataset 'images' must be uint8 [N, H, W, 3] with N >= 1");
    }
    const int64_t down = 1ll << (model.config.unet.block_out_channels.size() - 1);
    if (im.size(1) % down || im.size(2) % down) throw_bad_input("dataset image size must be a multiple of " + std::to_string(down));
    Dataset d;
    d.images = images_to_model(im).to(model.device);
    d.captions.assign(im.size(0), "");
    if (st.metadata.count("captions")) {
        Json caps;
        try {
            caps = Json::parse(st.metadata["captions"]);
        } catch (const std::exception&) {
            throw_bad_input("dataset captions are not JSON");
        }
        if (!caps.is_array() || (int64_t)caps.size() != im.size(0)) throw_bad_input("dataset captions must be an array of N strings");
        for (size_t i = 0; i < caps.size(); ++i) {
            if (!caps[i].is_string()) throw_bad_input("dataset captions must be strings");
            d.captions[i] = caps[i].get<std::string>();
        }
    }
    return d;
}

// ---- ops

Json op_info(WorkerState& st) {
    Json j = {{"version", SHIRA_WORKER_VERSION},
              {"device", st.device.str()},
              {"torch", TORCH_VERSION},
              {"cuda_available", torch::cuda::is_available()},
              {"rss_bytes", rss_bytes()},
              {"model_loaded", (bool)st.model},
              {"mix_active", st.mix.active()}};
    if (st.model) j["model"] = st.model->config.name;
    return j;
}

Json model_summary(const DiffusionModel& m) {
    int64_t params = 0;
    for (const auto& [_, p] : m.named_parameters()) params += p.numel();
    Json targets = Json::array();
    for (const auto& [name, l] : m.layers()) {
        if (layer_matches(name, kDefaultTargets)) targets.push_back({{"name", name}, {"shape", l->weight.sizes().vec()}});
    }
    return {{"name", m.config.name}, {"parameters", params}, {"default_targets", targets}, {"config", model_config_to_json(m.config)}};
}

Json op_load_model(WorkerState& st, const Json& args) {
    if (st.mix.active() && st.model) mix_clear(*st.model, st.mix);
    if (args.contains("path")) {
        st.model = model_load(need_str(args, "path"), st.device);
    } else if (args.contains("config")) {
        Json config = args.at("config");
        if (config.is_string()) {
            std::ifstream in(config.get<std::string>());
            if (!in) throw WorkerError(ERROR_TYPE_NOT_FOUND, "cannot open config '" + config.get<std::string>() + "'");
            try {
                config = Json::parse(in);
            } catch (const std::exception& e) {
                throw_bad_input(std::string("config is not JSON: ") + e.what());
            }
        }
        st.model = model_init(model_config_from_json(config), (uint64_t)get_int(args, "seed", 0, 0, INT64_MAX), st.device);
    } else {
        throw_bad_input("load_model needs 'path' (model .safetensors) or 'config' (object or JSON file)");
    }
    st.mix = MixState();
    st.adapters.clear();
    return model_summary(*st.model);
}

// ---- training helpers

// Prompts for sample_every: a JSON array, or one string that is either a JSON array or '|'-separated
// (prompts contain commas, so a comma list cannot work on the CLI).
std::vector<std::string> get_prompt_list(const Json& args, const char* key) {
    if (!args.contains(key)) return {};
    const Json& v = args.at(key);
    if (v.is_array()) return get_str_list(args, key, {});
    if (!v.is_string()) throw_bad_input(std::string("argument '") + key + "' must be an array of strings or a string");
    const std::string s = v.get<std::string>();
    if (!s.empty() && s[0] == '[') {
        Json parsed;
        try {
            parsed = Json::parse(s);
        } catch (const std::exception&) {
            throw_bad_input(std::string("argument '") + key + "' looks like JSON but does not parse");
        }
        return get_str_list(Json{{key, parsed}}, key, {});
    }
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= s.size()) {
        size_t end = s.find('|', start);
        if (end == std::string::npos) end = s.size();
        if (end > start) out.push_back(s.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

using AdamWState = torch::optim::AdamWParamState;

AdamWState* adam_state(torch::optim::AdamW& opt, const torch::Tensor& p) {
    auto it = opt.state().find(c10::guts::to_string(p.unsafeGetTensorImpl()));
    return it == opt.state().end() ? nullptr : static_cast<AdamWState*>(it->second.get());
}

// Checkpoint of a full fine-tune, one safetensors file written by temp+rename:
//   "param.<name>", "ema.<name>" (when EMA is on), "adam.exp_avg.<name>", "adam.exp_avg_sq.<name>" (after step 1),
//   "rng" uint8 = the data-order/noise CPU generator state; __metadata__: step, steps, seed, adam_step, config.
// Resuming restores all of it, so K/2 + resume + K/2 steps equal K straight steps bit for bit on CPU.
void checkpoint_save(const std::string& path, const DiffusionModel& model,
                     const std::vector<std::pair<std::string, torch::Tensor>>& named, torch::optim::AdamW& opt,
                     const std::map<std::string, torch::Tensor>& ema, at::Generator& gen, int64_t step, int64_t steps,
                     uint64_t seed) {
    std::map<std::string, torch::Tensor> t;
    int64_t                              adam_step = 0;
    for (const auto& [name, p] : named) {
        t["param." + name] = p.detach();
        if (auto* s = adam_state(opt, p)) {
            t["adam.exp_avg." + name]    = s->exp_avg();
            t["adam.exp_avg_sq." + name] = s->exp_avg_sq();
            adam_step                    = s->step();
        }
    }
    for (const auto& [name, e] : ema) t["ema." + name] = e;
    t["rng"] = gen.get_state();
    safetensors_save(path, t,
                     {{"format", "shira-studio-checkpoint"}, {"method", "full"}, {"step", std::to_string(step)},
                      {"steps", std::to_string(steps)}, {"seed", std::to_string(seed)},
                      {"adam_step", std::to_string(adam_step)}, {"config", model_config_to_json(model.config).dump()}});
}

// Returns the step the checkpoint was written after.
int64_t checkpoint_load(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& named,
                        torch::optim::AdamW& opt, std::map<std::string, torch::Tensor>& ema, at::Generator& gen,
                        int64_t steps) {
    SafeTensors ck = safetensors_load(path);
    if (ck.metadata["format"] != "shira-studio-checkpoint") throw_bad_input("'" + path + "' is not a training checkpoint");
    int64_t step = 0, saved_steps = 0, adam_step = 0;
    try {
        step        = std::stoll(ck.metadata.at("step"));
        saved_steps = std::stoll(ck.metadata.at("steps"));
        adam_step   = std::stoll(ck.metadata.at("adam_step"));
    } catch (const std::exception&) {
        throw_bad_input("checkpoint '" + path + "' has malformed metadata");
    }
    if (saved_steps != steps) {
        throw_bad_input("checkpoint was made for steps=" + std::to_string(saved_steps) + "; resume with the same steps so the schedule matches");
    }
    if (!ck.tensors.count("rng")) throw_bad_input("checkpoint '" + path + "' has no rng state");
    torch::NoGradGuard no_grad;
    for (const auto& [name, p] : named) {
        auto it = ck.tensors.find("param." + name);
        if (it == ck.tensors.end() || it->second.sizes() != p.sizes()) {
            throw_bad_input("checkpoint '" + path + "' does not fit this model (tensor '" + name + "')");
        }
        p.copy_(it->second);
        if (adam_step > 0) {
            auto a = ck.tensors.find("adam.exp_avg." + name), b = ck.tensors.find("adam.exp_avg_sq." + name);
            if (a == ck.tensors.end() || b == ck.tensors.end()) throw_bad_input("checkpoint lacks optimiser state for '" + name + "'");
            auto s = std::make_unique<AdamWState>();
            s->step(adam_step);
            s->exp_avg(a->second.to(p.device(), p.scalar_type()).clone());
            s->exp_avg_sq(b->second.to(p.device(), p.scalar_type()).clone());
            opt.state()[c10::guts::to_string(p.unsafeGetTensorImpl())] = std::move(s);
        }
        if (!ema.empty()) {
            auto e = ck.tensors.find("ema." + name);
            if (e == ck.tensors.end()) throw_bad_input("checkpoint has no EMA copy of '" + name + "' but ema is set");
            ema.at(name).copy_(e->second);
        }
    }
    gen.set_state(ck.tensors.at("rng"));
    return step;
}

Json op_train(WorkerState& st, const Json& args, const EmitFn& emit) {
    DiffusionModel& model  = need_model(st);
    const std::string method = get_str(args, "method", "shira");
    if (method != "shira" && method != "lora" && method != "full") throw_bad_input("method must be 'shira', 'lora' or 'full'");
    const std::string out        = need_str(args, "out");
    const int64_t     steps      = get_int(args, "steps", 200, 1, 10000000);
    const int64_t     batch      = get_int(args, "batch", 4, 1, 4096);
    const int64_t     accum      = get_int(args, "grad_accum", 1, 1, 1024);
    const double      lr         = get_num(args, "lr", 1e-4, 0, 10);
    const uint64_t    seed       = (uint64_t)get_int(args, "seed", 0, 0, INT64_MAX);
    const double      dropout    = get_num(args, "caption_dropout", 0.1, 0, 1);
    const int64_t     every      = get_int(args, "progress_every", 10, 1, 10000000);
    const double      density    = get_num(args, "density", 0.02, 1e-9, 1);
    const std::string schedule   = get_str(args, "schedule", "cosine");
    if (schedule != "cosine" && schedule != "constant") throw_bad_input("schedule must be 'cosine' or 'constant'");
    const auto        targets    = get_str_list(args, "targets", kDefaultTargets);
    const bool        flip       = get_bool(args, "flip", false);
    const double      ema_decay  = get_num(args, "ema", 0.0, 0.0, 0.999999);
    const int64_t     ckpt_every = get_int(args, "checkpoint_every", 0, 0, 10000000);
    const std::string ckpt_path  = get_str(args, "checkpoint", "");
    const std::string resume     = get_str(args, "resume", "");
    // Sampling every N steps: fixed seed, so the images of successive steps are comparable.
    const int64_t     sample_every = get_int(args, "sample_every", 0, 0, 10000000);
    const auto        sample_prompts = get_prompt_list(args, "sample_prompts");
    const std::string sample_dir = get_str(args, "sample_dir", "");
    SampleParams      sp;
    sp.sampler  = str_to_sampler_type(get_str(args, "sample_sampler", "ddim"));
    sp.steps    = get_int(args, "sample_steps", 20, 1, 1000);
    sp.guidance = get_num(args, "sample_guidance", 5.0, 0, 100);
    sp.seed     = (uint64_t)get_int(args, "sample_seed", 0, 0, INT64_MAX);
    sp.prompts  = sample_prompts;
    sp.batch    = (int64_t)sample_prompts.size();
    if (sample_every > 0 && (sample_prompts.empty() || sample_prompts.size() > 64 || sample_dir.empty())) {
        throw_bad_input("sample_every needs sample_prompts (1..64 prompts) and sample_dir");
    }
    if (method != "full" && (ema_decay > 0 || ckpt_every > 0 || !resume.empty())) {
        throw_bad_input("ema, checkpoint_every and resume are supported for method 'full' only");
    }
    if (ckpt_every > 0 && ckpt_path.empty()) throw_bad_input("checkpoint_every needs checkpoint (a path)");
    str_to_mask_type(get_str(args, "mask", "struct"));  // validate cheap arguments before reading files
    Dataset           data       = dataset_load(need_str(args, "data"), model);
    if (st.mix.active()) mix_clear(model, st.mix);

    NoiseSchedule noise = noise_schedule_init(model.config.diffusion);
    at::Generator gen   = at::detail::createCPUGenerator(seed);
    torch::manual_seed(seed);
    const int64_t N = data.images.size(0);
    // Every random draw of a step comes from `gen` in a fixed order (pick, drop, flip, t, ε), so its
    // state alone fixes the rest of the run (checkpoint/resume).
    auto batch_loss = [&]() {
        torch::Tensor            pick = torch::randint(0, N, {batch}, gen, torch::kInt64);
        torch::Tensor            drop = torch::rand({batch}, gen);
        std::vector<std::string> caps;
        for (int64_t i = 0; i < batch; ++i) {
            // Caption dropout trains the unconditional branch that classifier-free guidance needs.
            caps.push_back(drop[i].item<double>() < dropout ? "" : data.captions[pick[i].item<int64_t>()]);
        }
        torch::Tensor x0 = data.images.index_select(0, pick.to(model.device));
        if (flip) {
            torch::Tensor f = (torch::rand({batch}, gen) < 0.5).to(model.device).view({batch, 1, 1, 1});
            x0              = torch::where(f, x0.flip({3}), x0);
        }
        return diffusion_loss(model, noise, x0, model.text->encode(caps), gen);
    };

    std::vector<torch::Tensor> params;
    std::vector<std::pair<std::string, torch::Tensor>> named;  // full: every model parameter by name
    std::string                mask_name;
    std::vector<Adapter>       excluded;
    if (method == "shira") {
        ShiraOptions o;
        o.mask      = str_to_mask_type(get_str(args, "mask", "struct"));
        mask_name   = mask_type_name(o.mask);
        o.density   = density;
        o.seed      = seed;
        o.targets   = targets;
        const std::string path = get_str(args, "grad_path", "auto");  // docs/benchmarks.md: auto >= dense end to end
        if (path != "auto" && path != "sparse" && path != "dense") throw_bad_input("grad_path must be auto, sparse or dense");
        o.grad_path = path == "auto" ? GRAD_PATH_AUTO : path == "sparse" ? GRAD_PATH_SPARSE : GRAD_PATH_DENSE;
        for (const auto& p : get_str_list(args, "exclude", {})) excluded.push_back(adapter_load(p));
        for (const auto& a : excluded) o.exclude.push_back(&a);
        std::map<std::string, torch::Tensor> scores;
        if (o.mask == MASK_TYPE_GRAD || o.mask == MASK_TYPE_SNIP) {
            scores = shira_calibrate(model, targets, o.mask, get_int(args, "calib_batches", 8, 1, 1000), batch_loss);
        }
        params = shira_attach(model, o, scores);
    } else if (method == "lora") {
        LoraOptions o;
        o.rank          = get_int(args, "rank", 4, 1, 4096);
        o.alpha         = get_num(args, "alpha", (double)o.rank, 0, 1e6);
        o.match_density = args.contains("match_density") ? get_num(args, "match_density", 0, 1e-9, 1) : 0;
        o.seed          = seed;
        o.targets       = targets;
        params          = lora_attach(model, o);
    } else {
        for (auto& [name, p] : model.named_parameters()) {
            p.set_requires_grad(true);
            params.push_back(p);
            named.emplace_back(name, p);
        }
    }
    int64_t trainable = 0;
    for (const auto& p : params) trainable += p.numel();

    // AdamW without weight decay (paper Table 9; decay would pull trained entries toward 0, not W0).
    torch::optim::AdamW opt(params, torch::optim::AdamWOptions(lr).weight_decay(0.0));
    // EMA of the full model's weights (what `out` saves when on). Decay warms up as min(d, (1+n)/(10+n)),
    // diffusers' EMAModel default, so early averages are not dominated by the random init.
    std::map<std::string, torch::Tensor> ema;
    if (ema_decay > 0) {
        for (const auto& [name, p] : named) ema[name] = p.detach().clone();
    }
    auto ema_update = [&](int64_t n) {
        torch::NoGradGuard no_grad;
        const double d = std::min(ema_decay, (1.0 + (double)n) / (10.0 + (double)n));
        for (const auto& [name, p] : named) ema.at(name).mul_(d).add_(p.detach(), 1.0 - d);
    };
    // Samples of the weights as they are now (EMA weights when EMA is on); sampling draws only from its
    // own seeded generator, so it does not disturb the training stream.
    auto emit_sample = [&](int64_t step) {
        torch::NoGradGuard                   no_grad;
        std::map<std::string, torch::Tensor> live;
        if (!ema.empty()) {
            for (const auto& [name, p] : named) {
                live[name] = p.detach().clone();
                p.detach().copy_(ema.at(name));
            }
        }
        torch::Tensor images = sample_images(model, noise, sp, [&] { return st.cancel.load(); });
        for (const auto& [name, w] : live) model.named_parameters().at(name).detach().copy_(w);
        std::error_code ec;
        std::filesystem::create_directories(sample_dir, ec);
        if (ec) throw WorkerError(ERROR_TYPE_BAD_INPUT, "cannot create sample_dir '" + sample_dir + "': " + ec.message());
        const std::string path = sample_dir + "/step_" + std::to_string(step) + ".safetensors";
        safetensors_save(path, {{"images", images}},
                         {{"step", std::to_string(step)}, {"prompts", Json(sample_prompts).dump()}, {"seed", std::to_string(sp.seed)}});
        emit({{"event", "sample"}, {"step", step}, {"path", path}});
    };

    // bf16 autocast on CUDA (issue 3): matmuls/convs run in bf16 while weights, SHiRA values, LoRA factors
    // and optimiser state stay fp32. Thread-local, so it is switched on for this job's thread only and off
    // again on every exit; CPU runs never enable it.
    const bool use_autocast = model.device.is_cuda() && get_str(args, "precision", "bf16") == "bf16";
    struct AutocastScope {
        bool on;
        explicit AutocastScope(bool on) : on(on) {
            if (!on) return;
            at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
            at::autocast::set_enabled(true);
        }
        ~AutocastScope() {
            if (!on) return;
            at::autocast::set_enabled(false);
            at::autocast::clear_cache();
        }
    } autocast_scope(use_autocast);

    const double        t_start = now_s();
    double              last_loss = 0, first_loss = -1;
    bool                cancelled = false;
    int64_t             step = 0, start_step = 0;
    try {
        if (!resume.empty()) start_step = checkpoint_load(resume, named, opt, ema, gen, steps);
        for (step = start_step + 1; step <= steps; ++step) {
            if (st.cancel.load()) {
                cancelled = true;
                break;
            }
            const double lr_t = schedule == "cosine" ? lr * 0.5 * (1.0 + std::cos(M_PI * (double)(step - 1) / (double)steps)) : lr;
            for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr_t);
            double loss_sum = 0;
            for (int64_t a = 0; a < accum; ++a) {
                torch::Tensor loss = batch_loss() / (double)accum;
                loss.backward();
                loss_sum += loss.item<double>();
            }
            opt.step();
            opt.zero_grad();
            if (method == "shira") shira_write_values(model);
            if (!ema.empty()) ema_update(step);
            last_loss = loss_sum;
            if (first_loss < 0) first_loss = loss_sum;
            if (!std::isfinite(last_loss)) throw WorkerError(ERROR_TYPE_INTERNAL, "loss became non-finite at step " + std::to_string(step));
            if (step % every == 0 || step == steps) {
                const double elapsed = now_s() - t_start, it_s = (double)(step - start_step) / std::max(elapsed, 1e-9);
                emit({{"event", "progress"}, {"step", step}, {"steps", steps}, {"loss", last_loss}, {"it_s", it_s},
                      {"eta_s", (double)(steps - step) / it_s}});
            }
            if (sample_every > 0 && (step % sample_every == 0 || step == steps)) emit_sample(step);
            if (ckpt_every > 0 && (step % ckpt_every == 0 || step == steps)) {
                checkpoint_save(ckpt_path, model, named, opt, ema, gen, step, steps, seed);
                emit({{"event", "checkpoint"}, {"step", step}, {"path", ckpt_path}});
            }
        }
    } catch (...) {
        if (method == "shira") shira_detach(model);
        if (method == "lora") lora_detach(model);
        for (auto& [_, p] : model.named_parameters()) p.set_requires_grad(false);
        throw;
    }
    // Grad-path choices, reported so benchmarks can say which path won per layer shape.
    Json paths = Json::array();
    if (method == "shira") {
        for (auto& [name, l] : model.layers()) {
            if (!l->shira) continue;
            const auto& s = *l->shira;
            paths.push_back({{"layer", name}, {"shape", l->weight.sizes().vec()}, {"k", s.idx.numel()},
                             {"path", s.chosen == GRAD_PATH_SPARSE ? "sparse" : s.chosen == GRAD_PATH_DENSE ? "dense" : "auto"},
                             {"sparse_ms", s.sparse_ms}, {"dense_ms", s.dense_ms},
                             {"dense_dw_bytes", l->weight.numel() * 4}});
        }
    }
    Adapter adapter;
    if (method == "shira") adapter = shira_detach(model);
    if (method == "lora") adapter = lora_detach(model);
    for (auto& [_, p] : model.named_parameters()) p.set_requires_grad(false);
    if (cancelled) throw WorkerError(ERROR_TYPE_CANCELLED, "train cancelled before step " + std::to_string(step));
    if (method == "full") {
        if (!ema.empty()) {
            torch::NoGradGuard no_grad;
            for (const auto& [name, p] : named) p.detach().copy_(ema.at(name));
        }
        model_save(model, out);
    } else {
        adapter.metadata = {{"model", model.config.name}, {"method", method}, {"steps", std::to_string(steps)},
                            {"seed", std::to_string(seed)}, {"lr", std::to_string(lr)}};
        if (method == "shira") {
            adapter.metadata["mask"]    = mask_name;
            adapter.metadata["density"] = std::to_string(density);
        }
        adapter_save(adapter, out);
    }
    return {{"out", out}, {"steps", steps}, {"start_step", start_step}, {"first_loss", first_loss}, {"final_loss", last_loss},
            {"trainable", trainable}, {"ema", ema_decay}, {"autocast_bf16", use_autocast}, {"seconds", now_s() - t_start},
            {"grad_paths", paths}};
}

Json op_sample(WorkerState& st, const Json& args) {
    DiffusionModel& model = need_model(st);
    SampleParams    p;
    if (args.contains("prompt") && args.at("prompt").is_array()) {
        p.prompts = get_str_list(args, "prompt", {});
    } else {
        p.prompts = {get_str(args, "prompt", "")};
    }
    p.sampler         = str_to_sampler_type(get_str(args, "sampler", "ddim"));
    p.negative_prompt = get_str(args, "negative_prompt", "");
    p.batch           = get_int(args, "batch", 1, 1, 64);
    p.steps           = get_int(args, "steps", 20, 1, 1000);
    p.guidance        = get_num(args, "guidance", 5.0, 0, 100);
    p.size            = get_int(args, "size", 0, 0, 1024);
    p.seed            = (uint64_t)get_int(args, "seed", 0, 0, INT64_MAX);
    const std::string out = get_str(args, "out", temp_output("sample"));
    const double      t0  = now_s();
    torch::Tensor     images = sample_images(model, noise_schedule_init(model.config.diffusion), p, [&] { return st.cancel.load(); });
    safetensors_save(out, {{"images", images}}, {{"seed", std::to_string(p.seed)}});
    return {{"out", out}, {"shape", images.sizes().vec()}, {"ms", (now_s() - t0) * 1000}};
}

std::shared_ptr<Adapter> cached_adapter(WorkerState& st, const std::string& path) {
    auto it = st.adapters.find(path);
    if (it != st.adapters.end()) return it->second;
    auto a = std::make_shared<Adapter>(adapter_load(path));
    st.adapters[path] = a;
    return a;
}

Json op_apply_mix(WorkerState& st, const Json& args) {
    DiffusionModel& model = need_model(st);
    const Json&     list  = arg(args, "adapters");
    if (!list.is_array()) throw_bad_input("'adapters' must be an array of {path, alpha}");
    std::vector<std::shared_ptr<Adapter>>            keep;
    std::vector<std::pair<const Adapter*, double>>   mix;
    for (const auto& item : list) {
        if (!item.is_object()) throw_bad_input("'adapters' must be an array of {path, alpha}");
        const double alpha = get_num(item, "alpha", 1.0, -100, 100);
        keep.push_back(cached_adapter(st, need_str(item, "path")));
        mix.emplace_back(keep.back().get(), alpha);
    }
    const double ms = mix_apply(model, st.mix, mix);
    return {{"ms", ms}, {"adapters", (int64_t)mix.size()}};
}

Json op_adapter_inspect(const Json& args) {
    const Adapter a       = adapter_load(need_str(args, "path"));
    Json          tensors = Json::array();
    for (const auto& [name, t] : a.shira) tensors.push_back({{"layer", name}, {"k", t.values.numel()}, {"cols", t.cols}});
    for (const auto& [name, t] : a.lora) {
        tensors.push_back({{"layer", name}, {"rank", t.rank()}, {"alpha", t.alpha}, {"a_shape", t.A.sizes().vec()}, {"b_shape", t.B.sizes().vec()}});
    }
    return {{"kind", a.kind == ADAPTER_KIND_SHIRA ? "shira" : "lora"}, {"trainable", a.trainable()}, {"metadata", a.metadata},
            {"tensors", tensors}};
}

// PEFT layout (notes §4.6): a folder with adapter_model.safetensors ("base_model.model.<module>.shira_weight" fp32 [K],
// ".shira_indices" int32 [2, K]) and adapter_config.json, one folder per component: the UNet's layers at the top
// (module paths relative to the UNet, as get_peft_model(pipe.unet) names them), text-encoder layers in text_encoder/.
// PEFT sizes each layer as K = r·(m+n); `r` here is the whole-adapter average, so stock PEFT loads the file only where
// that matches (density-based masks give every layer its own K; the per-layer K are in the file's metadata).
Json op_adapter_export(const Json& args) {
    const Adapter     a      = adapter_load(need_str(args, "path"));
    const std::string out    = need_str(args, "out");
    const std::string format = get_str(args, "format", "peft");
    if (format == "native") {
        adapter_save(a, out);
        return {{"out", out}, {"format", format}};
    }
    if (format != "peft") throw_bad_input("format must be 'peft' or 'native'");
    if (a.kind != ADAPTER_KIND_SHIRA) throw_bad_input("PEFT export is for SHiRA adapters (LoRA files already use PEFT's key names)");
    Json folders = Json::array();
    for (const std::string component : {"unet", "text_encoder"}) {
        std::map<std::string, torch::Tensor> tensors;
        std::set<std::string>                targets;
        Json                                 ks = Json::object();
        int64_t                              total_k = 0, total_mn = 0;
        for (const auto& [name, t] : a.shira) {
            if (name.rfind(component + ".", 0) != 0) continue;
            const std::string module = name.substr(component.size() + 1);
            const std::string key    = "base_model.model." + module;
            const int64_t     m      = t.idx.numel() ? t.idx[t.idx.numel() - 1].item<int64_t>() / t.cols + 1 : 0;
            tensors[key + ".shira_weight"]  = t.values.to(torch::kFloat32);
            tensors[key + ".shira_indices"] = torch::stack({torch::div(t.idx, t.cols, "floor"), t.idx.remainder(t.cols)}).to(torch::kInt32);
            ks[module] = t.idx.numel();
            total_k += t.idx.numel();
            total_mn += m + t.cols;  // m is a lower bound (the last trained row); exact for Struct/diagonal masks
            // PEFT matches target_modules as dotted suffixes; numeric leaves need their parents ("ff.net.2").
            std::string leaf = module.substr(module.rfind('.') == std::string::npos ? 0 : module.rfind('.') + 1);
            for (const char* multi : {"ff.net.0.proj", "ff.net.2", "to_out.0"}) {
                if (layer_matches(module, {multi})) leaf = multi;
            }
            targets.insert(leaf);
        }
        if (tensors.empty()) continue;
        const std::string dir = component == "unet" ? out : out + "/text_encoder";
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) throw_bad_input("cannot create '" + dir + "': " + ec.message());
        const int64_t r = std::max<int64_t>(1, std::llround((double)total_k / (double)std::max<int64_t>(1, total_mn)));
        std::string mask = a.metadata.count("mask") ? a.metadata.at("mask") : "random";
        if (mask == "rand") mask = "random";
        Json config = {{"peft_type", "SHIRA"}, {"r", r}, {"mask_type", mask}, {"target_modules", Json(std::vector<std::string>(targets.begin(), targets.end()))},
                       {"random_seed", a.metadata.count("seed") ? Json(std::stoll(a.metadata.at("seed"))) : Json(nullptr)},
                       {"fan_in_fan_out", false}, {"init_weights", true}, {"inference_mode", true}, {"modules_to_save", nullptr},
                       {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr}};
        safetensors_save(dir + "/adapter_model.safetensors", tensors,
                         {{"format", "pt"}, {"shira_k", ks.dump()}, {"source", "shira-studio"}});
        write_file_atomic(dir + "/adapter_config.json", config.dump(2) + "\n");
        folders.push_back({{"dir", dir}, {"tensors", (int64_t)tensors.size() / 2}, {"r", r}, {"trainable", total_k}});
    }
    if (folders.empty()) throw_bad_input("adapter has no SHiRA tensors to export");
    return {{"out", out}, {"format", format}, {"folders", folders}};
}

Json op_bench(WorkerState& st, const Json& args, const EmitFn& emit) {
    return bench_run(args, st.device, emit, [&] { return st.cancel.load(); });
}

}  // namespace

torch::Device device_from_name(const std::string& name) {
    if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    if (name == "cpu") return torch::kCPU;
    if (name.rfind("cuda", 0) == 0) {
        if (!torch::cuda::is_available()) throw_bad_input("CUDA was requested but this libtorch/host has none");
        return torch::Device(name);
    }
    throw_bad_input("device must be auto, cpu or cuda[:N]");
}

bool worker_op_is_long(const std::string& op) { return op == "train" || op == "sample" || op == "bench"; }

Json worker_run_op(WorkerState& st, const std::string& op, const Json& args, const EmitFn& emit) {
    if (!args.is_object()) throw_bad_input("'args' must be an object");
    if (op == "info") return op_info(st);
    if (op == "load_model") return op_load_model(st, args);
    if (op == "unload") {
        st.model.reset();
        st.mix = MixState();
        st.adapters.clear();
        return {{"unloaded", true}};
    }
    if (op == "save_model") {
        model_save(need_model(st), need_str(args, "out"));
        return {{"out", need_str(args, "out")}};
    }
    if (op == "train") return op_train(st, args, emit);
    if (op == "sample") return op_sample(st, args);
    if (op == "apply_mix") return op_apply_mix(st, args);
    if (op == "clear_mix") return {{"ms", mix_clear(need_model(st), st.mix)}};
    if (op == "adapter_inspect") return op_adapter_inspect(args);
    if (op == "adapter_export") return op_adapter_export(args);
    if (op == "bench") return op_bench(st, args, emit);
    throw_bad_input("unknown op '" + op +
                    "' (allowed: info, load_model, unload, save_model, train, cancel, sample, apply_mix, clear_mix, "
                    "adapter_inspect, adapter_export, bench, shutdown)");
}

// ---------------------------------------------------------------------------------------------
// Protocol loop

namespace {

struct Server {
    explicit Server(torch::Device device) : state(device) {}
    WorkerState       state;
    std::mutex        out_mutex;
    std::thread       job;
    std::atomic<bool> busy{false};

    void write(const Json& j) {
        // dump with replace: invalid UTF-8 from a request echoed in an error must not throw here.
        const std::string line = j.dump(-1, ' ', false, Json::error_handler_t::replace);
        std::lock_guard<std::mutex> lock(out_mutex);
        std::cout << line << '\n' << std::flush;
    }

    static Json error_reply(const Json& id, ErrorType type, const std::string& message) {
        return {{"id", id}, {"ok", false}, {"error", {{"type", error_type_name(type)}, {"message", message}}}};
    }
    void reply_error(const Json& id, ErrorType type, const std::string& message) { write(error_reply(id, type, message)); }

    // `before_reply` runs just before the final reply is written: a job clears `busy` there, so a client
    // that sends its next request as soon as it reads the reply never sees a stale "busy".
    void run(const Json& id, const std::string& op, const Json& args, const std::function<void()>& before_reply = {}) {
        Json reply;
        try {
            Json result = worker_run_op(state, op, args, [&](Json e) {
                e["id"] = id;
                write(e);
            });
            reply = {{"id", id}, {"ok", true}, {"result", result}};
        } catch (const WorkerError& e) {
            reply = error_reply(id, e.type, e.what());
        } catch (const c10::Error& e) {
            reply = error_reply(id, ERROR_TYPE_INTERNAL, e.what_without_backtrace());
        } catch (const std::exception& e) {
            reply = error_reply(id, ERROR_TYPE_INTERNAL, e.what());
        }
        if (before_reply) before_reply();
        write(reply);
    }

    void join_job() {
        if (job.joinable()) job.join();
    }

    // Returns false when the loop should stop.
    bool handle_line(const std::string& line) {
        Json req, id = nullptr;
        try {
            req = Json::parse(line);
        } catch (const std::exception& e) {
            reply_error(nullptr, ERROR_TYPE_BAD_INPUT, std::string("malformed JSON: ") + e.what());
            return true;
        }
        if (!req.is_object()) {
            reply_error(nullptr, ERROR_TYPE_BAD_INPUT, "a request must be a JSON object {id, op, args}");
            return true;
        }
        if (req.contains("id")) id = req["id"];
        if (!req.contains("op") || !req["op"].is_string()) {
            reply_error(id, ERROR_TYPE_BAD_INPUT, "'op' must be a string");
            return true;
        }
        const std::string op   = req["op"].get<std::string>();
        const Json        args = req.contains("args") ? req["args"] : Json::object();
        if (op == "cancel") {
            const bool running = busy.load();
            if (running) state.cancel = true;
            write({{"id", id}, {"ok", true}, {"result", {{"cancelling", running}}}});
            return true;
        }
        if (op == "shutdown") {
            state.cancel = true;
            join_job();
            write({{"id", id}, {"ok", true}, {"result", {{"shutdown", true}}}});
            return false;
        }
        if (op == "info" || op == "adapter_inspect") {  // read-only: safe beside a running job
            run(id, op, args);
            return true;
        }
        if (busy.load()) {
            reply_error(id, ERROR_TYPE_BUSY, "a train/sample/bench job is running; send cancel or wait");
            return true;
        }
        if (!worker_op_is_long(op)) {
            run(id, op, args);
            return true;
        }
        join_job();
        state.cancel = false;
        busy         = true;
        job          = std::thread([this, id, op, args] { run(id, op, args, [this] { busy = false; }); });
        return true;
    }
};

}  // namespace

int worker_serve(torch::Device device) {
    Server server(device);
    server.write({{"event", "ready"}, {"version", SHIRA_WORKER_VERSION}, {"device", device.str()}, {"torch", TORCH_VERSION},
                  {"pid", (int64_t)getpid()}});
    std::string line;
    while (std::getline(std::cin, line)) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (!server.handle_line(line)) return 0;
    }
    server.state.cancel = true;  // stdin closed: the host is gone, stop promptly
    server.join_job();
    return 0;
}
