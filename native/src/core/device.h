// Which device the worker runs on, and waiting for it: CUDA launches are asynchronous, so a wall-clock timing
// (or a peak-memory reading) is honest only after device_sync.
#pragma once

#include <string>

#include <torch/types.h>

torch::Device device_from_name(const std::string& name);  // "auto" | "cpu" | "cuda" | "cuda:N", else BAD_INPUT
void          device_sync(torch::Device device);          // waits for queued kernels; a no-op on CPU
