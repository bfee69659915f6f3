// SHiRA (Sparse High Rank Adapters, arXiv 2406.13175) and LoRA on the model's adaptable layers.
//
// SHiRA (paper §3): W' = W0 + α·S with S non-zero only on a static mask of K = round(d·numel) entries
// per targeted tensor. Every weight is viewed as the matrix [m, n] = [out, numel/out]; an index k is
// flat (row-major) so idx_k = i_k·n + j_k.
// LoRA: A [r, in(,kh,kw)], B [out, r(,1,1)], scale = alpha/r.
//
// Files (docs/adapter-format.md):
// - v2 (written): safetensors with __metadata__ format = "shira-studio-adapter", format_version = "2", kind,
//   base_identity, method (JSON), tensors (JSON: per layer shape, K, value dtype, index encoding, checksum).
//   SHiRA: "<layer>.values" F16/F32 [K] sorted by flat index, plus "<layer>.index" U8 only for Rice-coded
//   indices; Struct and Rand indices are not stored but regenerated from (shape, K[, rand_seed]) and checked
//   against the FNV-1a 64 checksum. LoRA: "<layer>.lora_A", "<layer>.lora_B" F16/F32.
// - v1 (read): PEFT's layout, "<layer>.shira_weight" fp32 [K] + "<layer>.shira_indices" int32 [2, K]
//   (12 bytes per trained value) with the column count in metadata "shira_cols"; LoRA
//   "<layer>.lora_A.weight" / ".lora_B.weight" with metadata "alphas".
// - PEFT folders' adapter_model.safetensors ("base_model.model.<module>...") are read when a model is given
//   to adapter_load: it supplies the layer names and shapes that PEFT files do not store.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/diffusion_model.h"

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
// Without exclusions only the K chosen entries are built (O(K + m), not O(m·n)): v2 files regenerate it on load.
torch::Tensor mask_struct(int64_t m, int64_t n, int64_t K, const torch::Tensor& exclude = {});
// Rand: the first K entries of torch::randperm(numel, CPU generator seeded with `seed`), sorted. Computed from
// the first K steps of randperm's forward Fisher–Yates (the same draws), so regenerating it when a v2 file
// loads costs O(K) steps and two numel-bit bitmaps instead of a whole permutation.
torch::Tensor mask_rand(int64_t numel, int64_t K, uint64_t seed, const torch::Tensor& exclude = {});
// The per-layer seed of a Rand mask: FNV-1a of the layer path mixed with the adapter seed, so layers of equal
// shape do not share a pattern and (seed, path) alone regenerates it.
uint64_t shira_layer_seed(uint64_t seed, const std::string& name);
// Top-K of a score tensor (any shape; WM: |W|, Grad: Σ|∂L/∂W|, SNIP: Σ|W ⊙ ∂L/∂W|).
torch::Tensor mask_topk(const torch::Tensor& scores, int64_t K, const torch::Tensor& exclude = {});

// FNV-1a 64 over the int64 flat indices, each as 8 little-endian bytes: the v2 file's per-layer "checksum".
uint64_t    shira_index_checksum(const torch::Tensor& idx);
std::string checksum_hex(uint64_t checksum);  // 16 lowercase hex digits

// Golomb–Rice code of sorted unique indices (v2 "rice"): gaps g0 = idx0, gi = idx_i − idx_{i−1} − 1, each as
// (g >> k) one-bits, a zero bit, then the k low bits MSB-first; bits packed MSB-first, last byte zero-padded.
// The encoder picks the k in 0..40 with the fewest bits.
struct RiceCode {
    torch::Tensor bytes;  // U8 [nbytes]
    int           k = 0;
};
RiceCode rice_encode(const torch::Tensor& idx);
// Decodes exactly K indices < numel; a short, over-long or out-of-range stream is BAD_INPUT naming `what`.
torch::Tensor rice_decode(const torch::Tensor& bytes, int k, int64_t K, int64_t numel, const std::string& what);

struct ShiraTensor {
    torch::Tensor           idx;     // [K] int64 flat, sorted, unique
    torch::Tensor           values;  // [K] fp32
    int64_t                 cols = 0;  // n of the layer's [m, n] view; maps (i, j) <-> flat in v1 files
    std::vector<int64_t>    shape;     // the layer's weight shape; empty when unknown (v1/PEFT files store none)
    std::optional<uint64_t> rand_seed;  // the mask_rand seed the mask was drawn with, when known (v2 "rand")
    // idx and values on a CUDA model's device, made by the first blend there and reused by every later one, so a
    // warm switch moves no adapter bytes host → device (SD-1.5 at 2 %: ~63 MB that would take milliseconds).
    // Undefined on CPU; freed with the adapter.
    mutable torch::Tensor idx_on_device{}, values_on_device{};
};

