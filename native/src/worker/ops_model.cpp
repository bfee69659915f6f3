// Ops on the model: info, load_model, unload, save_model, and forward (the model as a function, for the
// reference oracle and the ONNX exporter to compare against).
#include <fstream>

#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "core/errors.h"
#include "core/memory.h"
#include "model_io/model_file.h"
#include "model_io/safetensors.h"
#include "worker/ops.h"

DiffusionModel& need_model(WorkerState& st) {
    if (!st.model) throw_bad_input("no model loaded (send load_model first)");
    return *st.model;
}

Json op_info(WorkerState& st, const Json&, const EmitFn&) {
    Json j = {{"version", SHIRA_WORKER_VERSION},
              {"device", st.device.str()},
              {"torch", TORCH_VERSION},
              {"cuda_available", torch::cuda::is_available()},
              {"rss_bytes", rss_bytes()},
              {"model_loaded", (bool)st.model},
              {"mix_active", st.mix.active()},
              {"identity", st.identity},
              {"cache_bytes", st.adapters.bytes()},
              {"cache_entries", (int64_t)st.adapters.entries.size()},
              {"cache_budget_bytes", st.adapters.budget_bytes}};
    if (st.model) j["model"] = st.model->config.name;
    // The op table as the protocol serves it, so a client can check it speaks the same protocol.
    Json ops = Json::array();
    for (const WorkerOp& op : worker_ops())
        ops.push_back({{"name", op.name}, {"long_running", op.long_running}, {"read_only", op.read_only}});
    j["ops"] = ops;
    return j;
}

namespace {

Json model_summary(const DiffusionModel& m) {
    int64_t params = 0;
    for (const auto& [_, p] : m.named_parameters()) params += p.numel();
    Json targets = Json::array();
    for (const auto& [name, l] : m.layers()) {
        if (layer_matches(name, kDefaultTargets))
            targets.push_back({{"name", name}, {"shape", l->weight.sizes().vec()}});
    }
    return {{"name", m.config.name},
            {"parameters", params},
            {"default_targets", targets},
            {"config", model_config_to_json(m.config)}};
}

}  // namespace

Json op_load_model(WorkerState& st, const Json& args, const EmitFn&) {
    get_str(args, "identity", "");  // checked before the current model and mix are touched
    get_num(args, "cache_mb", 2048, 0, 1 << 24);
    if (st.mix.active() && st.model) mix_clear(*st.model, st.mix);
    st.mix_paths.clear();
    if (args.contains("path")) {
        st.model = model_load(need_str(args, "path"), st.device);
    } else if (args.contains("config")) {
        Json config = args.at("config");
        if (config.is_string()) {
            std::ifstream in(config.get<std::string>());
            if (!in) throw WorkerError(ERROR_TYPE_NOT_FOUND, "cannot open config '" + config.get<std::string>() + "'");
            try {
                config = Json::parse(in);
            } catch (const std::exception& e) {
                throw_bad_input(std::string("config is not JSON: ") + e.what());
            }
        }
        st.model =
            model_init(model_config_from_json(config), (uint64_t)get_int(args, "seed", 0, 0, INT64_MAX), st.device);
    } else {
        throw_bad_input("load_model needs 'path' (model .safetensors) or 'config' (object or JSON file)");
    }
    st.mix                   = MixState();
    st.identity              = get_str(args, "identity", "");
    st.adapters.budget_bytes = (int64_t)(get_num(args, "cache_mb", 2048, 0, 1 << 24) * 1048576.0);
    // Decoded adapters do not depend on the model: they stay, within the new budget.
    adapter_cache_evict(st.adapters, st.mix_paths);
    Json j        = model_summary(*st.model);
    j["identity"] = st.identity;
    j["cache_mb"] = (double)st.adapters.budget_bytes / 1048576.0;
    return j;
}

Json op_unload(WorkerState& st, const Json&, const EmitFn&) {
    st.model.reset();
    st.mix = MixState();
    st.mix_paths.clear();
    st.adapters.entries.clear();
    st.identity.clear();
    return {{"unloaded", true}};
}

