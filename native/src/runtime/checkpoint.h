// Training checkpoints, one safetensors file written by temp+rename (a kill loses at most checkpoint_every steps):
//   "param.<name>" (full: every model parameter; shira: "<layer>" = the K values; lora: "<layer>.lora_A|B"),
//   "ema.<name>" (when EMA is on), "adam.exp_avg.<name>", "adam.exp_avg_sq.<name>" (after step 1),
//   "rng" uint8 = the data-order/noise CPU generator state; __metadata__: method, step, steps, seed, adam_step,
//   config, and for shira/lora "settings" (the adapter's method JSON), for shira "mask_checksums" (layer ->
//   FNV-1a hex of its indices) and "grad_paths" (layer -> the path grad_path auto settled on).
// Resuming restores all of it, so K/2 + resume + K/2 steps equal K straight steps bit for bit on CPU.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Generator.h>
#include <torch/optim/adamw.h>
#include <nlohmann/json.hpp>

#include "model/diffusion_model.h"

struct CheckpointInfo {
    std::string                        method;    // "full" | "shira" | "lora"
    std::string                        settings;  // shira/lora: must match on resume ("" for full: not checked)
    std::map<std::string, std::string> mask_checksums;
};

// `named` are the trained tensors by checkpoint name (see above); `grad_paths` is what grad_path auto settled on.
void checkpoint_save(const std::string& path, const DiffusionModel& model,
                     const std::vector<std::pair<std::string, torch::Tensor>>& named, torch::optim::AdamW& opt,
                     const std::map<std::string, torch::Tensor>& ema, at::Generator& gen, int64_t step, int64_t steps,
                     uint64_t seed, const CheckpointInfo& info, const nlohmann::json& grad_paths);
// Checks that the checkpoint belongs to this run (steps, method, settings, masks: BAD_INPUT naming what differs),
// then restores parameters, AdamW moments, EMA and the generator. Returns the step it was written after;
// `meta_out` receives its metadata.
int64_t checkpoint_load(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& named,
                        torch::optim::AdamW& opt, std::map<std::string, torch::Tensor>& ema, at::Generator& gen,
                        int64_t steps, const CheckpointInfo& expect, std::map<std::string, std::string>& meta_out);