struct LoraTensor {
    torch::Tensor A, B;  // see header comment
    double        alpha = 1.0;
    int64_t       rank() const { return A.size(0); }
    mutable torch::Tensor A_on_device{}, B_on_device{};  // as ShiraTensor's
};

enum AdapterKind { ADAPTER_KIND_SHIRA, ADAPTER_KIND_LORA };
enum ValuesDtype { VALUES_DTYPE_F16, VALUES_DTYPE_F32 };
ValuesDtype str_to_values_dtype(const std::string& name);  // "f16" | "f32", else BAD_INPUT

// How one layer was stored in the file it came from (adapter_inspect, bytes-per-value accounting).
struct TensorStorage {
    std::string index;   // "struct" | "rand" | "rice" | "peft" (v1 int32 [2, K]) | "" (LoRA)
    std::string values;  // "f16" | "f32" | "bf16"
    int64_t     bytes_values = 0, bytes_index = 0;
    int         rice_k = -1;
};

struct Adapter {
    Adapter();
    // Copies get a fresh uid: mixing tracks what is applied per layer by uid, and a copy may be edited.
    Adapter(const Adapter& other);
    Adapter& operator=(const Adapter& other);
    Adapter(Adapter&&) = default;
    Adapter& operator=(Adapter&&) = default;

    AdapterKind                          kind = ADAPTER_KIND_SHIRA;
    std::map<std::string, ShiraTensor>   shira;  // layer path -> values
    std::map<std::string, LoraTensor>    lora;
    // Every metadata key of the file (all strings). v2 keys: format, format_version, kind, base_identity,
    // method (JSON), tensors (JSON); others (model, steps, lr, mask, seed, ...) are carried through unchanged.
    std::map<std::string, std::string>   metadata;
    int                                  format_version = 2;  // of the file it was read from (1 = PEFT layout)
    std::map<std::string, TensorStorage> storage;             // per layer, filled by adapter_load
    uint64_t                             uid = 0;  // process-unique; never reused while the process lives
    int64_t                              trainable() const;
    int64_t                              decoded_bytes() const;  // bytes of the in-memory tensors (cache budget)
    std::string                          base_identity() const;  // metadata "base_identity", "" when absent
};

// Writes format v2 (atomically, temp + rename). Every SHiRA tensor needs its shape; values and LoRA factors
// are stored as `values` (a tensor whose values overflow f16 is stored f32 instead). Indices are stored
// implicitly as "struct" or "rand" only when regenerating them gives exactly the same indices, else "rice".
void adapter_save(const Adapter& adapter, const std::string& path, ValuesDtype values = VALUES_DTYPE_F16);
// Reads v2, v1 (PEFT layout) and, with `model`, PEFT adapter_model.safetensors files; validates shapes,
// dtypes, indices and checksums (BAD_INPUT naming the layer) and reports NOT_FOUND for a missing file.
// With `model`, SHiRA tensors of v1 files also get their layer shapes (needed to write v2).
Adapter adapter_load(const std::string& path, const DiffusionModel* model = nullptr);

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
// Detaches every slot, restores W0 bit-exactly, and returns the trained adapter (with layer shapes). For Rand
// masks the caller sets rand_seed (adapter_save verifies it), so the file can store the indices implicitly.
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

// Blending (paper §3.2): the resident weights become W0 + Σ αᵢ·(alpha/r)·BᵢAᵢ (LoRA, added first, in mix
// order) and then W0' + Σ αᵢ·Sᵢ over the union of the SHiRA indices (overlaps accumulate, in mix order).
// Base values at the union (and whole tensors touched by LoRA) are kept, so clear restores W0 by copying,
// with no drift. Each layer's result depends only on its signature, so a new mix restores and re-blends
// only the layers whose signature changed and still equals clear + full apply bit for bit.
struct LayerBlend {
    std::vector<std::pair<uint64_t, double>> signature;  // (Adapter::uid, α) of the adapters on this layer, mix order
    torch::Tensor lora_backup;  // full W0 copy when a LoRA touches the layer
    torch::Tensor shira_union;  // sorted union of the SHiRA indices (on the weight's device)
    torch::Tensor shira_base;   // weight at shira_union before the SHiRA scatter (W0 plus any LoRA terms)
};
struct MixState {
    std::map<std::string, LayerBlend> layers;  // only layers some applied adapter touches
    bool active() const { return !layers.empty(); }
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

// Timing of the two gradient paths of one [m, n] Linear for N rows at a mask; used by bench and tests.
struct GradPathTiming {
    double sparse_ms, dense_ms, maxdiff;
    int64_t dense_dw_bytes;
};
GradPathTiming shira_time_grad_paths(int64_t N, int64_t m, int64_t n, const torch::Tensor& idx, int reps);
