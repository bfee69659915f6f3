// The worker: what one process holds (model, applied mix, adapter cache, cancel flag) and the operations on it,
// shared by the JSON-lines protocol (worker/protocol.cpp) and the command line (worker/main.cpp). Every operation
// is one row of the op table (worker/op_table.cpp); dispatch, the unknown-op error, the protocol's job and
// busy rules and the CLI subcommands all come from that table.
//
// Protocol: one request per line {"id": any, "op": str, "args": {..}}; replies
// {"id", "ok": true, "result": {..}} or {"id", "ok": false, "error": {"type", "message"}};
// progress {"id", "event": "progress", ...}. Long ops run on a job thread so that read-only ops and cancel are
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

// An op's handler: the result object, or a WorkerError. `emit` receives progress events (without "id").
using OpHandler = Json (*)(WorkerState& state, const Json& args, const EmitFn& emit);

// What the command line does before running an op (worker/main.cpp).
enum CliSetup {
    CLI_SETUP_NONE,            // the op alone
    CLI_SETUP_MODEL,           // load_model from --model M / --config C [--seed N] [--identity ID] first
    CLI_SETUP_MODEL_IF_GIVEN,  // the same, only when --model or --config is given
    CLI_SETUP_MODEL_AND_MIX,   // load the model, then apply_mix --adapter A [--alpha a] when --adapter is given
};

struct WorkerOp {
    const char* name;
    OpHandler   handler;       // nullptr: served by the protocol loop itself (cancel, shutdown)
    bool        long_running;  // runs on the job thread: progress events, stopped by cancel
    bool        read_only;     // reads no model and changes no state: served beside a running job
    const char* cli;           // command-line subcommand, or nullptr
    CliSetup    cli_setup;
    const char* cli_args;  // the subcommand's arguments, for the usage text
};

const std::vector<WorkerOp>& worker_ops();                        // in the order the unknown-op error lists them
const WorkerOp*              worker_op(const std::string& name);  // nullptr when unknown
const WorkerOp*              worker_cli_op(const std::string& subcommand);

// Runs one op synchronously. Throws WorkerError for expected failures (BAD_INPUT naming every op for an
// unknown one).
Json worker_run_op(WorkerState& state, const std::string& op, const Json& args, const EmitFn& emit);

// The stdin/stdout loop: prints the readiness line, then serves until EOF or {"op":"shutdown"}.
int worker_serve(torch::Device device);
