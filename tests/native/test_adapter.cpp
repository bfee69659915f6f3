// shira-worker-tests: tiny configs, fixed seeds, CPU. Run one case by name (ctest does) or all.
// Reference-oracle style (llm.c): the fused/sparse production path is compared against plain
// dense autograd, printing maxdiff so regressions show their size, not just a failure.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>

#include <ATen/CPUGeneratorImpl.h>

#include "core/errors.h"
#include "eval/judge.h"
#include "runtime/sampler.h"
#include "model/diffusion_model.h"
#include "model_io/safetensors.h"
#include "adapter/shira.h"
#include "worker/worker.h"

namespace {

int g_failures = 0;

#define EXPECT(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: EXPECT failed: %s\n", __FILE__, __LINE__, #cond); \
            ++g_failures;                                                            \
        }                                                                            \
    } while (0)

double maxdiff(const torch::Tensor& a, const torch::Tensor& b) {
    return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

void check_close(const char* what, const torch::Tensor& a, const torch::Tensor& b, double tol) {
    const double d = maxdiff(a, b);
    std::printf("  %-44s maxdiff %.3e (tol %.0e)\n", what, d, tol);
    if (!(d <= tol)) {
        std::fprintf(stderr, "  FAIL: %s maxdiff %.3e > %.0e\n", what, d, tol);
        ++g_failures;
    }
}

template <typename F>
bool throws_type(ErrorType type, F&& f) {
    try {
        f();
    } catch (const WorkerError& e) {
        return e.type == type;
    } catch (...) {
        return false;
    }
    return false;
}

const std::string kTmp = "/tmp/shira-native-tests-" + std::to_string(getpid());

ModelConfig tiny_config(bool linear_projection = false) {
    Json j = {{"name", "tiny-test"},
              {"unet",
               {{"sample_size", 16}, {"block_out_channels", {16, 32}}, {"attention", {false, true}}, {"layers_per_block", 1},
                {"attention_heads", 2}, {"norm_num_groups", 8}, {"use_linear_projection", linear_projection}}},
              {"text_encoder", {{"vocab", {"red", "blue", "green", "square", "circle"}}, {"width", 32}, {"layers", 1}, {"heads", 2}, {"max_length", 8}}}};
    return model_config_from_json(j);
}

std::map<std::string, torch::Tensor> snapshot(const DiffusionModel& m) {
    std::map<std::string, torch::Tensor> out;
    for (const auto& [k, v] : m.named_parameters()) out[k] = v.detach().clone();
    return out;
}

bool bit_identical(const DiffusionModel& m, const std::map<std::string, torch::Tensor>& snap) {
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
Probe make_probe(DiffusionModel& m) {
    torch::NoGradGuard g;
    at::Generator gen = at::detail::createCPUGenerator(123);
    return {torch::randn({2, 3, 16, 16}, gen, torch::kFloat32), torch::tensor({10, 700}, torch::kInt64),
            m.text->encode({"red square", "blue circle"})};
}

// 8 images of a coloured square on a dark background, captions naming the colour.
std::string write_dataset() {
    torch::Tensor images = torch::full({8, 16, 16, 3}, 20, torch::kUInt8);
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

// ---------------------------------------------------------------------------------------------

void test_safetensors() {
    std::map<std::string, torch::Tensor> t = {
        {"f32", torch::randn({3, 4})},
        {"f16", torch::randn({5}).to(torch::kFloat16)},
        {"bf16", torch::randn({2, 2, 2}).to(torch::kBFloat16)},
        {"i32", torch::arange(7, torch::kInt32)},
        {"i64", torch::tensor(std::vector<int64_t>{int64_t(1) << 40, -3})},
        {"u8", torch::randint(0, 256, {2, 4, 4, 3}).to(torch::kUInt8)},
        {"empty", torch::zeros({0, 3})},
    };
    const std::string path = kTmp + "-rt.safetensors";
    safetensors_save(path, t, {{"captions", "[\"a\",\"b\"]"}});
    SafeTensors back = safetensors_load(path);
    EXPECT(back.tensors.size() == t.size());
    for (const auto& [k, v] : t) {
        EXPECT(back.tensors.count(k) && back.tensors[k].scalar_type() == v.scalar_type() && torch::equal(back.tensors[k], v));
    }
    EXPECT(back.metadata["captions"] == "[\"a\",\"b\"]");
    EXPECT(throws_type(ERROR_TYPE_NOT_FOUND, [] { safetensors_load("/nonexistent/x.safetensors"); }));
    write_file_atomic(kTmp + "-bad.safetensors", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10));
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [] { safetensors_load(kTmp + "-bad.safetensors"); }));
    // Header claims more bytes than the file holds.
    write_file_atomic(kTmp + "-bad2.safetensors",
                      std::string("\x40\0\0\0\0\0\0\0", 8) + "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}       ");
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [] { safetensors_load(kTmp + "-bad2.safetensors"); }));
    std::printf("  round-trip of F32/F16/BF16/I32/I64/U8 + metadata: bit-identical\n");
}

void check_mask_basics(const char* what, const torch::Tensor& idx, int64_t K, int64_t numel) {
    const bool ok = idx.numel() == K && idx.scalar_type() == torch::kInt64 && std::get<0>(torch::_unique2(idx)).numel() == K &&
                    idx.min().item<int64_t>() >= 0 && idx.max().item<int64_t>() < numel &&
                    torch::equal(std::get<0>(idx.sort()), idx);
    if (!ok) std::fprintf(stderr, "  mask %s: not K sorted unique in-range entries\n", what);
    EXPECT(ok);
}

void test_masks() {
    for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{40, 24}, {24, 40}, {64, 64}, {16, 144}, {320, 320}}) {
        const int64_t numel = m * n;
        for (double d : {0.01, 0.02, 0.1, 0.5}) {
            const int64_t K = shira_k(numel, d);
            EXPECT(K == std::max<int64_t>(1, std::llround(d * numel)));
            torch::Tensor s = mask_struct(m, n, K);
            check_mask_basics("struct", s, K, numel);
            // Struct pattern: every entry is on the diagonal or on a row r ≡ 0 (mod f); rows are full except the last.
            torch::Tensor r = torch::div(s, n, "floor"), c = s.remainder(n);
            torch::Tensor off = r.masked_select(r.ne(c));
            if (off.numel()) {
                torch::Tensor rows = std::get<0>(torch::_unique2(off));
                const int64_t f    = rows.numel() > 1 ? (rows[1] - rows[0]).item<int64_t>() : 1;
                EXPECT(rows[0].item<int64_t>() == 0);
                EXPECT(rows.remainder(f).eq(0).all().item<bool>());
                for (int64_t i = 0; i + 1 < rows.numel(); ++i) {
                    EXPECT(r.eq(rows[i]).sum().item<int64_t>() == n);
                }
            }
            EXPECT(r.eq(c).sum().item<int64_t>() == std::min({m, n, K}));
            torch::Tensor a = mask_rand(numel, K, 7), b = mask_rand(numel, K, 7), e = mask_rand(numel, K, 8);
            check_mask_basics("rand", a, K, numel);
            EXPECT(torch::equal(a, b));
            if (K < numel / 2) EXPECT(!torch::equal(a, e));
            // Non-overlap: exclude a's indices; result disjoint and still exactly K.
            if (2 * K <= numel) {
                torch::Tensor excl = torch::zeros({numel}, torch::kBool).index_fill_(0, a, true);
                for (auto& x : {mask_struct(m, n, K, excl), mask_rand(numel, K, 9, excl), mask_topk(torch::randn({numel}), K, excl)}) {
                    check_mask_basics("non-overlap", x, K, numel);
                    EXPECT(!excl.index_select(0, x).any().item<bool>());
                }
            }
            // WM (and any top-K score): every selected score >= every unselected one.
            torch::Tensor w   = torch::randn({m, n});
            torch::Tensor wm  = mask_topk(w.abs(), K);
            torch::Tensor sel = torch::zeros({numel}, torch::kBool).index_fill_(0, wm, true);
            check_mask_basics("wm", wm, K, numel);
            if (K < numel) EXPECT(w.abs().view(-1).masked_select(sel).min().item<float>() >= w.abs().view(-1).masked_select(~sel).max().item<float>());
        }
    }
    // Grad / SNIP on the tiny model: scores equal an independent autograd computation and the masks are their top-K.
    auto  model = model_init(tiny_config(), 1, torch::kCPU);
    Probe p     = make_probe(*model);
    auto  loss_fn = [&] { return model->predict(p.x, p.t, p.ctx).pow(2).mean(); };
    const std::vector<std::string> targets = {"to_q", "proj_in"};
    auto grad_scores = shira_calibrate(*model, targets, MASK_TYPE_GRAD, 2, loss_fn);
    auto snip_scores = shira_calibrate(*model, targets, MASK_TYPE_SNIP, 1, loss_fn);
    auto layers      = model->layers();
    for (auto& [name, score] : grad_scores) {
        torch::Tensor W = layers.at(name)->weight;
        W.set_requires_grad(true);
        torch::Tensor g = torch::autograd::grad({loss_fn()}, {W})[0];
        W.set_requires_grad(false);
        check_close(("grad score == 2·|dL/dW|: " + name.substr(name.size() - 20)).c_str(), score, 2 * g.abs(), 1e-6);
        check_close("snip score == |W ⊙ dL/dW|", snip_scores.at(name), (W * g).abs(), 1e-6);
    }
    ShiraOptions o;
    o.targets = targets;
    o.density = 0.05;
    for (MaskType mt : {MASK_TYPE_GRAD, MASK_TYPE_SNIP}) {
        o.mask         = mt;
        auto& scores   = mt == MASK_TYPE_GRAD ? grad_scores : snip_scores;
        shira_attach(*model, o, scores);
        for (auto& [name, l] : model->layers()) {
            if (!l->shira) continue;
            torch::Tensor s   = scores.at(name).reshape(-1);
            torch::Tensor sel = torch::zeros({s.numel()}, torch::kBool).index_fill_(0, l->shira->idx, true);
            EXPECT(l->shira->idx.numel() == shira_k(s.numel(), 0.05));
            EXPECT(s.masked_select(sel).min().item<float>() >= s.masked_select(~sel).max().item<float>());
        }
        shira_detach(*model);
    }
    std::printf("  masks: exact K, sorted/unique, seed determinism, Struct pattern, non-overlap, top-K (WM/Grad/SNIP)\n");
}

