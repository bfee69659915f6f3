// Minimal safetensors reader/writer (https://github.com/huggingface/safetensors).
//
// File layout: u64 little-endian N, then N bytes of JSON header
//   {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
// then the raw little-endian tensor bytes; offsets are relative to the end of the header.
// Supported dtypes: F32, F16, BF16, I32, I64, U8 (everything this project writes).
#pragma once

#include <map>
#include <string>

#include <torch/torch.h>

struct SafeTensors {
    std::map<std::string, torch::Tensor> tensors;   // CPU, contiguous
    std::map<std::string, std::string>   metadata;  // the "__metadata__" object; values are strings by spec
};

// Throws WorkerError(NOT_FOUND) for a missing file and WorkerError(BAD_INPUT) for a
// malformed one (bad header size, offsets out of range, unknown dtype, shape/bytes mismatch).
SafeTensors safetensors_load(const std::string& path);

// Writes to "<path>.tmp-<pid>-<n>" then renames, so a reader never sees half a file.
void safetensors_save(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Writes any small file atomically (same temp-then-rename rule).
void write_file_atomic(const std::string& path, const std::string& bytes);
