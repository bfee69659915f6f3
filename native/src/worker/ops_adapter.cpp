// Ops on adapter files and the applied mix: apply_mix / clear_mix (adapter/mix.h through the adapter cache),
// adapter_inspect, adapter_convert (any readable format -> v2), adapter_export (PEFT folder or v2) and
// adapter_overlap (AWOM/AWOR, adapter/overlap.h).
#include <filesystem>
#include <memory>
#include <utility>
#include <vector>

#include "adapter/overlap.h"
#include "core/errors.h"
#include "model_io/adapter_file.h"
#include "model_io/peft_export.h"
#include "worker/ops.h"

Json op_apply_mix(WorkerState& st, const Json& args, const EmitFn&) {
    DiffusionModel& model = need_model(st);
    const Json&     list  = arg(args, "adapters");
    if (!list.is_array()) throw_bad_input("'adapters' must be an array of {path, alpha}");
    std::vector<std::pair<std::string, double>> items;
    for (const auto& item : list) {
        if (!item.is_object()) throw_bad_input("'adapters' must be an array of {path, alpha}");
        items.emplace_back(need_str(item, "path"), get_num(item, "alpha", 1.0, -100, 100));
    }
    CacheCounters                                  n;
    std::vector<std::shared_ptr<Adapter>>          keep;
    std::vector<std::pair<const Adapter*, double>> mix;
    std::vector<std::string>                       paths;
    for (const auto& [path, alpha] : items) {
        keep.push_back(adapter_cache_get(st.adapters, path, n));
        const std::string base = keep.back()->base_identity();
        if (!base.empty() && !st.identity.empty() && base != st.identity) {
            throw_bad_input("adapter '" + path + "' was trained on base model " + base.substr(0, 12) +
                            " but the loaded model is " + st.identity.substr(0, 12) +
                            "; load that base model to use it");
        }
        mix.emplace_back(keep.back().get(), alpha);
        paths.push_back(path);
    }
    MixStats     stats;
    const double ms = mix_apply(model, st.mix, mix, &stats);
    st.mix_paths    = paths;
    adapter_cache_evict(st.adapters, st.mix_paths);
    return {{"ms", ms},
            {"load_ms", n.load_ms},
            {"cache_hits", n.hits},
            {"cache_misses", n.misses},
            {"layers_reblended", stats.layers_reblended},
            {"layers_unchanged", stats.layers_unchanged},
            {"cache_bytes", st.adapters.bytes()},
            {"adapters", (int64_t)mix.size()}};
}

Json op_clear_mix(WorkerState& st, const Json&, const EmitFn&) {
    const double ms = mix_clear(need_model(st), st.mix);
    st.mix_paths.clear();
    adapter_cache_evict(st.adapters, st.mix_paths);
    return {{"ms", ms}, {"cache_bytes", st.adapters.bytes()}};
}

namespace {

// Per-layer storage and the totals that bytes-per-value comparisons need (values and indices, headers excluded).
Json adapter_summary(const Adapter& a) {
    Json    tensors      = Json::array();
    int64_t bytes_values = 0, bytes_index = 0;
    for (const auto& [name, info] : a.storage) {
        bytes_values += info.bytes_values;
        bytes_index += info.bytes_index;
    }
    for (const auto& [name, t] : a.shira) {
        const TensorStorage info = a.storage.count(name) ? a.storage.at(name) : TensorStorage();
        Json                j    = {{"layer", name},
                                    {"k", t.values.numel()},
                                    {"cols", t.cols},
                                    {"index", info.index},
                                    {"values", info.values},
                                    {"bytes_values", info.bytes_values},
                                    {"bytes_index", info.bytes_index}};
        if (!t.shape.empty()) j["shape"] = t.shape;
        if (info.rice_k >= 0) j["rice_k"] = info.rice_k;
        tensors.push_back(j);
    }
    for (const auto& [name, t] : a.lora) {
        const TensorStorage info = a.storage.count(name) ? a.storage.at(name) : TensorStorage();
        tensors.push_back({{"layer", name},
                           {"rank", t.rank()},
                           {"alpha", t.alpha},
                           {"a_shape", t.A.sizes().vec()},
                           {"b_shape", t.B.sizes().vec()},
                           {"values", info.values},
                           {"bytes_values", info.bytes_values},
                           {"bytes_index", info.bytes_index}});
    }
    const int64_t trainable = a.trainable();
    return {{"kind", a.kind == ADAPTER_KIND_SHIRA ? "shira" : "lora"},
            {"trainable", trainable},
            {"metadata", a.metadata},
            {"format_version", a.format_version},
            {"base_identity", a.base_identity()},
            {"bytes_values", bytes_values},
            {"bytes_index", bytes_index},
            {"bytes_per_value", trainable ? (double)(bytes_values + bytes_index) / (double)trainable : 0.0},
            {"tensors", tensors}};
}

}  // namespace