std::shared_ptr<ShiraSlot> make_slot(const torch::Tensor& W, double density, uint64_t seed, bool structured = false) {
    const int64_t n = W.numel() / W.size(0);
    auto          s = std::make_shared<ShiraSlot>();
    const int64_t K = shira_k(W.numel(), density);
    s->idx          = structured ? mask_struct(W.size(0), n, K) : mask_rand(W.numel(), K, seed);
    s->rows         = torch::div(s->idx, n, "floor");
    s->cols         = s->idx.remainder(n);
    s->base_vals    = W.detach().reshape(-1).index_select(0, s->idx).clone();
    s->values       = torch::zeros({s->idx.numel()}).requires_grad_(true);
    return s;
}

void test_sparse_grad() {
    torch::manual_seed(0);
    struct Case {
        const char* name;
        Layer       layer;
        torch::Tensor x;
    };
    std::vector<Case> cases = {
        {"linear [40x48], x [2,7,48]", Layer(LAYER_KIND_LINEAR, 48, 40), torch::randn({2, 7, 48})},
        {"conv1x1 [24x16], x [2,16,5,5]", Layer(LAYER_KIND_CONV, 16, 24, 1), torch::randn({2, 16, 5, 5})},
        {"conv3x3 s2 [8x16x3x3], x [2,16,9,9]", Layer(LAYER_KIND_CONV, 16, 8, 3, 2, 1), torch::randn({2, 16, 9, 9})},
    };
    for (auto& c : cases) {
      for (bool structured : {false, true}) {  // Struct takes the full-row GEMM + diagonal-gather split
        for (GradPath path : {GRAD_PATH_SPARSE, GRAD_PATH_DENSE, GRAD_PATH_AUTO}) {
            auto& L = *c.layer;
            for (auto& p : L.parameters()) p.set_requires_grad(false);
            L.shira       = make_slot(L.weight, 0.1, 3, structured);
            L.shira->path = path;
            // Oracle: dense autograd through an ordinary weight, gathered at the mask.
            torch::Tensor W2 = L.weight.detach().clone().requires_grad_(true);
            torch::Tensor x1 = c.x.clone().requires_grad_(true), x2 = c.x.clone().requires_grad_(true);
            torch::Tensor y1 = L.forward(x1);
            torch::Tensor y2 = L.kind == LAYER_KIND_LINEAR ? torch::linear(x2, W2, L.bias) : torch::conv2d(x2, W2, L.bias, L.stride, L.padding);
            torch::Tensor probe = torch::randn(y1.sizes());
            (y1 * probe).sum().backward();
            (y2 * probe).sum().backward();
            const std::string pn = std::string(structured ? "struct " : "rand ") +
                                   (path == GRAD_PATH_SPARSE ? "sparse" : path == GRAD_PATH_DENSE ? "dense" : "auto");
            check_close((std::string(c.name) + " dδ " + pn).c_str(), L.shira->values.grad(), W2.grad().view(-1).index_select(0, L.shira->idx), 1e-4);
            check_close((std::string(c.name) + " dx " + pn).c_str(), x1.grad(), x2.grad(), 1e-4);
            L.shira.reset();
        }
      }
    }
    // Timing of the two paths (SD-1.5 attention shapes, 1024 tokens, 2 % density).
    for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{320, 320}, {1280, 1280}}) {
        for (MaskType mt : {MASK_TYPE_STRUCT, MASK_TYPE_RAND}) {
            const int64_t K   = shira_k(m * n, 0.02);
            torch::Tensor idx = mt == MASK_TYPE_STRUCT ? mask_struct(m, n, K) : mask_rand(m * n, K, 0);
            auto          t   = shira_time_grad_paths(1024, m, n, idx, 3);
            std::printf("  timing %4lldx%-4lld %-6s N=1024 K=%-6lld sparse %.2f ms, dense+gather %.2f ms -> %s (maxdiff %.1e, dense dW %lld B)\n",
                        (long long)m, (long long)n, mask_type_name(mt), (long long)K, t.sparse_ms, t.dense_ms,
                        t.sparse_ms <= t.dense_ms ? "sparse" : "dense", t.maxdiff, (long long)t.dense_dw_bytes);
            EXPECT(t.maxdiff < 1e-2);
        }
    }
}

void test_fused_forward() {
    for (bool linear_proj : {false, true}) {
        auto  model = model_init(tiny_config(linear_proj), 2, torch::kCPU);
        auto  w0    = snapshot(*model);
        Probe p     = make_probe(*model);
        ShiraOptions o;
        o.mask = MASK_TYPE_RAND;
        o.density = 0.05;
        auto params = shira_attach(*model, o);
        {
            torch::NoGradGuard g;
            for (auto& v : params) v.normal_(0, 0.05);
        }
        shira_write_values(*model);
        torch::Tensor y_fused;
        {
            torch::NoGradGuard g;
            y_fused = model->predict(p.x, p.t, p.ctx);
        }
        Adapter a = shira_detach(*model);
        EXPECT(bit_identical(*model, w0));
        // Unfused reference: W0 + scatter(S) built densely, as PEFT's forward does.
        torch::Tensor y_unfused;
        {
            torch::NoGradGuard g;
            auto layers = model->layers();
            for (auto& [name, t] : a.shira) layers.at(name)->weight.view(-1).index_add_(0, t.idx, t.values);
            y_unfused = model->predict(p.x, p.t, p.ctx);
            for (auto& [name, w] : w0) model->named_parameters().at(name).copy_(w);
        }
        check_close(linear_proj ? "fused vs unfused forward (linear proj)" : "fused vs unfused forward (conv proj)", y_fused, y_unfused, 1e-5);
        EXPECT(maxdiff(y_fused, model->predict(p.x, p.t, p.ctx).detach()) > 1e-6);  // the adapter did change the output
    }
}

Adapter random_shira(DiffusionModel& m, MaskType mask, uint64_t seed, double scale) {
    ShiraOptions o;
    o.mask = mask;
    o.seed = seed;
    auto params = shira_attach(m, o);
    {
        torch::NoGradGuard g;
        at::Generator gen = at::detail::createCPUGenerator(seed);
        for (auto& v : params) v.copy_(torch::randn(v.sizes(), gen, torch::kFloat32) * scale);
    }
    return shira_detach(m);
}

Adapter random_lora(DiffusionModel& m, uint64_t seed, std::vector<std::string> targets = kDefaultTargets) {
    LoraOptions o;
    o.rank = 2;
    o.alpha = 3;
    o.seed = seed;
    o.targets = targets;
    auto params = lora_attach(m, o);
    {
        torch::NoGradGuard g;
        for (auto& v : params) v.normal_(0, 0.1);
    }
    return lora_detach(m);
}

void test_mix() {
    auto model = model_init(tiny_config(), 3, torch::kCPU);
    auto w0    = snapshot(*model);
    Adapter A  = random_shira(*model, MASK_TYPE_RAND, 1, 0.1);
    Adapter B  = random_shira(*model, MASK_TYPE_STRUCT, 2, 0.1);
    Adapter L  = random_lora(*model, 5);
    EXPECT(bit_identical(*model, w0));
    // Round-trip through the file format first (f32 values: exact), so the mix uses what the app would load.
    adapter_save(A, kTmp + "-A.safetensors", VALUES_DTYPE_F32);
    adapter_save(L, kTmp + "-L.safetensors", VALUES_DTYPE_F32);
    Adapter A2 = adapter_load(kTmp + "-A.safetensors"), L2 = adapter_load(kTmp + "-L.safetensors");
    for (auto& [k, t] : A.shira) EXPECT(torch::equal(t.idx, A2.shira.at(k).idx) && torch::equal(t.values, A2.shira.at(k).values));
    for (auto& [k, t] : L.lora) EXPECT(torch::equal(t.A, L2.lora.at(k).A) && t.alpha == L2.lora.at(k).alpha);

    MixState st;
    const std::string layer = A.shira.begin()->first;
    const auto&       ta = A.shira.at(layer), &tb = B.shira.at(layer);
    double ms = mix_apply(*model, st, {{&A2, 0.7}, {&B, -0.3}});
    {
        // Expected W at the union, computed densely: overlaps must accumulate both adapters.
        torch::Tensor expect = w0.at(layer + ".weight").clone().view(-1);
        expect.index_add_(0, ta.idx, ta.values * 0.7);
        expect.index_add_(0, tb.idx, tb.values * -0.3);
        check_close("apply_mix(0.7·A − 0.3·B) vs dense sum", model->named_parameters().at(layer + ".weight").view(-1), expect, 1e-6);
    }
    std::printf("  apply_mix SHiRA A+B: %.3f ms\n", ms);
    for (int cycle = 0; cycle < 5; ++cycle) {
        mix_apply(*model, st, {{&A, 1.0}});
        mix_apply(*model, st, {{&B, 0.5}, {&L2, 1.0}});  // switch A -> B + LoRA
        mix_apply(*model, st, {{&L, -1.0}, {&A, 1.25}});
    }
    ms = mix_clear(*model, st);
    EXPECT(bit_identical(*model, w0));
    std::printf("  5 apply/switch cycles then clear_mix (%.3f ms): W0 bit-identical\n", ms);
    // A mix that fails validation leaves the weights untouched (no half-applied mix).
    mix_apply(*model, st, {{&A, 1.0}});
    auto with_a = snapshot(*model);
    Adapter bad = A;
    bad.shira.begin()->second.idx = bad.shira.begin()->second.idx + 1000000;
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { mix_apply(*model, st, {{&B, 1.0}, {&bad, 1.0}}); }));
    EXPECT(bit_identical(*model, with_a));
    mix_clear(*model, st);
    EXPECT(bit_identical(*model, w0));
}

