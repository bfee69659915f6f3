// The training loop of op "train" for every method (TrainParams::method): the DDPM objective (runtime/loss.h) on
// batches drawn from one CPU generator in a fixed order, AdamW without weight decay (SHiRA paper, Table 9),
// cosine or constant lr, gradient accumulation, EMA (full), periodic samples and checkpoints, bf16 autocast on
// CUDA. Resuming from a checkpoint continues bit for bit on CPU. The base weights are left exactly as found
// (SHiRA and LoRA detach; a full fine-tune writes `out` and keeps the trained weights resident).
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "model/diffusion_model.h"
#include "model_io/dataset.h"
#include "runtime/train_params.h"

struct TrainHooks {
    std::function<bool()>                      should_stop;  // polled before every step (and sample step)
    std::function<void(const nlohmann::json&)> emit;         // progress / sample / checkpoint events
};

// Trains on `data` and writes params.out (adapter file v2, or the model); `base_identity` goes into the adapter's
// metadata. The model must have no mix applied. Returns the op's result (losses, trainable count, grad paths, ...).
// CANCELLED when should_stop fires; BAD_INPUT for settings that contradict the data or the checkpoint.
nlohmann::json train_run(DiffusionModel& model, const TrainParams& params, const Dataset& data,
                         const std::string& base_identity, const TrainHooks& hooks);
