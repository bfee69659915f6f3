// The worker: what one process holds (model, applied mix, adapter cache, cancel flag) and the operations on it,
// shared by the JSON-lines protocol (worker/protocol.cpp) and the command line (worker/main.cpp).
//
// Protocol: one request per line {"id": any, "op": str, "args": {..}}; replies
// {"id", "ok": true, "result": {..}} or {"id", "ok": false, "error": {"type", "message"}};
// progress {"id", "event": "progress", ...}. Long ops (train, sample, bench) run on a job thread so that info and cancel are
// served while they run; other ops answer "busy" meanwhile. Tensors and images travel as files (temp name, then
// rename), never as JSON numbers.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "adapter/mix.h"
#include "core/json_args.h"
#include "model/diffusion_model.h"
#include "runtime/adapter_cache.h"

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

// Runs one op synchronously. Throws WorkerError for expected failures. `emit` receives progress
// events (without "id"; the caller adds it).
Json worker_run_op(WorkerState& state, const std::string& op, const Json& args, const EmitFn& emit);
bool worker_op_is_long(const std::string& op);

// The stdin/stdout loop: prints the readiness line, then serves until EOF or {"op":"shutdown"}.
int worker_serve(torch::Device device);