// PEFT export: keys "base_model.model.<module>.shira_weight|shira_indices" relative to the UNet, int32 [2, K]
// (row, col) indices, and an adapter_config.json PEFT can parse.
void test_export() {
    auto    model = model_init(tiny_config(), 3, torch::kCPU);
    Adapter A     = random_shira(*model, MASK_TYPE_STRUCT, 1, 0.1);
    A.metadata["mask"] = "struct";
    A.metadata["seed"] = "1";
    const std::string src = kTmp + "-exp.safetensors", dir = kTmp + "-peft";
    adapter_save(A, src, VALUES_DTYPE_F32);
    WorkerState st(torch::kCPU);
    Json r = worker_run_op(st, "adapter_export", {{"path", src}, {"out", dir}}, [](const Json&) {});
    SafeTensors peft = safetensors_load(dir + "/adapter_model.safetensors");
    EXPECT(peft.tensors.size() == 2 * A.shira.size());
    for (const auto& [name, t] : A.shira) {
        const std::string key = "base_model.model." + name.substr(5);  // drop "unet."
        EXPECT(peft.tensors.count(key + ".shira_weight") && peft.tensors.count(key + ".shira_indices"));
        if (!peft.tensors.count(key + ".shira_indices")) continue;
        const torch::Tensor& ij = peft.tensors.at(key + ".shira_indices");
        EXPECT(ij.scalar_type() == torch::kInt32 && ij.size(0) == 2 && ij.size(1) == t.idx.numel());
        EXPECT(torch::equal(ij[0].to(torch::kInt64) * t.cols + ij[1].to(torch::kInt64), t.idx));
        EXPECT(torch::equal(peft.tensors.at(key + ".shira_weight"), t.values));
    }
    std::ifstream in(dir + "/adapter_config.json");
    Json cfg = Json::parse(in);
    EXPECT(cfg["peft_type"] == "SHIRA" && cfg["mask_type"] == "struct" && cfg["r"].get<int64_t>() >= 1);
    auto tm = cfg["target_modules"].get<std::vector<std::string>>();
    for (const char* want : {"to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"}) {
        EXPECT(std::find(tm.begin(), tm.end(), want) != tm.end());
    }
    std::printf("  PEFT export: %zu tensors, r=%lld, target_modules %s\n", peft.tensors.size(), (long long)cfg["r"].get<int64_t>(),
                cfg["target_modules"].dump().c_str());
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { worker_run_op(st, "adapter_export", {{"path", src}, {"out", dir}, {"format", "onnx"}}, [](const Json&) {}); }));
}

void test_lora() {
    auto  model = model_init(tiny_config(), 4, torch::kCPU);
    auto  w0    = snapshot(*model);
    Probe p     = make_probe(*model);
    LoraOptions o;
    o.rank = 3;
    o.alpha = 6;
    o.targets = {"to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "conv1"};
    auto params = lora_attach(*model, o);
    {
        torch::NoGradGuard g;
        for (auto& v : params) v.normal_(0, 0.1);
    }
    torch::Tensor y_unfused;
    {
        torch::NoGradGuard g;
        y_unfused = model->predict(p.x, p.t, p.ctx);
    }
    Adapter  a = lora_detach(*model);
    MixState st;
    mix_apply(*model, st, {{&a, 1.0}});
    torch::Tensor y_fused;
    {
        torch::NoGradGuard g;
        y_fused = model->predict(p.x, p.t, p.ctx);
    }
    check_close("LoRA fused vs unfused forward (incl. 3x3 LoCon)", y_fused, y_unfused, 1e-4);
    mix_clear(*model, st);
    EXPECT(bit_identical(*model, w0));
    // Parameter-matched rank: r(m+n) is the closest multiple of (m+n) to SHiRA's K (r >= 1).
    LoraOptions pm;
    pm.match_density = 0.05;
    lora_attach(*model, pm);
    int64_t lora_total = 0, shira_total = 0;
    for (auto& [name, l] : model->layers()) {
        if (!l->lora) continue;
        const int64_t m = l->weight.size(0), n = l->weight.numel() / m, K = shira_k(l->weight.numel(), 0.05), r = l->lora->A.size(0);
        EXPECT(r == std::max<int64_t>(1, std::min<int64_t>(std::llround((double)K / (m + n)), std::min(m, n))));
        lora_total += r * (m + n);
        shira_total += K;
    }
    lora_detach(*model);
    std::printf("  parameter-matched LoRA: %lld params vs SHiRA K total %lld\n", (long long)lora_total, (long long)shira_total);
}

void test_model() {
    auto model = model_init(tiny_config(), 5, torch::kCPU);
    auto names = model->named_parameters();
    for (const char* k : {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                          "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.weight",
                          "unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
                          "unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.weight",
                          "unet.mid_block.attentions.0.proj_in.weight", "unet.up_blocks.0.resnets.1.conv_shortcut.weight",
                          "unet.down_blocks.0.downsamplers.0.conv.weight", "unet.up_blocks.0.upsamplers.0.conv.weight",
                          "unet.time_embedding.linear_1.weight", "unet.down_blocks.0.resnets.0.time_emb_proj.weight",
                          "text_encoder.encoder.layers.0.self_attn.q_proj.weight", "text_encoder.embeddings.token_embedding.weight"}) {
        if (!names.count(k)) std::fprintf(stderr, "  missing parameter %s\n", k);
        EXPECT(names.count(k));
    }
    EXPECT(names.at("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight").size(1) == 32);  // context dim
    Probe p = make_probe(*model);
    torch::Tensor y = model->predict(p.x, p.t, p.ctx).detach();
    EXPECT(y.sizes() == p.x.sizes());
    const std::string path = kTmp + "-model.safetensors";
    model_save(*model, path);
    auto back = model_load(path, torch::kCPU);
    check_close("model save/load forward", back->predict(p.x, p.t, p.ctx).detach(), y, 0);
    WordTokenizer tok({"red", "square"});
    EXPECT((tok.encode("Red, SQUARE! dog", 6) == std::vector<int64_t>{2, 4, 5, 1, 3, 0}));
    EXPECT((tok.encode("red red red red red red", 4) == std::vector<int64_t>{2, 4, 4, 3}));
    // Spare buckets: an unknown word gets vocab.size() + FNV-1a64(word) % buckets, stable and distinct from <unk>.
    WordTokenizer spare({"red", "square"}, 64);
    const int64_t nv = (int64_t)spare.vocab.size();
    auto ink = spare.encode("red inkfx", 5), ink2 = spare.encode("InkFX square", 5), zorp = spare.encode("zorp", 4);
    EXPECT(spare.num_ids() == nv + 64);
    EXPECT(ink[2] == nv + (int64_t)(fnv1a64("inkfx") % 64) && ink[2] == ink2[1] && ink[2] != WordTokenizer::kUnk);
    EXPECT(zorp[1] >= nv && zorp[1] < nv + 64 && zorp[1] != ink[2]);
    EXPECT(fnv1a64("") == 14695981039346656037ull && fnv1a64("a") == 0xaf63dc4c8601ec8cull);  // published FNV-1a 64 vectors
    EXPECT(model->config.text.spare_buckets == 64 &&
           names.at("text_encoder.embeddings.token_embedding.weight").size(0) == (int64_t)model->config.text.vocab.size() + 4 + 64);
    {
        torch::NoGradGuard g;
        torch::Tensor e = model->text->encode({"inkfx", "inkfx", "zorp"});
        // Not bit-exact: the GEMM kernels may block batch rows differently (3.6e-7 seen on an AMD EPYC with
        // OMP_NUM_THREADS=1), so rows of one batch agree to float rounding, far below the 1e-3 that tells words apart.
        check_close("same unknown word -> same context", e[0], e[1], 1e-5);
        EXPECT(maxdiff(e[0], e[2]) > 1e-3);
        std::printf("  spare buckets: 'inkfx' -> id %lld, 'zorp' -> id %lld (vocab %lld + 64)\n", (long long)ink[2], (long long)zorp[1], (long long)nv);
    }
    // A file written before spare buckets existed (config without the field) still loads, with none.
    {
        Json old = model_config_to_json(tiny_config());
        old["text_encoder"]["spare_buckets"] = 0;
        auto om = model_init(model_config_from_json(old), 1, torch::kCPU);
        model_save(*om, path);
        SafeTensors raw = safetensors_load(path);
        Json cfg = Json::parse(raw.metadata.at("config"));
        cfg["text_encoder"].erase("spare_buckets");
        raw.metadata["config"] = cfg.dump();
        safetensors_save(path, raw.tensors, raw.metadata);
        EXPECT(model_load(path, torch::kCPU)->config.text.spare_buckets == 0);
    }
    Json bad = model_config_to_json(tiny_config());
    bad["unet"]["norm_num_groups"] = 7;
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { model_config_from_json(bad); }));
    bad = model_config_to_json(tiny_config());
    bad["diffusion"]["prediction_type"] = "x0";
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { model_config_from_json(bad); }));
    // v-prediction configs train and sample through the same code.
    Json v = model_config_to_json(tiny_config());
    v["diffusion"]["prediction_type"] = "v_prediction";
    auto vm = model_init(model_config_from_json(v), 5, torch::kCPU);
    at::Generator gen = at::detail::createCPUGenerator(0);
    EXPECT(std::isfinite(diffusion_loss(*vm, noise_schedule_init(vm->config.diffusion), torch::zeros({1, 3, 16, 16}), vm->text->encode({"red"}), gen).item<double>()));
}

double eval_loss(DiffusionModel& m, const std::string& data_path) {
    torch::NoGradGuard g;
    SafeTensors        st     = safetensors_load(data_path);
    torch::Tensor      x0     = images_to_model(st.tensors.at("images"));
    auto               caps   = Json::parse(st.metadata.at("captions")).get<std::vector<std::string>>();
    NoiseSchedule      noise  = noise_schedule_init(m.config.diffusion);
    at::Generator      gen    = at::detail::createCPUGenerator(99);
    double             total  = 0;
    for (int rep = 0; rep < 8; ++rep) total += diffusion_loss(m, noise, x0, m.text->encode(caps), gen).item<double>();
    return total / 8;
}

