// Benchmarks (issues 3 and 5): per-step training time and peak memory of SHiRA (each mask) vs parameter-matched
// LoRA vs full fine-tune ("train"), the per-layer sparse vs dense-then-gather weight gradient ("grad"), and
// adapter switching ("switch"), whose rows are, per model:
//   switch           warm whole-model switch A→B (SHiRA scatter vs LoRA fuse), per mask
//   cold_switch      read + decode the v2 file + apply, per mask (LoRA: its v2 f16 file)
//   bytes_per_value  file bytes per trained value, per mask and value dtype, vs PEFT (12) and fp16 LoRA
//   blend_n          blending N = 1, 2, 4, 8 adapters (Rand SHiRA vs LoRA)
//   alpha_change     one α changed in a 2-adapter mix: incremental re-blend vs clear + full apply
// Each row goes to `emit` as {"event":"bench_row","row":{name, device, model, ...}} as soon as it is measured.
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "model/diffusion_model.h"

// The two model sizes benchmarked. "builtin": 64×64 pixels, channels [64,128,256], attention [no,yes,yes],
// 2 layers per block (stands in for the shipped model). "sd15": SD-1.5's UNet shape (channels
// [320,640,1280,1280], attention on the first three levels, 2 layers per block, 8 heads, context 768)
// with random weights and a 1-layer text encoder; the spatial size is an argument so CPUs finish.
ModelConfig bench_model_config(const std::string& name, int64_t size);

// Peak memory since the last reset: on CUDA the caching allocator's peak allocated bytes; on CPU the
// process's peak resident set (VmHWM, reset through /proc/self/clear_refs), which also counts the
// weights and anything else resident. `kind` names which one was measured.
struct MemProbe {
    std::string kind;
    int64_t     base_bytes = -1;  // allocated / resident at reset
    int64_t     peak_bytes = -1;
};
void    mem_peak_reset(torch::Device device, MemProbe& probe);
void    mem_peak_read(torch::Device device, MemProbe& probe);
void    device_sync(torch::Device device);  // waits for queued kernels so wall-clock timings are honest

// kind: "train" | "switch" | "grad". Returns {"rows": [...]}.
nlohmann::json bench_run(const nlohmann::json& args, torch::Device device,
                         const std::function<void(const nlohmann::json&)>& emit, const std::function<bool()>& should_stop);
