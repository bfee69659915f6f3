// The worker's operations, shared by the JSON-lines protocol (stdin/stdout) and the CLI.
//
// Protocol: one request per line {"id": any, "op": str, "args": {..}}; replies
// {"id", "ok": true, "result": {..}} or {"id", "ok": false, "error": {"type", "message"}};
// progress {"id", "event": "progress", ...}. Long ops (train, sample, bench) run on a job thread
// so that info and cancel are served while they run; other ops that touch the model answer
// "busy" meanwhile. Tensors and images travel as files (temp name, then rename), never as JSON numbers.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "model/diffusion_model.h"
#include "adapter/shira.h"

using Json = nlohmann::json;
using EmitFn = std::function<void(const Json&)>;

torch::Device device_from_name(const std::string& name);  // "auto" | "cpu" | "cuda" | "cuda:N"

// Decoded adapters for apply_mix, by path. An entry is stale once the file's size or mtime differs; the cache
// is an LRU bounded by budget_bytes of decoded tensors, except that adapters of the applied mix stay.
struct CachedAdapter {
    std::shared_ptr<Adapter> adapter;
    int64_t                  file_size = -1;
    int64_t                  mtime_ns = 0;
    int64_t                  bytes = 0;  // Adapter::decoded_bytes()
    uint64_t                 last_use = 0;
};
struct AdapterCache {
    std::map<std::string, CachedAdapter> entries;
    int64_t                              budget_bytes = int64_t(2048) << 20;
    uint64_t                             clock = 0;
    int64_t                              bytes() const;
};

struct WorkerState {
    explicit WorkerState(torch::Device device) : device(device) {}
    torch::Device                   device;
    std::unique_ptr<DiffusionModel> model;
    std::string                     identity;  // load_model's "identity" of the base model ("" = unknown)
    MixState                        mix;
    std::vector<std::string>        mix_paths;  // adapter paths of the applied mix (never evicted)
    AdapterCache                    adapters;
    std::atomic<bool>               cancel{false};
};

// Training-data helpers of op "train" (exposed for tests).
// Drops each comma-separated tag of `caption` when u[k] < rate (tags at k >= n_u are kept) and joins the
// kept tags with ", ". Tags holding one of `keep_words` (whole word, any case) always stay; without one,
// the tag with the largest u does.
std::string   caption_drop_tags(const std::string& caption, const float* u, int64_t n_u, double rate,
                                const std::vector<std::string>& keep_words = {});
// Sampling weight per image ∝ (images of its category)^(−beta), float64 [N].
torch::Tensor category_weights(const std::vector<std::string>& categories, double beta);

// Runs one op synchronously. Throws WorkerError for expected failures. `emit` receives progress
// events (without "id"; the caller adds it).
Json worker_run_op(WorkerState& state, const std::string& op, const Json& args, const EmitFn& emit);
bool worker_op_is_long(const std::string& op);

// The stdin/stdout loop: prints the readiness line, then serves until EOF or {"op":"shutdown"}.
int worker_serve(torch::Device device);
