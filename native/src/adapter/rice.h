// Golomb–Rice coding of sorted index sets (Golomb 1966; Rice 1979): how v2 adapter files store masks that do not
// regenerate from parameters (WM, Grad, SNIP, and any mask built with exclusions). At density d the mean gap is
// ~1/d, so K indices cost about K·(log2(1/d) + 2) bits instead of PEFT's 8 bytes each.
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

// Golomb–Rice code of sorted unique indices (v2 "rice"): gaps g0 = idx0, gi = idx_i − idx_{i−1} − 1, each as
// (g >> k) one-bits, a zero bit, then the k low bits MSB-first; bits packed MSB-first, last byte zero-padded.
// The encoder picks the k in 0..40 with the fewest bits.
struct RiceCode {
    torch::Tensor bytes;  // U8 [nbytes]
    int           k = 0;
};
RiceCode rice_encode(const torch::Tensor& idx);
// Decodes exactly K indices < numel; a short, over-long or out-of-range stream is BAD_INPUT naming `what`.
torch::Tensor rice_decode(const torch::Tensor& bytes, int k, int64_t K, int64_t numel, const std::string& what);
