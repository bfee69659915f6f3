// Blending adapters into the resident weights in place (paper §3.2, "rapid switching": overwrite the values at
// the mask's indices instead of fusing a dense delta), and restoring W0 exactly. Mirrored by
// src/main/core/ort/patch.ts (the ONNX path blends the same way, to the bit; tests/unit/ort.test.ts guards it).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
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
//
// A switch is bound by the weight cache lines it touches (a Rand mask at 2 % puts almost every value on its own
// 64-byte line), so the CPU path makes one pass per layer over the weight addresses: in blocks of 2048 new
// entries (kMixBlock) it writes the old union's base values back and then captures and scatters the new union while
// those lines are still in cache, with no allocation (the base buffers are reused), parallel over blocks of every
// changed layer at once, on at::get_num_threads() threads (the worker's OMP_NUM_THREADS, which the app sets).

// The sorted union of the indices of several SHiRA adapters on one layer and where each adapter's entries sit in
// it, built once per distinct adapter list (uids, mix order) and reused while only the α's change.
struct MergedUnion {
    std::vector<uint64_t>      uids;  // the adapters, mix order
    torch::Tensor              uni;   // [U] int64, sorted, unique (CPU)
    std::vector<torch::Tensor> pos;   // per adapter [K_i] int32, ascending: uni[pos_i[k]] == idx_i[k]
    // uni and pos on a CUDA weight's device (index_add_ takes int32 indices), made by the first blend there.
    mutable torch::Tensor              uni_on_device;
    mutable std::vector<torch::Tensor> pos_on_device;
};
struct LayerBlend {
    std::vector<std::pair<uint64_t, double>> signature;  // (Adapter::uid, α) of the adapters on this layer, mix order
    torch::Tensor                            lora_backup;  // full W0 copy while a LoRA is applied to the layer
    // Sorted union of the SHiRA indices: one adapter's own idx, or merged->uni (CPU int64 on the raw path, on the
    // weight's device otherwise). Undefined when no SHiRA adapter is applied.
    torch::Tensor                      shira_union;
    std::shared_ptr<const MergedUnion> merged;  // when two or more SHiRA adapters share the layer
    // Weight at shira_union before the SHiRA scatter (W0 plus any LoRA terms): `base` on the raw CPU path (`spare`
    // receives the next union's, then the two swap, so a warm switch allocates nothing), `shira_base` otherwise.
    std::vector<float> base, spare;
    torch::Tensor      shira_base;
};
struct MixState {
    std::map<std::string, LayerBlend> layers;  // only layers some applied adapter touches
    // Merged unions per layer, most recently used first (at most 3, kMergedKept: the applied mix's and the ones before,
    // so α changes and switching back reuse them); dropped by mix_clear.
    std::map<std::string, std::vector<std::shared_ptr<const MergedUnion>>> merged;
    bool                                                                   active() const { return !layers.empty(); }
};
struct MixStats {
    int64_t layers_reblended = 0;  // restored and/or blended anew (signature changed, incl. layers left out now)
    int64_t layers_unchanged = 0;  // in the new mix with the same signature: not touched
    int64_t layers_merged    = 0;  // merged unions built by this call (a new adapter list on a layer)
};

// Returns the milliseconds taken (validation, restores and blends). A mix that fails validation changes nothing.
// Adapters must not be modified while applied (their uid stands for their content).
double mix_apply(DiffusionModel& model, MixState& state, const std::vector<std::pair<const Adapter*, double>>& mix,
                 MixStats* stats = nullptr);
double mix_clear(DiffusionModel& model, MixState& state);
