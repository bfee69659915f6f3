#include "bench.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <fstream>

#include <ATen/CPUGeneratorImpl.h>

#ifdef SHIRA_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/cuda.h>
#endif

#include "common.h"
#include "diffusion.h"
#include "shira.h"

using Json = nlohmann::json;

namespace {

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
    if (v.empty()) return -1;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int64_t proc_status_kb(const char* field) { return proc_field_kib("/proc/self/status", field); }

int64_t mem_available_bytes() {
    const int64_t kib = proc_field_kib("/proc/meminfo", "MemAvailable:");
    return kib < 0 ? -1 : kib * 1024;
}

}  // namespace

ModelConfig bench_model_config(const std::string& name, int64_t size) {
    Json text = {{"vocab", {"a", "red", "blue", "square", "circle"}}, {"width", 256}, {"layers", 2}, {"heads", 4}, {"max_length", 16}};
    Json unet;
    if (name == "builtin") {
        unet = {{"sample_size", size > 0 ? size : 64}, {"block_out_channels", {64, 128, 256}}, {"attention", {false, true, true}},
                {"layers_per_block", 2}, {"attention_heads", 4}, {"norm_num_groups", 32}};
    } else if (name == "sd15") {
        unet = {{"sample_size", size > 0 ? size : 32}, {"block_out_channels", {320, 640, 1280, 1280}},
                {"attention", {true, true, true, false}}, {"layers_per_block", 2}, {"attention_heads", 8}, {"norm_num_groups", 32}};
        text = {{"vocab", {"a", "red", "blue", "square", "circle"}}, {"width", 768}, {"layers", 1}, {"heads", 12}, {"max_length", 16}};
    } else {
        throw_bad_input("bench model must be 'builtin' or 'sd15' (or pass config)");
    }
    return model_config_from_json({{"name", name}, {"unet", unet}, {"text_encoder", text}});
}

void device_sync(torch::Device device) {
#ifdef SHIRA_HAS_CUDA
    if (device.is_cuda()) torch::cuda::synchronize();
#endif
}

#ifdef SHIRA_HAS_CUDA
// StatType::AGGREGATE is 0 in every libtorch; its namespace moved (c10::cuda::CUDACachingAllocator in 1.x,
// c10::CachingDeviceAllocator in 2.x), so the index is spelled out instead of the enum.
constexpr size_t kAggregateStat = 0;
#endif

void mem_peak_reset(torch::Device device, MemProbe& probe) {
#ifdef SHIRA_HAS_CUDA
    if (device.is_cuda()) {
        device_sync(device);
        c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
        const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
        probe.kind       = "cuda_allocator_peak_allocated";
        probe.base_bytes = stats.allocated_bytes[kAggregateStat].current;
        return;
    }
#endif
    // Hand freed heap back first so the previous case's leftovers do not sit in the resident set.
    malloc_trim(0);
    std::ofstream("/proc/self/clear_refs") << "5";  // "5" resets VmHWM to the current VmRSS (proc(5))
    probe.kind       = "cpu_rss_hwm";
    probe.base_bytes = proc_status_kb("VmRSS:") * 1024;
}

void mem_peak_read(torch::Device device, MemProbe& probe) {
#ifdef SHIRA_HAS_CUDA
    if (device.is_cuda()) {
        device_sync(device);
        const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
        probe.peak_bytes = stats.allocated_bytes[kAggregateStat].peak;
        return;
    }
#endif
    probe.peak_bytes = proc_status_kb("VmHWM:") * 1024;
}

