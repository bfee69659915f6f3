// bench_run (bench.h): arguments, the per-model loop over the train / switch benchmarks, and the per-layer
// gradient-path benchmark (grad).
#include "bench/bench.h"

#include <algorithm>
#include <array>

#include <torch/torch.h>
#include <torch/version.h>

#include "adapter/masks.h"
#include "adapter/sparse_grad.h"
#include "bench/bench_cases.h"
#include "core/errors.h"
#include "core/json_args.h"

double median(std::vector<double> v) {
    if (v.empty()) return -1;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

ModelConfig bench_model_config(const std::string& name, int64_t size) {
    Json text = {{"vocab", {"a", "red", "blue", "square", "circle"}},
                 {"width", 256},
                 {"layers", 2},
                 {"heads", 4},
                 {"max_length", 16}};
    Json unet;
    if (name == "builtin") {
        unet = {{"sample_size", size > 0 ? size : 64},
                {"block_out_channels", {64, 128, 256}},
                {"attention", {false, true, true}},
                {"layers_per_block", 2},
                {"attention_heads", 4},
                {"norm_num_groups", 32}};
    } else if (name == "sd15") {
        unet = {{"sample_size", size > 0 ? size : 32},
                {"block_out_channels", {320, 640, 1280, 1280}},
                {"attention", {true, true, true, false}},
                {"layers_per_block", 2},
                {"attention_heads", 8},
                {"norm_num_groups", 32}};
        text = {{"vocab", {"a", "red", "blue", "square", "circle"}},
                {"width", 768},
                {"layers", 1},
                {"heads", 12},
                {"max_length", 16}};
    } else {
        throw_bad_input("bench model must be 'builtin' or 'sd15' (or pass config)");
    }
    return model_config_from_json({{"name", name}, {"unet", unet}, {"text_encoder", text}});
}

Json bench_run(const Json& args, torch::Device device, const std::function<void(const Json&)>& emit,
               const std::function<bool()>& should_stop) {
    const std::string kind    = get_str(args, "kind", "grad");
    const bool        quick   = args.contains("quick") && args.at("quick").is_boolean() && args.at("quick").get<bool>();
    const double      density = get_num(args, "density", 0.02, 1e-6, 1);
    // Training precision of the train cases: fp32, or bf16 autocast as `train` runs on CUDA (CUDA only).
    const std::string precision = get_str(args, "precision", "fp32");
    if (precision != "fp32" && precision != "bf16")
        throw_bad_input("bench 'precision' must be fp32 or bf16, got '" + precision + "'");
    if (precision == "bf16" && !device.is_cuda())
        throw_bad_input("bench precision bf16 needs a CUDA device (autocast is CUDA-only here)");
    const std::vector<std::string> models = split_list(get_str(args, "models", "builtin,sd15"), ',');
    Json                           rows   = Json::array();
    auto                           push   = [&](const Json& row) {
        emit({{"event", "bench_row"}, {"row", row}});
        rows.push_back(row);
    };
    auto stop_check = [&] {
        if (should_stop && should_stop()) throw WorkerError(ERROR_TYPE_CANCELLED, "bench cancelled");
    };
    const std::string dev = device.str();

    if (kind == "grad") {
        // Sparse vs dense-then-gather weight gradient for SD-1.5-like Linear shapes (out × in) at N tokens.
        const int64_t                             tokens = get_int(args, "tokens", 1024, 1, 1 << 20);
        const int                                 reps   = (int)get_int(args, "reps", quick ? 2 : 5, 1, 100);
        const std::vector<std::array<int64_t, 2>> shapes = {{320, 320},  {320, 768},   {2560, 320},
                                                            {320, 1280}, {1280, 1280}, {10240, 1280}};
        for (const auto& s : shapes) {
            if (quick && s[0] * s[1] > 1280 * 1280) continue;
            for (MaskType mask : {MASK_TYPE_STRUCT, MASK_TYPE_RAND}) {
                stop_check();
                const int64_t K = shira_k(s[0] * s[1], density);
                torch::Tensor idx =
                    mask == MASK_TYPE_STRUCT ? mask_struct(s[0], s[1], K) : mask_rand(s[0] * s[1], K, 0);
                auto t = shira_time_grad_paths(tokens, s[0], s[1], idx, reps);
                push({{"name", "grad_path"},
                      {"device", "cpu"},
                      {"model", "layer"},
                      {"shape", {s[0], s[1]}},
                      {"mask", mask_type_name(mask)},
                      {"tokens", tokens},
                      {"k", K},
                      {"sparse_ms", t.sparse_ms},
                      {"dense_ms", t.dense_ms},
                      {"speedup", t.dense_ms / std::max(t.sparse_ms, 1e-9)},
                      {"winner", t.sparse_ms <= t.dense_ms ? "sparse" : "dense"},
                      {"maxdiff", t.maxdiff},
                      {"dense_dw_bytes", t.dense_dw_bytes},
                      {"threads", torch::get_num_threads()}});
            }
        }
        return {{"rows", rows}};
    }

    if (kind != "train" && kind != "switch") throw_bad_input("bench kind must be train, switch or grad");
    for (const std::string& name : models) {
        stop_check();
        const int64_t size = get_int(args, "size", name == "sd15" ? (quick ? 16 : 32) : (quick ? 32 : 64), 8, 1024);
        ModelConfig   cfg  = bench_model_config(name, size);
        if (args.contains("config") && name == "builtin") {
            if (!args.at("config").is_object()) throw_bad_input("bench 'config' must be a model config object");
            cfg = model_config_from_json(args.at("config"));  // e.g. the shipped built-in model's config
        }
        auto model  = model_init(cfg, 0, device);
        Json common = {
            {"device", dev}, {"model", name}, {"threads", torch::get_num_threads()}, {"torch", TORCH_VERSION}};
        const BenchContext ctx{args, device, quick, density, precision == "bf16", push, stop_check, should_stop};
        if (kind == "train") {
            bench_train_model(*model, name, common, ctx);
        } else {
            bench_switch_model(*model, common, ctx);
        }
    }
    return {{"rows", rows}};
}
