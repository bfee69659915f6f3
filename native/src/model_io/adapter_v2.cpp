// Adapter format v2 (docs/adapter-format.md): written by adapter_save, read by adapter_load_v2. SHiRA indices are
// stored implicitly ("struct", "rand": regenerated from shape, K and seed) or Rice-coded ("rice", adapter/rice.h),
// each layer checked against its FNV-1a index checksum; values f16 where they fit, else f32.
#include <algorithm>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "adapter/masks.h"
#include "adapter/rice.h"
#include "core/errors.h"
#include "core/indices.h"
#include "core/quote.h"
#include "model_io/adapter_file.h"

using json = nlohmann::json;

namespace {

// f16 when asked for and every value fits (|v| <= 65504), else f32: an overflow to inf is never silent.
torch::Tensor stored_values(const torch::Tensor& v, ValuesDtype want, std::string& dtype_name) {
    torch::Tensor f = v.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    if (want == VALUES_DTYPE_F16 && (f.numel() == 0 || f.abs().max().item<float>() <= 65504.0f)) {
        dtype_name = "f16";
        return f.to(torch::kFloat16);
    }
    dtype_name = "f32";
    return f;
}

// v1 files keep the method, mask, density, ... as separate plain strings; v2's "method" is one JSON object.
std::string method_json(const Adapter& a) {
    auto it = a.metadata.find("method");
    if (it != a.metadata.end()) {
        try {
            json j = json::parse(it->second);
            if (j.is_object()) return j.dump();
        } catch (const std::exception&) {
        }
    }
    json j   = {{"method", a.kind == ADAPTER_KIND_SHIRA ? "shira" : "lora"}};
    auto num = [&](const char* key) {
        auto m = a.metadata.find(key);
        if (m == a.metadata.end()) return;
        try {
            size_t used = 0;
            double v    = std::stod(m->second, &used);
            if (used == m->second.size()) j[key] = v;
        } catch (const std::exception&) {
        }
    };
    if (a.metadata.count("mask")) j["mask"] = a.metadata.at("mask");
    for (const char* key : {"density", "seed", "steps", "lr"}) num(key);
    return j.dump();
}

}  // namespace

void adapter_save(const Adapter& a, const std::string& path, ValuesDtype want) {
    std::map<std::string, torch::Tensor> tensors;
    std::map<std::string, std::string>   meta = a.metadata;
    meta.erase("shira_cols");  // v1 keys, superseded by "tensors"
    meta.erase("alphas");
    json entries = json::object();
    for (const auto& [name, t] : a.shira) {
        const int64_t K = t.idx.numel();
        if (t.shape.empty()) {
            throw_bad_input("SHiRA layer '" + name +
                            "' has no known shape (v1/PEFT files store none): load the model it belongs to first");
        }
        if (t.values.numel() != K)
            throw WorkerError(ERROR_TYPE_INTERNAL, "SHiRA layer '" + name + "' has " +
                                                       std::to_string(t.values.numel()) + " values for " +
                                                       std::to_string(K) + " indices");
        const int64_t numel = numel_of(t.shape), m = t.shape[0], n = numel / std::max<int64_t>(m, 1);
        torch::Tensor idx = t.idx.to(torch::kCPU, torch::kInt64).contiguous();
        if (K < 1 || K > numel || idx[K - 1].item<int64_t>() >= numel || idx[0].item<int64_t>() < 0) {
            throw_bad_input("SHiRA layer '" + name + "': " + std::to_string(K) + " indices do not fit its shape " +
                            shape_str(t.shape));
        }
        json e = {{"shape", t.shape}, {"k", K}, {"checksum", checksum_hex(shira_index_checksum(idx))}};
        if (torch::equal(mask_struct(m, n, K), idx)) {
            e["index"] = "struct";
        } else if (t.rand_seed && torch::equal(mask_rand(numel, K, *t.rand_seed), idx)) {
            e["index"]     = "rand";
            e["rand_seed"] = std::to_string(*t.rand_seed);
        } else {
            RiceCode code            = rice_encode(idx);
            e["index"]               = "rice";
            e["rice_k"]              = code.k;
            tensors[name + ".index"] = code.bytes;
        }
        std::string dtype;
        tensors[name + ".values"] = stored_values(t.values, want, dtype);
        e["values"]               = dtype;
        entries[name]             = e;
    }
    for (const auto& [name, t] : a.lora) {
        std::string   da, db;
        torch::Tensor A = stored_values(t.A, want, da), B = stored_values(t.B, want, db);
        if (da != db) {  // one dtype per layer: both f32 when either factor overflows f16
            A = stored_values(t.A, VALUES_DTYPE_F32, da);
            B = stored_values(t.B, VALUES_DTYPE_F32, db);
        }
        tensors[name + ".lora_A"] = A;
        tensors[name + ".lora_B"] = B;
        entries[name]             = {
                        {"a_shape", t.A.sizes().vec()}, {"b_shape", t.B.sizes().vec()}, {"alpha", t.alpha}, {"values", da}};
    }
    meta["format"]         = kAdapterFormatName;
    meta["format_version"] = "2";
    meta["kind"]           = a.kind == ADAPTER_KIND_SHIRA ? "shira" : "lora";
    meta["base_identity"]  = a.base_identity();
    meta["method"]         = method_json(a);
    meta["tensors"]        = entries.dump();
    safetensors_save(path, tensors, meta);
}

