#include "worker/worker.h"

#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>
#include <type_traits>
#include <fstream>
#include <iostream>
#include <sys/stat.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/version.h>

#include "core/errors.h"
#include "bench/bench.h"
#include "eval/judge.h"
#include "runtime/sampler.h"
#include "model_io/safetensors.h"

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// ---- argument access: every field is type- and range-checked, so bad input is a reply, not a crash

const Json& arg(const Json& args, const char* key) {
    if (!args.contains(key)) throw_bad_input(std::string("missing argument '") + key + "'");
    return args.at(key);
}

int64_t get_int(const Json& args, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
    if (!args.contains(key)) return fallback;
    const Json& v = args.at(key);
    if (!v.is_number_integer()) throw_bad_input(std::string("argument '") + key + "' must be an integer");
    if (v.is_number_unsigned() ? v.get<uint64_t>() > (uint64_t)hi : (v.get<int64_t>() < lo || v.get<int64_t>() > hi)) {
        throw_bad_input(std::string("argument '") + key + "' must be in " + std::to_string(lo) + ".." + std::to_string(hi));
    }
    return v.get<int64_t>();
}

double get_num(const Json& args, const char* key, double fallback, double lo, double hi) {
    if (!args.contains(key)) return fallback;
    const Json& v = args.at(key);
    if (!v.is_number()) throw_bad_input(std::string("argument '") + key + "' must be a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || d < lo || d > hi) {
        throw_bad_input(std::string("argument '") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return d;
}

std::string get_str(const Json& args, const char* key, const std::string& fallback) {
    if (!args.contains(key)) return fallback;
    if (!args.at(key).is_string()) throw_bad_input(std::string("argument '") + key + "' must be a string");
    return args.at(key).get<std::string>();
}

bool get_bool(const Json& args, const char* key, bool fallback) {
    if (!args.contains(key)) return fallback;
    if (!args.at(key).is_boolean()) throw_bad_input(std::string("argument '") + key + "' must be true or false");
    return args.at(key).get<bool>();
}

std::string need_str(const Json& args, const char* key) {
    arg(args, key);
    return get_str(args, key, "");
}

std::vector<std::string> get_str_list(const Json& args, const char* key, const std::vector<std::string>& fallback) {
    if (!args.contains(key)) return fallback;
    const Json& v = args.at(key);
    if (!v.is_array()) throw_bad_input(std::string("argument '") + key + "' must be an array of strings");
    std::vector<std::string> out;
    for (const auto& s : v) {
        if (!s.is_string()) throw_bad_input(std::string("argument '") + key + "' must be an array of strings");
        out.push_back(s.get<std::string>());
    }
    return out;
}

ValuesDtype get_values_dtype(const Json& args, const char* key) {
    const std::string v = get_str(args, key, "f16");
    if (v != "f16" && v != "f32") throw_bad_input(std::string("argument '") + key + "' must be \"f16\" or \"f32\", not '" + v + "'");
    return str_to_values_dtype(v);
}

DiffusionModel& need_model(WorkerState& st) {
    if (!st.model) throw_bad_input("no model loaded (send load_model first)");
    return *st.model;
}

std::string temp_output(const std::string& stem) {
    static std::atomic<int> n{0};
    struct stat sb;
    const std::string dir = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
    return dir + "/shira-" + stem + "-" + std::to_string(getpid()) + "-" + std::to_string(n++) + ".safetensors";
}

int64_t rss_bytes() {
    const int64_t kib = proc_field_kib("/proc/self/status", "VmRSS:");
    return kib < 0 ? -1 : kib * 1024;
}

// ---- dataset: images uint8 [N, H, W, 3]; __metadata__["captions"] = JSON array of N strings

struct Dataset {
    torch::Tensor            images;  // fp32 [N, 3, H, W] in [-1, 1] on the model device
    std::vector<std::string> captions;
    std::vector<std::string> categories;  // optional __metadata__["categories"]: one label per image, or empty
};

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

Dataset dataset_load(const std::string& path, const DiffusionModel& model) {
    SafeTensors st = safetensors_load(path);
    auto        it = st.tensors.find("images");
    if (it == st.tensors.end()) throw_bad_input("dataset '" + path + "' has no 'images' tensor");
    const torch::Tensor& im = it->second;
    if (im.scalar_type() != torch::kUInt8 || im.dim() != 4 || im.size(3) != 3 || im.size(0) < 1) {
        throw_bad_input("dataset 'images' must be uint8 [N, H, W, 3] with N >= 1");
    }
    const int64_t down = 1ll << (model.config.unet.block_out_channels.size() - 1);
    if (im.size(1) % down || im.size(2) % down) throw_bad_input("dataset image size must be a multiple of " + std::to_string(down));
    Dataset d;
    d.images = images_to_model(im).to(model.device);
    d.captions   = metadata_strings(st, "captions", im.size(0));
    d.categories = metadata_strings(st, "categories", im.size(0));
    if (d.captions.empty()) d.captions.assign(im.size(0), "");
    return d;
}

// ---- adapter cache (apply_mix)

// Drops least recently used adapters until the decoded bytes fit the budget; those of the applied mix stay
// even when they alone exceed it.
void cache_evict(WorkerState& st) {
    const std::set<std::string> keep(st.mix_paths.begin(), st.mix_paths.end());
    AdapterCache&               c = st.adapters;
    while (c.bytes() > c.budget_bytes) {
        auto victim = c.entries.end();
        for (auto it = c.entries.begin(); it != c.entries.end(); ++it) {
            if (keep.count(it->first)) continue;
            if (victim == c.entries.end() || it->second.last_use < victim->second.last_use) victim = it;
        }
        if (victim == c.entries.end()) break;
        c.entries.erase(victim);
    }
}

struct CacheCounters {
    int64_t hits = 0, misses = 0;
    double  load_ms = 0;
};

std::shared_ptr<Adapter> cached_adapter(WorkerState& st, const std::string& path, CacheCounters& n) {
    // Stat before reading: a file replaced while it is read then differs from the recorded stat next time.
    std::error_code ec;
    const auto      size = std::filesystem::file_size(path, ec);
    if (ec) throw WorkerError(ERROR_TYPE_NOT_FOUND, "adapter file '" + path + "' not found (" + ec.message() + ")");
    const auto mtime = std::filesystem::last_write_time(path, ec);
    if (ec) throw WorkerError(ERROR_TYPE_NOT_FOUND, "adapter file '" + path + "' not found (" + ec.message() + ")");
    const int64_t mtime_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(mtime.time_since_epoch()).count();
    AdapterCache& c        = st.adapters;
    auto          it       = c.entries.find(path);
    if (it != c.entries.end() && it->second.file_size == (int64_t)size && it->second.mtime_ns == mtime_ns) {
        ++n.hits;
        it->second.last_use = ++c.clock;
        return it->second.adapter;
    }
    const double t0 = now_s();
    auto         a  = std::make_shared<Adapter>(adapter_load(path));
    n.load_ms += (now_s() - t0) * 1000;
    ++n.misses;
    c.entries[path] = {a, (int64_t)size, mtime_ns, a->decoded_bytes(), ++c.clock};
    return a;
}

// ---- ops

Json op_info(WorkerState& st) {
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
    return j;
}

Json model_summary(const DiffusionModel& m) {
    int64_t params = 0;
    for (const auto& [_, p] : m.named_parameters()) params += p.numel();
    Json targets = Json::array();
    for (const auto& [name, l] : m.layers()) {
        if (layer_matches(name, kDefaultTargets)) targets.push_back({{"name", name}, {"shape", l->weight.sizes().vec()}});
    }
    return {{"name", m.config.name}, {"parameters", params}, {"default_targets", targets}, {"config", model_config_to_json(m.config)}};
}

Json op_load_model(WorkerState& st, const Json& args) {
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
        st.model = model_init(model_config_from_json(config), (uint64_t)get_int(args, "seed", 0, 0, INT64_MAX), st.device);
    } else {
        throw_bad_input("load_model needs 'path' (model .safetensors) or 'config' (object or JSON file)");
    }
    st.mix = MixState();
    st.identity               = get_str(args, "identity", "");
    st.adapters.budget_bytes  = (int64_t)(get_num(args, "cache_mb", 2048, 0, 1 << 24) * 1048576.0);
    cache_evict(st);  // decoded adapters do not depend on the model: they stay, within the new budget
    Json j        = model_summary(*st.model);
    j["identity"] = st.identity;
    j["cache_mb"] = (double)st.adapters.budget_bytes / 1048576.0;
    return j;
}

// ---- training helpers

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
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= s.size()) {
        size_t end = s.find('|', start);
        if (end == std::string::npos) end = s.size();
        if (end > start) out.push_back(s.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

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

// Training checkpoint, one safetensors file written by temp+rename:
//   "param.<name>" (full: every model parameter; shira: "<layer>" = the K values; lora: "<layer>.lora_A|B"),
//   "ema.<name>" (when EMA is on), "adam.exp_avg.<name>", "adam.exp_avg_sq.<name>" (after step 1),
//   "rng" uint8 = the data-order/noise CPU generator state; __metadata__: method, step, steps, seed, adam_step,
//   config, and for shira/lora "settings" (the adapter's method JSON), for shira "mask_checksums" (layer ->
//   FNV-1a hex of its indices) and "grad_paths" (layer -> the path grad_path auto settled on).
// Resuming restores all of it, so K/2 + resume + K/2 steps equal K straight steps bit for bit on CPU.
struct CheckpointInfo {
    std::string                        method;    // "full" | "shira" | "lora"
    std::string                        settings;  // shira/lora: must match on resume ("" for full: not checked)
    std::map<std::string, std::string> mask_checksums;
};

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
    t["rng"] = gen.get_state();
    std::map<std::string, std::string> meta = {
        {"format", "shira-studio-checkpoint"}, {"method", info.method}, {"step", std::to_string(step)},
        {"steps", std::to_string(steps)}, {"seed", std::to_string(seed)}, {"adam_step", std::to_string(adam_step)},
        {"config", model_config_to_json(model.config).dump()}};
    if (!info.settings.empty()) meta["settings"] = info.settings;
    if (!info.mask_checksums.empty()) meta["mask_checksums"] = Json(info.mask_checksums).dump();
    if (!grad_paths.empty()) meta["grad_paths"] = grad_paths.dump();
    safetensors_save(path, t, meta);
}

// Checks that a checkpoint belongs to this run before anything is restored: method, settings, masks.
void checkpoint_check(const std::string& path, std::map<std::string, std::string>& meta, const CheckpointInfo& expect) {
    const std::string method = meta.count("method") ? meta["method"] : "";
    if (method != expect.method) {
        throw_bad_input("checkpoint '" + path + "' is for method '" + method + "'; this run trains '" + expect.method + "'");
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
        if (!differ.empty()) throw_bad_input("checkpoint '" + path + "' was made with other settings (" + differ + "); resume with the same ones");
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
                throw_bad_input("checkpoint '" + path + "': the mask of layer '" + layer +
                                "' differs from the one rebuilt for this run (other data, seed, mask, density or exclude list)");
            }
        }
        if (saved.size() != expect.mask_checksums.size()) throw_bad_input("checkpoint '" + path + "' trains other layers than this run");
    }
}

