// Packed training datasets: safetensors with "images" uint8 [N, H, W, 3] and __metadata__ "captions" (JSON array
// of N strings) and, optionally, "categories" (JSON array of N labels, for category_balance). Written by the app's
// dataset packer (src/main/core/datasets); read here once per training run.
#pragma once

#include <string>
#include <vector>

#include <torch/types.h>

#include "model/diffusion_model.h"

struct Dataset {
    torch::Tensor            images;  // fp32 [N, 3, H, W] in [-1, 1] on the model device
    std::vector<std::string> captions;
    std::vector<std::string> categories;  // optional __metadata__["categories"]: one label per image, or empty
};

// Loads and checks the file against the model (image size a multiple of its downsampling); images land on the
// model's device. Missing captions are empty strings.
Dataset dataset_load(const std::string& path, const DiffusionModel& model);
