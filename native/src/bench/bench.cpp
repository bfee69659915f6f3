#include "bench/bench.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <ATen/CPUGeneratorImpl.h>

#ifdef SHIRA_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>  // needs the CUDA toolkit's headers
#endif
#include <torch/cuda.h>  // in every libtorch: synchronize() reaches CUDA through ATen's hooks
#include <torch/version.h>

#include "core/errors.h"
#include "runtime/sampler.h"
#include "adapter/shira.h"

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
    if (device.is_cuda()) torch::cuda::synchronize();
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
                      int64_t batch, int64_t warmup, int64_t reps, double density, bool bf16, torch::Device device,
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
        CudaAutocast        autocast_scope(bf16);  // the whole step, as in `train`
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

Adapter random_shira_adapter(DiffusionModel& model, MaskType mask, double density, uint64_t seed,
                             const std::vector<std::string>& targets = kDefaultTargets) {
    ShiraOptions o;
    o.mask    = mask;
    o.density = density;
    o.seed    = seed;
    o.targets = targets;
    auto params = shira_attach(model, o);
    {
        torch::NoGradGuard g;
        at::Generator gen = at::detail::createCPUGenerator(seed);
        for (auto& v : params) v.copy_(torch::randn(v.sizes(), gen, torch::kFloat32).mul_(0.01));
    }
    Adapter a = shira_detach(model);
    if (mask == MASK_TYPE_RAND) {
        for (auto& [name, t] : a.shira) t.rand_seed = shira_layer_seed(seed, name);
    }
    return a;
}

// The index distribution of a Grad/SNIP mask under random scores: top-K of iid continuous scores is a uniform
// random K-subset, drawn here in O(K) (mask_rand with a seed the file does not know, so it is Rice-coded like
// a real top-K mask would be) instead of scoring and sorting every weight.
Adapter random_topk_adapter(const Adapter& like, uint64_t seed) {
    Adapter a = like;
    for (auto& [name, t] : a.shira) {
        int64_t numel = 1;
        for (int64_t d : t.shape) numel *= d;
        t.idx = mask_rand(numel, t.idx.numel(), shira_layer_seed(seed, name));
        t.rand_seed.reset();
    }
    return a;
}

Adapter random_lora_adapter(DiffusionModel& model, double density, uint64_t seed,
                            const std::vector<std::string>& targets = kDefaultTargets) {
    LoraOptions o;
    o.match_density = density;
    o.seed          = seed;
    o.targets       = targets;
    auto params     = lora_attach(model, o);
    {
        torch::NoGradGuard g;
        at::Generator gen = at::detail::createCPUGenerator(seed + 1000);
        for (auto& v : params) v.copy_(torch::randn(v.sizes(), gen, torch::kFloat32).mul_(0.01));
    }
    return lora_detach(model);
}

int64_t file_bytes(const std::string& path) {
    std::error_code ec;
    const auto      n = std::filesystem::file_size(path, ec);
    return ec ? -1 : (int64_t)n;
}

std::string bench_temp(const std::string& stem) {
    static int n = 0;
    return (std::filesystem::temp_directory_path() / ("shira-bench-" + std::to_string(getpid()) + "-" + std::to_string(n++) + "-" + stem +
                                                      ".safetensors")).string();
}

// Temp adapter files of one model, deleted however the bench ends.
struct TempFiles {
    std::vector<std::string> paths;
    std::string add(const std::string& stem) {
        paths.push_back(bench_temp(stem));
        return paths.back();
    }
    ~TempFiles() {
        for (const auto& p : paths) std::remove(p.c_str());
    }
};

// Warm whole-model switch A -> B -> A ...: A applied first (untimed), then `reps` timed switches; median ms.
double time_switch(DiffusionModel& model, torch::Device device, const Adapter& a, const Adapter& b, int64_t reps,
                   const std::function<void()>& stop_check) {
    MixState            st;
    std::vector<double> t;
    mix_apply(model, st, {{&a, 1.0}});
    for (int64_t r = 0; r < reps + 1; ++r) {  // rep 0 warms caches and the allocator
        stop_check();
        const Adapter& to = r % 2 == 0 ? b : a;
        device_sync(device);
        const double t0 = now_ms();
        mix_apply(model, st, {{&to, 1.0}});
        device_sync(device);
        if (r > 0) t.push_back(now_ms() - t0);
    }
    mix_clear(model, st);
    return median(t);
}

