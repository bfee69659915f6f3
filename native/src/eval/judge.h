// Concept-loss measurements (issue 7): a small style judge and weight-space overlap of two adapters.
//
// Judge: a 4-level CNN over 64×64-ish RGB images, trained per benchmark (or per user) to tell styles
// apart — the adapters' styles plus a "base" class of the base model's own samples. Its softmax gives
// the style score of a generated image; its pooled penultimate features [F] give drift distances.
// Files: safetensors "judge.<param>" fp32 + __metadata__ {format: "shira-studio-judge", classes (JSON),
// widths (JSON), heldout_accuracy, size}.
//
// Overlap (paper §4.2): for the two deltas ΔW₁, ΔW₂ ∈ ℝ^{m×n} of a layer (SHiRA: S scattered into the
// mask; LoRA: (alpha/r)·B·A), P = ΔW₁·ΔW₂ᵀ ∈ ℝ^{m×m} (the paper's A₁ᵀA₂ with A = ΔWᵀ);
// AWOM = ‖P‖₂, AWOR = 1 − ‖P‖₀ / m². AWOM is scale-dependent, so ‖P‖₂ / (‖ΔW₁‖₂·‖ΔW₂‖₂) ∈ [0, 1]
// is reported beside it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "adapter/shira.h"

struct JudgeTrainOptions {
    int64_t              steps = 300;
    int64_t              batch = 64;
    double               lr = 2e-3;
    double               heldout_fraction = 0.2;  // stratified per class; the rest trains
    uint64_t             seed = 0;
    // Gaussian pixel noise with σ ~ U(0, noise) on training batches: generated images carry sampler noise
    // that real style images lack, and the judge must not learn "noisy = base model".
    double               noise = 0.15;
    std::vector<int64_t> widths = {16, 32, 64, 128};  // per level; the last is the feature size F
};

struct JudgeTrainResult {
    double              heldout_accuracy = 0, train_accuracy = 0;
    std::vector<double> heldout_accuracy_per_class;
    int64_t             train_count = 0, heldout_count = 0;
    double              final_loss = 0, seconds = 0;
};

// images_u8 [N, H, W, 3] uint8, labels [N] int64 in [0, classes.size()). Writes the judge to `out`
// (atomic). should_stop → CANCELLED; progress(step, loss) every few steps.
JudgeTrainResult judge_train(const torch::Tensor& images_u8, const torch::Tensor& labels, const std::vector<std::string>& classes,
                             const JudgeTrainOptions& options, const std::string& out, const std::function<bool()>& should_stop,
                             const std::function<void(int64_t, double)>& progress);

struct JudgeScores {
    std::vector<std::string> classes;
    torch::Tensor            probs;     // [N, C] fp32, softmax
    torch::Tensor            features;  // [N, F] fp32, pooled penultimate activations
};
JudgeScores judge_score(const std::string& judge_path, const torch::Tensor& images_u8);

struct LayerOverlap {
    std::string layer;
    int64_t     m = 0;
    double      awom = 0, awom_normalized = 0, awor = 0;
};
// Layers adapted by both; alphas scale each delta as in a fused mix.
std::vector<LayerOverlap> adapter_overlap(const Adapter& a, const Adapter& b, double alpha_a = 1.0, double alpha_b = 1.0);
