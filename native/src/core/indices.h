// Flat index sets over weights, as masks, adapter files and mixing use them. Every weight is viewed as the
// matrix [m, n] = [out, numel/out] (PEFT's convention for Linear; a Conv2d kernel [out, in, kh, kw] flattens
// its input side), and an entry (i, j) is the flat row-major index i·n + j.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

inline int64_t numel_of(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

inline int64_t matrix_cols(const torch::Tensor& w) { return w.numel() / w.size(0); }  // n of the [m, n] view

// "[320,320]": shapes in error messages, as JSON writes them.
inline std::string shape_str(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
    return s + "]";
}

// An int64 [K] tensor that takes over the vector's buffer (no copy: regenerating a mask yields millions).
inline torch::Tensor index_tensor(std::vector<int64_t>&& v) {
    auto holder = new std::vector<int64_t>(std::move(v));
    return torch::from_blob(
        holder->data(), {(int64_t)holder->size()}, [holder](void*) { delete holder; },
        torch::TensorOptions().dtype(torch::kInt64));
}
