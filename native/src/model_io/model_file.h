// Model files: safetensors with every parameter under "unet." / "text_encoder." (fp32 as written; any float
// dtype is read) and __metadata__ {config: the model config JSON, format: "shira-studio-model"}. Read the same
// way by the ONNX path (src/main/core/ort/model.ts) and the PyTorch oracle (tests/reference/model.py).
#pragma once

#include <memory>
#include <string>

#include "model/diffusion_model.h"

// Loads "<file>.safetensors" whose __metadata__["config"] holds the config JSON. Unknown or missing
// keys, and shape mismatches, are errors (never silently skipped).
std::unique_ptr<DiffusionModel> model_load(const std::string& path, torch::Device device);
void                            model_save(const DiffusionModel& model, const std::string& path);
