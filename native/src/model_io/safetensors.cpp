// safetensors (safetensors.h): bounds-checked header parsing; writes go to a temp name, then rename.
//
// A file is untrusted (a user's download, an adapter someone sent): the reader checks what the format promises
// (the spec, huggingface/safetensors: offsets relative to the byte buffer, every byte of it belonging to exactly
// one tensor, no holes, no overlap) and its messages never quote the file's bytes beyond a tensor name made
// printable and cut short.
#include "model_io/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/quote.h"

using json = nlohmann::json;

namespace {

// Guards against a corrupt length prefix making us allocate gigabytes for the header.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeInfo {
    const char*       name;
    torch::ScalarType type;
    size_t            bytes;
};

const DtypeInfo kDtypes[] = {
    {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2}, {"BF16", torch::kBFloat16, 2},
    {"I32", torch::kInt32, 4},   {"I64", torch::kInt64, 8},   {"U8", torch::kUInt8, 1},
};

const DtypeInfo& dtype_from_name(const std::string& name) {
    for (const auto& d : kDtypes) {
        if (name == d.name) return d;
    }
    throw_bad_input("safetensors: unsupported dtype '" + printable(name) + "' (allowed: F32, F16, BF16, I32, I64, U8)");
}

const DtypeInfo& dtype_from_type(torch::ScalarType type) {
    for (const auto& d : kDtypes) {
        if (type == d.type) return d;
    }
    throw_bad_input(std::string("safetensors: cannot write dtype ") + c10::toString(type));
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
    static std::atomic<int> counter{0};
    const std::string       tmp = path + ".tmp-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) throw WorkerError(ERROR_TYPE_BAD_INPUT, "cannot write '" + tmp + "': " + std::strerror(errno));
        out.write(bytes.data(), (std::streamsize)bytes.size());
        if (!out.good()) {
            std::remove(tmp.c_str());
            throw WorkerError(ERROR_TYPE_INTERNAL, "short write to '" + tmp + "'");
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw WorkerError(ERROR_TYPE_BAD_INPUT, "cannot rename to '" + path + "': " + std::strerror(errno));
    }
}