namespace {

// Shapes in the tensors JSON: 2 or 4 positive dimensions (Linear / Conv2d weights), numel < 2^40.
std::vector<int64_t> json_shape(const json& v, const std::string& what) {
    if (!v.is_array() || (v.size() != 2 && v.size() != 4))
        throw_bad_input(what + " must be an array of 2 or 4 dimensions");
    std::vector<int64_t> shape;
    int64_t              numel = 1;
    for (const auto& d : v) {
        if (!d.is_number_unsigned() || d.get<uint64_t>() < 1 || d.get<uint64_t>() > (1ull << 40))
            throw_bad_input(what + " has a bad dimension");
        shape.push_back(d.get<int64_t>());
        if (numel > (int64_t(1) << 40) / shape.back()) throw_bad_input(what + " is too large");
        numel *= shape.back();
    }
    return shape;
}

}  // namespace

Adapter adapter_load_v2(const std::string& path, SafeTensors& st) {
    Adapter a;
    a.metadata                = st.metadata;
    a.format_version          = 2;
    const std::string version = st.metadata.count("format_version") ? st.metadata["format_version"] : "";
    if (version != "2") {
        throw_bad_input("adapter '" + path + "' has format_version '" + version +
                        "'; this worker reads version 2 (and PEFT-layout v1 files)");
    }
    const std::string kind = st.metadata.count("kind") ? st.metadata["kind"] : "";
    if (kind != "shira" && kind != "lora") throw_bad_input("adapter '" + path + "' has no kind 'shira' or 'lora'");
    a.kind = kind == "shira" ? ADAPTER_KIND_SHIRA : ADAPTER_KIND_LORA;
    json entries;
    try {
        entries = json::parse(st.metadata.count("tensors") ? st.metadata["tensors"] : "");
    } catch (const std::exception&) {
        throw_bad_input("adapter '" + path + "' has no valid 'tensors' metadata (JSON object of layers)");
    }
    if (!entries.is_object() || entries.empty())
        throw_bad_input("adapter '" + path + "' lists no layers in its 'tensors' metadata");
    std::set<std::string> claimed;
    auto                  take = [&](const std::string& key, const std::string& layer) -> torch::Tensor& {
        auto it = st.tensors.find(key);
        if (it == st.tensors.end())
            throw_bad_input("adapter '" + path + "': layer '" + layer + "' lacks tensor '" + key + "'");
        claimed.insert(key);
        return it->second;
    };
    auto dtype_of = [&](const json& e, const std::string& what) {
        if (!e.contains("values") || !e["values"].is_string() || (e["values"] != "f16" && e["values"] != "f32")) {
            throw_bad_input(what + ": 'values' must be \"f16\" or \"f32\"");
        }
        return e["values"] == "f16" ? torch::kFloat16 : torch::kFloat32;
    };
    for (const auto& [name, e] : entries.items()) {
        const std::string what = "adapter '" + path + "': layer '" + name + "'";
        if (!e.is_object()) throw_bad_input(what + ": entry is not an object");
        const torch::ScalarType dt = dtype_of(e, what);
        TensorStorage           info;
        info.values = dt == torch::kFloat16 ? "f16" : "f32";
        if (a.kind == ADAPTER_KIND_SHIRA) {
            const std::vector<int64_t> shape = json_shape(e.value("shape", json()), what + ": 'shape'");
            const int64_t              numel = numel_of(shape), m = shape[0], n = numel / m;
            if (!e.contains("k") || !e["k"].is_number_unsigned() || e["k"].get<uint64_t>() < 1 ||
                e["k"].get<uint64_t>() > (uint64_t)numel) {
                throw_bad_input(what + ": 'k' must be an integer in 1.." + std::to_string(numel));
            }
            const int64_t     K = e["k"].get<int64_t>();
            const std::string checksum =
                e.value("checksum", json("")).is_string() ? e.value("checksum", std::string()) : "";
            if (checksum.size() != 16 || checksum.find_first_not_of("0123456789abcdef") != std::string::npos) {
                throw_bad_input(what + ": 'checksum' must be 16 lowercase hex digits");
            }
            const json&   index = e.value("index", json());
            torch::Tensor idx;
            ShiraTensor   t;
            if (index == "struct") {
                idx = mask_struct(m, n, K);
            } else if (index == "rand") {
                const json&       seed   = e.value("rand_seed", json());
                const std::string digits = seed.is_string() ? seed.get<std::string>() : "";
                if (digits.empty() || digits.size() > 20 ||
                    digits.find_first_not_of("0123456789") != std::string::npos ||
                    (digits.size() == 20 && digits > "18446744073709551615")) {
                    throw_bad_input(what + ": 'rand_seed' must be a decimal uint64 string");
                }
                t.rand_seed = std::stoull(digits);
                idx         = mask_rand(numel, K, *t.rand_seed);
            } else if (index == "rice") {
                if (!e.contains("rice_k") || !e["rice_k"].is_number_integer())
                    throw_bad_input(what + ": 'rice_k' must be an integer");
                const torch::Tensor& bytes = take(name + ".index", name);
                if (bytes.scalar_type() != torch::kUInt8 || bytes.dim() != 1)
                    throw_bad_input(what + ": '.index' must be U8 [nbytes]");
                info.rice_k      = e["rice_k"].get<int>();
                info.bytes_index = bytes.numel();
                idx              = rice_decode(bytes, info.rice_k, K, numel, what);
            } else {
                throw_bad_input(what + ": 'index' must be \"struct\", \"rand\" or \"rice\"");
            }
            if (checksum_hex(shira_index_checksum(idx)) != checksum) {
                throw_bad_input(
                    index == "rice"
                        ? what + ": Rice-coded indices do not match the stored checksum (corrupt data)"
                        : what + ": the " + std::string(index == "rand" ? "Rand" : "Struct") +
                              " indices no longer regenerate from the stored parameters (checksum mismatch)");
            }
            const torch::Tensor& v = take(name + ".values", name);
            if (v.scalar_type() != dt || v.dim() != 1 || v.size(0) != K) {
                throw_bad_input(what + ": '.values' must be " + info.values + " [" + std::to_string(K) + "]");
            }
            info.index        = index.get<std::string>();
            info.bytes_values = v.nbytes();
            t.idx             = idx;
            t.values          = v.to(torch::kFloat32).contiguous();
            t.cols            = n;
            t.shape           = shape;
            a.shira[name]     = std::move(t);
        } else {
            const std::vector<int64_t> as = json_shape(e.value("a_shape", json()), what + ": 'a_shape'");
            const std::vector<int64_t> bs = json_shape(e.value("b_shape", json()), what + ": 'b_shape'");
            if (as.size() != bs.size() || bs[1] != as[0] || (bs.size() == 4 && (bs[2] != 1 || bs[3] != 1))) {
                throw_bad_input(what + ": a_shape " + shape_str(as) + " and b_shape " + shape_str(bs) +
                                " do not form a LoRA pair");
            }
            if (!e.contains("alpha") || !e["alpha"].is_number() || !std::isfinite(e["alpha"].get<double>())) {
                throw_bad_input(what + ": 'alpha' must be a finite number");
            }
            const torch::Tensor& A = take(name + ".lora_A", name);
            const torch::Tensor& B = take(name + ".lora_B", name);
            if (A.scalar_type() != dt || B.scalar_type() != dt || A.sizes().vec() != as || B.sizes().vec() != bs) {
                throw_bad_input(what + ": lora_A/lora_B must be " + info.values + " " + shape_str(as) + " / " +
                                shape_str(bs));
            }
            info.bytes_values = A.nbytes() + B.nbytes();
            a.lora[name]      = {A.to(torch::kFloat32).contiguous(), B.to(torch::kFloat32).contiguous(),
                                 e["alpha"].get<double>()};
        }
        a.storage[name] = info;
    }
    for (const auto& [key, _] : st.tensors) {
        if (!claimed.count(key))
            throw_bad_input("adapter '" + path + "' has tensor '" + printable(key) +
                            "' that no layer in 'tensors' describes");
    }
    return a;
}

Adapter adapter_load(const std::string& path, const DiffusionModel* model) {
    SafeTensors st  = safetensors_load(path);
    auto        fmt = st.metadata.find("format");
    if (fmt != st.metadata.end() && fmt->second == kAdapterFormatName) return adapter_load_v2(path, st);
    return adapter_load_v1(path, st, model);
}