// Read-only and served beside a running job, so it never touches the model (PEFT files, which need the
// model for their layer names, are inspected after adapter_convert).
Json op_adapter_inspect(WorkerState&, const Json& args, const EmitFn&) {
    const std::string path = need_str(args, "path");
    Json              j    = adapter_summary(adapter_load(path));
    std::error_code   ec;
    const auto        size = std::filesystem::file_size(path, ec);
    j["file_bytes"]        = ec ? (int64_t)-1 : (int64_t)size;
    return j;
}

// Any loadable adapter (v2, v1 PEFT layout, PEFT adapter_model.safetensors with a model loaded) -> a v2 file.
// The loaded model supplies the layer shapes that v1/PEFT files lack. The result is read back and checked.
Json op_adapter_convert(WorkerState& st, const Json& args, const EmitFn&) {
    const std::string path = need_str(args, "path"), out = need_str(args, "out");
    const ValuesDtype values = get_values_dtype(args, "values");
    const Adapter     a      = adapter_load(path, st.model.get());
    adapter_save(a, out, values);
    const Adapter back = adapter_load(out);
    Json          j    = adapter_summary(back);
    j.erase("tensors");
    j.erase("metadata");
    Json encodings = Json::object();
    for (const auto& [_, info] : back.storage) {
        const std::string key = info.index.empty() ? "lora" : info.index;
        encodings[key]        = encodings.value(key, 0) + 1;
    }
    std::error_code ec;
    j["out"]                 = out;
    j["from_format_version"] = a.format_version;
    j["encodings"]           = encodings;
    j["file_bytes"]          = (int64_t)std::filesystem::file_size(out, ec);
    return j;
}

// The PEFT layout (model_io/peft_export.h), or format v2 with f16 values (adapter_convert chooses the value dtype).
Json op_adapter_export(WorkerState& st, const Json& args, const EmitFn&) {
    const Adapter     a      = adapter_load(need_str(args, "path"), st.model.get());
    const std::string out    = need_str(args, "out");
    const std::string format = get_str(args, "format", "peft");
    if (format == "native") {
        adapter_save(a, out);
        return {{"out", out}, {"format", format}};
    }
    if (format != "peft") throw_bad_input("format must be 'peft' or 'native'");
    return {{"out", out}, {"format", format}, {"folders", peft_export(a, out)}};
}

Json op_adapter_overlap(WorkerState&, const Json& args, const EmitFn&) {
    const Adapter a = adapter_load(need_str(args, "a"));
    const Adapter b = adapter_load(need_str(args, "b"));
    const auto    layers =
        adapter_overlap(a, b, get_num(args, "alpha_a", 1.0, -100, 100), get_num(args, "alpha_b", 1.0, -100, 100));
    Json   rows = Json::array();
    double awom = 0, awom_n = 0, awor = 0;
    for (const auto& l : layers) {
        rows.push_back({{"layer", l.layer},
                        {"m", l.m},
                        {"awom", l.awom},
                        {"awom_normalized", l.awom_normalized},
                        {"awor", l.awor}});
        awom += l.awom;
        awom_n += l.awom_normalized;
        awor += l.awor;
    }
    const double n = std::max<double>(1.0, (double)layers.size());
    return {{"layers", rows},
            {"summary",
             {{"layers", (int64_t)layers.size()},
              {"awom_mean", awom / n},
              {"awom_normalized_mean", awom_n / n},
              {"awor_mean", awor / n}}}};
}