SafeTensors safetensors_load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw WorkerError(ERROR_TYPE_NOT_FOUND, "cannot open '" + path + "'");
    in.seekg(0, std::ios::end);
    const uint64_t file_size = (uint64_t)in.tellg();
    in.seekg(0);

    uint8_t prefix[8];
    if (file_size < 8 || !in.read((char*)prefix, 8)) throw_bad_input("safetensors: '" + path + "' is too short");
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | prefix[i];
    if (header_size > kMaxHeaderBytes || header_size > file_size - 8) {
        throw_bad_input("safetensors: '" + path + "' has an invalid header size");
    }
    std::string header_text(header_size, '\0');
    in.read(header_text.data(), (std::streamsize)header_size);

    json header;
    try {
        header = json::parse(header_text);
    } catch (const json::parse_error& e) {
        // e.what() quotes the bytes it choked on: the position is enough, and echoes nothing.
        throw_bad_input("safetensors: '" + path + "' header is not JSON (error at byte " + std::to_string(e.byte) +
                        " of " + std::to_string(header_size) + ")");
    }
    if (!header.is_object()) throw_bad_input("safetensors: header of '" + path + "' is not an object");

    const uint64_t                             data_begin = 8 + header_size;
    const uint64_t                             data_size  = file_size - data_begin;
    SafeTensors                                result;
    std::vector<std::pair<uint64_t, uint64_t>> spans;  // [begin, end) of every tensor, checked for tiling below
    for (const auto& [name, entry] : header.items()) {
        if (name == "__metadata__") {
            if (!entry.is_object()) throw_bad_input("safetensors: __metadata__ must be an object");
            for (const auto& [key, value] : entry.items()) {
                if (!value.is_string()) {
                    throw_bad_input("safetensors: metadata '" + printable(key) + "' is not a string");
                }
                result.metadata[key] = value.get<std::string>();
            }
            continue;
        }
        if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
            !entry.contains("data_offsets") || !entry["dtype"].is_string() || !entry["shape"].is_array() ||
            !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
            throw_bad_input("safetensors: malformed entry '" + printable(name) + "'");
        }
        const DtypeInfo&     dtype = dtype_from_name(entry["dtype"].get<std::string>());
        std::vector<int64_t> shape;
        uint64_t             numel = 1;
        for (const auto& dim : entry["shape"]) {
            if (!dim.is_number_unsigned()) throw_bad_input("safetensors: bad shape for '" + printable(name) + "'");
            const uint64_t d = dim.get<uint64_t>();
            if (d > (1ull << 40) || (d && numel > (1ull << 40) / d)) throw_bad_input("safetensors: shape too large");
            numel *= d;
            shape.push_back((int64_t)d);
        }
        const auto& offsets = entry["data_offsets"];
        if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
            throw_bad_input("safetensors: bad data_offsets for '" + printable(name) + "'");
        }
        const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
        if (begin > end || end > data_size || end - begin != numel * dtype.bytes) {
            throw_bad_input("safetensors: data_offsets of '" + printable(name) +
                            "' do not match its shape or the file size");
        }
        if (end > begin) spans.emplace_back(begin, end);
        torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(dtype.type));
        in.seekg((std::streamoff)(data_begin + begin));
        if (numel && !in.read((char*)t.data_ptr(), (std::streamsize)(end - begin))) {
            throw_bad_input("safetensors: could not read '" + printable(name) + "'");
        }
        result.tensors[name] = t;
    }
    // The spec's tiling rule: sorted by offset, each tensor starts where the previous ended and the last ends at
    // the end of the file. Overlap would let two names alias one buffer (a write through one changes the other);
    // a hole or a tail hides bytes no tensor accounts for.
    std::sort(spans.begin(), spans.end());
    uint64_t at = 0;
    for (const auto& [begin, end] : spans) {
        if (begin < at)
            throw_bad_input("safetensors: '" + path + "' has overlapping tensors (at byte " + std::to_string(begin) +
                            " of the data)");
        if (begin > at)
            throw_bad_input("safetensors: '" + path + "' has " + std::to_string(begin - at) +
                            " bytes no tensor owns (at byte " + std::to_string(at) + " of the data)");
        at = end;
    }
    if (at != data_size) {
        throw_bad_input("safetensors: '" + path + "' has " + std::to_string(data_size - at) +
                        " bytes after its last tensor");
    }
    return result;
}

void safetensors_save(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
    json                       header = json::object();
    std::vector<torch::Tensor> ordered;
    uint64_t                   offset = 0;
    if (!metadata.empty()) header["__metadata__"] = metadata;
    // std::map iterates sorted by name, which also makes the file byte-reproducible.
    for (const auto& [name, tensor] : tensors) {
        torch::Tensor  t     = tensor.detach().to(torch::kCPU).contiguous();
        const auto&    dtype = dtype_from_type(t.scalar_type());
        const uint64_t n     = (uint64_t)t.numel() * dtype.bytes;
        header[name] = {{"dtype", dtype.name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + n}}};
        offset += n;
        ordered.push_back(t);
    }
    std::string header_text = header.dump();
    // The spec recommends 8-byte alignment of the data section; pad with spaces (valid JSON whitespace).
    while ((8 + header_text.size()) % 8 != 0) header_text.push_back(' ');

    std::string bytes;
    bytes.reserve(8 + header_text.size() + offset);
    const uint64_t header_size = header_text.size();
    for (int i = 0; i < 8; ++i) bytes.push_back((char)((header_size >> (8 * i)) & 0xff));
    bytes += header_text;
    for (const auto& t : ordered) bytes.append((const char*)t.data_ptr(), t.numel() * t.element_size());
    write_file_atomic(path, bytes);
}
