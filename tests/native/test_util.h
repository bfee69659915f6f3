// What the native test files share (tests/native/test_<concern>.cpp, one per source folder): the case registry,
// EXPECT and maxdiff checks, and small fixtures — a tiny model config, a dataset of coloured squares, random
// adapters. Reference-oracle style (llm.c): production paths are compared against plain dense computations,
// printing maxdiff so regressions show their size, not just a failure.
//
// A case is `SHIRA_TEST(name) { ... }` at the start of a line: the binary runs it by name
// (`shira-worker-tests name`, or all without a name) and CMake reads these lines to make one ctest entry each.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "adapter/adapter.h"
#include "adapter/lora.h"
#include "adapter/shira.h"
#include "core/errors.h"
#include "core/json_args.h"
#include "model/diffusion_model.h"
#include "model_io/safetensors.h"

using TestFn = void (*)();
std::map<std::string, TestFn>& test_registry();  // test_main.cpp

inline bool register_test(const char* name, TestFn fn) {
    test_registry()[name] = fn;
    return true;
}
// A tool is a mode of the test binary that is not a ctest case (an oracle's data pump, a timing):
// `shira-worker-tests <tool-name>` runs it and exits with its status.
using ToolFn = int (*)();
std::map<std::string, ToolFn>& tool_registry();  // test_main.cpp

inline bool register_tool(const char* name, ToolFn fn) {
    tool_registry()[name] = fn;
    return true;
}
#define SHIRA_TOOL(fn, name)                                                            \
    int         tool_##fn();                                                            \
    static bool registered_tool_##fn [[maybe_unused]] = register_tool(name, tool_##fn); \
    int         tool_##fn()

#define SHIRA_TEST(name)                                                                \
    void        test_##name();                                                          \
    static bool registered_##name [[maybe_unused]] = register_test(#name, test_##name); \
    void        test_##name()

inline int g_failures = 0;

#define EXPECT(cond)                                                                       \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            std::fprintf(stderr, "%s:%d: EXPECT failed: %s\n", __FILE__, __LINE__, #cond); \
            ++g_failures;                                                                  \
        }                                                                                  \
    } while (0)