void test_train() {
    const std::string data = write_dataset();
    WorkerState st(torch::kCPU);
    auto emit_count = std::make_shared<int>(0);
    EmitFn emit = [emit_count](const Json& e) {
        if (e.value("event", "") == "progress") ++*emit_count;
    };
    Json cfg = model_config_to_json(tiny_config());
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}}, emit);
    auto w0 = snapshot(*st.model);
    const double before = eval_loss(*st.model, data);
    const std::string out = kTmp + "-shira.safetensors";
    Json r = worker_run_op(st, "train",
                           {{"data", data}, {"out", out}, {"method", "shira"}, {"mask", "struct"}, {"density", 0.05}, {"steps", 50},
                            {"lr", 3e-3}, {"batch", 4}, {"seed", 1}, {"progress_every", 10}},
                           emit);
    EXPECT(bit_identical(*st.model, w0));  // training leaves the resident base untouched afterwards
    worker_run_op(st, "apply_mix", {{"adapters", {{{"path", out}, {"alpha", 1.0}}}}}, emit);
    const double after = eval_loss(*st.model, data);
    worker_run_op(st, "clear_mix", Json::object(), emit);
    std::printf("  SHiRA-Struct 50 steps: eval loss %.4f -> %.4f (train loss %.4f -> %.4f), %d progress events, %.1f s\n", before, after,
                r["first_loss"].get<double>(), r["final_loss"].get<double>(), *emit_count, r["seconds"].get<double>());
    EXPECT(after < before);
    EXPECT(*emit_count == 5);
    for (const auto& gp : r["grad_paths"]) {
        std::printf("    %-70s %-6s sparse %.3f ms dense %.3f ms\n", gp["layer"].get<std::string>().c_str(), gp["path"].get<std::string>().c_str(),
                    gp["sparse_ms"].get<double>(), gp["dense_ms"].get<double>());
    }
    // Every other method/mask runs end to end for a few steps (Grad/SNIP with calibration; non-overlap; LoRA).
    for (const char* mask : {"rand", "wm", "grad", "snip"}) {
        Json args = {{"data", data}, {"out", kTmp + "-" + mask + ".safetensors"}, {"mask", mask}, {"steps", 3}, {"calib_batches", 2},
                     {"exclude", {out}}, {"grad_path", std::string(mask) == "rand" ? "sparse" : "auto"}};
        Json res = worker_run_op(st, "train", args, emit);
        Adapter a = adapter_load(kTmp + "-" + mask + ".safetensors"), s = adapter_load(out);
        for (auto& [name, t] : a.shira) {
            torch::Tensor both = torch::cat({t.idx, s.shira.at(name).idx});
            EXPECT(std::get<0>(torch::_unique2(both)).numel() == both.numel());  // disjoint from the excluded adapter
        }
        EXPECT(res["trainable"].get<int64_t>() == a.trainable());
    }
    // Caption tag dropout and category balance: the helpers, then a run with both (needs categories).
    const float keep_first[] = {0.9f, 0.1f, 0.2f}, drop_all[] = {0.1f, 0.3f, 0.2f};
    EXPECT(caption_drop_tags("red bird,  birds , animals", keep_first, 3, 0.5) == "red bird");
    EXPECT(caption_drop_tags("red bird, birds, animals", drop_all, 3, 0.5) == "birds");  // one tag always stays
    EXPECT(caption_drop_tags("red bird, birds, animals", drop_all, 2, 0.5) == "birds, animals");  // past u: kept
    EXPECT(caption_drop_tags("red bird, birds, animals", drop_all, 3, 0.0) == "red bird, birds, animals");
    EXPECT(caption_drop_tags("one tag only", drop_all, 3, 1.0) == "one tag only");
    // A tag holding a keep word (the trigger) always stays, wherever it sits and in any case; it then replaces the
    // "largest u stays" rule, so the trigger alone is what the model sees when every other tag drops.
    EXPECT(caption_drop_tags("inkfx, red bird, birds", drop_all, 3, 0.5, {"inkfx"}) == "inkfx");
    EXPECT(caption_drop_tags("red bird, InkFX style, birds", drop_all, 3, 0.5, {"inkfx"}) == "InkFX style");
    EXPECT(caption_drop_tags("inkfxes, red bird, birds", drop_all, 3, 0.5, {"inkfx"}) == "red bird");  // whole words only
    const float keep_second[] = {0.1f, 0.9f, 0.2f};
    EXPECT(caption_drop_tags("inkfx, red bird, birds", keep_second, 3, 0.5, {"inkfx"}) == "inkfx, red bird");
    torch::Tensor w = category_weights({"a", "a", "a", "b"}, 1.0);
    EXPECT(std::abs(w.slice(0, 0, 3).sum().item<double>() - w[3].item<double>()) < 1e-12);  // categories drawn equally
    EXPECT(category_weights({"a", "a", "b"}, 0.0).eq(1.0).all().item<bool>());
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
        worker_run_op(st, "train", {{"data", data}, {"out", kTmp + "-b.safetensors"}, {"steps", 1}, {"category_balance", 0.5}}, emit);
    }));
    // Precision names are checked before anything runs; bf16 autocast exists only on CUDA, so the bench refuses it here.
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
        worker_run_op(st, "train", {{"data", data}, {"out", kTmp + "-b.safetensors"}, {"steps", 1}, {"precision", "fp16"}}, emit);
    }));
    EXPECT(!std::filesystem::exists(kTmp + "-b.safetensors"));
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { worker_run_op(st, "bench", {{"kind", "train"}, {"precision", "bf16"}}, emit); }));
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { worker_run_op(st, "bench", {{"kind", "train"}, {"precision", "fp16"}}, emit); }));
    {
        SafeTensors d = safetensors_load(data);
        std::vector<std::string> cats;
        for (int i = 0; i < 8; ++i) cats.push_back(i % 3 == 0 ? "red" : "other");
        d.metadata["categories"] = Json(cats).dump();
        safetensors_save(kTmp + "-cat-data.safetensors", d.tensors, d.metadata);
        Json res = worker_run_op(st, "train", {{"data", kTmp + "-cat-data.safetensors"}, {"out", kTmp + "-b.safetensors"}, {"steps", 2},
                                               {"category_balance", 0.5}, {"caption_tag_dropout", 0.5},
                                               {"caption_keep_words", {"red"}}}, emit);
        EXPECT(std::isfinite(res["final_loss"].get<double>()));
        EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
            worker_run_op(st, "train", {{"data", data}, {"out", kTmp + "-b2.safetensors"}, {"steps", 1}, {"caption_keep_words", "red"}}, emit);
        }));
    }
    Json lr = worker_run_op(st, "train", {{"data", data}, {"out", kTmp + "-lora.safetensors"}, {"method", "lora"}, {"match_density", 0.05}, {"steps", 3}}, emit);
    EXPECT(lr["trainable"].get<int64_t>() > 0);
    EXPECT(bit_identical(*st.model, w0));
    // Cancel takes effect before the next step.
    st.cancel = true;
    EXPECT(throws_type(ERROR_TYPE_CANCELLED, [&] { worker_run_op(st, "train", {{"data", data}, {"out", kTmp + "-c.safetensors"}, {"steps", 100}}, emit); }));
    st.cancel = false;
    EXPECT(bit_identical(*st.model, w0));
}

// Full fine-tune: K steps straight vs K/2, a "kill" (cancel right after the checkpoint), resume, K/2 more,
// with EMA, flip and sampling on; the saved models must be bit-identical.
void test_resume() {
    const std::string data = write_dataset();
    Json cfg = model_config_to_json(tiny_config());
    const std::string ck = kTmp + "-ck.safetensors", a_out = kTmp + "-fullA.safetensors", b_out = kTmp + "-fullB.safetensors";
    const std::string sdir = kTmp + "-samples";
    Json base = {{"data", data}, {"method", "full"}, {"steps", 6}, {"batch", 2}, {"lr", 1e-3}, {"seed", 3}, {"ema", 0.9}, {"flip", true}};
    EmitFn quiet = [](const Json&) {};
    {
        WorkerState st(torch::kCPU);
        worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}}, quiet);
        Json args = base;
        args["out"] = a_out;
        worker_run_op(st, "train", args, quiet);
    }
    std::vector<Json> events;
    {
        WorkerState st(torch::kCPU);
        worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}}, quiet);
        Json args = base;
        args["out"] = kTmp + "-never.safetensors";
        args["checkpoint_every"] = 3;
        args["checkpoint"] = ck;
        args["sample_every"] = 3;
        args["sample_prompts"] = "red square, small|blue square";
        args["sample_steps"] = 2;
        args["sample_dir"] = sdir;
        EmitFn kill = [&](const Json& e) {
            events.push_back(e);
            if (e.value("event", "") == "checkpoint") st.cancel = true;
        };
        EXPECT(throws_type(ERROR_TYPE_CANCELLED, [&] { worker_run_op(st, "train", args, kill); }));
    }
    {
        WorkerState st(torch::kCPU);  // a fresh process: fresh init from the config, then resume
        worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 99}}, quiet);
        Json args = base;
        args["out"] = b_out;
        args["resume"] = ck;
        args["sample_every"] = 3;
        args["sample_prompts"] = Json::array({"red square, small", "blue square"});
        args["sample_steps"] = 2;
        args["sample_dir"] = sdir;
        Json r = worker_run_op(st, "train", args, [&](const Json& e) { events.push_back(e); });
        EXPECT(r["start_step"] == 3);
    }
    SafeTensors A = safetensors_load(a_out), B = safetensors_load(b_out);
    double worst = 0;
    bool   same  = A.tensors.size() == B.tensors.size();
    for (const auto& [k, t] : A.tensors) {
        same = same && B.tensors.count(k) && torch::equal(t, B.tensors.at(k));
        if (B.tensors.count(k)) worst = std::max(worst, maxdiff(t, B.tensors.at(k)));
    }
    std::printf("  full fine-tune 6 steps straight vs 3 + kill + resume + 3 (EMA 0.9, flip): %s, maxdiff %.3e\n",
                same ? "bit-identical" : "DIFFERENT", worst);
    EXPECT(same);
    int samples = 0;
    for (const auto& e : events) {
        if (e.value("event", "") != "sample") continue;
        ++samples;
        SafeTensors im = safetensors_load(e["path"].get<std::string>());
        EXPECT(im.tensors.at("images").sizes() == torch::IntArrayRef({2, 16, 16, 3}));
    }
    EXPECT(samples == 2);  // steps 3 (before the kill) and 6
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
        WorkerState st(torch::kCPU);
        worker_run_op(st, "load_model", {{"config", cfg}}, quiet);
        Json args = base;
        args["out"] = b_out;
        args["resume"] = ck;
        args["steps"] = 8;  // another schedule: refused
        worker_run_op(st, "train", args, quiet);
    }));
}

