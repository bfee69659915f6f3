// A diffusion model as the rest of the worker sees it: config, UNet and text encoder on one device, every
// parameter under "unet." or "text_encoder." (diffusers' and transformers' module names, so real checkpoints
// map onto them), and every adaptable layer by module path. A new model family adds its UNet / text encoder
// under model/ and builds a DiffusionModel from them; adapters, mixing, training and sampling work unchanged.
// Shapes: images [B, C, H, W] in [-1, 1]; text context [B, L, D]; timesteps [B] int64.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "model/config.h"
#include "model/layer.h"
#include "model/text_encoder.h"
#include "model/unet.h"

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

// Module-name patterns: "re:<regex>" or a dotted suffix ("to_out.0" matches "...attn1.to_out.0").
bool                                  layer_matches(const std::string& name, const std::vector<std::string>& patterns);
extern const std::vector<std::string> kDefaultTargets;  // what SHiRA and LoRA adapt unless a run names others
// The layers matching `patterns`, by module path; BAD_INPUT when none does.
std::vector<std::pair<std::string, std::shared_ptr<LayerImpl>>> target_layers(DiffusionModel&                 model,
                                                                              const std::vector<std::string>& patterns);
void set_requires_grad(DiffusionModel& model, bool on);  // every parameter
