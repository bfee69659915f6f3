// SHiRA masks (paper §3.1 and App. B): which K = round(d·numel) entries of a weight are trained. Struct (every
// f-th row plus the diagonal), Rand (a seeded random K-subset, PEFT's mask), WM (top-K |W|), Grad and SNIP (top-K
// of calibrated scores, paper Eq. 2), with non-overlap (indices of other adapters excluded, §5.3.2). Masks are
// static: built once before training (§2.2). Struct and Rand masks regenerate exactly from their parameters, which
// is what lets v2 files leave their indices out (model_io/adapter_file.h); the checksum below guards that.
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

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