// Cold switch from files: the state holds B; read + decode A's v2 file (OS page cache warm: just written) and
// apply it, alternating A/B. Returns median {total, load (read + decode), apply} ms.
std::array<double, 3> time_cold_switch(DiffusionModel& model, torch::Device device, const std::string& fa, const std::string& fb,
                                       int64_t reps, const std::function<void()>& stop_check) {
    MixState            st;
    std::vector<double> total, load, apply;
    {
        Adapter b = adapter_load(fb);
        mix_apply(model, st, {{&b, 1.0}});
    }
    for (int64_t r = 0; r < reps; ++r) {
        stop_check();
        device_sync(device);
        const double t0 = now_ms();
        Adapter      a  = adapter_load(r % 2 == 0 ? fa : fb);
        const double t1 = now_ms();
        mix_apply(model, st, {{&a, 1.0}});
        device_sync(device);
        const double t2 = now_ms();
        total.push_back(t2 - t0);
        load.push_back(t1 - t0);
        apply.push_back(t2 - t1);
    }
    mix_clear(model, st);
    return {median(total), median(load), median(apply)};
}

Json storage_totals(const Adapter& a) {
    int64_t     bv = 0, bi = 0;
    std::string encoding;
    for (const auto& [_, info] : a.storage) {
        bv += info.bytes_values;
        bi += info.bytes_index;
        if (encoding.empty()) encoding = info.index;
        if (encoding != info.index) encoding = "mixed";
    }
    return {{"bytes_values", bv}, {"bytes_index", bi}, {"index_encoding", encoding}};
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
    // Training precision of the train cases: fp32, or bf16 autocast as `train` runs on CUDA (CUDA only).
    const std::string precision = get_str("precision", "fp32");
    if (precision != "fp32" && precision != "bf16") throw_bad_input("bench 'precision' must be fp32 or bf16, got '" + precision + "'");
    if (precision == "bf16" && !device.is_cuda()) throw_bad_input("bench precision bf16 needs a CUDA device (autocast is CUDA-only here)");
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
                push(bench_train_case(*model, name, c, common, batch, warmup, reps, density, precision == "bf16", device, should_stop));
            }
        } else {
            const int64_t reps = get_int("reps", quick ? 3 : 7, 1, 1000);
            TempFiles     tmp;
            // Whole-model switch A → B (warm: A is applied first, every adapter already in memory). SHiRA writes
            // the kept base values back at A's indices, then scatters B; LoRA restores the kept copies of every
            // touched tensor, then adds (alpha/r)·BA per layer. The LoRA pair does not depend on the mask, so it is
            // timed once per model and reported in every mask's row.
            Adapter la = random_lora_adapter(*model, density, 1), lb = random_lora_adapter(*model, density, 2);
            const double lora_ms = time_switch(*model, device, la, lb, reps, stop_check);
            const std::string lfa = tmp.add("lora-a"), lfb = tmp.add("lora-b");
            adapter_save(la, lfa);
            adapter_save(lb, lfb);
            const auto lora_cold = time_cold_switch(*model, device, lfa, lfb, reps, stop_check);
            const double lora_bpv = (double)file_bytes(lfa) / (double)la.trainable();
            // Bytes per trained value of this mask's file (f16 and f32 values) vs PEFT and fp16 LoRA.
            auto bytes_row = [&](const Adapter& a, MaskType m, const char* index_model) {
                for (ValuesDtype vd : {VALUES_DTYPE_F16, VALUES_DTYPE_F32}) {
                    stop_check();
                    const std::string f  = tmp.add("bpv");
                    const double      t0 = now_ms();
                    adapter_save(a, f, vd);
                    const double  t1   = now_ms();
                    const Adapter back = adapter_load(f);
                    const double  t2   = now_ms();
                    Json          tot  = storage_totals(back);
                    Json          r    = common;
                    const double  k    = (double)a.trainable();
                    r.update({{"name", "bytes_per_value"}, {"mask", mask_type_name(m)}, {"density", density},
                              {"values_dtype", vd == VALUES_DTYPE_F16 ? "f16" : "f32"}, {"index_encoding", tot["index_encoding"]},
                              {"index_model", index_model}, {"trainable", a.trainable()}, {"file_bytes", file_bytes(f)},
                              {"bytes_values", tot["bytes_values"]}, {"bytes_index", tot["bytes_index"]},
                              {"bytes_per_value", (double)file_bytes(f) / k},
                              {"payload_bytes_per_value", (tot["bytes_values"].get<double>() + tot["bytes_index"].get<double>()) / k},
                              {"peft_bytes_per_value", 12}, {"lora_bytes_per_value", lora_bpv}, {"encode_ms", t1 - t0},
                              {"decode_ms", t2 - t1}});
                    push(r);
                    std::remove(f.c_str());
                }
            };
            Adapter rand_like;  // a Rand adapter: its shapes and K per layer seed the Grad/SNIP index model
            for (MaskType mask : {MASK_TYPE_STRUCT, MASK_TYPE_RAND, MASK_TYPE_WM}) {
                stop_check();
                Adapter sa = random_shira_adapter(*model, mask, density, 1), sb = random_shira_adapter(*model, mask, density, 2);
                const double shira_ms = time_switch(*model, device, sa, sb, reps, stop_check);
                Json row = common;
                row.update({{"name", "switch"}, {"mask", mask_type_name(mask)}, {"density", density}, {"reps", reps},
                            {"shira_switch_ms", shira_ms}, {"lora_switch_ms", lora_ms}, {"ratio", lora_ms / std::max(shira_ms, 1e-9)},
                            {"shira_params", sa.trainable()}, {"lora_params", la.trainable()}, {"layers", (int64_t)sa.shira.size()}});
                push(row);
                // Cold: read + decode the v2 file, then apply (no decoded copy in memory beforehand).
                const std::string fa = tmp.add("shira-a"), fb = tmp.add("shira-b");
                adapter_save(sa, fa);
                adapter_save(sb, fb);
                const auto cold = time_cold_switch(*model, device, fa, fb, reps, stop_check);
                Json       c    = common;
                c.update({{"name", "cold_switch"}, {"mask", mask_type_name(mask)}, {"density", density}, {"reps", reps},
                          {"index_encoding", storage_totals(adapter_load(fa))["index_encoding"]}, {"values_dtype", "f16"},
                          {"shira_switch_ms", cold[0]}, {"shira_load_ms", cold[1]}, {"shira_apply_ms", cold[2]},
                          {"lora_switch_ms", lora_cold[0]}, {"lora_load_ms", lora_cold[1]}, {"lora_apply_ms", lora_cold[2]},
                          {"ratio", lora_cold[0] / std::max(cold[0], 1e-9)}, {"shira_file_bytes", file_bytes(fa)},
                          {"lora_file_bytes", file_bytes(lfa)}});
                push(c);
                if (mask == MASK_TYPE_RAND) rand_like = sa;
                bytes_row(sa, mask, mask == MASK_TYPE_WM ? "top-K of |W| (random init = iid random scores)" : "the mask itself");
            }
            // Grad/SNIP: top-K of iid random scores (a uniform K-subset), so Rice-coded like any top-K mask.
            for (MaskType mask : {MASK_TYPE_GRAD, MASK_TYPE_SNIP}) {
                stop_check();
                bytes_row(random_topk_adapter(rand_like, mask == MASK_TYPE_GRAD ? 77 : 78), mask, "top-K of iid random scores (uniform K-subset)");
            }
            // Blending N adapters (Rand SHiRA / parameter-matched LoRA, all on every default target): each timed
            // apply switches from the previous mix (the previous N, or the same N at the other α), so every layer
            // is restored and re-blended; median over reps per N.
            {
                const std::vector<int64_t> ns = {1, 2, 4, 8};
                const int64_t blend_reps = get_int("blend_reps", quick ? 1 : 3, 1, 100);
                std::vector<Adapter> shira_n, lora_n;
                for (int64_t i = 0; i < ns.back(); ++i) {
                    stop_check();
                    shira_n.push_back(random_shira_adapter(*model, MASK_TYPE_RAND, density, 100 + i));
                    lora_n.push_back(random_lora_adapter(*model, density, 100 + i));
                }
                auto time_blend = [&](const std::vector<Adapter>& ads, std::vector<double>& out, std::vector<int64_t>& union_nnz) {
                    MixState st;
                    mix_apply(*model, st, {{&ads[0], 0.5}});
                    for (int64_t n : ns) {
                        std::vector<double> t;
                        for (int64_t r = 0; r < blend_reps; ++r) {
                            stop_check();
                            std::vector<std::pair<const Adapter*, double>> mix;
                            for (int64_t i = 0; i < n; ++i) mix.emplace_back(&ads[i], r % 2 == 0 ? 1.0 : 0.5);
                            device_sync(device);
                            const double t0 = now_ms();
                            mix_apply(*model, st, mix);
                            device_sync(device);
                            t.push_back(now_ms() - t0);
                        }
                        out.push_back(median(t));
                        int64_t u = 0;
                        for (const auto& [_, b] : st.layers) u += b.shira_union.defined() ? b.shira_union.numel() : 0;
                        union_nnz.push_back(u);
                    }
                    mix_clear(*model, st);
                };
                std::vector<double>  shira_t, lora_t;
                std::vector<int64_t> shira_u, lora_u;
                time_blend(shira_n, shira_t, shira_u);
                time_blend(lora_n, lora_t, lora_u);
                for (size_t i = 0; i < ns.size(); ++i) {
                    Json r = common;
                    r.update({{"name", "blend_n"}, {"n", ns[i]}, {"mask", "rand"}, {"density", density}, {"reps", blend_reps},
                              {"nnz_total", shira_n[0].trainable() * ns[i]}, {"union_nnz", shira_u[i]},
                              {"lora_params_total", lora_n[0].trainable() * ns[i]}, {"shira_switch_ms", shira_t[i]},
                              {"lora_switch_ms", lora_t[i]}, {"ratio", lora_t[i] / std::max(shira_t[i], 1e-9)}});
                    push(r);
                }
            }
            // Warm α change in a 2-adapter mix: A on the attention projections, B on the feed-forward and proj_in/out
            // layers; B's α changes. Incremental re-blends only B's layers; "full" is clear + apply of both.
            {
                const std::vector<std::string> attn = {"to_q", "to_k", "to_v", "to_out.0"}, rest = {"ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"};
                Adapter sa = random_shira_adapter(*model, MASK_TYPE_RAND, density, 201, attn), sb = random_shira_adapter(*model, MASK_TYPE_RAND, density, 202, rest);
                Adapter la2 = random_lora_adapter(*model, density, 201, attn), lb2 = random_lora_adapter(*model, density, 202, rest);
                auto time_alpha = [&](const Adapter& a, const Adapter& b, double& inc_ms, double& full_ms, MixStats& stats) {
                    MixState            st;
                    std::vector<double> inc, full;
                    mix_apply(*model, st, {{&a, 1.0}, {&b, 1.0}});
                    const int64_t alpha_reps = quick ? 1 : reps;  // each rep also pays a full LoRA re-blend twice
                    for (int64_t r = 0; r < alpha_reps; ++r) {
                        stop_check();
                        const double alpha = r % 2 == 0 ? 0.5 : 1.0;
                        device_sync(device);
                        double t0 = now_ms();
                        mix_apply(*model, st, {{&a, 1.0}, {&b, alpha}}, &stats);
                        device_sync(device);
                        inc.push_back(now_ms() - t0);
                        const double back = r % 2 == 0 ? 1.0 : 0.5;  // full: from the state before this change
                        mix_apply(*model, st, {{&a, 1.0}, {&b, back}});
                        device_sync(device);
                        t0 = now_ms();
                        mix_clear(*model, st);
                        mix_apply(*model, st, {{&a, 1.0}, {&b, alpha}});
                        device_sync(device);
                        full.push_back(now_ms() - t0);
                    }
                    mix_clear(*model, st);
                    inc_ms  = median(inc);
                    full_ms = median(full);
                };
                double   s_inc = 0, s_full = 0, l_inc = 0, l_full = 0;
                MixStats s_stats, l_stats;
                time_alpha(sa, sb, s_inc, s_full, s_stats);
                time_alpha(la2, lb2, l_inc, l_full, l_stats);
                Json r = common;
                r.update({{"name", "alpha_change"}, {"n", 2}, {"mask", "rand"}, {"density", density}, {"reps", quick ? 1 : reps},
                          {"shira_switch_ms", s_inc}, {"lora_switch_ms", l_inc}, {"ratio", l_inc / std::max(s_inc, 1e-9)},
                          {"shira_full_ms", s_full}, {"lora_full_ms", l_full}, {"layers_reblended", s_stats.layers_reblended},
                          {"layers_total", s_stats.layers_reblended + s_stats.layers_unchanged},
                          {"changed_adapter_params", sb.trainable()}, {"mix_params", sa.trainable() + sb.trainable()}});
                push(r);
            }
        }
    }
    return {{"rows", rows}};
}
