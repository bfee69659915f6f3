// Blending adapters into the resident weights in place (paper §3.2, "rapid switching": overwrite the values at
// the mask's indices instead of fusing a dense delta), and restoring W0 exactly. Mirrored by
// src/main/core/ort/patch.ts (the ONNX path blends the same way, to the bit; tests/unit/ort.test.ts guards it).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "adapter/adapter.h"
#include "model/diffusion_model.h"

// Blending (paper §3.2): the resident weights become W0 + Σ αᵢ·(alpha/r)·BᵢAᵢ (LoRA, added first, in mix
// order) and then W0' + Σ αᵢ·Sᵢ over the union of the SHiRA indices (overlaps accumulate, in mix order).
// Base values at the union (and whole tensors touched by LoRA) are kept, so clear restores W0 by copying,
// with no drift. Each layer's result depends only on its signature, so a new mix restores and re-blends
// only the layers whose signature changed and still equals clear + full apply bit for bit.
struct LayerBlend {
    std::vector<std::pair<uint64_t, double>> signature;  // (Adapter::uid, α) of the adapters on this layer, mix order
    torch::Tensor                            lora_backup;  // full W0 copy when a LoRA touches the layer
    torch::Tensor                            shira_union;  // sorted union of the SHiRA indices (on the weight's device)
    torch::Tensor shira_base;  // weight at shira_union before the SHiRA scatter (W0 plus any LoRA terms)
};
struct MixState {
    std::map<std::string, LayerBlend> layers;  // only layers some applied adapter touches
    bool                              active() const { return !layers.empty(); }
};
struct MixStats {
    int64_t layers_reblended = 0;  // restored and/or blended anew (signature changed, incl. layers left out now)
    int64_t layers_unchanged = 0;  // in the new mix with the same signature: not touched
};

// Returns the milliseconds taken (validation, restores and blends). A mix that fails validation changes nothing.
// Adapters must not be modified while applied (their uid stands for their content).
double mix_apply(DiffusionModel& model, MixState& state, const std::vector<std::pair<const Adapter*, double>>& mix,
                 MixStats* stats = nullptr);
double mix_clear(DiffusionModel& model, MixState& state);