void test_sample() {
    auto          model = model_init(tiny_config(), 6, torch::kCPU);
    NoiseSchedule s     = noise_schedule_init(model->config.diffusion);
    SampleParams  p;
    p.prompts = {"red square"};
    p.batch   = 2;
    p.steps   = 5;
    p.seed    = 42;
    torch::Tensor a = ddim_sample(*model, s, p);
    torch::Tensor b = ddim_sample(*model, s, p);
    p.seed          = 43;
    torch::Tensor c = ddim_sample(*model, s, p);
    EXPECT(a.scalar_type() == torch::kUInt8 && a.sizes() == torch::IntArrayRef({2, 16, 16, 3}));
    EXPECT(torch::equal(a, b));
    EXPECT(!torch::equal(a, c));
    std::printf("  ddim: same seed -> identical uint8 images; other seed -> %lld of %lld bytes differ\n", (long long)a.ne(c).sum().item<int64_t>(),
                (long long)a.numel());
    // Euler: deterministic per seed, different from DDIM's images, guidance changes the result.
    p.sampler = SAMPLER_TYPE_EULER;
    p.seed    = 42;
    torch::Tensor e1 = sample_images(*model, s, p), e2 = sample_images(*model, s, p);
    p.seed           = 43;
    torch::Tensor e3 = sample_images(*model, s, p);
    p.seed           = 42;
    p.guidance       = 1.0;
    torch::Tensor e4 = sample_images(*model, s, p);
    EXPECT(e1.sizes() == a.sizes() && torch::equal(e1, e2));
    EXPECT(!torch::equal(e1, e3) && !torch::equal(e1, e4) && !torch::equal(e1, a));
    std::printf("  euler: same seed identical; other seed %lld, guidance 1 vs 5 %lld, euler vs ddim %lld bytes differ\n",
                (long long)e1.ne(e3).sum().item<int64_t>(), (long long)e1.ne(e4).sum().item<int64_t>(), (long long)e1.ne(a).sum().item<int64_t>());
    // v-prediction models sample through both samplers.
    Json v = model_config_to_json(tiny_config());
    v["diffusion"]["prediction_type"] = "v_prediction";
    auto vm = model_init(model_config_from_json(v), 6, torch::kCPU);
    for (SamplerType sampler : {SAMPLER_TYPE_DDIM, SAMPLER_TYPE_EULER}) {
        p.sampler = sampler;
        EXPECT(sample_images(*vm, noise_schedule_init(vm->config.diffusion), p).sizes() == a.sizes());
    }
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [] { str_to_sampler_type("plms"); }));
}


// ---------------------------------------------------------------------------------------------
// Adapter format v2, compatibility, cache, incremental mixing, adapter resume

// The v1 writer (PEFT layout, as this app wrote adapters before format v2), for compatibility tests.
void write_v1(const Adapter& a, const std::string& path) {
    std::map<std::string, torch::Tensor> tensors;
    std::map<std::string, std::string>   meta = a.metadata;
    Json                                 alphas = Json::object(), cols = Json::object();
    meta["kind"] = a.kind == ADAPTER_KIND_SHIRA ? "shira" : "lora";
    for (const auto& [name, t] : a.shira) {
        tensors[name + ".shira_weight"]  = t.values.to(torch::kFloat32);
        tensors[name + ".shira_indices"] = torch::stack({torch::div(t.idx, t.cols, "floor"), t.idx.remainder(t.cols)}).to(torch::kInt32);
        cols[name]                       = t.cols;
    }
    if (!a.shira.empty()) meta["shira_cols"] = cols.dump();
    for (const auto& [name, t] : a.lora) {
        tensors[name + ".lora_A.weight"] = t.A;
        tensors[name + ".lora_B.weight"] = t.B;
        alphas[name]                     = t.alpha;
    }
    if (!a.lora.empty()) meta["alphas"] = alphas.dump();
    safetensors_save(path, tensors, meta);
}

Adapter shira_with(DiffusionModel& m, ShiraOptions o, uint64_t value_seed, bool mark_rand_seed,
                   const std::map<std::string, torch::Tensor>& scores = {}) {
    auto params = shira_attach(m, o, scores);
    {
        torch::NoGradGuard g;
        at::Generator gen = at::detail::createCPUGenerator(value_seed);
        for (auto& v : params) v.copy_(torch::randn(v.sizes(), gen, torch::kFloat32) * 0.05);
    }
    Adapter a = shira_detach(m);
    if (mark_rand_seed) {
        for (auto& [name, t] : a.shira) t.rand_seed = shira_layer_seed(o.seed, name);
    }
    return a;
}

std::string file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

int64_t file_size(const std::string& path) { return (int64_t)file_bytes(path).size(); }

// Loads, edits and rewrites a file's "tensors" metadata entry of `layer`.
void edit_entry(const std::string& path, const std::string& layer, const std::function<void(Json&)>& edit) {
    SafeTensors st = safetensors_load(path);
    Json        t  = Json::parse(st.metadata.at("tensors"));
    edit(t[layer]);
    st.metadata["tensors"] = t.dump();
    safetensors_save(path, st.tensors, st.metadata);
}

template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const WorkerError& e) {
        return std::string(error_type_name(e.type)) + ": " + e.what();
    }
    return "(no error)";
}

void expect_bad(const char* what, const std::function<void()>& f, const std::string& needle) {
    const std::string e = error_of(f);
    std::printf("  %-40s -> %s\n", what, e.substr(0, 150).c_str());
    if (e.rfind("bad_input: ", 0) != 0 || e.find(needle) == std::string::npos) {
        std::fprintf(stderr, "  FAIL: %s: expected bad_input mentioning '%s'\n", what, needle.c_str());
        ++g_failures;
    }
}

