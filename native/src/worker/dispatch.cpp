// Dispatch of an op name to its handler (worker/ops.h).
#include "core/errors.h"
#include "worker/ops.h"

bool worker_op_is_long(const std::string& op) { return op == "train" || op == "sample" || op == "bench" || op == "judge_train"; }

Json worker_run_op(WorkerState& st, const std::string& op, const Json& args, const EmitFn& emit) {
    if (!args.is_object()) throw_bad_input("'args' must be an object");
    if (op == "info") return op_info(st, args, emit);
    if (op == "load_model") return op_load_model(st, args, emit);
    if (op == "unload") return op_unload(st, args, emit);
    if (op == "save_model") return op_save_model(st, args, emit);
    if (op == "train") return op_train(st, args, emit);
    if (op == "sample") return op_sample(st, args, emit);
    if (op == "apply_mix") return op_apply_mix(st, args, emit);
    if (op == "clear_mix") return op_clear_mix(st, args, emit);
    if (op == "adapter_inspect") return op_adapter_inspect(st, args, emit);
    if (op == "adapter_export") return op_adapter_export(st, args, emit);
    if (op == "adapter_convert") return op_adapter_convert(st, args, emit);
    if (op == "bench") return op_bench(st, args, emit);
    if (op == "judge_train") return op_judge_train(st, args, emit);
    if (op == "forward") return op_forward(st, args, emit);
    if (op == "judge_score") return op_judge_score(st, args, emit);
    if (op == "adapter_overlap") return op_adapter_overlap(st, args, emit);
    throw_bad_input("unknown op '" + op +
                    "' (allowed: info, load_model, unload, save_model, train, cancel, sample, apply_mix, clear_mix, "
                    "adapter_inspect, adapter_export, adapter_convert, adapter_overlap, judge_train, judge_score, forward, bench, shutdown)");
}
