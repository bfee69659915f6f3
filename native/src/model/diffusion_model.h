// Config-driven pixel-space diffusion model: a small SD-style UNet plus a word-level text encoder.
//
// Module names follow diffusers (UNet2DConditionModel) and transformers (CLIPTextModel) so real
// checkpoints can be mapped later. Every parameter lives under "unet." or "text_encoder.".
// Shapes: images [B, C, H, W] in [-1, 1]; text context [B, L, D]; timesteps [B] int64.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "model/layer.h"

enum PredictionType { PREDICTION_TYPE_EPSILON, PREDICTION_TYPE_V };

struct UNetConfig {
    int64_t              sample_size = 32;      // training/sampling resolution (pixels)
    int64_t              in_channels = 3;
    int64_t              out_channels = 3;
    std::vector<int64_t> block_out_channels = {32, 64};
    std::vector<bool>    attention = {false, true};  // per level: CrossAttnDownBlock2D or DownBlock2D
    int64_t              layers_per_block = 1;
    int64_t              attention_heads = 4;
    int64_t              norm_num_groups = 8;
    bool                 use_linear_projection = false;  // SD-1.5: proj_in/proj_out are 1x1 convs
    // Pixel-space models on a CPU budget: space-to-depth by patch_size before conv_in and back after
    // conv_out ([B,C,H,W] -> [B,C*p*p,H/p,W/p]), so every level runs at 1/p² of the pixels. 1 = off.
    int64_t              patch_size = 1;
};

struct TextConfig {
    std::vector<std::string> vocab;  // "<pad>", "<unk>", "<bos>", "<eos>" are prepended when missing
    int64_t                  width = 64;
    int64_t                  layers = 2;
    int64_t                  heads = 4;
    int64_t                  max_length = 16;
    // Out-of-vocabulary words hash (FNV-1a 64) into this many extra embedding rows after the vocab,
    // so a new trigger word ("inkfx") gets a stable embedding of its own that adapters can bind to.
    // 0 = every unknown word is <unk> (models saved before spare buckets existed).
    int64_t                  spare_buckets = 64;
};

struct DiffusionConfig {
    int64_t        num_train_timesteps = 1000;
    double         beta_start = 0.00085;
    double         beta_end = 0.012;
    std::string    beta_schedule = "scaled_linear";  // or "linear"
    PredictionType prediction_type = PREDICTION_TYPE_EPSILON;
    // v-prediction only: the data standard deviation σ_d of EDM's preconditioning (Karras et al. 2022,
    // arXiv 2206.00364, Table 1), which v-prediction is for σ_d = 1. With σ = √((1−ᾱ)/ᾱ) and y = x_t/√ᾱ:
    // the UNet sees y/√(σ²+σ_d²) and x̂_0 = c_skip·y − c_out·v̂, c_skip = σ_d²/(σ²+σ_d²),
    // c_out = σσ_d/√(σ²+σ_d²). σ_d below 1 hands the per-pixel detail the UNet cannot resolve to the
    // skip term with a gain near the Wiener one instead of asking the UNet to cancel the noise itself.
    // 1 = plain v-prediction (files without the key).
    double         sigma_data = 1.0;
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

uint64_t fnv1a64(const std::string& s);

// Lower-case words split on anything but [a-z0-9'], wrapped as <bos> w.. <eos> <pad>.. to max_length.
// Ids: [0, vocab.size()) the vocab (specials first); an unknown word w maps to
// vocab.size() + fnv1a64(w) % spare_buckets (or <unk> when spare_buckets == 0). Embedding rows = num_ids().
struct WordTokenizer {
    explicit WordTokenizer(std::vector<std::string> vocab, int64_t spare_buckets = 0);
    std::vector<int64_t>     encode(const std::string& text, int64_t max_length) const;
    int64_t                  num_ids() const { return (int64_t)vocab.size() + spare_buckets; }
    std::vector<std::string> vocab;
    std::map<std::string, int64_t> ids;
    int64_t                  spare_buckets = 0;
    static constexpr int64_t kPad = 0, kUnk = 1, kBos = 2, kEos = 3;
};

// What the diffusion code needs from any text encoder; a CLIP encoder can implement it later.
struct TextEncoder {
    virtual ~TextEncoder() = default;
    virtual torch::Tensor encode(const std::vector<std::string>& prompts) = 0;  // -> [B, L, D]
    virtual int64_t       dim() const = 0;
    virtual std::shared_ptr<torch::nn::Module> module() = 0;
};

struct UNetImpl;
using UNetPtr = std::shared_ptr<UNetImpl>;
UNetPtr       unet_init(const UNetConfig& config, int64_t context_dim);
torch::Tensor unet_forward(UNetImpl& unet, const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& context);
std::shared_ptr<TextEncoder> word_text_encoder_init(const TextConfig& config);

struct DiffusionModel {
    ModelConfig                  config;
    UNetPtr                      unet;
    std::shared_ptr<TextEncoder> text;
    torch::Device                device = torch::kCPU;

    // "unet.<path>" / "text_encoder.<path>" -> parameter (live tensors, not copies).
    std::map<std::string, torch::Tensor> named_parameters() const;
    // Every adaptable layer by module path ("unet.mid_block.attentions.0.proj_in"). Built once and cached:
    // the module tree never changes after init, and walking it costs ~ms per call (switching, every step).
    const std::map<std::string, std::shared_ptr<LayerImpl>>& layers() const;
    torch::Tensor predict(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& context);

    mutable std::map<std::string, std::shared_ptr<LayerImpl>> layers_cache_;
};

// Random init (seeded) from a config; weights in fp32.
std::unique_ptr<DiffusionModel> model_init(const ModelConfig& config, uint64_t seed, torch::Device device);
// Loads "<file>.safetensors" whose __metadata__["config"] holds the config JSON. Unknown or missing
// keys, and shape mismatches, are errors (never silently skipped).
std::unique_ptr<DiffusionModel> model_load(const std::string& path, torch::Device device);
void model_save(const DiffusionModel& model, const std::string& path);

// Module-name patterns: "re:<regex>" or a dotted suffix ("to_out.0" matches "...attn1.to_out.0").
bool layer_matches(const std::string& name, const std::vector<std::string>& patterns);
extern const std::vector<std::string> kDefaultTargets;
