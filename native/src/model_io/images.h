// Images as files hold them (uint8 [N, H, W, 3], RGB) and as the pixel-space model sees them (fp32
// [N, 3, H, W] in [-1, 1]). Mirrored by src/main/core/ort/sampler.ts's output conversion.
#pragma once

#include <torch/types.h>

inline torch::Tensor images_to_model(const torch::Tensor& images_u8) {
    return images_u8.permute({0, 3, 1, 2}).to(torch::kFloat32).div(127.5).sub(1.0);
}

// Clamped and rounded to the nearest byte; back on the CPU.
inline torch::Tensor images_from_model(const torch::Tensor& x) {
    return x.detach()
        .to(torch::kCPU, torch::kFloat32)
        .add(1.0)
        .mul(127.5)
        .round()
        .clamp(0, 255)
        .to(torch::kUInt8)
        .permute({0, 2, 3, 1})
        .contiguous();
}
