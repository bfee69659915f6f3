// shira-worker-tests: tiny configs, fixed seeds, CPU. Run one case by name (ctest does) or all.
// Reference-oracle style (llm.c): the fused/sparse production path is compared against plain
// dense autograd, printing maxdiff so regressions show their size, not just a failure.
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <string>

#include <ATen/CPUGeneratorImpl.h>

#include "common.h"
#include "diffusion.h"
#include "model.h"
#include "safetensors.h"
#include "shira.h"
#include "worker.h"

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
    // Round-trip through the file format first, so the mix uses what the app would load.
    adapter_save(A, kTmp + "-A.safetensors");
    adapter_save(L, kTmp + "-L.safetensors");
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
    adapter_save(A, src);
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
        check_close("same unknown word -> same context", e[0], e[1], 0);
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

}  // namespace

int main(int argc, char** argv) {
    // One thread: the machines are shared, and an oversubscribed OpenMP pool is many times slower.
    torch::set_num_threads(1);
    const std::map<std::string, std::function<void()>> cases = {
        {"safetensors", test_safetensors}, {"masks", test_masks}, {"sparse_grad", test_sparse_grad},
        {"fused_forward", test_fused_forward}, {"mix", test_mix}, {"lora", test_lora},
        {"model", test_model}, {"train", test_train}, {"sample", test_sample}, {"resume", test_resume}, {"export", test_export},
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