void test_format() {
    // mask_rand = first K of torch::randperm (the O(K) Fisher–Yates prefix), mask_struct fast path = general path.
    for (auto [numel, K] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 7}, {1000, 20}, {100003, 2000}, {409600, 8192}}) {
        for (uint64_t seed : {0ull, 12345678901234567ull}) {
            at::Generator gen = at::detail::createCPUGenerator(seed);
            torch::Tensor ref = std::get<0>(torch::randperm(numel, gen, torch::TensorOptions().dtype(torch::kInt64)).slice(0, 0, K).sort());
            EXPECT(torch::equal(mask_rand(numel, K, seed), ref));
        }
    }
    std::mt19937_64 rng(5);
    int             struct_cases = 0;
    for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{40, 24}, {24, 40}, {64, 64}, {16, 144}, {7, 1}, {1, 9}, {0, 0}}) {
        if (m == 0) {  // plus random shapes and K
            m = 1 + (int64_t)(rng() % 90);
            n = 1 + (int64_t)(rng() % 90);
        }
        for (int64_t K : {int64_t(1), int64_t(5), std::max<int64_t>(1, m * n / 50), m * n / 3, m * n, 1 + (int64_t)(rng() % (m * n))}) {
            if (K < 1 || K > m * n) continue;
            ++struct_cases;
            EXPECT(torch::equal(mask_struct(m, n, K), mask_struct(m, n, K, torch::zeros({m * n}, torch::kBool))));
        }
    }
    for (int i = 0; i < 200; ++i) {
        const int64_t m = 1 + (int64_t)(rng() % 70), n = 1 + (int64_t)(rng() % 70), K = 1 + (int64_t)(rng() % (m * n));
        ++struct_cases;
        EXPECT(torch::equal(mask_struct(m, n, K), mask_struct(m, n, K, torch::zeros({m * n}, torch::kBool))));
    }
    std::printf("  mask_struct O(K) path == general path on %d (m, n, K); mask_rand == randperm prefix\n", struct_cases);
    // FNV-1a 64 over little-endian int64 (vectors computed independently in Python).
    EXPECT(checksum_hex(shira_index_checksum(torch::zeros({0}, torch::kInt64))) == "cbf29ce484222325");
    EXPECT(checksum_hex(shira_index_checksum(torch::tensor(std::vector<int64_t>{0}))) == "a8c7f832281a39c5");
    EXPECT(checksum_hex(shira_index_checksum(torch::tensor(std::vector<int64_t>{1, 256, int64_t(1) << 40}))) == "746655c86da0b634");

    // Rice: round trip and minimal k (brute force over 0..40) on edge cases and realistic masks.
    std::vector<std::pair<std::string, std::pair<torch::Tensor, int64_t>>> sets = {
        {"[0]", {torch::tensor(std::vector<int64_t>{0}), 1}},
        {"[numel-1]", {torch::tensor(std::vector<int64_t>{999999}), 1000000}},
        {"contiguous", {torch::arange(5000, torch::kInt64), 5000}},
        {"struct 320x320", {mask_struct(320, 320, 2048), 102400}},
        {"rand 2%", {mask_rand(409600, 8192, 3), 409600}},
        {"huge first gap", {torch::tensor(std::vector<int64_t>{int64_t(1) << 36, (int64_t(1) << 36) + 1}), int64_t(1) << 37}},
    };
    for (auto& [name, set] : sets) {
        const auto& [idx, numel] = set;
        RiceCode code = rice_encode(idx);
        EXPECT(torch::equal(rice_decode(code.bytes, code.k, idx.numel(), numel, name), idx));
        int64_t best = INT64_MAX;
        for (int k = 0; k <= 40; ++k) {
            int64_t bits = 0;
            for (int64_t i = 0; i < idx.numel(); ++i) {
                const int64_t g = i ? idx[i].item<int64_t>() - idx[i - 1].item<int64_t>() - 1 : idx[0].item<int64_t>();
                bits += (g >> k) + 1 + k;
            }
            best = std::min(best, bits);
        }
        EXPECT(code.bytes.numel() == (best + 7) / 8);
        std::printf("  rice %-16s K=%-6lld k=%-2d %lld bytes (optimum %lld bits)\n", name.c_str(), (long long)idx.numel(), code.k,
                    (long long)code.bytes.numel(), (long long)best);
    }

    auto model = model_init(tiny_config(), 8, torch::kCPU);
    ShiraOptions o;
    o.density = 0.05;
    o.seed    = 11;
    o.mask    = MASK_TYPE_STRUCT;
    Adapter S = shira_with(*model, o, 1, false);
    o.mask    = MASK_TYPE_RAND;
    Adapter R = shira_with(*model, o, 2, true);
    Adapter R_noseed = R;  // same masks, seed unknown: must fall back to Rice
    for (auto& [_, t] : R_noseed.shira) t.rand_seed.reset();
    o.mask    = MASK_TYPE_WM;
    Adapter W = shira_with(*model, o, 3, false);
    o.mask    = MASK_TYPE_RAND;
    o.seed    = 12;
    o.exclude = {&R};
    Adapter X = shira_with(*model, o, 4, true);  // non-overlap: excluded indices, so mask_rand(seed) does not regenerate it
    o.exclude.clear();
    Adapter L = random_lora(*model, 5);
    struct Case {
        const char* name;
        Adapter*    a;
        const char* index;
    };
    for (const Case& c : {Case{"struct", &S, "struct"}, Case{"rand", &R, "rand"}, Case{"rand, seed unknown", &R_noseed, "rice"},
                          Case{"wm", &W, "rice"}, Case{"rand + exclude", &X, "rice"}, Case{"lora", &L, ""}}) {
        for (ValuesDtype vd : {VALUES_DTYPE_F16, VALUES_DTYPE_F32}) {
            const std::string path = kTmp + "-fmt.safetensors", again = kTmp + "-fmt2.safetensors";
            adapter_save(*c.a, path, vd);
            Adapter back = adapter_load(path);
            bool    ok   = back.format_version == 2 && back.kind == c.a->kind;
            double  worst = 0;
            for (const auto& [name, t] : c.a->shira) {
                const ShiraTensor& b = back.shira.at(name);
                torch::Tensor want = vd == VALUES_DTYPE_F16 ? t.values.to(torch::kFloat16).to(torch::kFloat32) : t.values;
                ok = ok && torch::equal(b.idx, t.idx) && torch::equal(b.values, want) && b.shape == t.shape &&
                     back.storage.at(name).index == c.index;
                worst = std::max(worst, maxdiff(b.values, t.values));
            }
            for (const auto& [name, t] : c.a->lora) {
                const LoraTensor& b = back.lora.at(name);
                auto q = [&](const torch::Tensor& x) { return vd == VALUES_DTYPE_F16 ? x.to(torch::kFloat16).to(torch::kFloat32) : x; };
                ok    = ok && torch::equal(b.A, q(t.A)) && torch::equal(b.B, q(t.B)) && b.alpha == t.alpha;
                worst = std::max({worst, maxdiff(b.A, t.A), maxdiff(b.B, t.B)});
            }
            // Loaded and written again: the same bytes (f16 rounding is idempotent).
            adapter_save(back, again, vd);
            ok = ok && file_bytes(path) == file_bytes(again);
            int64_t bv = 0, bi = 0;
            for (const auto& [_, info] : back.storage) {
                bv += info.bytes_values;
                bi += info.bytes_index;
            }
            std::printf("  %-20s %s: %s, %.3f B/value (values %lld B, index %lld B), maxdiff vs fp32 %.3e\n", c.name,
                        vd == VALUES_DTYPE_F16 ? "f16" : "f32", ok ? "bit-exact round trip" : "MISMATCH",
                        (double)(bv + bi) / (double)c.a->trainable(), (long long)bv, (long long)bi, worst);
            EXPECT(ok);
        }
    }

    // Tampering is caught and named.
    const std::string path = kTmp + "-tamper.safetensors";
    const std::string rl = R.shira.begin()->first, sl = S.shira.begin()->first, wl = W.shira.begin()->first;
    adapter_save(R, path);
    edit_entry(path, rl, [](Json& e) { e["rand_seed"] = std::to_string(std::stoull(e["rand_seed"].get<std::string>()) + 1); });
    expect_bad("Rand: rand_seed altered", [&] { adapter_load(path); }, "no longer regenerate");
    adapter_save(S, path);
    edit_entry(path, sl, [](Json& e) {  // same numel, other [m, n] view
        e["shape"][0] = e["shape"][0].get<int64_t>() / 2;
        e["shape"][1] = e["shape"][1].get<int64_t>() * 2;
    });
    expect_bad("Struct: shape altered", [&] { adapter_load(path); }, "no longer regenerate");
    adapter_save(R, path);
    edit_entry(path, rl, [](Json& e) { e["rand_seed"] = 5; });
    expect_bad("Rand: rand_seed not a string", [&] { adapter_load(path); }, "rand_seed");
    adapter_save(W, path);
    SafeTensors good = safetensors_load(path);
    auto rewrite = [&](const std::function<void(SafeTensors&)>& f) {
        SafeTensors st = good;
        for (auto& [k, v] : st.tensors) v = v.clone();
        f(st);
        safetensors_save(path, st.tensors, st.metadata);
    };
    rewrite([&](SafeTensors& st) { auto& b = st.tensors.at(wl + ".index"); b = b.slice(0, 0, b.numel() - 1).clone(); });
    expect_bad("Rice: last byte cut", [&] { adapter_load(path); }, "end early");
    rewrite([&](SafeTensors& st) { auto& b = st.tensors.at(wl + ".index"); b = torch::cat({b, torch::zeros({1}, torch::kUInt8)}); });
    expect_bad("Rice: extra byte", [&] { adapter_load(path); }, "past the last index");
    rewrite([&](SafeTensors& st) { st.tensors.at(wl + ".index").data_ptr<uint8_t>()[3] ^= 0x10; });
    expect_bad("Rice: one bit flipped", [&] { adapter_load(path); }, wl);
    rewrite([&](SafeTensors& st) { st.tensors["junk"] = torch::zeros({2}); });
    expect_bad("unknown tensor", [&] { adapter_load(path); }, "junk");
    rewrite([&](SafeTensors& st) { st.tensors.erase(wl + ".values"); });
    expect_bad("missing values", [&] { adapter_load(path); }, wl);
    rewrite([&](SafeTensors& st) { st.tensors.at(wl + ".values") = st.tensors.at(wl + ".values").to(torch::kFloat32); });
    expect_bad("values dtype differs from entry", [&] { adapter_load(path); }, wl);
    rewrite([&](SafeTensors& st) { st.metadata["format_version"] = "3"; });
    expect_bad("format_version 3", [&] { adapter_load(path); }, "format_version");
    adapter_save(L, path);
    edit_entry(path, L.lora.begin()->first, [](Json& e) { e["b_shape"][1] = 99; });
    expect_bad("LoRA b_shape altered", [&] { adapter_load(path); }, L.lora.begin()->first);
}

// v1 (PEFT layout) files and PEFT folders still load, mix and convert to v2.
void test_compat() {
    WorkerState st(torch::kCPU);
    EmitFn      quiet = [](const Json&) {};
    worker_run_op(st, "load_model", {{"config", model_config_to_json(tiny_config())}, {"seed", 3}}, quiet);
    DiffusionModel& model = *st.model;
    ShiraOptions o;
    o.mask = MASK_TYPE_RAND;
    o.seed = 21;
    Adapter R = shira_with(model, o, 1, true);
    R.metadata = {{"model", "tiny-test"}, {"method", "shira"}, {"mask", "rand"}, {"seed", "21"}, {"steps", "10"}, {"density", "0.02"}};
    o.mask = MASK_TYPE_WM;
    Adapter W = shira_with(model, o, 2, false);
    W.metadata = {{"mask", "wm"}, {"seed", "0"}};
    Adapter L  = random_lora(model, 6);
    const std::string v1r = kTmp + "-v1r.safetensors", v1w = kTmp + "-v1w.safetensors", v1l = kTmp + "-v1l.safetensors";
    write_v1(R, v1r);
    write_v1(W, v1w);
    write_v1(L, v1l);
    // Loads as before (no model needed to mix), with the v1 storage reported.
    Adapter r1 = adapter_load(v1r);
    bool    same = r1.format_version == 1 && r1.storage.begin()->second.index == "peft";
    for (const auto& [name, t] : R.shira) same = same && torch::equal(r1.shira.at(name).idx, t.idx) && torch::equal(r1.shira.at(name).values, t.values);
    EXPECT(same);
    Json mixed = worker_run_op(st, "apply_mix", {{"adapters", {{{"path", v1r}, {"alpha", 1.0}}, {{"path", v1l}, {"alpha", 0.5}}}}}, quiet);
    worker_run_op(st, "clear_mix", Json::object(), quiet);
    Json inspect = worker_run_op(st, "adapter_inspect", {{"path", v1r}}, quiet);
    std::printf("  v1 file loads and mixes (%.2f ms); inspect: format_version %d, %.1f B/value\n", mixed["ms"].get<double>(),
                inspect["format_version"].get<int>(), inspect["bytes_per_value"].get<double>());
    EXPECT(inspect["format_version"] == 1 && std::abs(inspect["bytes_per_value"].get<double>() - 12.0) < 1e-9);
    // Converting needs the layer shapes, which v1 files lack: refused without a model, fine with one.
    {
        WorkerState bare(torch::kCPU);
        expect_bad("convert v1 without a model", [&] { worker_run_op(bare, "adapter_convert", {{"path", v1r}, {"out", kTmp + "-v2r.safetensors"}}, quiet); }, "shape");
    }
    struct Case {
        std::string path;
        Adapter*    a;
        const char* encoding;
    };
    for (const Case& c : {Case{v1r, &R, "rand"}, Case{v1w, &W, "rice"}, Case{v1l, &L, "lora"}}) {
        const std::string out = kTmp + "-v2.safetensors";
        Json    r    = worker_run_op(st, "adapter_convert", {{"path", c.path}, {"out", out}, {"values", "f32"}}, quiet);
        Adapter back = adapter_load(out);
        bool    ok   = r["from_format_version"] == 1 && r["format_version"] == 2 && r["encodings"].value(c.encoding, 0) > 0;
        for (const auto& [name, t] : c.a->shira) ok = ok && torch::equal(back.shira.at(name).idx, t.idx) && torch::equal(back.shira.at(name).values, t.values);
        for (const auto& [name, t] : c.a->lora) ok = ok && torch::equal(back.lora.at(name).A, t.A) && back.lora.at(name).alpha == t.alpha;
        std::printf("  convert v1 -> v2 (%s): %s, %lld -> %lld bytes, encodings %s\n", c.encoding, ok ? "exact" : "MISMATCH",
                    (long long)file_size(c.path), (long long)file_size(out), r["encodings"].dump().c_str());
        EXPECT(ok);
    }
    // PEFT folder (adapter_export) -> v2 through the loaded model's module names and shapes.
    const std::string v2 = kTmp + "-v2w.safetensors", dir = kTmp + "-peft2";
    adapter_save(W, v2, VALUES_DTYPE_F32);
    worker_run_op(st, "adapter_export", {{"path", v2}, {"out", dir}}, quiet);
    const std::string peft = dir + "/adapter_model.safetensors", out = kTmp + "-frompeft.safetensors";
    Json r = worker_run_op(st, "adapter_convert", {{"path", peft}, {"out", out}, {"values", "f32"}}, quiet);
    Adapter back = adapter_load(out);
    bool    ok   = back.shira.size() == W.shira.size();
    for (const auto& [name, t] : W.shira) ok = ok && back.shira.count(name) && torch::equal(back.shira.at(name).idx, t.idx) && torch::equal(back.shira.at(name).values, t.values);
    std::printf("  PEFT folder -> v2: %s (%lld -> %lld bytes)\n", ok ? "exact" : "MISMATCH", (long long)file_size(peft), (long long)file_size(out));
    EXPECT(ok);
    {
        WorkerState bare(torch::kCPU);
        expect_bad("PEFT file without a model", [&] { worker_run_op(bare, "adapter_convert", {{"path", peft}, {"out", out}}, quiet); }, "PEFT");
    }
}

