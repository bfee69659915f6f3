// The model family's configuration: the JSON stored in a model file's __metadata__.config. Field names follow
// diffusers' UNet2DConditionModel / DDPMScheduler configs and transformers' CLIPTextConfig where they exist.
// Validated eagerly: a bad field is a BAD_INPUT naming it and the allowed values, before any tensor is built.
// Mirrored by src/main/core/ort/model.ts (same defaults and checks; the ONNX path reads the same files).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

enum PredictionType { PREDICTION_TYPE_EPSILON, PREDICTION_TYPE_V };

struct UNetConfig {
    int64_t              sample_size           = 32;  // training/sampling resolution (pixels)
    int64_t              in_channels           = 3;
    int64_t              out_channels          = 3;
    std::vector<int64_t> block_out_channels    = {32, 64};
    std::vector<bool>    attention             = {false, true};  // per level: CrossAttnDownBlock2D or DownBlock2D
    int64_t              layers_per_block      = 1;
    int64_t              attention_heads       = 4;
    int64_t              norm_num_groups       = 8;
    bool                 use_linear_projection = false;  // SD-1.5: proj_in/proj_out are 1x1 convs
    // Pixel-space models on a CPU budget: space-to-depth by patch_size before conv_in and back after
    // conv_out ([B,C,H,W] -> [B,C*p*p,H/p,W/p]), so every level runs at 1/p² of the pixels. 1 = off.
    int64_t patch_size = 1;
};

struct TextConfig {
    std::vector<std::string> vocab;  // "<pad>", "<unk>", "<bos>", "<eos>" are prepended when missing
    int64_t                  width      = 64;
    int64_t                  layers     = 2;
    int64_t                  heads      = 4;
    int64_t                  max_length = 16;
    // Out-of-vocabulary words hash (FNV-1a 64) into this many extra embedding rows after the vocab,
    // so a new trigger word ("inkfx") gets a stable embedding of its own that adapters can bind to.
    // 0 = every unknown word is <unk> (models saved before spare buckets existed).
    int64_t spare_buckets = 64;
};

struct DiffusionConfig {
    int64_t        num_train_timesteps = 1000;
    double         beta_start          = 0.00085;
    double         beta_end            = 0.012;
    std::string    beta_schedule       = "scaled_linear";  // or "linear"
    PredictionType prediction_type     = PREDICTION_TYPE_EPSILON;
    // v-prediction only: the data standard deviation σ_d of EDM's preconditioning (Karras et al. 2022,
    // arXiv 2206.00364, Table 1), which v-prediction is for σ_d = 1. With σ = √((1−ᾱ)/ᾱ) and y = x_t/√ᾱ:
    // the UNet sees y/√(σ²+σ_d²) and x̂_0 = c_skip·y − c_out·v̂, c_skip = σ_d²/(σ²+σ_d²),
    // c_out = σσ_d/√(σ²+σ_d²). σ_d below 1 hands the per-pixel detail the UNet cannot resolve to the
    // skip term with a gain near the Wiener one instead of asking the UNet to cancel the noise itself.
    // 1 = plain v-prediction (files without the key).
    double sigma_data = 1.0;
};

struct ModelConfig {
    std::string     name = "tiny";
    UNetConfig      unet;
    TextConfig      text;
    DiffusionConfig diffusion;
};

// Validates eagerly; errors name the offending field and the allowed values (WorkerError BAD_INPUT).
ModelConfig    model_config_from_json(const nlohmann::json& j);
nlohmann::json model_config_to_json(const ModelConfig& config);
