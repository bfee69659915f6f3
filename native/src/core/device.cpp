// Device names and synchronisation (device.h).
#include "core/device.h"

#include <torch/cuda.h>  // in every libtorch: is_available() and synchronize() reach CUDA through ATen's hooks

#include "core/errors.h"

torch::Device device_from_name(const std::string& name) {
    if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    if (name == "cpu") return torch::kCPU;
    if (name.rfind("cuda", 0) == 0) {
        if (!torch::cuda::is_available()) throw_bad_input("CUDA was requested but this libtorch/host has none");
        return torch::Device(name);
    }
    throw_bad_input("device must be auto, cpu or cuda[:N]");
}

void device_sync(torch::Device device) {
    if (device.is_cuda()) torch::cuda::synchronize();
}