// Incremental blending: every step equals clear + full apply bit for bit; only changed layers are touched.
void test_incremental() {
    auto inc = model_init(tiny_config(), 9, torch::kCPU), ref = model_init(tiny_config(), 9, torch::kCPU);
    auto w0  = snapshot(*inc);
    ShiraOptions o;
    o.mask  = MASK_TYPE_RAND;
    o.seed  = 1;
    Adapter S1 = shira_with(*inc, o, 1, true);  // every default target
    o.mask    = MASK_TYPE_STRUCT;
    o.targets = {"to_q", "to_k", "to_v", "to_out.0"};
    Adapter S2 = shira_with(*inc, o, 2, false);  // attention only
    o.mask    = MASK_TYPE_WM;
    o.targets = {"ff.net.0.proj", "ff.net.2"};
    Adapter S3 = shira_with(*inc, o, 3, false);  // feed-forward only
    Adapter L  = random_lora(*inc, 7, {"to_q", "ff.net.2"});
    using Mix = std::vector<std::pair<const Adapter*, double>>;
    const std::vector<std::pair<std::string, Mix>> steps = {
        {"S1 .5 + S2 1 + L .7", {{&S1, 0.5}, {&S2, 1.0}, {&L, 0.7}}},
        {"alpha of S2 -> -.25", {{&S1, 0.5}, {&S2, -0.25}, {&L, 0.7}}},
        {"alpha of L -> .3", {{&S1, 0.5}, {&S2, -0.25}, {&L, 0.3}}},
        {"+ S3 .8", {{&S1, 0.5}, {&S2, -0.25}, {&L, 0.3}, {&S3, 0.8}}},
        {"drop S2", {{&S1, 0.5}, {&L, 0.3}, {&S3, 0.8}}},
        {"reorder L, S1", {{&L, 0.3}, {&S1, 0.5}, {&S3, 0.8}}},
        {"alpha of S3 -> 0", {{&L, 0.3}, {&S1, 0.5}, {&S3, 0.0}}},
        {"same mix again", {{&L, 0.3}, {&S1, 0.5}, {&S3, 0.0}}},
    };
    MixState si;
    for (const auto& [what, mix] : steps) {
        MixStats stats;
        const double ms_inc = mix_apply(*inc, si, mix, &stats);
        MixState     sr;
        const double ms_full = mix_apply(*ref, sr, mix);
        double worst = 0;
        bool   same  = true;
        auto   pr    = ref->named_parameters();
        for (const auto& [k, v] : inc->named_parameters()) {
            same  = same && torch::equal(v, pr.at(k));
            worst = std::max(worst, maxdiff(v, pr.at(k)));
        }
        mix_clear(*ref, sr);
        EXPECT(bit_identical(*ref, w0));
        std::printf("  %-22s reblended %3lld unchanged %3lld  %.2f ms vs full %.2f ms: %s (maxdiff %.1e)\n", what.c_str(),
                    (long long)stats.layers_reblended, (long long)stats.layers_unchanged, ms_inc, ms_full,
                    same ? "bit-identical" : "DIFFERENT", worst);
        EXPECT(same);
        if (what == "alpha of S2 -> -.25") EXPECT(stats.layers_reblended == (int64_t)S2.shira.size());
        if (what == "alpha of L -> .3") EXPECT(stats.layers_reblended == (int64_t)L.lora.size());
        if (what == "same mix again") EXPECT(stats.layers_reblended == 0);
    }
    mix_clear(*inc, si);
    EXPECT(bit_identical(*inc, w0));
    std::printf("  clear_mix after the incremental sequence: W0 bit-identical\n");
}

// apply_mix through the worker: LRU under a tiny budget, file-change invalidation, identity check.
void test_cache() {
    WorkerState st(torch::kCPU);
    EmitFn      quiet = [](const Json&) {};
    Json        cfg   = model_config_to_json(tiny_config());
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 4}}, quiet);
    auto    w0 = snapshot(*st.model);
    ShiraOptions o;
    o.mask = MASK_TYPE_RAND;
    std::vector<Adapter>     ad;
    std::vector<std::string> path;
    for (int i = 0; i < 3; ++i) {
        o.seed = 30 + i;
        ad.push_back(shira_with(*st.model, o, 40 + i, true));
        path.push_back(kTmp + "-c" + std::to_string(i) + ".safetensors");
        adapter_save(ad.back(), path.back(), VALUES_DTYPE_F32);
    }
    const int64_t one = adapter_load(path[0]).decoded_bytes();
    // Room for 1.5 decoded adapters.
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 4}, {"cache_mb", 1.5 * (double)one / 1048576.0}}, quiet);
    auto apply = [&](std::vector<std::pair<int, double>> items) {
        Json list = Json::array();
        for (auto [i, a] : items) list.push_back({{"path", path[i]}, {"alpha", a}});
        return worker_run_op(st, "apply_mix", {{"adapters", list}}, quiet);
    };
    auto check = [&](const char* what, const Json& r, int64_t hits, int64_t misses, int64_t cached) {
        const bool ok = r["cache_hits"] == hits && r["cache_misses"] == misses && r["cache_bytes"] == cached * one;
        std::printf("  %-34s hits %lld misses %lld cache %lld B (%lld adapters) reblended %lld unchanged %lld load %.2f ms: %s\n", what,
                    (long long)r["cache_hits"].get<int64_t>(), (long long)r["cache_misses"].get<int64_t>(),
                    (long long)r["cache_bytes"].get<int64_t>(), (long long)(r["cache_bytes"].get<int64_t>() / one),
                    (long long)r["layers_reblended"].get<int64_t>(), (long long)r["layers_unchanged"].get<int64_t>(),
                    r["load_ms"].get<double>(), ok ? "ok" : "UNEXPECTED");
        EXPECT(ok);
    };
    check("apply A", apply({{0, 1.0}}), 0, 1, 1);
    check("apply B (evicts A)", apply({{1, 1.0}}), 0, 1, 1);
    check("apply A (miss again, evicts B)", apply({{0, 1.0}}), 0, 1, 1);
    check("apply A+B (over budget: both kept)", apply({{0, 1.0}, {1, 0.5}}), 1, 1, 2);
    Json r = apply({{0, 1.0}, {1, -0.5}});
    check("alpha of B changed", r, 2, 0, 2);
    EXPECT(r["layers_unchanged"] == 0);  // both adapters cover every target layer
    check("apply A+C (B evicted, not in mix)", apply({{0, 1.0}, {2, 0.5}}), 1, 1, 2);
    // The result equals a direct blend of the same adapters.
    {
        auto     ref = model_init(tiny_config(), 4, torch::kCPU);
        Adapter  a0 = adapter_load(path[0]), a2 = adapter_load(path[2]);
        MixState ms;
        mix_apply(*ref, ms, {{&a0, 1.0}, {&a2, 0.5}});
        bool same = true;
        auto pr   = ref->named_parameters();
        for (const auto& [k, v] : st.model->named_parameters()) same = same && torch::equal(v, pr.at(k));
        std::printf("  cached A+C vs a direct blend: %s\n", same ? "bit-identical" : "DIFFERENT");
        EXPECT(same);
    }
    // A rewritten file (same size, new mtime) is decoded again.
    adapter_save(ad[1], path[2], VALUES_DTYPE_F32);
    std::filesystem::last_write_time(path[2], std::filesystem::last_write_time(path[2]) + std::chrono::seconds(2));
    check("C rewritten on disk", apply({{0, 1.0}, {2, 0.5}}), 1, 1, 2);
    worker_run_op(st, "clear_mix", Json::object(), quiet);
    EXPECT(bit_identical(*st.model, w0));
    // Identity: an adapter trained on another base is refused, naming both; an unknown identity on either side is not checked.
    Adapter tagged = ad[0];
    tagged.metadata["base_identity"] = "aaaaaaaaaaaa-base-one";
    const std::string tp = kTmp + "-tagged.safetensors";
    adapter_save(tagged, tp);
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 4}, {"identity", "bbbbbbbbbbbb-base-two"}}, quiet);
    expect_bad("identity mismatch", [&] { worker_run_op(st, "apply_mix", {{"adapters", {{{"path", tp}}}}}, quiet); }, "aaaaaaaaaaaa");
    EXPECT(error_of([&] { worker_run_op(st, "apply_mix", {{"adapters", {{{"path", tp}}}}}, quiet); }).find("bbbbbbbbbbbb") != std::string::npos);
    EXPECT(bit_identical(*st.model, w0));
    worker_run_op(st, "apply_mix", {{"adapters", {{{"path", path[0]}}}}}, quiet);  // no base_identity: accepted
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 4}, {"identity", "aaaaaaaaaaaa-base-one"}}, quiet);
    Json ok = worker_run_op(st, "apply_mix", {{"adapters", {{{"path", tp}}}}}, quiet);
    EXPECT(ok["adapters"] == 1);
    EXPECT(throws_type(ERROR_TYPE_NOT_FOUND, [&] { worker_run_op(st, "apply_mix", {{"adapters", {{{"path", kTmp + "-none.safetensors"}}}}}, quiet); }));
}

