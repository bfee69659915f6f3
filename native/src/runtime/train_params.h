// A training run's settings, parsed and validated once from the request (op "train") before any file is read or
// the model is touched: every error names its argument and the allowed values. Defaults are the worker's; the
// app's training form (src/shared) sends its own. The method picks what is trained: SHiRA values on a static mask
// (adapter/shira.h), LoRA factors (adapter/lora.h) or every parameter (full fine-tune: base-model training).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapter/adapter.h"
#include "adapter/lora.h"
#include "adapter/shira.h"
#include "runtime/sampler.h"

enum TrainMethod { TRAIN_METHOD_SHIRA, TRAIN_METHOD_LORA, TRAIN_METHOD_FULL };
const char* train_method_name(TrainMethod method);  // "shira" | "lora" | "full"

enum LrSchedule {
    LR_SCHEDULE_COSINE,  // lr · ½(1 + cos(π (step−1) / steps)), no warm-up
    LR_SCHEDULE_CONSTANT,
};

struct TrainParams {
    TrainMethod              method = TRAIN_METHOD_SHIRA;
    std::string              data, out;  // packed dataset (model_io/dataset.h); adapter (shira/lora) or model (full)
    int64_t                  steps = 200, batch = 4, grad_accum = 1;
    double                   lr       = 1e-4;
    LrSchedule               schedule = LR_SCHEDULE_COSINE;
    uint64_t                 seed     = 0;  // data order, noise, mask (Rand) and LoRA init
    std::vector<std::string> targets  = kDefaultTargets;
    // What each step draws (runtime/train_data.h): options left at 0 draw nothing.
    double                   caption_dropout = 0.1, caption_tag_dropout = 0, category_balance = 0;
    std::vector<std::string> caption_keep_words;  // tags holding one of these never drop (the trigger)
    bool                     flip = false;
    double                   ema  = 0;  // full fine-tune only: EMA decay, 0 = off
    ShiraOptions             shira;     // shira: mask, density, seed, targets, grad_path (exclude filled when loaded)
    std::vector<std::string> exclude;   // shira: adapters whose indices the new mask avoids (non-overlap)
    int64_t                  calib_batches = 8;  // shira with Grad/SNIP masks
    LoraOptions              lora;               // lora: rank, alpha, match_density, seed, targets
    ValuesDtype              values_dtype     = VALUES_DTYPE_F16;
    bool                     bf16             = true;  // precision "bf16": autocast on CUDA; CPU always runs fp32
    int64_t                  progress_every   = 10;
    int64_t                  checkpoint_every = 0;
    std::string              checkpoint, resume;
    int64_t                  sample_every = 0;  // samples with a fixed seed, so successive steps are comparable
    std::string              sample_dir;
    SampleParams             sample;
};

TrainParams train_params_from_json(const nlohmann::json& args);
// The run's settings as the adapter file's "method" records them; a shira/lora checkpoint must match them on resume.
nlohmann::json train_method_json(const TrainParams& params);
