// Benchmarks (issues 3 and 5), run by op "bench" and `node scripts/bench.mjs`; rows go to docs/benchmarks.md.
//   train            per-step training time and peak memory of SHiRA (each mask, each gradient path) vs
//                    parameter-matched LoRA vs full fine-tune (bench_train.cpp)
//   grad             the per-layer sparse vs dense-then-gather weight gradient (bench.cpp)
//   switch           adapter switching, per model (bench_switch.cpp):
//     switch           warm whole-model switch A→B (SHiRA scatter vs LoRA fuse), per mask
//     cold_switch      read + decode the v2 file + apply, per mask (LoRA: its v2 f16 file)
//     bytes_per_value  file bytes per trained value, per mask and value dtype, vs PEFT (12) and fp16 LoRA
//     blend_n          blending N = 1, 2, 4, 8 adapters (Rand SHiRA vs LoRA)
//     alpha_change     one α changed in a 2-adapter mix: incremental re-blend vs clear + full apply
// Each row goes to `emit` as {"event":"bench_row","row":{name, device, model, ...}} as soon as it is measured.
// Not part of shira_core: the worker links it for op "bench"; nothing in the engine depends on it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "model/config.h"

// 2 layers per block (stands in for the shipped model). "sd15": SD-1.5's UNet shape (channels
// [320,640,1280,1280], attention on the first three levels, 2 layers per block, 8 heads, context 768)
// with random weights and a 1-layer text encoder; the spatial size is an argument so CPUs finish.
ModelConfig bench_model_config(const std::string& name, int64_t size);

// kind: "train" | "switch" | "grad". Returns {"rows": [...]}.
nlohmann::json bench_run(const nlohmann::json& args, torch::Device device,
                         const std::function<void(const nlohmann::json&)>& emit,
                         const std::function<bool()>&                      should_stop);
