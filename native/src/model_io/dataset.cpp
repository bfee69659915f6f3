// Packed dataset loader (dataset.h).
#include "model_io/dataset.h"

#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "model_io/images.h"
#include "model_io/safetensors.h"

using Json = nlohmann::json;

namespace {

// __metadata__[key] as a JSON array of exactly n strings; empty when the key is absent.
std::vector<std::string> metadata_strings(const SafeTensors& st, const std::string& key, int64_t n) {
    std::vector<std::string> out;
    if (!st.metadata.count(key)) return out;
    Json j;
    try {
        j = Json::parse(st.metadata.at(key));
    } catch (const std::exception&) {
        throw_bad_input("dataset " + key + " are not JSON");
    }
    if (!j.is_array() || (int64_t)j.size() != n) throw_bad_input("dataset " + key + " must be an array of N strings");
    for (const auto& x : j) {
        if (!x.is_string()) throw_bad_input("dataset " + key + " must be strings");
        out.push_back(x.get<std::string>());
    }
    return out;
}

}  // namespace

Dataset dataset_load(const std::string& path, const DiffusionModel& model) {
    SafeTensors st = safetensors_load(path);
    auto        it = st.tensors.find("images");
    if (it == st.tensors.end()) throw_bad_input("dataset '" + path + "' has no 'images' tensor");
    const torch::Tensor& im = it->second;
    if (im.scalar_type() != torch::kUInt8 || im.dim() != 4 || im.size(3) != 3 || im.size(0) < 1) {
        throw_bad_input("dataset 'images' must be uint8 [N, H, W, 3] with N >= 1");
    }
    const int64_t down = 1ll << (model.config.unet.block_out_channels.size() - 1);
    if (im.size(1) % down || im.size(2) % down)
        throw_bad_input("dataset image size must be a multiple of " + std::to_string(down));
    Dataset d;
    d.images     = images_to_model(im).to(model.device);
    d.captions   = metadata_strings(st, "captions", im.size(0));
    d.categories = metadata_strings(st, "categories", im.size(0));
    if (d.captions.empty()) d.captions.assign(im.size(0), "");
    return d;
}
