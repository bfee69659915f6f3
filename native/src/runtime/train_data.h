// How a training run draws its data, beyond uniform picks: caption tag dropout that keeps the trigger word (kohya's
// caption_tag_dropout_rate with keep_tokens by name) and category-balanced sampling weights. Both are pure
// functions of their inputs and the random numbers handed in, so a run's draws stay in one generator
// (runtime/train.cpp) and resume bit for bit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

// Drops each comma-separated tag of `caption` when u[k] < rate (tags at k >= n_u are kept) and joins the
// kept tags with ", ". Tags holding one of `keep_words` (whole word, any case) always stay; without one,
// the tag with the largest u does.
std::string caption_drop_tags(const std::string& caption, const float* u, int64_t n_u, double rate,
                              const std::vector<std::string>& keep_words = {});
// Sampling weight per image ∝ (images of its category)^(−beta), float64 [N].
torch::Tensor category_weights(const std::vector<std::string>& categories, double beta);
