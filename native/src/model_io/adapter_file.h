// Adapter files (docs/adapter-format.md):
// - v2 (written): safetensors with __metadata__ format = "shira-studio-adapter", format_version = "2", kind,
//   base_identity, method (JSON), tensors (JSON: per layer shape, K, value dtype, index encoding, checksum).
//   SHiRA: "<layer>.values" F16/F32 [K] sorted by flat index, plus "<layer>.index" U8 only for Rice-coded
//   indices; Struct and Rand indices are not stored but regenerated from (shape, K[, rand_seed]) and checked
//   against the FNV-1a 64 checksum. LoRA: "<layer>.lora_A", "<layer>.lora_B" F16/F32.
// - v1 (read): PEFT's layout, "<layer>.shira_weight" fp32 [K] + "<layer>.shira_indices" int32 [2, K]
//   (12 bytes per trained value) with the column count in metadata "shira_cols"; LoRA
//   "<layer>.lora_A.weight" / ".lora_B.weight" with metadata "alphas".
// - PEFT folders' adapter_model.safetensors ("base_model.model.<module>...") are read when a model is given
//   to adapter_load: it supplies the layer names and shapes that PEFT files do not store.
// Compatibility tests write v1 files the old way (tests/native/test_model_io.cpp); the PEFT folder layout that
// adapter_export writes is model_io/peft_export.h.
#pragma once

#include <string>

#include "adapter/adapter.h"
#include "model/diffusion_model.h"
#include "model_io/safetensors.h"

constexpr const char* kAdapterFormatName = "shira-studio-adapter";  // v2's __metadata__ "format"

// Writes format v2 (atomically, temp + rename). Every SHiRA tensor needs its shape; values and LoRA factors
// are stored as `values` (a tensor whose values overflow f16 is stored f32 instead). Indices are stored
// implicitly as "struct" or "rand" only when regenerating them gives exactly the same indices, else "rice".
void adapter_save(const Adapter& adapter, const std::string& path, ValuesDtype values = VALUES_DTYPE_F16);
// Reads v2, v1 (PEFT layout) and, with `model`, PEFT adapter_model.safetensors files; validates shapes,
// dtypes, indices and checksums (BAD_INPUT naming the layer) and reports NOT_FOUND for a missing file.
// With `model`, SHiRA tensors of v1 files also get their layer shapes (needed to write v2).
Adapter adapter_load(const std::string& path, const DiffusionModel* model = nullptr);

// The two readers adapter_load chooses between (by the "format" metadata). adapter_v2.cpp / adapter_v1.cpp.
Adapter adapter_load_v2(const std::string& path, SafeTensors& st);
Adapter adapter_load_v1(const std::string& path, SafeTensors& st, const DiffusionModel* model);
