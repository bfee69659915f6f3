// Text encoders: the interface the diffusion code needs from any of them, and the built-in model's word-level
// encoder with CLIPTextModel's module names (embeddings.*, encoder.layers.N.{self_attn,mlp,layer_norm1,2},
// final_layer_norm), so its parameters read like a CLIP checkpoint's. Mirrored by src/main/core/ort/export.ts.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/config.h"

// What the diffusion code needs from any text encoder; a CLIP encoder can implement it later.
struct TextEncoder {
    virtual ~TextEncoder()                                                                     = default;
    virtual torch::Tensor                      encode(const std::vector<std::string>& prompts) = 0;  // -> [B, L, D]
    virtual int64_t                            dim() const                                     = 0;
    virtual std::shared_ptr<torch::nn::Module> module()                                        = 0;
};

std::shared_ptr<TextEncoder> word_text_encoder_init(const TextConfig& config);
