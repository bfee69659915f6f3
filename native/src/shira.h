// SHiRA (Sparse High Rank Adapters, arXiv 2406.13175) and LoRA on the model's adaptable layers.
//
// SHiRA (paper §3): W' = W0 + α·S with S non-zero only on a static mask of K = round(d·numel) entries
// per targeted tensor. Every weight is viewed as the matrix [m, n] = [out, numel/out]; an index k is
// flat (row-major) so idx_k = i_k·n + j_k. Files store PEFT's layout: "<layer>.shira_weight" fp32 [K]
// and "<layer>.shira_indices" int32 [2, K] (row 0 = i, row 1 = j), 12 bytes per trained value.
// LoRA: "<layer>.lora_A.weight" [r, in(,kh,kw)], "<layer>.lora_B.weight" [out, r(,1,1)], scale = alpha/r.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model.h"

enum MaskType { MASK_TYPE_STRUCT, MASK_TYPE_RAND, MASK_TYPE_WM, MASK_TYPE_GRAD, MASK_TYPE_SNIP };
const char* mask_type_name(MaskType type);
MaskType    str_to_mask_type(const std::string& name);  // "struct"|"rand"|"wm"|"grad"|"snip", else BAD_INPUT

int64_t shira_k(int64_t numel, double density);  // round(d·numel), clamped to [1, numel]

// All mask builders return sorted, unique int64 flat indices [K]. `exclude` is a bool [numel] tensor
// (or undefined) of indices already used by other adapters (non-overlap); K must fit in what is left.
//
// Struct: the diagonal {(i,i)} first, then every f-th row starting at row 0, with f = ⌊m / rows_needed⌋ so
// that ⌈m/f⌉ ≥ rows_needed full rows reach K; the last row used may be partial so |mask| == K exactly.
// With exclusions the rows continue with the next phase (1, 1+f, ...), skipping excluded entries.
torch::Tensor mask_struct(int64_t m, int64_t n, int64_t K, const torch::Tensor& exclude = {});
// Rand: K entries uniform without replacement from a CPU generator seeded with `seed` (regenerable).
torch::Tensor mask_rand(int64_t numel, int64_t K, uint64_t seed, const torch::Tensor& exclude = {});
// Top-K of a score tensor (any shape; WM: |W|, Grad: Σ|∂L/∂W|, SNIP: Σ|W ⊙ ∂L/∂W|).
torch::Tensor mask_topk(const torch::Tensor& scores, int64_t K, const torch::Tensor& exclude = {});

struct ShiraTensor {
    torch::Tensor idx;     // [K] int64 flat, sorted
    torch::Tensor values;  // [K] fp32
    int64_t       cols = 0;  // n of the layer's [m, n] view; maps (i, j) <-> flat in files
};

struct LoraTensor {
    torch::Tensor A, B;  // see header comment
    double        alpha = 1.0;
    int64_t       rank() const { return A.size(0); }
};

enum AdapterKind { ADAPTER_KIND_SHIRA, ADAPTER_KIND_LORA };

struct Adapter {
    AdapterKind                        kind = ADAPTER_KIND_SHIRA;
    std::map<std::string, ShiraTensor> shira;  // layer path -> values
    std::map<std::string, LoraTensor>  lora;
    std::map<std::string, std::string> metadata;
    int64_t                            trainable() const;
};

void    adapter_save(const Adapter& adapter, const std::string& path);
Adapter adapter_load(const std::string& path);  // validates shapes/indices; BAD_INPUT / NOT_FOUND

struct ShiraOptions {
    MaskType                 mask = MASK_TYPE_STRUCT;
    double                   density = 0.02;
    uint64_t                 seed = 0;
    std::vector<std::string> targets = kDefaultTargets;
    std::vector<const Adapter*> exclude;  // non-overlap: indices used by these adapters are not chosen
    GradPath                 grad_path = GRAD_PATH_AUTO;
};

// Scores for Grad/SNIP: accumulates |∂L/∂W| (Grad) or |W ⊙ ∂L/∂W| (SNIP) over `batches` calls of
// `loss_fn` for every targeted layer, with each weight temporarily requiring grad.
std::map<std::string, torch::Tensor> shira_calibrate(DiffusionModel& model, const std::vector<std::string>& targets,
                                                     MaskType mask, int64_t batches,
                                                     const std::function<torch::Tensor()>& loss_fn);

// Builds the masks and attaches a ShiraSlot (values = 0) to every targeted layer. Returns the
// trainable value tensors (the optimiser's only parameters). `scores` is required for GRAD/SNIP.
std::vector<torch::Tensor> shira_attach(DiffusionModel& model, const ShiraOptions& options,
                                        const std::map<std::string, torch::Tensor>& scores = {});
// Fused update: writes base_vals + values into the resident weights at the K indices (after each step).
void shira_write_values(DiffusionModel& model);
// Detaches every slot, restores W0 bit-exactly, and returns the trained adapter.
Adapter shira_detach(DiffusionModel& model);

struct LoraOptions {
    int64_t                  rank = 4;
    double                   alpha = 4.0;
    double                   match_density = 0;  // > 0: parameter-matched, r = max(1, round(d·m·n / (m+n)))
    uint64_t                 seed = 0;
    std::vector<std::string> targets = kDefaultTargets;
};
std::vector<torch::Tensor> lora_attach(DiffusionModel& model, const LoraOptions& options);
Adapter                    lora_detach(DiffusionModel& model);

// Blending (paper §3.2): the resident weights become W0 + Σ αᵢ·Sᵢ over the union of the adapters'
// indices (overlaps accumulate) and W0 + Σ αᵢ·(alpha/r)·BᵢAᵢ for LoRA. Base values at the union
// (and whole tensors touched by LoRA) are kept, so clear restores W0 by copying, with no drift.
struct MixState {
    std::map<std::string, torch::Tensor> shira_union;  // layer -> sorted union idx
    std::map<std::string, torch::Tensor> shira_base;   // layer -> W0 at union
    std::map<std::string, torch::Tensor> lora_backup;  // layer -> full W0 copy
    bool active() const { return !shira_union.empty() || !lora_backup.empty(); }
};

// Returns the milliseconds taken (including the implicit clear of a previous mix).
double mix_apply(DiffusionModel& model, MixState& state, const std::vector<std::pair<const Adapter*, double>>& mix);
double mix_clear(DiffusionModel& model, MixState& state);

// Timing of the two gradient paths of one [m, n] Linear for N rows at a mask; used by bench and tests.
struct GradPathTiming {
    double sparse_ms, dense_ms, maxdiff;
    int64_t dense_dw_bytes;
};
GradPathTiming shira_time_grad_paths(int64_t N, int64_t m, int64_t n, const torch::Tensor& idx, int reps);