namespace {

struct TrainCase {
    std::string method;  // shira | lora | full
    MaskType    mask = MASK_TYPE_STRUCT;
    GradPath    path = GRAD_PATH_DENSE;
};

const char* grad_path_name(GradPath p) { return p == GRAD_PATH_SPARSE ? "sparse" : p == GRAD_PATH_DENSE ? "dense" : "auto"; }

Json bench_train_case(DiffusionModel& model, const std::string& model_name, const TrainCase& c, const Json& common,
                      int64_t batch, int64_t warmup, int64_t reps, double density, torch::Device device,
                      const std::function<bool()>& should_stop) {
    const int64_t S = model.config.unet.sample_size;
    at::Generator gen = at::detail::createCPUGenerator(0);
    // A fixed random batch: step time does not depend on the pixel values.
    torch::Tensor x0  = (torch::rand({batch, 3, S, S}, gen) * 2 - 1).to(device);
    std::vector<std::string> caps(batch, "a red square");
    NoiseSchedule noise = noise_schedule_init(model.config.diffusion);
    auto loss_fn = [&] { return diffusion_loss(model, noise, x0, model.text->encode(caps), gen); };

    Json row = common;
    row["name"]   = "train";
    row["method"] = c.method;
    row["batch"]  = batch;
    row["size"]   = S;
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

    const double t_setup = now_ms();
    std::vector<torch::Tensor> params;
    if (c.method == "shira") {
        ShiraOptions o;
        o.mask      = c.mask;
        o.density   = density;
        o.grad_path = c.path;
        std::map<std::string, torch::Tensor> scores;
        if (c.mask == MASK_TYPE_GRAD || c.mask == MASK_TYPE_SNIP) scores = shira_calibrate(model, o.targets, c.mask, 1, loss_fn);
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
    row["setup_ms"] = now_ms() - t_setup;
    int64_t trainable = 0;
    for (const auto& p : params) trainable += p.numel();
    row["trainable"]    = trainable;
    row["model_params"] = model_params;

    std::vector<double> times;
    MemProbe            mem;
    try {
        torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-4).weight_decay(0.0));
        mem_peak_reset(device, mem);
        for (int64_t i = 0; i < warmup + reps; ++i) {
            if (should_stop && should_stop()) throw WorkerError(ERROR_TYPE_CANCELLED, "bench cancelled");
            device_sync(device);
            const double t0 = now_ms();
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
    row["step_ms"]          = median(times);
    row["step_ms_min"]      = *std::min_element(times.begin(), times.end());
    row["steps_timed"]      = (int64_t)times.size();
    row["warmup"]           = warmup;
    row["peak_mem_bytes"]   = mem.peak_bytes;
    row["peak_mem_kind"]    = mem.kind;
    row["base_mem_bytes"]   = mem.base_bytes;
    row["peak_over_base_bytes"] = mem.peak_bytes - mem.base_bytes;
    return row;
}

Adapter random_shira_adapter(DiffusionModel& model, MaskType mask, double density, uint64_t seed) {
    ShiraOptions o;
    o.mask    = mask;
    o.density = density;
    o.seed    = seed;
    auto params = shira_attach(model, o);
    {
        torch::NoGradGuard g;
        at::Generator gen = at::detail::createCPUGenerator(seed);
        for (auto& v : params) v.copy_(torch::randn(v.sizes(), gen, torch::kFloat32).mul_(0.01));
    }
    return shira_detach(model);
}

Adapter random_lora_adapter(DiffusionModel& model, double density, uint64_t seed) {
    LoraOptions o;
    o.match_density = density;
    o.seed          = seed;
    auto params     = lora_attach(model, o);
    {
        torch::NoGradGuard g;
        at::Generator gen = at::detail::createCPUGenerator(seed + 1000);
        for (auto& v : params) v.copy_(torch::randn(v.sizes(), gen, torch::kFloat32).mul_(0.01));
    }
    return lora_detach(model);
}

}  // namespace

Json bench_run(const Json& args, torch::Device device, const std::function<void(const Json&)>& emit,
               const std::function<bool()>& should_stop) {
    auto get_str = [&](const char* k, const std::string& d) {
        if (!args.contains(k)) return d;
        if (!args.at(k).is_string()) throw_bad_input(std::string("argument '") + k + "' must be a string");
        return args.at(k).get<std::string>();
    };
    auto get_int = [&](const char* k, int64_t d, int64_t lo, int64_t hi) {
        if (!args.contains(k)) return d;
        if (!args.at(k).is_number_integer()) throw_bad_input(std::string("argument '") + k + "' must be an integer");
        const int64_t v = args.at(k).get<int64_t>();
        if (v < lo || v > hi) throw_bad_input(std::string("argument '") + k + "' out of range");
        return v;
    };
    auto get_num = [&](const char* k, double d, double lo, double hi) {
        if (!args.contains(k)) return d;
        if (!args.at(k).is_number()) throw_bad_input(std::string("argument '") + k + "' must be a number");
        const double v = args.at(k).get<double>();
        if (!(v >= lo && v <= hi)) throw_bad_input(std::string("argument '") + k + "' out of range");
        return v;
    };
    const std::string kind    = get_str("kind", "grad");
    const bool        quick   = args.contains("quick") && args.at("quick").is_boolean() && args.at("quick").get<bool>();
    const double      density = get_num("density", 0.02, 1e-6, 1);
    std::string       models_arg = get_str("models", "builtin,sd15");
    std::vector<std::string> models;
    for (size_t s = 0; s <= models_arg.size();) {
        size_t e = models_arg.find(',', s);
        if (e == std::string::npos) e = models_arg.size();
        if (e > s) models.push_back(models_arg.substr(s, e - s));
        s = e + 1;
    }
    Json rows = Json::array();
    auto push = [&](const Json& row) {
        emit({{"event", "bench_row"}, {"row", row}});
        rows.push_back(row);
    };
    auto stop_check = [&] {
        if (should_stop && should_stop()) throw WorkerError(ERROR_TYPE_CANCELLED, "bench cancelled");
    };
    const std::string dev = device.str();

    if (kind == "grad") {
        // Sparse vs dense-then-gather weight gradient for SD-1.5-like Linear shapes (out × in) at N tokens.
        const int64_t tokens = get_int("tokens", 1024, 1, 1 << 20);
        const int     reps   = (int)get_int("reps", quick ? 2 : 5, 1, 100);
        const std::vector<std::array<int64_t, 2>> shapes = {{320, 320}, {320, 768}, {2560, 320}, {320, 1280}, {1280, 1280}, {10240, 1280}};
        for (const auto& s : shapes) {
            if (quick && s[0] * s[1] > 1280 * 1280) continue;
            for (MaskType mask : {MASK_TYPE_STRUCT, MASK_TYPE_RAND}) {
                stop_check();
                const int64_t K   = shira_k(s[0] * s[1], density);
                torch::Tensor idx = mask == MASK_TYPE_STRUCT ? mask_struct(s[0], s[1], K) : mask_rand(s[0] * s[1], K, 0);
                auto          t   = shira_time_grad_paths(tokens, s[0], s[1], idx, reps);
                push({{"name", "grad_path"}, {"device", "cpu"}, {"model", "layer"}, {"shape", {s[0], s[1]}},
                      {"mask", mask_type_name(mask)}, {"tokens", tokens}, {"k", K}, {"sparse_ms", t.sparse_ms},
                      {"dense_ms", t.dense_ms}, {"speedup", t.dense_ms / std::max(t.sparse_ms, 1e-9)},
                      {"winner", t.sparse_ms <= t.dense_ms ? "sparse" : "dense"}, {"maxdiff", t.maxdiff},
                      {"dense_dw_bytes", t.dense_dw_bytes}, {"threads", torch::get_num_threads()}});
            }
        }
        return {{"rows", rows}};
    }

    if (kind != "train" && kind != "switch") throw_bad_input("bench kind must be train, switch or grad");
    for (const std::string& name : models) {
        stop_check();
        const int64_t size = get_int("size", name == "sd15" ? (quick ? 16 : 32) : (quick ? 32 : 64), 8, 1024);
        ModelConfig   cfg  = bench_model_config(name, size);
        if (args.contains("config") && name == "builtin") {
            if (!args.at("config").is_object()) throw_bad_input("bench 'config' must be a model config object");
            cfg = model_config_from_json(args.at("config"));  // e.g. the shipped built-in model's config
        }
        auto model = model_init(cfg, 0, device);
        Json common = {{"device", dev}, {"model", name}, {"threads", torch::get_num_threads()}, {"torch", TORCH_VERSION}};
        if (kind == "train") {
            const int64_t batch  = get_int("batch", name == "sd15" ? 1 : (quick ? 2 : 4), 1, 256);
            const int64_t warmup = get_int("warmup", 1, 0, 100);
            const int64_t reps   = get_int("reps", quick ? 2 : (name == "sd15" ? 3 : 5), 1, 1000);
            std::vector<TrainCase> cases;
            for (MaskType m : {MASK_TYPE_STRUCT, MASK_TYPE_RAND, MASK_TYPE_WM, MASK_TYPE_GRAD, MASK_TYPE_SNIP}) cases.push_back({"shira", m, GRAD_PATH_DENSE});
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
                stop_check();
                push(bench_train_case(*model, name, c, common, batch, warmup, reps, density, device, should_stop));
            }
        } else {
            const int64_t reps = get_int("reps", quick ? 3 : 7, 1, 1000);
            // Whole-model switch A → B (warm: A is applied first, every adapter already in memory). SHiRA writes
            // the union of indices back from the kept base values then scatters B; LoRA restores the kept copies of
            // every touched tensor then adds (alpha/r)·BA per layer.
            Adapter la = random_lora_adapter(*model, density, 1), lb = random_lora_adapter(*model, density, 2);
            for (MaskType mask : {MASK_TYPE_STRUCT, MASK_TYPE_RAND, MASK_TYPE_WM}) {
                stop_check();
                Adapter sa = random_shira_adapter(*model, mask, density, 1), sb = random_shira_adapter(*model, mask, density, 2);
                auto time_switch = [&](const Adapter& a, const Adapter& b) {
                    MixState st;
                    std::vector<double> t;
                    mix_apply(*model, st, {{&a, 1.0}});
                    for (int64_t r = 0; r < reps + 1; ++r) {  // rep 0 warms caches and the allocator
                        stop_check();
                        const Adapter& to = r % 2 == 0 ? b : a;
                        device_sync(device);
                        const double t0 = now_ms();
                        mix_apply(*model, st, {{&to, 1.0}});
                        device_sync(device);
                        if (r > 0) t.push_back(now_ms() - t0);
                    }
                    mix_clear(*model, st);
                    return median(t);
                };
                const double shira_ms = time_switch(sa, sb), lora_ms = time_switch(la, lb);
                Json row = common;
                row.update({{"name", "switch"}, {"mask", mask_type_name(mask)}, {"density", density}, {"reps", reps},
                            {"shira_switch_ms", shira_ms}, {"lora_switch_ms", lora_ms}, {"ratio", lora_ms / std::max(shira_ms, 1e-9)},
                            {"shira_params", sa.trainable()}, {"lora_params", la.trainable()}, {"layers", (int64_t)sa.shira.size()}});
                push(row);
            }
        }
    }
    return {{"rows", rows}};
}
