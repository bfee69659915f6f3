// Weight-space overlap of two adapters (paper §4.2 and App. F): for the two deltas ΔW₁, ΔW₂ ∈ ℝ^{m×n} of a layer
// (SHiRA: S scattered into the mask; LoRA: (alpha/r)·B·A), P = ΔW₁·ΔW₂ᵀ ∈ ℝ^{m×m} (the paper's A₁ᵀA₂ with
// A = ΔWᵀ); AWOM = ‖P‖₂, AWOR = 1 − ‖P‖₀ / m². AWOM is scale-dependent, so ‖P‖₂ / (‖ΔW₁‖₂·‖ΔW₂‖₂) ∈ [0, 1]
// is reported beside it. The concept lab relates these to how much of each style survives a mix.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "adapter/adapter.h"

struct LayerOverlap {
    std::string layer;
    int64_t     m    = 0;
    double      awom = 0, awom_normalized = 0, awor = 0;
};
// Layers adapted by both; alphas scale each delta as in a fused mix.
std::vector<LayerOverlap> adapter_overlap(const Adapter& a, const Adapter& b, double alpha_a = 1.0,
                                          double alpha_b = 1.0);
