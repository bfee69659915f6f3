// DiffusionModel (diffusion_model.h): parameters and adaptable layers by path, seeded init, target patterns.
#include "model/diffusion_model.h"

#include <regex>

#include "core/errors.h"

const std::vector<std::string> kDefaultTargets = {"to_q",          "to_k",     "to_v",    "to_out.0",
                                                  "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"};

std::map<std::string, torch::Tensor> DiffusionModel::named_parameters() const {
    std::map<std::string, torch::Tensor> out;
    for (const auto& p : unet_module(*unet).named_parameters()) out["unet." + p.key()] = p.value();
    for (const auto& p : text->module()->named_parameters()) out["text_encoder." + p.key()] = p.value();
    return out;
}

const std::map<std::string, std::shared_ptr<LayerImpl>>& DiffusionModel::layers() const {
    if (!layers_cache_.empty()) return layers_cache_;
    auto& out = layers_cache_;
    for (const auto& m : unet_module(*unet).named_modules()) {
        if (auto l = std::dynamic_pointer_cast<LayerImpl>(m.value())) out["unet." + m.key()] = l;
    }
    for (const auto& m : text->module()->named_modules()) {
        if (auto l = std::dynamic_pointer_cast<LayerImpl>(m.value())) out["text_encoder." + m.key()] = l;
    }
    return out;
}

torch::Tensor DiffusionModel::predict(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& context) {
    return unet_forward(*unet, x, t, context);
}

std::unique_ptr<DiffusionModel> model_init(const ModelConfig& config, uint64_t seed, torch::Device device) {
    torch::manual_seed(seed);
    auto m    = std::make_unique<DiffusionModel>();
    m->config = config;
    m->text   = word_text_encoder_init(config.text);
    m->unet   = unet_init(config.unet, config.text.width);
    unet_module(*m->unet).to(device);
    m->text->module()->to(device);
    m->device = device;
    return m;
}

bool layer_matches(const std::string& name, const std::vector<std::string>& patterns) {
    for (const auto& p : patterns) {
        if (p.rfind("re:", 0) == 0) {
            try {
                if (std::regex_search(name, std::regex(p.substr(3)))) return true;
            } catch (const std::regex_error& e) {
                throw_bad_input("bad target pattern '" + p + "': " + e.what());
            }
        } else if (name == p || (name.size() > p.size() && name.compare(name.size() - p.size(), p.size(), p) == 0 &&
                                 name[name.size() - p.size() - 1] == '.')) {
            return true;
        }
    }
    return false;
}

std::vector<std::pair<std::string, std::shared_ptr<LayerImpl>>> target_layers(
    DiffusionModel& model, const std::vector<std::string>& patterns) {
    std::vector<std::pair<std::string, std::shared_ptr<LayerImpl>>> out;
    for (auto& [name, layer] : model.layers()) {
        if (layer_matches(name, patterns)) out.emplace_back(name, layer);
    }
    if (out.empty()) throw_bad_input("no layer matches the target patterns");
    return out;
}

void set_requires_grad(DiffusionModel& model, bool on) {
    for (auto& [name, p] : model.named_parameters()) p.set_requires_grad(on);
}
