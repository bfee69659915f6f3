// An adapter in memory: SHiRA (arXiv 2406.13175, §3.1: a sparse delta S on a static mask, W' = W0 + α·S) or
// LoRA (Hu et al. 2021, arXiv 2106.09685: W' = W0 + α·(alpha/r)·B·A), per layer path, with the metadata of
// the file it came from. Every weight is viewed as the matrix [m, n] = [out, numel/out] (core/indices.h); a
// SHiRA index k is flat (row-major), idx_k = i_k·n + j_k. LoRA: A [r, in(,kh,kw)], B [out, r(,1,1)], scale = alpha/r.
// Files: model_io/adapter_file.h; blending: adapter/mix.h; training: adapter/shira.h, adapter/lora.h.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>
#include <nlohmann/json_fwd.hpp>

struct ShiraTensor {
    torch::Tensor           idx;        // [K] int64 flat, sorted, unique
    torch::Tensor           values;     // [K] fp32
    int64_t                 cols = 0;   // n of the layer's [m, n] view; maps (i, j) <-> flat in v1 files
    std::vector<int64_t>    shape;      // the layer's weight shape; empty when unknown (v1/PEFT files store none)
    std::optional<uint64_t> rand_seed;  // the mask_rand seed the mask was drawn with, when known (v2 "rand")
    // idx and values on a CUDA model's device, made by the first blend there and reused by every later one, so a
    // warm switch moves no adapter bytes host → device (SD-1.5 at 2 %: ~63 MB that would take milliseconds).
    // Undefined on CPU; freed with the adapter.
    mutable torch::Tensor idx_on_device{}, values_on_device{};
};

struct LoraTensor {
    torch::Tensor         A, B;  // see header comment
    double                alpha = 1.0;
    int64_t               rank() const { return A.size(0); }
    mutable torch::Tensor A_on_device{}, B_on_device{};  // as ShiraTensor's
};

enum AdapterKind { ADAPTER_KIND_SHIRA, ADAPTER_KIND_LORA };
enum ValuesDtype { VALUES_DTYPE_F16, VALUES_DTYPE_F32 };
ValuesDtype str_to_values_dtype(const std::string& name);  // "f16" | "f32", else BAD_INPUT
// A request argument naming a values dtype (default "f16"); BAD_INPUT naming the argument otherwise.
ValuesDtype get_values_dtype(const nlohmann::json& args, const char* key);

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
    Adapter(Adapter&&)            = default;
    Adapter& operator=(Adapter&&) = default;

    AdapterKind                        kind = ADAPTER_KIND_SHIRA;
    std::map<std::string, ShiraTensor> shira;  // layer path -> values
    std::map<std::string, LoraTensor>  lora;
    // Every metadata key of the file (all strings). v2 keys: format, format_version, kind, base_identity,
    // method (JSON), tensors (JSON); others (model, steps, lr, mask, seed, ...) are carried through unchanged.
    std::map<std::string, std::string>   metadata;
    int                                  format_version = 2;  // of the file it was read from (1 = PEFT layout)
    std::map<std::string, TensorStorage> storage;             // per layer, filled by adapter_load
    uint64_t                             uid = 0;             // process-unique; never reused while the process lives
    int64_t                              trainable() const;
    int64_t                              decoded_bytes() const;  // bytes of the in-memory tensors (cache budget)
    std::string                          base_identity() const;  // metadata "base_identity", "" when absent
};
