// Model files (model_file.h): every parameter must be present with its shape; unknown tensors are errors.
#include "model_io/model_file.h"

#include "core/errors.h"
#include "core/quote.h"
#include "model_io/safetensors.h"

using json = nlohmann::json;

std::unique_ptr<DiffusionModel> model_load(const std::string& path, torch::Device device) {
    SafeTensors st = safetensors_load(path);
    auto        it = st.metadata.find("config");
    if (it == st.metadata.end()) throw_bad_input("model '" + path + "' has no config in its __metadata__");
    json config_json;
    try {
        config_json = json::parse(it->second);
    } catch (const std::exception& e) {
        throw_bad_input(std::string("model config is not JSON: ") + e.what());
    }
    // Files written before spare buckets existed have none; the default (64) would not fit their embedding.
    if (config_json.is_object() && config_json.contains("text_encoder") && config_json["text_encoder"].is_object() &&
        !config_json["text_encoder"].contains("spare_buckets")) {
        config_json["text_encoder"]["spare_buckets"] = 0;
    }
    auto               m      = model_init(model_config_from_json(config_json), 0, torch::kCPU);
    auto               params = m->named_parameters();
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : params) {
        auto src = st.tensors.find(name);
        if (src == st.tensors.end()) throw_bad_input("model '" + path + "' lacks tensor '" + name + "'");
        if (src->second.sizes() != p.sizes()) throw_bad_input("model tensor '" + name + "' has the wrong shape");
        p.copy_(src->second.to(p.scalar_type()));
    }
    for (const auto& [name, t] : st.tensors) {
        if (!params.count(name)) throw_bad_input("model '" + path + "' has unknown tensor '" + printable(name) + "'");
    }
    unet_module(*m->unet).to(device);
    m->text->module()->to(device);
    m->device = device;
    return m;
}

void model_save(const DiffusionModel& model, const std::string& path) {
    safetensors_save(path, model.named_parameters(),
                     {{"config", model_config_to_json(model.config).dump()}, {"format", "shira-studio-model"}});
}
