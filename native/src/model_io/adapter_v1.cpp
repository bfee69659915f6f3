// Reading adapter format v1 (this app's files before v2: PEFT's key layout plus metadata "kind", "shira_cols",
// "alphas") and PEFT's own adapter_model.safetensors ("base_model.model.<module>.shira_weight|shira_indices",
// lora_A/lora_B; lora_alpha from the adapter_config.json beside it). PEFT stores neither the component (UNet or
// text encoder) nor layer shapes, so those files need the loaded model. Indices are checked, sorted and made unique.
#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "adapter/masks.h"
#include "core/errors.h"
#include "core/indices.h"
#include "core/quote.h"
#include "model_io/adapter_file.h"

using json = nlohmann::json;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const char* dtype_label(torch::ScalarType t) {
    return t == torch::kFloat16 ? "f16" : t == torch::kBFloat16 ? "bf16" : t == torch::kFloat32 ? "f32" : "other";
}

// The model layer a v1/PEFT tensor name refers to: the name itself, or PEFT's "base_model.model.<module>"
// relative to the UNet or the text encoder.
std::string resolve_layer(const std::string& name, const DiffusionModel* model, const std::string& path) {
    const std::string peft = "base_model.model.";
    if (name.rfind(peft, 0) != 0) return name;
    if (!model)
        throw_bad_input(
            "adapter '" + path +
            "' is a PEFT file: load the model it belongs to first (PEFT stores neither component nor shapes)");
    const std::string module = name.substr(peft.size());
    for (const char* component : {"unet.", "text_encoder."}) {
        if (model->layers().count(component + module)) return component + module;
    }
    throw_bad_input("adapter '" + path + "': PEFT module '" + module + "' is not a layer of the loaded model");
}

}  // namespace

