// adapter/: masks, the sparse gradient paths against dense autograd, fused training forward, LoRA, mixing and
// incremental re-blending (bit for bit against clear + full apply).
#include "test_util.h"

#include "adapter/masks.h"
#include "adapter/mix.h"
#include "adapter/sparse_grad.h"
#include "model_io/adapter_file.h"

namespace {

void check_mask_basics(const char* what, const torch::Tensor& idx, int64_t K, int64_t numel) {
    const bool ok = idx.numel() == K && idx.scalar_type() == torch::kInt64 &&
                    std::get<0>(torch::_unique2(idx)).numel() == K && idx.min().item<int64_t>() >= 0 &&
                    idx.max().item<int64_t>() < numel && torch::equal(std::get<0>(idx.sort()), idx);
    if (!ok) std::fprintf(stderr, "  mask %s: not K sorted unique in-range entries\n", what);
    EXPECT(ok);
}

SHIRA_TEST(masks) {
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
                for (auto& x : {mask_struct(m, n, K, excl), mask_rand(numel, K, 9, excl),
                                mask_topk(torch::randn({numel}), K, excl)}) {
                    check_mask_basics("non-overlap", x, K, numel);
                    EXPECT(!excl.index_select(0, x).any().item<bool>());
                }
            }
            // WM (and any top-K score): every selected score >= every unselected one.
            torch::Tensor w   = torch::randn({m, n});
            torch::Tensor wm  = mask_topk(w.abs(), K);
            torch::Tensor sel = torch::zeros({numel}, torch::kBool).index_fill_(0, wm, true);
            check_mask_basics("wm", wm, K, numel);
            if (K < numel)
                EXPECT(w.abs().view(-1).masked_select(sel).min().item<float>() >=
                       w.abs().view(-1).masked_select(~sel).max().item<float>());
        }
    }
    // Grad / SNIP on the tiny model: scores equal an independent autograd computation and the masks are their top-K.
    auto                           model       = model_init(tiny_config(), 1, torch::kCPU);
    Probe                          p           = make_probe(*model);
    auto                           loss_fn     = [&] { return model->predict(p.x, p.t, p.ctx).pow(2).mean(); };
    const std::vector<std::string> targets     = {"to_q", "proj_in"};
    auto                           grad_scores = shira_calibrate(*model, targets, MASK_TYPE_GRAD, 2, loss_fn);
    auto                           snip_scores = shira_calibrate(*model, targets, MASK_TYPE_SNIP, 1, loss_fn);
    auto                           layers      = model->layers();
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
        o.mask       = mt;
        auto& scores = mt == MASK_TYPE_GRAD ? grad_scores : snip_scores;
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
    std::printf(
        "  masks: exact K, sorted/unique, seed determinism, Struct pattern, non-overlap, top-K (WM/Grad/SNIP)\n");
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

SHIRA_TEST(sparse_grad) {
    torch::manual_seed(0);
    struct Case {
        const char*   name;
        Layer         layer;
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
                torch::Tensor y1    = L.forward(x1);
                torch::Tensor y2    = L.kind == LAYER_KIND_LINEAR ? torch::linear(x2, W2, L.bias)
                                                                  : torch::conv2d(x2, W2, L.bias, L.stride, L.padding);
                torch::Tensor probe = torch::randn(y1.sizes());
                (y1 * probe).sum().backward();
                (y2 * probe).sum().backward();
                const std::string pn =
                    std::string(structured ? "struct " : "rand ") + (path == GRAD_PATH_SPARSE  ? "sparse"
                                                                     : path == GRAD_PATH_DENSE ? "dense"
                                                                                               : "auto");
                check_close((std::string(c.name) + " dδ " + pn).c_str(), L.shira->values.grad(),
                            W2.grad().view(-1).index_select(0, L.shira->idx), 1e-4);
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
            std::printf(
                "  timing %4lldx%-4lld %-6s N=1024 K=%-6lld sparse %.2f ms, dense+gather %.2f ms -> %s (maxdiff %.1e, "
                "dense dW %lld B)\n",
                (long long)m, (long long)n, mask_type_name(mt), (long long)K, t.sparse_ms, t.dense_ms,
                t.sparse_ms <= t.dense_ms ? "sparse" : "dense", t.maxdiff, (long long)t.dense_dw_bytes);
            EXPECT(t.maxdiff < 1e-2);
        }
    }
}

SHIRA_TEST(fused_forward) {
    for (bool linear_proj : {false, true}) {
        auto         model = model_init(tiny_config(linear_proj), 2, torch::kCPU);
        auto         w0    = snapshot(*model);
        Probe        p     = make_probe(*model);
        ShiraOptions o;
        o.mask      = MASK_TYPE_RAND;
        o.density   = 0.05;
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
            auto               layers = model->layers();
            for (auto& [name, t] : a.shira) layers.at(name)->weight.view(-1).index_add_(0, t.idx, t.values);
            y_unfused = model->predict(p.x, p.t, p.ctx);
            for (auto& [name, w] : w0) model->named_parameters().at(name).copy_(w);
        }
        check_close(linear_proj ? "fused vs unfused forward (linear proj)" : "fused vs unfused forward (conv proj)",
                    y_fused, y_unfused, 1e-5);
        EXPECT(maxdiff(y_fused, model->predict(p.x, p.t, p.ctx).detach()) > 1e-6);  // the adapter did change the output
    }
}