// Returns the step the checkpoint was written after; `meta_out` receives its metadata.
int64_t checkpoint_load(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& named,
                        torch::optim::AdamW& opt, std::map<std::string, torch::Tensor>& ema, at::Generator& gen,
                        int64_t steps, const CheckpointInfo& expect, std::map<std::string, std::string>& meta_out) {
    SafeTensors ck = safetensors_load(path);
    if (ck.metadata["format"] != "shira-studio-checkpoint") throw_bad_input("'" + path + "' is not a training checkpoint");
    int64_t step = 0, saved_steps = 0, adam_step = 0;
    try {
        step        = std::stoll(ck.metadata.at("step"));
        saved_steps = std::stoll(ck.metadata.at("steps"));
        adam_step   = std::stoll(ck.metadata.at("adam_step"));
    } catch (const std::exception&) {
        throw_bad_input("checkpoint '" + path + "' has malformed metadata");
    }
    if (saved_steps != steps) {
        throw_bad_input("checkpoint was made for steps=" + std::to_string(saved_steps) + "; resume with the same steps so the schedule matches");
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
            if (a == ck.tensors.end() || b == ck.tensors.end()) throw_bad_input("checkpoint lacks optimiser state for '" + name + "'");
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

}  // namespace

// kohya's caption_tag_dropout_rate: each comma-separated tag of a caption is dropped with probability
// `rate` (u[k] < rate drops tag k), so the model also learns what each tag means on its own — a short prompt
// ("animals") then carries the concept that only ever appeared inside long captions. A tag holding one of
// `keep_words` (a trigger word; whole words, case-insensitive: kohya's keep_tokens by name instead of
// position) never drops, so the trigger alone learns to carry the style. Without such a tag one tag always
// stays (the one with the largest u). Tags past u's length are always kept.
std::string caption_drop_tags(const std::string& caption, const float* u, int64_t n_u, double rate,
                              const std::vector<std::string>& keep_words) {
    auto lower = [](std::string w) {
        for (char& ch : w) ch = (char)std::tolower((unsigned char)ch);
        return w;
    };
    std::set<std::string> keep;
    for (const auto& w : keep_words) keep.insert(lower(w));
    auto holds_keep_word = [&](const std::string& tag) {
        std::string word;
        for (size_t i = 0; i <= tag.size(); ++i) {
            const unsigned char ch = i < tag.size() ? (unsigned char)tag[i] : ' ';
            if (std::isalnum(ch) || ch == '_' || ch == '-' || ch >= 0x80) {
                word += (char)std::tolower(ch);
            } else if (!word.empty()) {
                if (keep.count(word)) return true;
                word.clear();
            }
        }
        return false;
    };
    std::vector<std::string> tags;
    for (size_t start = 0;;) {
        const size_t comma = caption.find(',', start);
        std::string  tag = caption.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        const size_t a = tag.find_first_not_of(' '), b = tag.find_last_not_of(' ');
        if (a != std::string::npos) tags.push_back(tag.substr(a, b - a + 1));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    if (tags.size() < 2) return caption;
    std::vector<bool> kept(tags.size(), false);
    bool              any_kept = false;
    for (size_t k = 0; k < tags.size(); ++k) {
        kept[k]  = !keep.empty() && holds_keep_word(tags[k]);
        any_kept = any_kept || kept[k];
    }
    int64_t best = 0;
    for (int64_t k = 1; k < std::min<int64_t>(n_u, (int64_t)tags.size()); ++k) {
        if (u[k] > u[best]) best = k;
    }
    std::string out;
    for (int64_t k = 0; k < (int64_t)tags.size(); ++k) {
        if (k < n_u && !kept[k] && (any_kept || k != best) && u[k] < rate) continue;
        out += (out.empty() ? "" : ", ") + tags[k];
    }
    return out;
}

// Per-image sampling weights ∝ n_c^(−β) for an image of category c with n_c images: β = 0 draws images
// uniformly, β = 1 draws categories uniformly; in between (0.5) small categories are seen more often
// without repeating their few images until they are memorised.
torch::Tensor category_weights(const std::vector<std::string>& categories, double beta) {
    std::map<std::string, int64_t> counts;
    for (const auto& c : categories) ++counts[c];
    std::vector<double> w;
    w.reserve(categories.size());
    for (const auto& c : categories) w.push_back(std::pow((double)counts[c], -beta));
    return torch::tensor(w, torch::kFloat64);
}

namespace {

Json op_train(WorkerState& st, const Json& args, const EmitFn& emit) {
    DiffusionModel& model  = need_model(st);
    const std::string method = get_str(args, "method", "shira");
    if (method != "shira" && method != "lora" && method != "full") throw_bad_input("method must be 'shira', 'lora' or 'full'");
    const std::string out        = need_str(args, "out");
    const int64_t     steps      = get_int(args, "steps", 200, 1, 10000000);
    const int64_t     batch      = get_int(args, "batch", 4, 1, 4096);
    const int64_t     accum      = get_int(args, "grad_accum", 1, 1, 1024);
    const double      lr         = get_num(args, "lr", 1e-4, 0, 10);
    const uint64_t    seed       = (uint64_t)get_int(args, "seed", 0, 0, INT64_MAX);
    const double      dropout    = get_num(args, "caption_dropout", 0.1, 0, 1);
    const double      tag_dropout = get_num(args, "caption_tag_dropout", 0.0, 0, 1);
    const auto        keep_words = get_str_list(args, "caption_keep_words", {});  // tags holding these never drop
    const double      balance    = get_num(args, "category_balance", 0.0, 0, 1);
    const int64_t     every      = get_int(args, "progress_every", 10, 1, 10000000);
    const double      density    = get_num(args, "density", 0.02, 1e-9, 1);
    const std::string schedule   = get_str(args, "schedule", "cosine");
    if (schedule != "cosine" && schedule != "constant") throw_bad_input("schedule must be 'cosine' or 'constant'");
    const std::string precision  = get_str(args, "precision", "bf16");  // bf16 autocast on CUDA; CPU is always fp32
    if (precision != "bf16" && precision != "fp32") throw_bad_input("precision must be 'bf16' or 'fp32', got '" + precision + "'");
    const auto        targets    = get_str_list(args, "targets", kDefaultTargets);
    const bool        flip       = get_bool(args, "flip", false);
    const double      ema_decay  = get_num(args, "ema", 0.0, 0.0, 0.999999);
    const int64_t     ckpt_every = get_int(args, "checkpoint_every", 0, 0, 10000000);
    const std::string ckpt_path  = get_str(args, "checkpoint", "");
    const std::string resume     = get_str(args, "resume", "");
    // Sampling every N steps: fixed seed, so the images of successive steps are comparable.
    const int64_t     sample_every = get_int(args, "sample_every", 0, 0, 10000000);
    const auto        sample_prompts = get_prompt_list(args, "sample_prompts");
    const std::string sample_dir = get_str(args, "sample_dir", "");
    SampleParams      sp;
    sp.sampler  = str_to_sampler_type(get_str(args, "sample_sampler", "ddim"));
    sp.steps    = get_int(args, "sample_steps", 20, 1, 1000);
    sp.guidance = get_num(args, "sample_guidance", 5.0, 0, 100);
    sp.seed     = (uint64_t)get_int(args, "sample_seed", 0, 0, INT64_MAX);
    sp.prompts  = sample_prompts;
    sp.batch    = (int64_t)sample_prompts.size();
    if (sample_every > 0 && (sample_prompts.empty() || sample_prompts.size() > 64 || sample_dir.empty())) {
        throw_bad_input("sample_every needs sample_prompts (1..64 prompts) and sample_dir");
    }
    if (method != "full" && ema_decay > 0) throw_bad_input("ema is supported for method 'full' only");
    const ValuesDtype values_dtype = get_values_dtype(args, "values_dtype");
    if (ckpt_every > 0 && ckpt_path.empty()) throw_bad_input("checkpoint_every needs checkpoint (a path)");
    str_to_mask_type(get_str(args, "mask", "struct"));  // validate cheap arguments before reading files
    Dataset           data       = dataset_load(need_str(args, "data"), model);
    if (st.mix.active()) mix_clear(model, st.mix);
    st.mix_paths.clear();

    NoiseSchedule noise = noise_schedule_init(model.config.diffusion);
    at::Generator gen   = at::detail::createCPUGenerator(seed);
    torch::manual_seed(seed);
    const int64_t N = data.images.size(0);
    if (balance > 0 && data.categories.empty()) throw_bad_input("category_balance needs a dataset with metadata 'categories'");
    const torch::Tensor pick_weights = balance > 0 ? category_weights(data.categories, balance) : torch::Tensor();
    constexpr int64_t   kMaxTags = 16;
    // Every random draw of a step comes from `gen` in a fixed order (pick, drop, [tags], flip, t, ε), so
    // its state alone fixes the rest of the run (checkpoint/resume). Options left at 0 draw nothing, so
    // runs without them keep the stream they always had.
    auto batch_loss = [&]() {
        torch::Tensor pick = balance > 0 ? torch::multinomial(pick_weights, batch, true, gen)
                                         : torch::randint(0, N, {batch}, gen, torch::kInt64);
        torch::Tensor drop = torch::rand({batch}, gen);
        torch::Tensor tag_u = tag_dropout > 0 ? torch::rand({batch, kMaxTags}, gen).contiguous() : torch::Tensor();
        std::vector<std::string> caps;
        for (int64_t i = 0; i < batch; ++i) {
            // Caption dropout trains the unconditional branch that classifier-free guidance needs.
            const std::string& caption = data.captions[pick[i].item<int64_t>()];
            if (drop[i].item<double>() < dropout) {
                caps.push_back("");
            } else if (tag_dropout > 0) {
                caps.push_back(caption_drop_tags(caption, tag_u.data_ptr<float>() + i * kMaxTags, kMaxTags, tag_dropout, keep_words));
            } else {
                caps.push_back(caption);
            }
        }
        torch::Tensor x0 = data.images.index_select(0, pick.to(model.device));
        if (flip) {
            torch::Tensor f = (torch::rand({batch}, gen) < 0.5).to(model.device).view({batch, 1, 1, 1});
            x0              = torch::where(f, x0.flip({3}), x0);
        }
        return diffusion_loss(model, noise, x0, model.text->encode(caps), gen);
    };

    std::vector<torch::Tensor> params;
    std::vector<std::pair<std::string, torch::Tensor>> named;  // full: every model parameter by name
    std::string                mask_name;
    std::vector<Adapter>       excluded;
    if (method == "shira") {
        ShiraOptions o;
        o.mask      = str_to_mask_type(get_str(args, "mask", "struct"));
        mask_name   = mask_type_name(o.mask);
        o.density   = density;
        o.seed      = seed;
        o.targets   = targets;
        const std::string path = get_str(args, "grad_path", "auto");  // docs/benchmarks.md: auto >= dense end to end
        if (path != "auto" && path != "sparse" && path != "dense") throw_bad_input("grad_path must be auto, sparse or dense");
        o.grad_path = path == "auto" ? GRAD_PATH_AUTO : path == "sparse" ? GRAD_PATH_SPARSE : GRAD_PATH_DENSE;
        for (const auto& p : get_str_list(args, "exclude", {})) excluded.push_back(adapter_load(p));
        for (const auto& a : excluded) o.exclude.push_back(&a);
        std::map<std::string, torch::Tensor> scores;
        if (o.mask == MASK_TYPE_GRAD || o.mask == MASK_TYPE_SNIP) {
            scores = shira_calibrate(model, targets, o.mask, get_int(args, "calib_batches", 8, 1, 1000), batch_loss);
        }
        params = shira_attach(model, o, scores);
    } else if (method == "lora") {
        LoraOptions o;
        o.rank          = get_int(args, "rank", 4, 1, 4096);
        o.alpha         = get_num(args, "alpha", (double)o.rank, 0, 1e6);
        o.match_density = args.contains("match_density") ? get_num(args, "match_density", 0, 1e-9, 1) : 0;
        o.seed          = seed;
        o.targets       = targets;
        params          = lora_attach(model, o);
    } else {
        for (auto& [name, p] : model.named_parameters()) {
            p.set_requires_grad(true);
            params.push_back(p);
            named.emplace_back(name, p);
        }
    }
    int64_t trainable = 0;
    for (const auto& p : params) trainable += p.numel();
    // What the adapter file's "method" records and what a shira/lora checkpoint must match on resume.
    Json method_json = {{"method", method}, {"seed", seed}, {"steps", steps}, {"lr", lr}, {"batch", batch}, {"grad_accum", accum},
                        {"schedule", schedule}, {"caption_dropout", dropout}, {"flip", flip}, {"targets", targets}};
    if (tag_dropout > 0) method_json["caption_tag_dropout"] = tag_dropout;
    if (tag_dropout > 0 && !keep_words.empty()) method_json["caption_keep_words"] = keep_words;
    if (balance > 0) method_json["category_balance"] = balance;
    CheckpointInfo ck_info;
    ck_info.method = method;
    if (method == "shira") {
        method_json["mask"]    = mask_name;
        method_json["density"] = density;
        for (auto& [name, l] : model.layers()) {
            if (!l->shira) continue;
            named.emplace_back(name, l->shira->values);
            ck_info.mask_checksums[name] = checksum_hex(shira_index_checksum(l->shira->idx));
        }
    } else if (method == "lora") {
        method_json["rank"]  = get_int(args, "rank", 4, 1, 4096);
        method_json["alpha"] = get_num(args, "alpha", (double)method_json["rank"].get<int64_t>(), 0, 1e6);
        if (args.contains("match_density")) method_json["match_density"] = get_num(args, "match_density", 0, 1e-9, 1);
        for (auto& [name, l] : model.layers()) {
            if (!l->lora) continue;
            named.emplace_back(name + ".lora_A", l->lora->A);
            named.emplace_back(name + ".lora_B", l->lora->B);
        }
    }
    if (method != "full") ck_info.settings = method_json.dump();
    // The path grad_path auto settled on per SHiRA layer, so a resumed run computes the same gradients.
    auto chosen_paths = [&] {
        Json j = Json::object();
        for (auto& [name, l] : model.layers()) {
            if (l->shira && l->shira->chosen != GRAD_PATH_AUTO) j[name] = l->shira->chosen == GRAD_PATH_SPARSE ? "sparse" : "dense";
        }
        return j;
    };

    // AdamW without weight decay (paper Table 9; decay would pull trained entries toward 0, not W0).
    torch::optim::AdamW opt(params, torch::optim::AdamWOptions(lr).weight_decay(0.0));
    // EMA of the full model's weights (what `out` saves when on). Decay warms up as min(d, (1+n)/(10+n)),
    // diffusers' EMAModel default, so early averages are not dominated by the random init.
    std::map<std::string, torch::Tensor> ema;
    if (ema_decay > 0) {
        for (const auto& [name, p] : named) ema[name] = p.detach().clone();
    }
    auto ema_update = [&](int64_t n) {
        torch::NoGradGuard no_grad;
        const double d = std::min(ema_decay, (1.0 + (double)n) / (10.0 + (double)n));
        for (const auto& [name, p] : named) ema.at(name).mul_(d).add_(p.detach(), 1.0 - d);
    };
    // Samples of the weights as they are now (EMA weights when EMA is on); sampling draws only from its
    // own seeded generator, so it does not disturb the training stream.
    auto emit_sample = [&](int64_t step) {
        torch::NoGradGuard                   no_grad;
        std::map<std::string, torch::Tensor> live;
        if (!ema.empty()) {
            for (const auto& [name, p] : named) {
                live[name] = p.detach().clone();
                p.detach().copy_(ema.at(name));
            }
        }
        torch::Tensor images = sample_images(model, noise, sp, [&] { return st.cancel.load(); });
        for (const auto& [name, w] : live) model.named_parameters().at(name).detach().copy_(w);
        std::error_code ec;
        std::filesystem::create_directories(sample_dir, ec);
        if (ec) throw WorkerError(ERROR_TYPE_BAD_INPUT, "cannot create sample_dir '" + sample_dir + "': " + ec.message());
        const std::string path = sample_dir + "/step_" + std::to_string(step) + ".safetensors";
        safetensors_save(path, {{"images", images}},
                         {{"step", std::to_string(step)}, {"prompts", Json(sample_prompts).dump()}, {"seed", std::to_string(sp.seed)}});
        emit({{"event", "sample"}, {"step", step}, {"path", path}});
    };

    // bf16 autocast on CUDA (issue 3), for the whole run; CPU runs never enable it.
    const bool   use_autocast = model.device.is_cuda() && precision == "bf16";
    CudaAutocast autocast_scope(use_autocast);

    const double        t_start = now_s();
    double              last_loss = 0, first_loss = -1;
    bool                cancelled = false;
    int64_t             step = 0, start_step = 0;
    try {
        if (!resume.empty()) {
            std::map<std::string, std::string> ck_meta;
            start_step = checkpoint_load(resume, named, opt, ema, gen, steps, ck_info, ck_meta);
            if (method == "shira") {
                Json saved = Json::parse(ck_meta.count("grad_paths") ? ck_meta["grad_paths"] : "{}", nullptr, false);
                for (auto& [name, l] : model.layers()) {
                    if (!l->shira || l->shira->path != GRAD_PATH_AUTO || !saved.is_object() || !saved.contains(name)) continue;
                    l->shira->chosen = saved[name] == "sparse" ? GRAD_PATH_SPARSE : GRAD_PATH_DENSE;
                }
                shira_write_values(model);  // the fused weights must hold W0 + the restored values
            }
        }
        for (step = start_step + 1; step <= steps; ++step) {
            if (st.cancel.load()) {
                cancelled = true;
                break;
            }
            const double lr_t = schedule == "cosine" ? lr * 0.5 * (1.0 + std::cos(M_PI * (double)(step - 1) / (double)steps)) : lr;
            for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr_t);
            double loss_sum = 0;
            for (int64_t a = 0; a < accum; ++a) {
                torch::Tensor loss = batch_loss() / (double)accum;
                loss.backward();
                loss_sum += loss.item<double>();
            }
            opt.step();
            opt.zero_grad();
            if (method == "shira") shira_write_values(model);
            if (!ema.empty()) ema_update(step);
            last_loss = loss_sum;
            if (first_loss < 0) first_loss = loss_sum;
            if (!std::isfinite(last_loss)) throw WorkerError(ERROR_TYPE_INTERNAL, "loss became non-finite at step " + std::to_string(step));
            if (step % every == 0 || step == steps) {
                const double elapsed = now_s() - t_start, it_s = (double)(step - start_step) / std::max(elapsed, 1e-9);
                emit({{"event", "progress"}, {"step", step}, {"steps", steps}, {"loss", last_loss}, {"it_s", it_s},
                      {"eta_s", (double)(steps - step) / it_s}});
            }
            if (sample_every > 0 && (step % sample_every == 0 || step == steps)) emit_sample(step);
            if (ckpt_every > 0 && (step % ckpt_every == 0 || step == steps)) {
                checkpoint_save(ckpt_path, model, named, opt, ema, gen, step, steps, seed, ck_info, chosen_paths());
                emit({{"event", "checkpoint"}, {"step", step}, {"path", ckpt_path}});
            }
        }
    } catch (...) {
        if (method == "shira") shira_detach(model);
        if (method == "lora") lora_detach(model);
        for (auto& [_, p] : model.named_parameters()) p.set_requires_grad(false);
        throw;
    }
    // Grad-path choices, reported so benchmarks can say which path won per layer shape.
    Json paths = Json::array();
    if (method == "shira") {
        for (auto& [name, l] : model.layers()) {
            if (!l->shira) continue;
            const auto& s = *l->shira;
            paths.push_back({{"layer", name}, {"shape", l->weight.sizes().vec()}, {"k", s.idx.numel()},
                             {"path", s.chosen == GRAD_PATH_SPARSE ? "sparse" : s.chosen == GRAD_PATH_DENSE ? "dense" : "auto"},
                             {"sparse_ms", s.sparse_ms}, {"dense_ms", s.dense_ms},
                             {"dense_dw_bytes", l->weight.numel() * 4}});
        }
    }
    Adapter adapter;
    if (method == "shira") adapter = shira_detach(model);
    if (method == "lora") adapter = lora_detach(model);
    for (auto& [_, p] : model.named_parameters()) p.set_requires_grad(false);
    if (cancelled) throw WorkerError(ERROR_TYPE_CANCELLED, "train cancelled before step " + std::to_string(step));
    if (method == "full") {
        if (!ema.empty()) {
            torch::NoGradGuard no_grad;
            for (const auto& [name, p] : named) p.detach().copy_(ema.at(name));
        }
        model_save(model, out);
    } else {
        adapter.metadata = {{"model", model.config.name}, {"method", method_json.dump()}, {"steps", std::to_string(steps)},
                            {"seed", std::to_string(seed)}, {"lr", std::to_string(lr)}, {"base_identity", st.identity}};
        if (method == "shira") {
            adapter.metadata["mask"]    = mask_name;
            adapter.metadata["density"] = std::to_string(density);
            // Candidates only: adapter_save stores a mask as "rand" when it regenerates exactly (not with exclude).
            if (mask_name == "rand") {
                for (auto& [name, t] : adapter.shira) t.rand_seed = shira_layer_seed(seed, name);
            }
        }
        adapter_save(adapter, out, values_dtype);
    }
    return {{"out", out}, {"steps", steps}, {"start_step", start_step}, {"first_loss", first_loss}, {"final_loss", last_loss},
            {"trainable", trainable}, {"ema", ema_decay}, {"autocast_bf16", use_autocast}, {"seconds", now_s() - t_start},
            {"grad_paths", paths}};
}

Json op_sample(WorkerState& st, const Json& args) {
    DiffusionModel& model = need_model(st);
    SampleParams    p;
    if (args.contains("prompt") && args.at("prompt").is_array()) {
        p.prompts = get_str_list(args, "prompt", {});
    } else {
        p.prompts = {get_str(args, "prompt", "")};
    }
    p.sampler         = str_to_sampler_type(get_str(args, "sampler", "ddim"));
    p.negative_prompt = get_str(args, "negative_prompt", "");
    p.batch           = get_int(args, "batch", 1, 1, 64);
    p.steps           = get_int(args, "steps", 20, 1, 1000);
    p.guidance        = get_num(args, "guidance", 5.0, 0, 100);
    p.size            = get_int(args, "size", 0, 0, 1024);
    p.seed            = (uint64_t)get_int(args, "seed", 0, 0, INT64_MAX);
    const std::string out = get_str(args, "out", temp_output("sample"));
    const double      t0  = now_s();
    torch::Tensor     images = sample_images(model, noise_schedule_init(model.config.diffusion), p, [&] { return st.cancel.load(); });
    safetensors_save(out, {{"images", images}}, {{"seed", std::to_string(p.seed)}});
    return {{"out", out}, {"shape", images.sizes().vec()}, {"ms", (now_s() - t0) * 1000}};
}

Json op_apply_mix(WorkerState& st, const Json& args) {
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
        keep.push_back(cached_adapter(st, path, n));
        const std::string base = keep.back()->base_identity();
        if (!base.empty() && !st.identity.empty() && base != st.identity) {
            throw_bad_input("adapter '" + path + "' was trained on base model " + base.substr(0, 12) + " but the loaded model is " +
                            st.identity.substr(0, 12) + "; load that base model to use it");
        }
        mix.emplace_back(keep.back().get(), alpha);
        paths.push_back(path);
    }
    MixStats     stats;
    const double ms = mix_apply(model, st.mix, mix, &stats);
    st.mix_paths    = paths;
    cache_evict(st);
    return {{"ms", ms}, {"load_ms", n.load_ms}, {"cache_hits", n.hits}, {"cache_misses", n.misses},
            {"layers_reblended", stats.layers_reblended}, {"layers_unchanged", stats.layers_unchanged},
            {"cache_bytes", st.adapters.bytes()}, {"adapters", (int64_t)mix.size()}};
}

// Per-layer storage and the totals that bytes-per-value comparisons need (values and indices, headers excluded).
Json adapter_summary(const Adapter& a) {
    Json    tensors = Json::array();
    int64_t bytes_values = 0, bytes_index = 0;
    for (const auto& [name, info] : a.storage) {
        bytes_values += info.bytes_values;
        bytes_index += info.bytes_index;
    }
    for (const auto& [name, t] : a.shira) {
        const TensorStorage info = a.storage.count(name) ? a.storage.at(name) : TensorStorage();
        Json j = {{"layer", name}, {"k", t.values.numel()}, {"cols", t.cols}, {"index", info.index}, {"values", info.values},
                  {"bytes_values", info.bytes_values}, {"bytes_index", info.bytes_index}};
        if (!t.shape.empty()) j["shape"] = t.shape;
        if (info.rice_k >= 0) j["rice_k"] = info.rice_k;
        tensors.push_back(j);
    }
    for (const auto& [name, t] : a.lora) {
        const TensorStorage info = a.storage.count(name) ? a.storage.at(name) : TensorStorage();
        tensors.push_back({{"layer", name}, {"rank", t.rank()}, {"alpha", t.alpha}, {"a_shape", t.A.sizes().vec()},
                           {"b_shape", t.B.sizes().vec()}, {"values", info.values}, {"bytes_values", info.bytes_values},
                           {"bytes_index", info.bytes_index}});
    }
    const int64_t trainable = a.trainable();
    return {{"kind", a.kind == ADAPTER_KIND_SHIRA ? "shira" : "lora"}, {"trainable", trainable}, {"metadata", a.metadata},
            {"format_version", a.format_version}, {"base_identity", a.base_identity()}, {"bytes_values", bytes_values},
            {"bytes_index", bytes_index},
            {"bytes_per_value", trainable ? (double)(bytes_values + bytes_index) / (double)trainable : 0.0}, {"tensors", tensors}};
}

// Read-only and served beside a running job, so it never touches the model (PEFT files, which need the
// model for their layer names, are inspected after adapter_convert).
Json op_adapter_inspect(const Json& args) {
    const std::string path = need_str(args, "path");
    Json              j    = adapter_summary(adapter_load(path));
    std::error_code   ec;
    const auto        size = std::filesystem::file_size(path, ec);
    j["file_bytes"]        = ec ? (int64_t)-1 : (int64_t)size;
    return j;
}

// Any loadable adapter (v2, v1 PEFT layout, PEFT adapter_model.safetensors with a model loaded) -> a v2 file.
// The loaded model supplies the layer shapes that v1/PEFT files lack. The result is read back and checked.
Json op_adapter_convert(WorkerState& st, const Json& args) {
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

// PEFT layout (notes §4.6): a folder with adapter_model.safetensors ("base_model.model.<module>.shira_weight" fp32 [K],
// ".shira_indices" int32 [2, K]) and adapter_config.json, one folder per component: the UNet's layers at the top
// (module paths relative to the UNet, as get_peft_model(pipe.unet) names them), text-encoder layers in text_encoder/.
// PEFT sizes each layer as K = r·(m+n); `r` here is the whole-adapter average, so stock PEFT loads the file only where
// that matches (density-based masks give every layer its own K; the per-layer K are in the file's metadata).
Json op_adapter_export(WorkerState& st, const Json& args) {
    const Adapter     a      = adapter_load(need_str(args, "path"), st.model.get());
    const std::string out    = need_str(args, "out");
    const std::string format = get_str(args, "format", "peft");
    if (format == "native") {  // format v2, f16 values (adapter_convert chooses the value dtype)
        adapter_save(a, out);
        return {{"out", out}, {"format", format}};
    }
    if (format != "peft") throw_bad_input("format must be 'peft' or 'native'");
    if (a.kind != ADAPTER_KIND_SHIRA) throw_bad_input("PEFT export is for SHiRA adapters (LoRA files already use PEFT's key names)");
    Json folders = Json::array();
    for (const std::string component : {"unet", "text_encoder"}) {
        std::map<std::string, torch::Tensor> tensors;
        std::set<std::string>                targets;
        Json                                 ks = Json::object();
        int64_t                              total_k = 0, total_mn = 0;
        for (const auto& [name, t] : a.shira) {
            if (name.rfind(component + ".", 0) != 0) continue;
            const std::string module = name.substr(component.size() + 1);
            const std::string key    = "base_model.model." + module;
            const int64_t     m      = t.idx.numel() ? t.idx[t.idx.numel() - 1].item<int64_t>() / t.cols + 1 : 0;
            tensors[key + ".shira_weight"]  = t.values.to(torch::kFloat32);
            tensors[key + ".shira_indices"] = torch::stack({torch::div(t.idx, t.cols, "floor"), t.idx.remainder(t.cols)}).to(torch::kInt32);
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
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) throw_bad_input("cannot create '" + dir + "': " + ec.message());
        const int64_t r = std::max<int64_t>(1, std::llround((double)total_k / (double)std::max<int64_t>(1, total_mn)));
        std::string mask = a.metadata.count("mask") ? a.metadata.at("mask") : "random";
        if (mask == "rand") mask = "random";
        Json config = {{"peft_type", "SHIRA"}, {"r", r}, {"mask_type", mask}, {"target_modules", Json(std::vector<std::string>(targets.begin(), targets.end()))},
                       {"random_seed", a.metadata.count("seed") ? Json(std::stoll(a.metadata.at("seed"))) : Json(nullptr)},
                       {"fan_in_fan_out", false}, {"init_weights", true}, {"inference_mode", true}, {"modules_to_save", nullptr},
                       {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr}};
        safetensors_save(dir + "/adapter_model.safetensors", tensors,
                         {{"format", "pt"}, {"shira_k", ks.dump()}, {"source", "shira-studio"}});
        write_file_atomic(dir + "/adapter_config.json", config.dump(2) + "\n");
        folders.push_back({{"dir", dir}, {"tensors", (int64_t)tensors.size() / 2}, {"r", r}, {"trainable", total_k}});
    }
    if (folders.empty()) throw_bad_input("adapter has no SHiRA tensors to export");
    return {{"out", out}, {"format", format}, {"folders", folders}};
}

Json op_bench(WorkerState& st, const Json& args, const EmitFn& emit) {
    return bench_run(args, st.device, emit, [&] { return st.cancel.load(); });
}

// The model as a function, for reference implementations (tests/reference, the ONNX exporter) to compare
// against: inputs file "x" F32 [B, C, H, W], "t" I64 [B], optional "probe" F32 like the output, metadata
// "prompts" (JSON array of B strings). Writes "out" F32 (the UNet prediction for the current weights,
// mix included), "context" F32 [B, L, D] (the text encoder's output) and, for each name in `grads`,
// "grad.<name>" = ∂ Σ(out ⊙ probe) / ∂ parameter (probe = ones when absent).
Json op_forward(WorkerState& st, const Json& args) {
    DiffusionModel&   model = need_model(st);
    const std::string out   = need_str(args, "out");
    SafeTensors       in    = safetensors_load(need_str(args, "inputs"));
    auto x = in.tensors.find("x"), t = in.tensors.find("t");
    if (x == in.tensors.end() || t == in.tensors.end() || x->second.dim() != 4 || t->second.dim() != 1 || t->second.size(0) != x->second.size(0)) {
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
    torch::Tensor xin = x->second.to(torch::kFloat32).to(model.device), tin = t->second.to(torch::kInt64).to(model.device);
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
            torch::Tensor p     = probe == in.tensors.end() ? torch::ones_like(pred) : probe->second.to(torch::kFloat32).to(model.device);
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

// ---- concept-loss measurements (native/src/concept.h). Independent of the loaded model.

// data: safetensors with "images" U8 [N, H, W, 3], "labels" I64 [N] and metadata "classes" (JSON array).
Json op_judge_train(WorkerState& st, const Json& args, const EmitFn& emit) {
    const std::string data = need_str(args, "data");
    const std::string out  = need_str(args, "out");
    JudgeTrainOptions o;
    o.steps            = get_int(args, "steps", o.steps, 1, 100000);
    o.batch            = get_int(args, "batch", o.batch, 2, 4096);
    o.lr               = get_num(args, "lr", o.lr, 1e-6, 1);
    o.heldout_fraction = get_num(args, "heldout_fraction", o.heldout_fraction, 0.01, 0.9);
    o.noise            = get_num(args, "noise", o.noise, 0, 1);
    o.seed             = (uint64_t)get_int(args, "seed", 0, 0, INT64_MAX);
    SafeTensors st_data = safetensors_load(data);
    auto        images  = st_data.tensors.find("images");
    auto        labels  = st_data.tensors.find("labels");
    if (images == st_data.tensors.end() || labels == st_data.tensors.end()) throw_bad_input("judge data needs 'images' and 'labels' tensors");
    std::vector<std::string> classes;
    try {
        classes = Json::parse(st_data.metadata.at("classes")).get<std::vector<std::string>>();
    } catch (const std::exception&) {
        throw_bad_input("judge data needs metadata 'classes' (a JSON array of names)");
    }
    const JudgeTrainResult r = judge_train(images->second, labels->second, classes, o, out, [&] { return st.cancel.load(); },
                                           [&](int64_t step, double loss) { emit({{"event", "progress"}, {"step", step}, {"steps", o.steps}, {"loss", loss}}); });
    return {{"out", out}, {"classes", classes}, {"heldout_accuracy", r.heldout_accuracy}, {"train_accuracy", r.train_accuracy},
            {"heldout_accuracy_per_class", r.heldout_accuracy_per_class}, {"train_count", r.train_count},
            {"heldout_count", r.heldout_count}, {"final_loss", r.final_loss}, {"seconds", r.seconds}};
}

// Writes "probs" F32 [N, C] and "features" F32 [N, F] (metadata "classes") to `out`.
Json op_judge_score(const Json& args) {
    const std::string judge = need_str(args, "judge");
    const std::string out   = need_str(args, "out");
    SafeTensors       in    = safetensors_load(need_str(args, "images"));
    auto              it    = in.tensors.find("images");
    if (it == in.tensors.end()) throw_bad_input("'images' file has no 'images' tensor");
    JudgeScores s = judge_score(judge, it->second);
    safetensors_save(out, {{"probs", s.probs}, {"features", s.features}}, {{"classes", Json(s.classes).dump()}});
    return {{"out", out}, {"classes", s.classes}, {"n", s.probs.size(0)}};
}

Json op_adapter_overlap(const Json& args) {
    const Adapter a = adapter_load(need_str(args, "a"));
    const Adapter b = adapter_load(need_str(args, "b"));
    const auto    layers = adapter_overlap(a, b, get_num(args, "alpha_a", 1.0, -100, 100), get_num(args, "alpha_b", 1.0, -100, 100));
    Json          rows = Json::array();
    double        awom = 0, awom_n = 0, awor = 0;
    for (const auto& l : layers) {
        rows.push_back({{"layer", l.layer}, {"m", l.m}, {"awom", l.awom}, {"awom_normalized", l.awom_normalized}, {"awor", l.awor}});
        awom += l.awom;
        awom_n += l.awom_normalized;
        awor += l.awor;
    }
    const double n = std::max<double>(1.0, (double)layers.size());
    return {{"layers", rows},
            {"summary", {{"layers", (int64_t)layers.size()}, {"awom_mean", awom / n}, {"awom_normalized_mean", awom_n / n}, {"awor_mean", awor / n}}}};
}

}  // namespace

int64_t AdapterCache::bytes() const {
    int64_t n = 0;
    for (const auto& [_, e] : entries) n += e.bytes;
    return n;
}

torch::Device device_from_name(const std::string& name) {
    if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    if (name == "cpu") return torch::kCPU;
    if (name.rfind("cuda", 0) == 0) {
        if (!torch::cuda::is_available()) throw_bad_input("CUDA was requested but this libtorch/host has none");
        return torch::Device(name);
    }
    throw_bad_input("device must be auto, cpu or cuda[:N]");
}

bool worker_op_is_long(const std::string& op) { return op == "train" || op == "sample" || op == "bench" || op == "judge_train"; }

Json worker_run_op(WorkerState& st, const std::string& op, const Json& args, const EmitFn& emit) {
    if (!args.is_object()) throw_bad_input("'args' must be an object");
    if (op == "info") return op_info(st);
    if (op == "load_model") return op_load_model(st, args);
    if (op == "unload") {
        st.model.reset();
        st.mix = MixState();
        st.mix_paths.clear();
        st.adapters.entries.clear();
        st.identity.clear();
        return {{"unloaded", true}};
    }
    if (op == "save_model") {
        model_save(need_model(st), need_str(args, "out"));
        return {{"out", need_str(args, "out")}};
    }
    if (op == "train") return op_train(st, args, emit);
    if (op == "sample") return op_sample(st, args);
    if (op == "apply_mix") return op_apply_mix(st, args);
    if (op == "clear_mix") {
        const double ms = mix_clear(need_model(st), st.mix);
        st.mix_paths.clear();
        cache_evict(st);
        return {{"ms", ms}, {"cache_bytes", st.adapters.bytes()}};
    }
    if (op == "adapter_inspect") return op_adapter_inspect(args);
    if (op == "adapter_export") return op_adapter_export(st, args);
    if (op == "adapter_convert") return op_adapter_convert(st, args);
    if (op == "bench") return op_bench(st, args, emit);
    if (op == "judge_train") return op_judge_train(st, args, emit);
    if (op == "forward") return op_forward(st, args);
    if (op == "judge_score") return op_judge_score(args);
    if (op == "adapter_overlap") return op_adapter_overlap(args);
    throw_bad_input("unknown op '" + op +
                    "' (allowed: info, load_model, unload, save_model, train, cancel, sample, apply_mix, clear_mix, "
                    "adapter_inspect, adapter_export, adapter_convert, adapter_overlap, judge_train, judge_score, forward, bench, shutdown)");
}

// ---------------------------------------------------------------------------------------------
// Protocol loop

namespace {

struct Server {
    explicit Server(torch::Device device) : state(device) {}
    WorkerState       state;
    std::mutex        out_mutex;
    std::thread       job;
    std::atomic<bool> busy{false};

    void write(const Json& j) {
        // dump with replace: invalid UTF-8 from a request echoed in an error must not throw here.
        const std::string line = j.dump(-1, ' ', false, Json::error_handler_t::replace);
        std::lock_guard<std::mutex> lock(out_mutex);
        std::cout << line << '\n' << std::flush;
    }

    static Json error_reply(const Json& id, ErrorType type, const std::string& message) {
        return {{"id", id}, {"ok", false}, {"error", {{"type", error_type_name(type)}, {"message", message}}}};
    }
    void reply_error(const Json& id, ErrorType type, const std::string& message) { write(error_reply(id, type, message)); }

    // `before_reply` runs just before the final reply is written: a job clears `busy` there, so a client
    // that sends its next request as soon as it reads the reply never sees a stale "busy".
    void run(const Json& id, const std::string& op, const Json& args, const std::function<void()>& before_reply = {}) {
        Json reply;
        try {
            Json result = worker_run_op(state, op, args, [&](Json e) {
                e["id"] = id;
                write(e);
            });
            reply = {{"id", id}, {"ok", true}, {"result", result}};
        } catch (const WorkerError& e) {
            reply = error_reply(id, e.type, e.what());
        } catch (const c10::Error& e) {
            reply = error_reply(id, ERROR_TYPE_INTERNAL, e.what_without_backtrace());
        } catch (const std::exception& e) {
            reply = error_reply(id, ERROR_TYPE_INTERNAL, e.what());
        }
        if (before_reply) before_reply();
        write(reply);
    }

    void join_job() {
        if (job.joinable()) job.join();
    }

    // Returns false when the loop should stop.
    bool handle_line(const std::string& line) {
        Json req, id = nullptr;
        try {
            req = Json::parse(line);
        } catch (const std::exception& e) {
            reply_error(nullptr, ERROR_TYPE_BAD_INPUT, std::string("malformed JSON: ") + e.what());
            return true;
        }
        if (!req.is_object()) {
            reply_error(nullptr, ERROR_TYPE_BAD_INPUT, "a request must be a JSON object {id, op, args}");
            return true;
        }
        if (req.contains("id")) id = req["id"];
        if (!req.contains("op") || !req["op"].is_string()) {
            reply_error(id, ERROR_TYPE_BAD_INPUT, "'op' must be a string");
            return true;
        }
        const std::string op   = req["op"].get<std::string>();
        const Json        args = req.contains("args") ? req["args"] : Json::object();
        if (op == "cancel") {
            const bool running = busy.load();
            if (running) state.cancel = true;
            write({{"id", id}, {"ok", true}, {"result", {{"cancelling", running}}}});
            return true;
        }
        if (op == "shutdown") {
            state.cancel = true;
            join_job();
            write({{"id", id}, {"ok", true}, {"result", {{"shutdown", true}}}});
            return false;
        }
        if (op == "info" || op == "adapter_inspect") {  // read-only: safe beside a running job
            run(id, op, args);
            return true;
        }
        if (busy.load()) {
            reply_error(id, ERROR_TYPE_BUSY, "a train/sample/bench job is running; send cancel or wait");
            return true;
        }
        if (!worker_op_is_long(op)) {
            run(id, op, args);
            return true;
        }
        join_job();
        state.cancel = false;
        busy         = true;
        job          = std::thread([this, id, op, args] { run(id, op, args, [this] { busy = false; }); });
        return true;
    }
};

}  // namespace

int worker_serve(torch::Device device) {
    Server server(device);
    server.write({{"event", "ready"}, {"version", SHIRA_WORKER_VERSION}, {"device", device.str()}, {"torch", TORCH_VERSION},
                  {"pid", (int64_t)getpid()}});
    std::string line;
    while (std::getline(std::cin, line)) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (!server.handle_line(line)) return 0;
    }
    server.state.cancel = true;  // stdin closed: the host is gone, stop promptly
    server.join_job();
    return 0;
}
