// PEFT folder export (peft_export.h).
#include "model_io/peft_export.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "core/errors.h"
#include "model/diffusion_model.h"
#include "model_io/safetensors.h"

using Json = nlohmann::json;

Json peft_export(const Adapter& a, const std::string& out) {
    if (a.kind != ADAPTER_KIND_SHIRA)
        throw_bad_input("PEFT export is for SHiRA adapters (LoRA files already use PEFT's key names)");
    Json folders = Json::array();
    for (const std::string component : {"unet", "text_encoder"}) {
        std::map<std::string, torch::Tensor> tensors;
        std::set<std::string>                targets;
        Json                                 ks      = Json::object();
        int64_t                              total_k = 0, total_mn = 0;
        for (const auto& [name, t] : a.shira) {
            if (name.rfind(component + ".", 0) != 0) continue;
            const std::string module       = name.substr(component.size() + 1);
            const std::string key          = "base_model.model." + module;
            const int64_t     m            = t.idx.numel() ? t.idx[t.idx.numel() - 1].item<int64_t>() / t.cols + 1 : 0;
            tensors[key + ".shira_weight"] = t.values.to(torch::kFloat32);
            tensors[key + ".shira_indices"] =
                torch::stack({torch::div(t.idx, t.cols, "floor"), t.idx.remainder(t.cols)}).to(torch::kInt32);
            ks[module] = t.idx.numel();
            total_k += t.idx.numel();
            total_mn += m + t.cols;  // m is a lower bound (the last trained row); exact for Struct/diagonal masks
            // PEFT matches target_modules as dotted suffixes; numeric leaves need their parents ("ff.net.2").
            std::string leaf = module.substr(module.rfind('.') == std::string::npos ? 0 : module.rfind('.') + 1);
            for (const char* multi : {"ff.net.0.proj", "ff.net.2", "to_out.0"}) {
                if (layer_matches(module, {multi})) leaf = multi;
            }
            targets.insert(leaf);
        }
        if (tensors.empty()) continue;
        const std::string dir = component == "unet" ? out : out + "/text_encoder";
        std::error_code   ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) throw_bad_input("cannot create '" + dir + "': " + ec.message());
        const int64_t r = std::max<int64_t>(1, std::llround((double)total_k / (double)std::max<int64_t>(1, total_mn)));
        std::string   mask = a.metadata.count("mask") ? a.metadata.at("mask") : "random";
        if (mask == "rand") mask = "random";
        Json config = {
            {"peft_type", "SHIRA"},
            {"r", r},
            {"mask_type", mask},
            {"target_modules", Json(std::vector<std::string>(targets.begin(), targets.end()))},
            {"random_seed", a.metadata.count("seed") ? Json(std::stoll(a.metadata.at("seed"))) : Json(nullptr)},
            {"fan_in_fan_out", false},
            {"init_weights", true},
            {"inference_mode", true},
            {"modules_to_save", nullptr},
            {"task_type", nullptr},
            {"base_model_name_or_path", nullptr},
            {"revision", nullptr}};
        safetensors_save(dir + "/adapter_model.safetensors", tensors,
                         {{"format", "pt"}, {"shira_k", ks.dump()}, {"source", "shira-studio"}});
        write_file_atomic(dir + "/adapter_config.json", config.dump(2) + "\n");
        folders.push_back({{"dir", dir}, {"tensors", (int64_t)tensors.size() / 2}, {"r", r}, {"trainable", total_k}});
    }
    if (folders.empty()) throw_bad_input("adapter has no SHiRA tensors to export");
    return folders;
}