// SHiRA (SNIP mask with calibration, sparse gradient) and LoRA: K straight steps vs K/2 + kill + resume + K/2.
void test_resume_adapter() {
    const std::string data = write_dataset();
    Json cfg = model_config_to_json(tiny_config());
    EmitFn quiet = [](const Json&) {};
    for (const char* method : {"shira", "lora"}) {
        const std::string ck = kTmp + "-ck-" + method + ".safetensors", a_out = kTmp + "-" + method + "A.safetensors",
                          b_out = kTmp + "-" + method + "B.safetensors", never = kTmp + "-" + method + "-never.safetensors";
        Json base = {{"data", data}, {"method", method}, {"steps", 6}, {"batch", 2}, {"lr", 3e-3}, {"seed", 5}, {"flip", true},
                     {"values_dtype", "f32"}, {"mask", "snip"}, {"calib_batches", 2}, {"grad_path", "sparse"}, {"rank", 2}};
        {
            WorkerState st(torch::kCPU);
            worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}, {"identity", "base-xyz"}}, quiet);
            Json args = base;
            args["out"] = a_out;
            worker_run_op(st, "train", args, quiet);
        }
        std::remove(never.c_str());
        {
            WorkerState st(torch::kCPU);
            worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}}, quiet);
            Json args = base;
            args["out"] = never;
            args["checkpoint_every"] = 3;
            args["checkpoint"] = ck;
            EmitFn kill = [&](const Json& e) {
                if (e.value("event", "") == "checkpoint") st.cancel = true;
            };
            EXPECT(throws_type(ERROR_TYPE_CANCELLED, [&] { worker_run_op(st, "train", args, kill); }));
        }
        EXPECT(!std::ifstream(never).good());  // `out` is written only at the end
        {
            WorkerState st(torch::kCPU);
            worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}, {"identity", "base-xyz"}}, quiet);
            auto w0 = snapshot(*st.model);
            Json args = base;
            args["out"] = b_out;
            args["resume"] = ck;
            Json r = worker_run_op(st, "train", args, quiet);
            EXPECT(r["start_step"] == 3);
            EXPECT(bit_identical(*st.model, w0));
        }
        SafeTensors A = safetensors_load(a_out), B = safetensors_load(b_out);
        double worst = 0;
        bool   same  = A.tensors.size() == B.tensors.size() && A.metadata == B.metadata;
        for (const auto& [k, t] : A.tensors) {
            same = same && B.tensors.count(k) && torch::equal(t, B.tensors.at(k));
            if (B.tensors.count(k)) worst = std::max(worst, maxdiff(t, B.tensors.at(k)));
        }
        std::printf("  %s 6 steps straight vs 3 + kill + resume + 3: %s, maxdiff %.3e; base_identity '%s'\n", method,
                    same ? "bit-identical" : "DIFFERENT", worst, A.metadata["base_identity"].c_str());
        EXPECT(same);
        EXPECT(A.metadata["base_identity"] == "base-xyz" && A.metadata["format_version"] == "2");
        // Other settings or other masks are refused with a reason.
        WorkerState st(torch::kCPU);
        worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}}, quiet);
        Json args = base;
        args["out"] = b_out;
        args["resume"] = ck;
        args["lr"] = 1e-3;
        expect_bad("resume with another lr", [&] { worker_run_op(st, "train", args, quiet); }, "lr");
        if (std::string(method) == "shira") {
            // Other data: the SNIP calibration picks other entries, so the re-attached masks differ.
            torch::Tensor images = torch::randint(0, 256, {8, 16, 16, 3}).to(torch::kUInt8);
            const std::string other = kTmp + "-data2.safetensors";
            safetensors_save(other, {{"images", images}});
            args = base;
            args["out"] = b_out;
            args["resume"] = ck;
            args["data"] = other;
            expect_bad("resume with masks that differ", [&] { worker_run_op(st, "train", args, quiet); }, "mask of layer");
            args = base;
            args["method"] = "lora";
            args["out"] = b_out;
            args["resume"] = ck;
            expect_bad("resume a shira checkpoint as lora", [&] { worker_run_op(st, "train", args, quiet); }, "method");
        }
    }
}

// Concept-loss tools: the judge separates two obviously different "styles" (reddish vs bluish noisy
// images) on held-out images; its scores are distributions; AWOM/AWOR match a dense oracle and the
// paper's extreme cases (deltas on disjoint rows and columns are orthogonal; dense LoRA products are not).
void test_concept() {
    at::Generator gen = at::detail::createCPUGenerator(3);
    const int64_t N = 40;
    torch::Tensor base = torch::rand({N, 16, 16, 3}, gen) * 120;
    torch::Tensor labels = torch::arange(N, torch::kInt64).remainder(2);
    torch::Tensor tint = torch::where(labels.view({N, 1, 1, 1}).eq(0), torch::tensor({120.0, 0.0, 0.0}), torch::tensor({0.0, 0.0, 120.0}));
    torch::Tensor images = (base + tint).clamp(0, 255).to(torch::kUInt8);
    JudgeTrainOptions o;
    o.steps = 60;
    o.batch = 16;
    o.widths = {8, 16};
    const std::string judge = kTmp + "/judge.safetensors";
    std::filesystem::create_directories(kTmp);
    JudgeTrainResult r = judge_train(images, labels, {"red", "blue"}, o, judge, nullptr, nullptr);
    std::printf("  judge held-out accuracy %.3f on %lld images (%.1f s)\n", r.heldout_accuracy, (long long)r.heldout_count, r.seconds);
    EXPECT(r.heldout_accuracy >= 0.9);
    EXPECT(r.heldout_count == 8 && r.train_count == 32);
    JudgeScores s = judge_score(judge, images);
    EXPECT(s.classes == std::vector<std::string>({"red", "blue"}));
    EXPECT(s.probs.sizes() == torch::IntArrayRef({N, 2}) && s.features.sizes() == torch::IntArrayRef({N, 16}));
    check_close("judge probabilities sum to 1", s.probs.sum(1), torch::ones({N}), 1e-5);
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { judge_train(images, labels.slice(0, 0, 10), {"red", "blue"}, o, judge, nullptr, nullptr); }));
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { judge_score(kTmp + "/judge.safetensors", images.slice(3, 0, 1)); }));

    // Two SHiRA deltas on one 6×5 layer: row 0 × cols {0,1} and row 1 × cols {2,3} share no column.
    auto shira = [](std::vector<int64_t> idx, std::vector<float> vals) {
        Adapter a;
        a.shira["layer"] = {torch::tensor(idx, torch::kInt64), torch::tensor(vals), 5, {6, 5}, std::nullopt};
        return a;
    };
    Adapter a = shira({0, 1}, {1.0f, 2.0f}), b = shira({7, 8}, {3.0f, -1.0f}), c = shira({5, 6}, {0.5f, 4.0f});
    auto ab = adapter_overlap(a, b);
    EXPECT(ab.size() == 1 && ab[0].m == 6 && ab[0].awor == 1.0 && ab[0].awom == 0.0);
    // Row 0 {0,1} against row 1 {0,1}: P has exactly one non-zero, P[0,1] = 1·0.5 + 2·4 = 8.5.
    auto ac = adapter_overlap(a, c, 1.0, 2.0);
    EXPECT(std::abs(ac[0].awom - 17.0) < 1e-9);
    EXPECT(std::abs(ac[0].awor - (1.0 - 1.0 / 36.0)) < 1e-12);
    // LoRA pair: compare with a dense oracle (P = ΔW₁ΔW₂ᵀ, spectral norm from the SVD).
    auto lora = [&](uint64_t seed) {
        at::Generator g = at::detail::createCPUGenerator(seed);
        Adapter       l;
        l.kind          = ADAPTER_KIND_LORA;
        l.lora["layer"] = {torch::randn({2, 5}, g), torch::randn({6, 2}, g), 4.0};
        return l;
    };
    Adapter l1 = lora(1), l2 = lora(2);
    auto    d  = [](const Adapter& x) { const auto& t = x.lora.at("layer"); return t.B.mm(t.A).to(torch::kFloat64) * (t.alpha / 2.0); };
    torch::Tensor P = d(l1).mm(d(l2).t());
    auto          ll = adapter_overlap(l1, l2);
    check_close("AWOM vs dense SVD oracle", torch::tensor(ll[0].awom, torch::kFloat64), torch::linalg::svdvals(P, c10::nullopt).max(), 1e-9);
    EXPECT(ll[0].awor < 0.1);
    EXPECT(ll[0].awom_normalized > 0 && ll[0].awom_normalized <= 1.0 + 1e-12);
}

}  // namespace

int main(int argc, char** argv) {
    // One thread: the machines are shared, and an oversubscribed OpenMP pool is many times slower.
    torch::set_num_threads(1);
    const std::map<std::string, std::function<void()>> cases = {
        {"safetensors", test_safetensors}, {"masks", test_masks}, {"sparse_grad", test_sparse_grad},
        {"fused_forward", test_fused_forward}, {"mix", test_mix}, {"lora", test_lora},
        {"model", test_model}, {"train", test_train}, {"sample", test_sample}, {"resume", test_resume}, {"export", test_export},
        {"format", test_format}, {"compat", test_compat}, {"incremental", test_incremental}, {"cache", test_cache},
        {"resume_adapter", test_resume_adapter}, {"concept", test_concept},
    };
    int run = 0;
    for (const auto& [name, fn] : cases) {
        if (argc > 1 && name != argv[1]) continue;
        ++run;
        std::printf("[%s]\n", name.c_str());
        const int before = g_failures;
        try {
            fn();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "  uncaught exception: %s\n", e.what());
            ++g_failures;
        }
        std::printf("[%s] %s\n", name.c_str(), g_failures == before ? "ok" : "FAILED");
    }
    if (run == 0) {
        std::fprintf(stderr, "unknown test case '%s'\n", argc > 1 ? argv[1] : "");
        return 2;
    }
    return g_failures == 0 ? 0 : 1;
}
