// The built-in model's word-level tokenizer (CLIP's byte-pair encoding, for SD checkpoints, is a file of its own
// beside this one). Mirrored by src/main/core/ort/model.ts and tests/reference/model.py: the ONNX path and the
// PyTorch oracle must give the same ids, and the spare-bucket hash (core/hash.h) may never change.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

// Lower-case words split on anything but [a-z0-9'], wrapped as <bos> w.. <eos> <pad>.. to max_length.
// Ids: [0, vocab.size()) the vocab (specials first); an unknown word w maps to
// vocab.size() + fnv1a64(w) % spare_buckets (or <unk> when spare_buckets == 0). Embedding rows = num_ids().
struct WordTokenizer {
    explicit WordTokenizer(std::vector<std::string> vocab, int64_t spare_buckets = 0);
    std::vector<int64_t>           encode(const std::string& text, int64_t max_length) const;
    int64_t                        num_ids() const { return (int64_t)vocab.size() + spare_buckets; }
    std::vector<std::string>       vocab;
    std::map<std::string, int64_t> ids;
    int64_t                        spare_buckets = 0;
    static constexpr int64_t       kPad = 0, kUnk = 1, kBos = 2, kEos = 3;
};