// v1 (this app's PEFT layout, metadata "kind" + "shira_cols"/"alphas") and PEFT's adapter_model.safetensors.
Adapter adapter_load_v1(const std::string& path, SafeTensors& st, const DiffusionModel* model) {
    Adapter a;
    a.metadata       = st.metadata;
    a.format_version = 1;
    std::string kind = st.metadata.count("kind") ? st.metadata["kind"] : "";
    if (kind.empty()) {  // PEFT: the tensor names say what it is
        for (const auto& [key, _] : st.tensors) {
            if (ends_with(key, ".shira_weight")) kind = "shira";
            if (ends_with(key, ".lora_A.weight")) kind = "lora";
        }
        if (!kind.empty()) a.metadata["kind"] = kind;
    }
    if (kind != "shira" && kind != "lora")
        throw_bad_input("adapter '" + path + "' is not a SHiRA or LoRA adapter (no kind, no known tensor names)");
    a.kind      = kind == "shira" ? ADAPTER_KIND_SHIRA : ADAPTER_KIND_LORA;
    json alphas = json::object(), cols = json::object();
    try {
        if (st.metadata.count("alphas")) alphas = json::parse(st.metadata["alphas"]);
        if (st.metadata.count("shira_cols")) cols = json::parse(st.metadata["shira_cols"]);
    } catch (const std::exception&) {
        throw_bad_input("adapter '" + path + "' has malformed metadata");
    }
    // PEFT keeps lora_alpha in the adapter_config.json beside the weights.
    double peft_alpha = -1;
    {
        std::ifstream in(std::filesystem::path(path).parent_path() / "adapter_config.json");
        if (in) {
            try {
                json cfg = json::parse(in);
                if (cfg.contains("lora_alpha") && cfg["lora_alpha"].is_number())
                    peft_alpha = cfg["lora_alpha"].get<double>();
            } catch (const std::exception&) {
            }
        }
    }
    // A Rand adapter trained by this app records its seed: each layer's mask_rand seed is a candidate that
    // adapter_save verifies (masks built with exclusions do not regenerate and are Rice-coded instead).
    std::optional<uint64_t> rand_seed;
    if (st.metadata.count("mask") && st.metadata["mask"] == "rand" && st.metadata.count("seed")) {
        const std::string& d = st.metadata["seed"];
        if (!d.empty() && d.size() < 20 && d.find_first_not_of("0123456789") == std::string::npos)
            rand_seed = std::stoull(d);
    }
    auto model_shape = [&](const std::string& layer) -> std::vector<int64_t> {
        if (!model) return {};
        auto it = model->layers().find(layer);
        return it == model->layers().end() ? std::vector<int64_t>() : it->second->weight.sizes().vec();
    };
    for (const auto& [key, t] : st.tensors) {
        if (ends_with(key, ".shira_weight")) {
            const std::string base = key.substr(0, key.size() - 13), name = resolve_layer(base, model, path);
            const std::string what = "adapter '" + path + "': SHiRA layer '" + name + "'";
            auto              it   = st.tensors.find(base + ".shira_indices");
            const auto        it_t = it == st.tensors.end() ? torch::kFloat32 : it->second.scalar_type();
            if (it == st.tensors.end() || t.dim() != 1 || it->second.dim() != 2 || it->second.size(0) != 2 ||
                it->second.size(1) != t.size(0) || !t.is_floating_point() ||
                (it_t != torch::kInt32 && it_t != torch::kInt64 && it_t != torch::kFloat32)) {
                throw_bad_input(what + ": needs float shira_weight [K] and int shira_indices [2, K]");
            }
            std::vector<int64_t> shape = model_shape(name);
            int64_t              n     = shape.empty() ? 0 : numel_of(shape) / shape[0];
            if (cols.contains(base)) {
                if (!cols[base].is_number_unsigned() || cols[base].get<int64_t>() < 1)
                    throw_bad_input(what + ": bad column count");
                if (n && n != cols[base].get<int64_t>())
                    throw_bad_input(what + " has " + std::to_string(cols[base].get<int64_t>()) +
                                    " columns but the model's layer has " + std::to_string(n));
                n = cols[base].get<int64_t>();
            }
            if (n < 1)
                throw_bad_input(
                    what +
                    ": the column count is unknown (not in the file's metadata and no model layer of that name)");
            // Windows PEFT saves the indices as float32; they must still be whole numbers.
            torch::Tensor ij = it->second.to(torch::kInt64);
            if (it_t == torch::kFloat32 && !torch::equal(ij.to(torch::kFloat32), it->second))
                throw_bad_input(what + ": float indices are not whole numbers");
            if (t.numel() && (ij.min().item<int64_t>() < 0 || ij[1].max().item<int64_t>() >= n ||
                              (!shape.empty() && ij[0].max().item<int64_t>() >= shape[0]))) {
                throw_bad_input(what + ": indices out of range");
            }
            // Mixing relies on sorted, unique indices (PEFT writes row-major order; other writers may not).
            auto [idx, order] = (ij[0] * n + ij[1]).sort();
            if (idx.numel() > 1 && idx.slice(0, 1).eq(idx.slice(0, 0, -1)).any().item<bool>())
                throw_bad_input(what + ": duplicate indices");
            ShiraTensor s;
            s.idx    = idx.contiguous();
            s.values = t.to(torch::kFloat32).index_select(0, order).contiguous();
            s.cols   = n;
            s.shape  = shape;
            if (rand_seed) s.rand_seed = shira_layer_seed(*rand_seed, name);
            a.shira[name]   = std::move(s);
            a.storage[name] = {"peft", dtype_label(t.scalar_type()), (int64_t)t.nbytes(), (int64_t)it->second.nbytes(),
                               -1};
        } else if (ends_with(key, ".lora_A.weight")) {
            const std::string base = key.substr(0, key.size() - 14), name = resolve_layer(base, model, path);
            auto              it = st.tensors.find(base + ".lora_B.weight");
            if (it == st.tensors.end() || t.dim() < 2 || it->second.dim() != t.dim() ||
                it->second.size(1) != t.size(0)) {
                throw_bad_input("adapter '" + path + "': bad LoRA entry for '" + printable(name) + "'");
            }
            double alpha = peft_alpha > 0 ? peft_alpha : (double)t.size(0);
            if (alphas.contains(base) && alphas[base].is_number()) alpha = alphas[base].get<double>();
            a.lora[name]    = {t.to(torch::kFloat32), it->second.to(torch::kFloat32), alpha};
            a.storage[name] = {"", dtype_label(t.scalar_type()), (int64_t)(t.nbytes() + it->second.nbytes()), 0, -1};
        } else if (!ends_with(key, ".shira_indices") && !ends_with(key, ".lora_B.weight")) {
            throw_bad_input("adapter '" + path + "' has unknown tensor '" + printable(key) + "'");
        }
    }
    if (a.shira.empty() && a.lora.empty()) throw_bad_input("adapter '" + path + "' holds no adapter tensors");
    return a;
}
