// Multi-head scaled dot-product attention (Vaswani et al. 2017, eq. 1) shared by the UNet (to_q/to_k/to_v/
// to_out.0) and the text encoder (q_proj/k_proj/v_proj/out_proj). No mask: the word encoder attends over its
// padding like the reference (tests/reference/model.py) and the ONNX export (src/main/core/ort/export.ts) do.
#pragma once

#include <cmath>

#include <torch/types.h>

// q [B, N, C], k and v [B, M, C] -> [B, N, C].
inline torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads) {
    const int64_t B = q.size(0), N = q.size(1), C = q.size(2), M = k.size(1), d = C / heads;
    auto          split  = [&](const torch::Tensor& t, int64_t L) { return t.view({B, L, heads, d}).transpose(1, 2); };
    torch::Tensor scores = torch::matmul(split(q, N), split(k, M).transpose(-1, -2)) / std::sqrt((double)d);
    torch::Tensor out    = torch::matmul(scores.softmax(-1), split(v, M));  // [B, h, N, d]
    return out.transpose(1, 2).reshape({B, N, C});
}
