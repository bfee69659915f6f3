// Exporting a SHiRA adapter in PEFT's layout (shira-notes §4.6; PEFT's ShiraConfig): a folder with
// adapter_model.safetensors ("base_model.model.<module>.shira_weight" fp32 [K], ".shira_indices" int32 [2, K]) and
// adapter_config.json, one folder per component: the UNet's layers at the top (module paths relative to the UNet, as
// get_peft_model(pipe.unet) names them), text-encoder layers in text_encoder/. PEFT sizes each layer as
// K = r·(m+n); `r` here is the whole-adapter average, so stock PEFT loads the file only where that matches
// (density-based masks give every layer its own K; the per-layer K are in the file's metadata "shira_k").
// Reading PEFT files back: model_io/adapter_v1.cpp.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "adapter/adapter.h"

// Writes the folder(s) under `out`; returns one entry per folder {dir, tensors, r, trainable}. BAD_INPUT for a
// LoRA adapter (LoRA files already use PEFT's key names) or one without SHiRA tensors.
nlohmann::json peft_export(const Adapter& a, const std::string& out);