Json op_save_model(WorkerState& st, const Json& args, const EmitFn&) {
    model_save(need_model(st), need_str(args, "out"));
    return {{"out", need_str(args, "out")}};
}

// The model as a function, for reference implementations (tests/reference, the ONNX exporter) to compare
// against: inputs file "x" F32 [B, C, H, W], "t" I64 [B], optional "probe" F32 like the output, metadata
// "prompts" (JSON array of B strings). Writes "out" F32 (the UNet prediction for the current weights,
// mix included), "context" F32 [B, L, D] (the text encoder's output) and, for each name in `grads`,
// "grad.<name>" = ∂ Σ(out ⊙ probe) / ∂ parameter (probe = ones when absent).
Json op_forward(WorkerState& st, const Json& args, const EmitFn&) {
    DiffusionModel&   model = need_model(st);
    const std::string out   = need_str(args, "out");
    SafeTensors       in    = safetensors_load(need_str(args, "inputs"));
    auto              x = in.tensors.find("x"), t = in.tensors.find("t");
    if (x == in.tensors.end() || t == in.tensors.end() || x->second.dim() != 4 || t->second.dim() != 1 ||
        t->second.size(0) != x->second.size(0)) {
        throw_bad_input("forward inputs need 'x' [B, C, H, W] and 't' [B]");
    }
    std::vector<std::string> prompts;
    try {
        prompts = Json::parse(in.metadata.at("prompts")).get<std::vector<std::string>>();
    } catch (const std::exception&) {
        throw_bad_input("forward inputs need metadata 'prompts' (a JSON array of strings)");
    }
    if ((int64_t)prompts.size() != x->second.size(0)) throw_bad_input("forward needs one prompt per batch row");
    const auto grads  = get_str_list(args, "grads", {});
    auto       params = model.named_parameters();
    for (const auto& g : grads) {
        if (!params.count(g)) throw_bad_input("forward: no parameter named '" + g + "'");
    }
    // Only the requested parameters may collect gradients: a loaded model's parameters may still require
    // grad, and a stale .grad left by an earlier call would be summed into this one.
    for (auto& [_, p] : params) {
        p.set_requires_grad(false);
        p.mutable_grad() = torch::Tensor();
    }
    torch::Tensor xin = x->second.to(torch::kFloat32).to(model.device),
                  tin = t->second.to(torch::kInt64).to(model.device);
    std::map<std::string, torch::Tensor> result;
    if (grads.empty()) {
        torch::NoGradGuard no_grad;
        torch::Tensor      ctx = model.text->encode(prompts);
        result["context"]      = ctx.cpu().contiguous();
        result["out"]          = model.predict(xin, tin, ctx).cpu().contiguous();
    } else {
        for (const auto& g : grads) params.at(g).set_requires_grad(true);
        try {
            torch::Tensor ctx   = model.text->encode(prompts);
            torch::Tensor pred  = model.predict(xin, tin, ctx);
            auto          probe = in.tensors.find("probe");
            torch::Tensor p =
                probe == in.tensors.end() ? torch::ones_like(pred) : probe->second.to(torch::kFloat32).to(model.device);
            if (p.sizes() != pred.sizes()) throw_bad_input("forward: 'probe' must have the output's shape");
            (pred * p).sum().backward();
            result["context"] = ctx.detach().cpu().contiguous();
            result["out"]     = pred.detach().cpu().contiguous();
            for (const auto& g : grads) result["grad." + g] = params.at(g).grad().detach().cpu().contiguous();
        } catch (...) {
            for (const auto& g : grads) {
                params.at(g).mutable_grad() = torch::Tensor();
                params.at(g).set_requires_grad(false);
            }
            throw;
        }
        for (const auto& g : grads) {
            params.at(g).mutable_grad() = torch::Tensor();
            params.at(g).set_requires_grad(false);
        }
    }
    safetensors_save(out, result);
    return {{"out", out}, {"shape", result["out"].sizes().vec()}};
}