inline double maxdiff(const torch::Tensor& a, const torch::Tensor& b) {
    return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

inline void check_close(const char* what, const torch::Tensor& a, const torch::Tensor& b, double tol) {
    const double d = maxdiff(a, b);
    std::printf("  %-44s maxdiff %.3e (tol %.0e)\n", what, d, tol);
    if (!(d <= tol)) {
        std::fprintf(stderr, "  FAIL: %s maxdiff %.3e > %.0e\n", what, d, tol);
        ++g_failures;
    }
}

template <typename F>
inline bool throws_type(ErrorType type, F&& f) {
    try {
        f();
    } catch (const WorkerError& e) {
        return e.type == type;
    } catch (...) {
        return false;
    }
    return false;
}

inline const std::string kTmp = "/tmp/shira-native-tests-" + std::to_string(getpid());

inline ModelConfig tiny_config(bool linear_projection = false) {
    Json j = {{"name", "tiny-test"},
              {"unet",
               {{"sample_size", 16},
                {"block_out_channels", {16, 32}},
                {"attention", {false, true}},
                {"layers_per_block", 1},
                {"attention_heads", 2},
                {"norm_num_groups", 8},
                {"use_linear_projection", linear_projection}}},
              {"text_encoder",
               {{"vocab", {"red", "blue", "green", "square", "circle"}},
                {"width", 32},
                {"layers", 1},
                {"heads", 2},
                {"max_length", 8}}}};
    return model_config_from_json(j);
}

inline std::map<std::string, torch::Tensor> snapshot(const DiffusionModel& m) {
    std::map<std::string, torch::Tensor> out;
    for (const auto& [k, v] : m.named_parameters()) out[k] = v.detach().clone();
    return out;
}

inline bool bit_identical(const DiffusionModel& m, const std::map<std::string, torch::Tensor>& snap) {
    for (const auto& [k, v] : m.named_parameters()) {
        if (!torch::equal(v.detach(), snap.at(k))) {
            std::fprintf(stderr, "  tensor %s differs from W0\n", k.c_str());
            return false;
        }
    }
    return true;
}

// Fixed inputs so repeated forwards are comparable: x [2, 3, 16, 16], t [2], context from prompts.
struct Probe {
    torch::Tensor x, t, ctx;
};
inline Probe make_probe(DiffusionModel& m) {
    torch::NoGradGuard g;
    at::Generator      gen = at::detail::createCPUGenerator(123);
    return {torch::randn({2, 3, 16, 16}, gen, torch::kFloat32), torch::tensor({10, 700}, torch::kInt64),
            m.text->encode({"red square", "blue circle"})};
}

// 8 images of a coloured square on a dark background, captions naming the colour.
inline std::string write_dataset() {
    torch::Tensor            images = torch::full({8, 16, 16, 3}, 20, torch::kUInt8);
    std::vector<std::string> caps;
    for (int i = 0; i < 8; ++i) {
        const int c = i % 3, o = i % 4;
        images.index({i, torch::indexing::Slice(2 + o, 10 + o), torch::indexing::Slice(3, 11), c}).fill_(235);
        caps.push_back(std::string(c == 0 ? "red" : c == 1 ? "green" : "blue") + " square");
    }
    const std::string path = kTmp + "-data.safetensors";
    safetensors_save(path, {{"images", images}}, {{"captions", Json(caps).dump()}});
    return path;
}

inline Adapter random_shira(DiffusionModel& m, MaskType mask, uint64_t seed, double scale) {
    ShiraOptions o;
    o.mask      = mask;
    o.seed      = seed;
    auto params = shira_attach(m, o);
    {
        torch::NoGradGuard g;
        at::Generator      gen = at::detail::createCPUGenerator(seed);
        for (auto& v : params) v.copy_(torch::randn(v.sizes(), gen, torch::kFloat32) * scale);
    }
    return shira_detach(m);
}

inline Adapter random_lora(DiffusionModel& m, uint64_t seed, std::vector<std::string> targets = kDefaultTargets) {
    LoraOptions o;
    o.rank      = 2;
    o.alpha     = 3;
    o.seed      = seed;
    o.targets   = targets;
    auto params = lora_attach(m, o);
    {
        torch::NoGradGuard g;
        for (auto& v : params) v.normal_(0, 0.1);
    }
    return lora_detach(m);
}

inline Adapter shira_with(DiffusionModel& m, ShiraOptions o, uint64_t value_seed, bool mark_rand_seed,
                          const std::map<std::string, torch::Tensor>& scores = {}) {
    auto params = shira_attach(m, o, scores);
    {
        torch::NoGradGuard g;
        at::Generator      gen = at::detail::createCPUGenerator(value_seed);
        for (auto& v : params) v.copy_(torch::randn(v.sizes(), gen, torch::kFloat32) * 0.05);
    }
    Adapter a = shira_detach(m);
    if (mark_rand_seed) {
        for (auto& [name, t] : a.shira) t.rand_seed = shira_layer_seed(o.seed, name);
    }
    return a;
}

inline std::string file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline int64_t file_size(const std::string& path) { return (int64_t)file_bytes(path).size(); }

template <typename F>
inline std::string error_of(F&& f) {
    try {
        f();
    } catch (const WorkerError& e) {
        return std::string(error_type_name(e.type)) + ": " + e.what();
    }
    return "(no error)";
}

inline void expect_bad(const char* what, const std::function<void()>& f, const std::string& needle) {
    const std::string e = error_of(f);
    std::printf("  %-40s -> %s\n", what, e.substr(0, 150).c_str());
    if (e.rfind("bad_input: ", 0) != 0 || e.find(needle) == std::string::npos) {
        std::fprintf(stderr, "  FAIL: %s: expected bad_input mentioning '%s'\n", what, needle.c_str());
        ++g_failures;
    }
}
