// The concept lab's style judge (concept loss, issue 7): a 4-level CNN over 64×64-ish RGB images, trained per
// benchmark (or per user) to tell styles apart — the adapters' styles plus a "base" class of the base model's own
// samples. Its softmax gives the style score of a generated image; its pooled penultimate features [F] give drift
// distances. Files: safetensors "judge.<param>" fp32 + __metadata__ {format: "shira-studio-judge", classes (JSON),
// widths (JSON), heldout_accuracy, size}. Weight-space overlap of two adapters is adapter/overlap.h.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

struct JudgeTrainOptions {
    int64_t  steps            = 300;
    int64_t  batch            = 64;
    double   lr               = 2e-3;
    double   heldout_fraction = 0.2;  // stratified per class; the rest trains
    uint64_t seed             = 0;
    // Gaussian pixel noise with σ ~ U(0, noise) on training batches: generated images carry sampler noise
    // that real style images lack, and the judge must not learn "noisy = base model".
    double               noise  = 0.15;
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
JudgeTrainResult judge_train(const torch::Tensor& images_u8, const torch::Tensor& labels,
                             const std::vector<std::string>& classes, const JudgeTrainOptions& options,
                             const std::string& out, const std::function<bool()>& should_stop,
                             const std::function<void(int64_t, double)>& progress);

struct JudgeScores {
    std::vector<std::string> classes;
    torch::Tensor            probs;     // [N, C] fp32, softmax
    torch::Tensor            features;  // [N, F] fp32, pooled penultimate activations
};
JudgeScores judge_score(const std::string& judge_path, const torch::Tensor& images_u8);
