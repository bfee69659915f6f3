// The built-in family's UNet: a small SD-style UNet2DConditionModel with diffusers' module names
// (down_blocks.N.{resnets,attentions,downsamplers}, mid_block, up_blocks, time_embedding, conv_in/out), so its
// parameters map onto an SD checkpoint's. Pixel space, optional space-to-depth patches (UNetConfig::patch_size).
// Mirrored by src/main/core/ort/export.ts (ONNX graph) and tests/reference/model.py (PyTorch oracle).
// Shapes: x [B, C, H, W] in [-1, 1]; timesteps t [B] int64; text context [B, L, D] -> output [B, C, H, W].
#pragma once

#include <memory>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "model/config.h"

struct UNetImpl;
using UNetPtr = std::shared_ptr<UNetImpl>;
UNetPtr            unet_init(const UNetConfig& config, int64_t context_dim);
torch::Tensor      unet_forward(UNetImpl& unet, const torch::Tensor& x, const torch::Tensor& t,
                                const torch::Tensor& context);
torch::nn::Module& unet_module(UNetImpl& unet);  // its parameters and submodules, by diffusers name
