// Checkpoints (checkpoint.h), with AdamW's state keyed the way each libtorch keys it.
#include "runtime/checkpoint.h"

#include <sstream>
#include <type_traits>

#include "core/errors.h"
#include "model_io/safetensors.h"

using Json = nlohmann::json;

namespace {

using AdamWState = torch::optim::AdamWParamState;

// libtorch keys an optimiser's per-parameter state by the parameter's TensorImpl: libtorch 1.x by that
// pointer printed as a string, 2.x by the pointer itself (a void* key). The map's key_type picks the
// spelling, so the same source builds against Debian's 1.13 and a current PyTorch.
template <typename StateMap>
typename StateMap::key_type adam_state_key(const torch::Tensor& p) {
    using Key = typename StateMap::key_type;
    if constexpr (std::is_same_v<Key, std::string>) {
        std::ostringstream os;
        os << p.unsafeGetTensorImpl();
        return os.str();
    } else {
        return static_cast<Key>(p.unsafeGetTensorImpl());
    }
}

using AdamWStateMap = std::decay_t<decltype(std::declval<torch::optim::AdamW&>().state())>;

AdamWState* adam_state(torch::optim::AdamW& opt, const torch::Tensor& p) {
    auto it = opt.state().find(adam_state_key<AdamWStateMap>(p));
    return it == opt.state().end() ? nullptr : static_cast<AdamWState*>(it->second.get());
}

// Checks that a checkpoint belongs to this run before anything is restored: method, settings, masks.
void checkpoint_check(const std::string& path, std::map<std::string, std::string>& meta, const CheckpointInfo& expect) {
    const std::string method = meta.count("method") ? meta["method"] : "";
    if (method != expect.method) {
        throw_bad_input("checkpoint '" + path + "' is for method '" + method + "'; this run trains '" + expect.method +
                        "'");
    }
    if (!expect.settings.empty()) {
        Json saved, now = Json::parse(expect.settings);
        try {
            saved = Json::parse(meta.count("settings") ? meta["settings"] : "");
        } catch (const std::exception&) {
            throw_bad_input("checkpoint '" + path + "' has no training settings");
        }
        std::string differ;
        for (const auto& [key, v] : now.items()) {
            if (!saved.contains(key) || saved[key] != v) differ += (differ.empty() ? "" : ", ") + key;
        }
        for (const auto& [key, v] : saved.items()) {
            if (!now.contains(key)) differ += (differ.empty() ? "" : ", ") + key;
        }
        if (!differ.empty())
            throw_bad_input("checkpoint '" + path + "' was made with other settings (" + differ +
                            "); resume with the same ones");
    }
    if (!expect.mask_checksums.empty()) {
        Json saved;
        try {
            saved = Json::parse(meta.count("mask_checksums") ? meta["mask_checksums"] : "");
        } catch (const std::exception&) {
            throw_bad_input("checkpoint '" + path + "' has no mask checksums");
        }
        for (const auto& [layer, sum] : expect.mask_checksums) {
            if (!saved.contains(layer) || saved[layer] != sum) {
                throw_bad_input(
                    "checkpoint '" + path + "': the mask of layer '" + layer +
                    "' differs from the one rebuilt for this run (other data, seed, mask, density or exclude list)");
            }
        }
        if (saved.size() != expect.mask_checksums.size())
            throw_bad_input("checkpoint '" + path + "' trains other layers than this run");
    }
}

}  // namespace

void checkpoint_save(const std::string& path, const DiffusionModel& model,
                     const std::vector<std::pair<std::string, torch::Tensor>>& named, torch::optim::AdamW& opt,
                     const std::map<std::string, torch::Tensor>& ema, at::Generator& gen, int64_t step, int64_t steps,
                     uint64_t seed, const CheckpointInfo& info, const Json& grad_paths) {
    std::map<std::string, torch::Tensor> t;
    int64_t                              adam_step = 0;
    for (const auto& [name, p] : named) {
        t["param." + name] = p.detach();
        if (auto* s = adam_state(opt, p)) {
            t["adam.exp_avg." + name]    = s->exp_avg();
            t["adam.exp_avg_sq." + name] = s->exp_avg_sq();
            adam_step                    = s->step();
        }
    }
    for (const auto& [name, e] : ema) t["ema." + name] = e;
    t["rng"]                                = gen.get_state();
    std::map<std::string, std::string> meta = {{"format", "shira-studio-checkpoint"},
                                               {"method", info.method},
                                               {"step", std::to_string(step)},
                                               {"steps", std::to_string(steps)},
                                               {"seed", std::to_string(seed)},
                                               {"adam_step", std::to_string(adam_step)},
                                               {"config", model_config_to_json(model.config).dump()}};
    if (!info.settings.empty()) meta["settings"] = info.settings;
    if (!info.mask_checksums.empty()) meta["mask_checksums"] = Json(info.mask_checksums).dump();
    if (!grad_paths.empty()) meta["grad_paths"] = grad_paths.dump();
    safetensors_save(path, t, meta);
}

// Returns the step the checkpoint was written after; `meta_out` receives its metadata.
int64_t checkpoint_load(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& named,
                        torch::optim::AdamW& opt, std::map<std::string, torch::Tensor>& ema, at::Generator& gen,
                        int64_t steps, const CheckpointInfo& expect, std::map<std::string, std::string>& meta_out) {
    SafeTensors ck = safetensors_load(path);
    if (ck.metadata["format"] != "shira-studio-checkpoint")
        throw_bad_input("'" + path + "' is not a training checkpoint");
    int64_t step = 0, saved_steps = 0, adam_step = 0;
    try {
        step        = std::stoll(ck.metadata.at("step"));
        saved_steps = std::stoll(ck.metadata.at("steps"));
        adam_step   = std::stoll(ck.metadata.at("adam_step"));
    } catch (const std::exception&) {
        throw_bad_input("checkpoint '" + path + "' has malformed metadata");
    }
    if (saved_steps != steps) {
        throw_bad_input("checkpoint was made for steps=" + std::to_string(saved_steps) +
                        "; resume with the same steps so the schedule matches");
    }
    checkpoint_check(path, ck.metadata, expect);
    if (!ck.tensors.count("rng")) throw_bad_input("checkpoint '" + path + "' has no rng state");
    torch::NoGradGuard no_grad;
    for (const auto& [name, p] : named) {
        auto it = ck.tensors.find("param." + name);
        if (it == ck.tensors.end() || it->second.sizes() != p.sizes()) {
            throw_bad_input("checkpoint '" + path + "' does not fit this model (tensor '" + name + "')");
        }
        p.copy_(it->second);
        if (adam_step > 0) {
            auto a = ck.tensors.find("adam.exp_avg." + name), b = ck.tensors.find("adam.exp_avg_sq." + name);
            if (a == ck.tensors.end() || b == ck.tensors.end())
                throw_bad_input("checkpoint lacks optimiser state for '" + name + "'");
            auto s = std::make_unique<AdamWState>();
            s->step(adam_step);
            s->exp_avg(a->second.to(p.device(), p.scalar_type()).clone());
            s->exp_avg_sq(b->second.to(p.device(), p.scalar_type()).clone());
            opt.state()[adam_state_key<AdamWStateMap>(p)] = std::move(s);
        }
        if (!ema.empty()) {
            auto e = ck.tensors.find("ema." + name);
            if (e == ck.tensors.end()) throw_bad_input("checkpoint has no EMA copy of '" + name + "' but ema is set");
            ema.at(name).copy_(e->second);
        }
    }
    gen.set_state(ck.tensors.at("rng"));
    meta_out = ck.metadata;
    return step;
}
