// TrainParams from the request (train_params.h). The common settings are checked in the order the worker always
// checked them; the method's own (grad_path, exclude, rank, ...) now also before the dataset is read.
#include "runtime/train_params.h"

#include <cstdint>

#include "adapter/sparse_grad.h"
#include "core/errors.h"
#include "core/json_args.h"

namespace {

// Prompts for sample_every: a JSON array, or one string that is either a JSON array or '|'-separated
// (prompts contain commas, so a comma list cannot work on the CLI).
std::vector<std::string> get_prompt_list(const Json& args, const char* key) {
    if (!args.contains(key)) return {};
    const Json& v = args.at(key);
    if (v.is_array()) return get_str_list(args, key, {});
    if (!v.is_string()) throw_bad_input(std::string("argument '") + key + "' must be an array of strings or a string");
    const std::string s = v.get<std::string>();
    if (!s.empty() && s[0] == '[') {
        Json parsed;
        try {
            parsed = Json::parse(s);
        } catch (const std::exception&) {
            throw_bad_input(std::string("argument '") + key + "' looks like JSON but does not parse");
        }
        return get_str_list(Json{{key, parsed}}, key, {});
    }
    return split_list(s, '|');
}

}  // namespace

const char* train_method_name(TrainMethod method) {
    switch (method) {
        case TRAIN_METHOD_SHIRA: return "shira";
        case TRAIN_METHOD_LORA: return "lora";
        default: return "full";
    }
}

TrainParams train_params_from_json(const Json& args) {
    TrainParams       p;
    const std::string method = get_str(args, "method", "shira");
    if (method != "shira" && method != "lora" && method != "full")
        throw_bad_input("method must be 'shira', 'lora' or 'full'");
    p.method     = method == "shira" ? TRAIN_METHOD_SHIRA : method == "lora" ? TRAIN_METHOD_LORA : TRAIN_METHOD_FULL;
    p.out        = need_str(args, "out");
    p.steps      = get_int(args, "steps", 200, 1, 10000000);
    p.batch      = get_int(args, "batch", 4, 1, 4096);
    p.grad_accum = get_int(args, "grad_accum", 1, 1, 1024);
    p.lr         = get_num(args, "lr", 1e-4, 0, 10);
    p.seed       = (uint64_t)get_int(args, "seed", 0, 0, INT64_MAX);
    p.caption_dropout          = get_num(args, "caption_dropout", 0.1, 0, 1);
    p.caption_tag_dropout      = get_num(args, "caption_tag_dropout", 0.0, 0, 1);
    p.caption_keep_words       = get_str_list(args, "caption_keep_words", {});
    p.category_balance         = get_num(args, "category_balance", 0.0, 0, 1);
    p.progress_every           = get_int(args, "progress_every", 10, 1, 10000000);
    const double      density  = get_num(args, "density", 0.02, 1e-9, 1);
    const std::string schedule = get_str(args, "schedule", "cosine");
    if (schedule != "cosine" && schedule != "constant") throw_bad_input("schedule must be 'cosine' or 'constant'");
    p.schedule                  = schedule == "cosine" ? LR_SCHEDULE_COSINE : LR_SCHEDULE_CONSTANT;
    const std::string precision = get_str(args, "precision", "bf16");
    if (precision != "bf16" && precision != "fp32")
        throw_bad_input("precision must be 'bf16' or 'fp32', got '" + precision + "'");
    p.bf16             = precision == "bf16";
    p.targets          = get_str_list(args, "targets", kDefaultTargets);
    p.flip             = get_bool(args, "flip", false);
    p.ema              = get_num(args, "ema", 0.0, 0.0, 0.999999);
    p.checkpoint_every = get_int(args, "checkpoint_every", 0, 0, 10000000);
    p.checkpoint       = get_str(args, "checkpoint", "");
    p.resume           = get_str(args, "resume", "");
    p.sample_every     = get_int(args, "sample_every", 0, 0, 10000000);
    p.sample.prompts   = get_prompt_list(args, "sample_prompts");
    p.sample_dir       = get_str(args, "sample_dir", "");
    p.sample.sampler   = str_to_sampler_type(get_str(args, "sample_sampler", "ddim"));
    p.sample.steps     = get_int(args, "sample_steps", 20, 1, 1000);
    p.sample.guidance  = get_num(args, "sample_guidance", 5.0, 0, 100);
    p.sample.seed      = (uint64_t)get_int(args, "sample_seed", 0, 0, INT64_MAX);
    p.sample.batch     = (int64_t)p.sample.prompts.size();
    if (p.sample_every > 0 && (p.sample.prompts.empty() || p.sample.prompts.size() > 64 || p.sample_dir.empty())) {
        throw_bad_input("sample_every needs sample_prompts (1..64 prompts) and sample_dir");
    }
    if (p.method != TRAIN_METHOD_FULL && p.ema > 0) throw_bad_input("ema is supported for method 'full' only");
    p.values_dtype = get_values_dtype(args, "values_dtype");
    if (p.checkpoint_every > 0 && p.checkpoint.empty()) throw_bad_input("checkpoint_every needs checkpoint (a path)");
    p.shira.mask = str_to_mask_type(get_str(args, "mask", "struct"));
    p.data       = need_str(args, "data");
    // Method-specific settings, read only for their method (another method ignores them, as it always has).
    if (p.method == TRAIN_METHOD_SHIRA) {
        p.shira.density = density;
        p.shira.seed    = p.seed;
        p.shira.targets = p.targets;
        p.shira.grad_path =
            str_to_grad_path(get_str(args, "grad_path", "auto"));  // docs/benchmarks.md: auto >= dense end to end
        p.exclude = get_str_list(args, "exclude", {});
        if (p.shira.mask == MASK_TYPE_GRAD || p.shira.mask == MASK_TYPE_SNIP)
            p.calib_batches = get_int(args, "calib_batches", 8, 1, 1000);
    } else if (p.method == TRAIN_METHOD_LORA) {
        p.lora.rank          = get_int(args, "rank", 4, 1, 4096);
        p.lora.alpha         = get_num(args, "alpha", (double)p.lora.rank, 0, 1e6);
        p.lora.match_density = args.contains("match_density") ? get_num(args, "match_density", 0, 1e-9, 1) : 0;
        p.lora.seed          = p.seed;
        p.lora.targets       = p.targets;
    }
    return p;
}

Json train_method_json(const TrainParams& p) {
    Json j = {{"method", train_method_name(p.method)},
              {"seed", p.seed},
              {"steps", p.steps},
              {"lr", p.lr},
              {"batch", p.batch},
              {"grad_accum", p.grad_accum},
              {"schedule", p.schedule == LR_SCHEDULE_COSINE ? "cosine" : "constant"},
              {"caption_dropout", p.caption_dropout},
              {"flip", p.flip},
              {"targets", p.targets}};
    if (p.caption_tag_dropout > 0) j["caption_tag_dropout"] = p.caption_tag_dropout;
    if (p.caption_tag_dropout > 0 && !p.caption_keep_words.empty()) j["caption_keep_words"] = p.caption_keep_words;
    if (p.category_balance > 0) j["category_balance"] = p.category_balance;
    if (p.method == TRAIN_METHOD_SHIRA) {
        j["mask"]    = mask_type_name(p.shira.mask);
        j["density"] = p.shira.density;
    } else if (p.method == TRAIN_METHOD_LORA) {
        j["rank"]  = p.lora.rank;
        j["alpha"] = p.lora.alpha;
        if (p.lora.match_density > 0) j["match_density"] = p.lora.match_density;
    }
    return j;
}
