// The op table: every operation the worker serves, in one place. Dispatch (worker_run_op), the unknown-op error,
// the protocol loop's job-thread and busy rules (worker/protocol.cpp), `info`'s op list and the CLI subcommands
// with their usage text (worker/main.cpp) all read it. A new op is a handler in worker/ops_*.cpp and one row here.
#include <string>

#include "core/errors.h"
#include "worker/ops.h"

namespace {

// name, handler, long_running, read_only, CLI subcommand, CLI setup, CLI arguments
const std::vector<WorkerOp> kOps = {
    {"info", op_info, false, true, "info", CLI_SETUP_NONE, ""},
    {"load_model", op_load_model, false, false, nullptr, CLI_SETUP_NONE, nullptr},
    {"unload", op_unload, false, false, nullptr, CLI_SETUP_NONE, nullptr},
    {"save_model", op_save_model, false, false, "init", CLI_SETUP_MODEL,
     "--config C.json --out M.safetensors [--seed N]"},
    {"train", op_train, true, false, "train", CLI_SETUP_MODEL,
     "(--model M.safetensors | --config C.json) --data D.safetensors --out A.safetensors [--key value]..."},
    {"cancel", nullptr, false, true, nullptr, CLI_SETUP_NONE, nullptr},
    {"sample", op_sample, true, false, "sample", CLI_SETUP_MODEL_AND_MIX,
     "--model M.safetensors [--adapter A.safetensors [--alpha 1]] --prompt \"...\" --out S.safetensors"},
    {"apply_mix", op_apply_mix, false, false, nullptr, CLI_SETUP_NONE, nullptr},
    {"clear_mix", op_clear_mix, false, false, nullptr, CLI_SETUP_NONE, nullptr},
    {"adapter_inspect", op_adapter_inspect, false, true, "inspect", CLI_SETUP_NONE, "--path A.safetensors"},
    {"adapter_export", op_adapter_export, false, false, "export", CLI_SETUP_NONE,
     "--path A.safetensors --out DIR [--format peft|native]"},
    {"adapter_convert", op_adapter_convert, false, false, "convert", CLI_SETUP_MODEL_IF_GIVEN,
     "--path A.safetensors --out B.safetensors [--values f16|f32] [--model M | --config C]"},
    {"adapter_overlap", op_adapter_overlap, false, false, nullptr, CLI_SETUP_NONE, nullptr},
    {"tokenize", op_tokenize, false, true, "tokenize", CLI_SETUP_NONE,
     "--prompt \"...\" --tokenizer merges.txt|DIR [--pad eos|zero] [--emphasis original|no_norm|ignore|none]"},
    {"judge_train", op_judge_train, true, false, nullptr, CLI_SETUP_NONE, nullptr},
    {"judge_score", op_judge_score, false, false, nullptr, CLI_SETUP_NONE, nullptr},
    {"forward", op_forward, false, false, nullptr, CLI_SETUP_NONE, nullptr},
    {"bench", op_bench, true, false, "bench", CLI_SETUP_NONE,
     "--kind train|switch|grad [--quick true] [--models builtin,sd15]"},
    {"shutdown", nullptr, false, false, nullptr, CLI_SETUP_NONE, nullptr},
};

}  // namespace

const std::vector<WorkerOp>& worker_ops() { return kOps; }

const WorkerOp* worker_op(const std::string& name) {
    for (const WorkerOp& op : kOps) {
        if (name == op.name) return &op;
    }
    return nullptr;
}

const WorkerOp* worker_cli_op(const std::string& subcommand) {
    for (const WorkerOp& op : kOps) {
        if (op.cli && subcommand == op.cli) return &op;
    }
    return nullptr;
}

Json worker_run_op(WorkerState& st, const std::string& name, const Json& args, const EmitFn& emit) {
    if (!args.is_object()) throw_bad_input("'args' must be an object");
    const WorkerOp* op = worker_op(name);
    if (!op) {
        std::string allowed;
        for (const WorkerOp& o : kOps) allowed += (allowed.empty() ? "" : ", ") + std::string(o.name);
        throw_bad_input("unknown op '" + name + "' (allowed: " + allowed + ")");
    }
    if (!op->handler) throw_bad_input("op '" + name + "' is answered by the protocol loop, not run");
    return op->handler(st, args, emit);
}
