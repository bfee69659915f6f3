// eval/ and adapter/overlap.h: the concept-loss tools.
#include "test_util.h"

#include <filesystem>

#include "adapter/overlap.h"
#include "eval/judge.h"

namespace {

// Concept-loss tools: the judge separates two obviously different "styles" (reddish vs bluish noisy
// images) on held-out images; its scores are distributions; AWOM/AWOR match a dense oracle and the
// paper's extreme cases (deltas on disjoint rows and columns are orthogonal; dense LoRA products are not).
SHIRA_TEST(concept) {
    at::Generator     gen    = at::detail::createCPUGenerator(3);
    const int64_t     N      = 40;
    torch::Tensor     base   = torch::rand({N, 16, 16, 3}, gen) * 120;
    torch::Tensor     labels = torch::arange(N, torch::kInt64).remainder(2);
    torch::Tensor     tint   = torch::where(labels.view({N, 1, 1, 1}).eq(0), torch::tensor({120.0, 0.0, 0.0}),
                                            torch::tensor({0.0, 0.0, 120.0}));
    torch::Tensor     images = (base + tint).clamp(0, 255).to(torch::kUInt8);
    JudgeTrainOptions o;
    o.steps                 = 60;
    o.batch                 = 16;
    o.widths                = {8, 16};
    const std::string judge = kTmp + "/judge.safetensors";
    std::filesystem::create_directories(kTmp);
    JudgeTrainResult r = judge_train(images, labels, {"red", "blue"}, o, judge, nullptr, nullptr);
    std::printf("  judge held-out accuracy %.3f on %lld images (%.1f s)\n", r.heldout_accuracy,
                (long long)r.heldout_count, r.seconds);
    EXPECT(r.heldout_accuracy >= 0.9);
    EXPECT(r.heldout_count == 8 && r.train_count == 32);
    JudgeScores s = judge_score(judge, images);
    EXPECT(s.classes == std::vector<std::string>({"red", "blue"}));
    EXPECT(s.probs.sizes() == torch::IntArrayRef({N, 2}) && s.features.sizes() == torch::IntArrayRef({N, 16}));
    check_close("judge probabilities sum to 1", s.probs.sum(1), torch::ones({N}), 1e-5);
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
        judge_train(images, labels.slice(0, 0, 10), {"red", "blue"}, o, judge, nullptr, nullptr);
    }));
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { judge_score(kTmp + "/judge.safetensors", images.slice(3, 0, 1)); }));

    // Two SHiRA deltas on one 6×5 layer: row 0 × cols {0,1} and row 1 × cols {2,3} share no column.
    auto shira = [](std::vector<int64_t> idx, std::vector<float> vals) {
        Adapter a;
        a.shira["layer"] = {torch::tensor(idx, torch::kInt64), torch::tensor(vals), 5, {6, 5}, std::nullopt};
        return a;
    };
    Adapter a = shira({0, 1}, {1.0f, 2.0f}), b = shira({7, 8}, {3.0f, -1.0f}), c = shira({5, 6}, {0.5f, 4.0f});
    auto    ab = adapter_overlap(a, b);
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
    auto    d = [](const Adapter& x) {
        const auto& t = x.lora.at("layer");
        return t.B.mm(t.A).to(torch::kFloat64) * (t.alpha / 2.0);
    };
    torch::Tensor P  = d(l1).mm(d(l2).t());
    auto          ll = adapter_overlap(l1, l2);
    check_close("AWOM vs dense SVD oracle", torch::tensor(ll[0].awom, torch::kFloat64),
                torch::linalg::svdvals(P, c10::nullopt).max(), 1e-9);
    EXPECT(ll[0].awor < 0.1);
    EXPECT(ll[0].awom_normalized > 0 && ll[0].awom_normalized <= 1.0 + 1e-12);
}

}  // namespace