SHIRA_TEST(mix) {
    auto    model = model_init(tiny_config(), 3, torch::kCPU);
    auto    w0    = snapshot(*model);
    Adapter A     = random_shira(*model, MASK_TYPE_RAND, 1, 0.1);
    Adapter B     = random_shira(*model, MASK_TYPE_STRUCT, 2, 0.1);
    Adapter L     = random_lora(*model, 5);
    EXPECT(bit_identical(*model, w0));
    // Round-trip through the file format first (f32 values: exact), so the mix uses what the app would load.
    adapter_save(A, kTmp + "-A.safetensors", VALUES_DTYPE_F32);
    adapter_save(L, kTmp + "-L.safetensors", VALUES_DTYPE_F32);
    Adapter A2 = adapter_load(kTmp + "-A.safetensors"), L2 = adapter_load(kTmp + "-L.safetensors");
    for (auto& [k, t] : A.shira)
        EXPECT(torch::equal(t.idx, A2.shira.at(k).idx) && torch::equal(t.values, A2.shira.at(k).values));
    for (auto& [k, t] : L.lora) EXPECT(torch::equal(t.A, L2.lora.at(k).A) && t.alpha == L2.lora.at(k).alpha);

    MixState          st;
    const std::string layer = A.shira.begin()->first;
    const auto &      ta = A.shira.at(layer), &tb = B.shira.at(layer);
    double            ms = mix_apply(*model, st, {{&A2, 0.7}, {&B, -0.3}});
    {
        // Expected W at the union, computed densely: overlaps must accumulate both adapters.
        torch::Tensor expect = w0.at(layer + ".weight").clone().view(-1);
        expect.index_add_(0, ta.idx, ta.values * 0.7);
        expect.index_add_(0, tb.idx, tb.values * -0.3);
        check_close("apply_mix(0.7·A − 0.3·B) vs dense sum", model->named_parameters().at(layer + ".weight").view(-1),
                    expect, 1e-6);
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
    auto    with_a                = snapshot(*model);
    Adapter bad                   = A;
    bad.shira.begin()->second.idx = bad.shira.begin()->second.idx + 1000000;
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { mix_apply(*model, st, {{&B, 1.0}, {&bad, 1.0}}); }));
    EXPECT(bit_identical(*model, with_a));
    mix_clear(*model, st);
    EXPECT(bit_identical(*model, w0));
}

SHIRA_TEST(lora) {
    auto        model = model_init(tiny_config(), 4, torch::kCPU);
    auto        w0    = snapshot(*model);
    Probe       p     = make_probe(*model);
    LoraOptions o;
    o.rank      = 3;
    o.alpha     = 6;
    o.targets   = {"to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "conv1"};
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
        const int64_t m = l->weight.size(0), n = l->weight.numel() / m, K = shira_k(l->weight.numel(), 0.05),
                      r = l->lora->A.size(0);
        EXPECT(r == std::max<int64_t>(1, std::min<int64_t>(std::llround((double)K / (m + n)), std::min(m, n))));
        lora_total += r * (m + n);
        shira_total += K;
    }
    lora_detach(*model);
    std::printf("  parameter-matched LoRA: %lld params vs SHiRA K total %lld\n", (long long)lora_total,
                (long long)shira_total);
}

// Incremental blending: every step equals clear + full apply bit for bit; only changed layers are touched.
SHIRA_TEST(incremental) {
    auto         inc = model_init(tiny_config(), 9, torch::kCPU), ref = model_init(tiny_config(), 9, torch::kCPU);
    auto         w0 = snapshot(*inc);
    ShiraOptions o;
    o.mask                                               = MASK_TYPE_RAND;
    o.seed                                               = 1;
    Adapter S1                                           = shira_with(*inc, o, 1, true);  // every default target
    o.mask                                               = MASK_TYPE_STRUCT;
    o.targets                                            = {"to_q", "to_k", "to_v", "to_out.0"};
    Adapter S2                                           = shira_with(*inc, o, 2, false);  // attention only
    o.mask                                               = MASK_TYPE_WM;
    o.targets                                            = {"ff.net.0.proj", "ff.net.2"};
    Adapter S3                                           = shira_with(*inc, o, 3, false);  // feed-forward only
    Adapter L                                            = random_lora(*inc, 7, {"to_q", "ff.net.2"});
    using Mix                                            = std::vector<std::pair<const Adapter*, double>>;
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
        MixStats     stats;
        const double ms_inc = mix_apply(*inc, si, mix, &stats);
        MixState     sr;
        const double ms_full = mix_apply(*ref, sr, mix);
        double       worst   = 0;
        bool         same    = true;
        auto         pr      = ref->named_parameters();
        for (const auto& [k, v] : inc->named_parameters()) {
            same  = same && torch::equal(v, pr.at(k));
            worst = std::max(worst, maxdiff(v, pr.at(k)));
        }
        mix_clear(*ref, sr);
        EXPECT(bit_identical(*ref, w0));
        std::printf("  %-22s reblended %3lld unchanged %3lld  %.2f ms vs full %.2f ms: %s (maxdiff %.1e)\n",
                    what.c_str(), (long long)stats.layers_reblended, (long long)stats.layers_unchanged, ms_inc, ms_full,
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

}  // namespace
