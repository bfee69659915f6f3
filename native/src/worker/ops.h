// The op handlers of the op table (worker/op_table.cpp), by file: ops_model.cpp (the model), ops_adapter.cpp
// (adapter files and mixing), ops_train.cpp (training and sampling), ops_eval.cpp (concept-loss judge, benchmarks),
// ops_text.cpp (prompt tokenization). Each takes its arguments through core/json_args.h, so every argument is checked
// before anything changes.
#pragma once

#include "worker/worker.h"

DiffusionModel& need_model(WorkerState& st);  // BAD_INPUT when no model is loaded

Json op_info(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_load_model(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_unload(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_save_model(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_forward(WorkerState& st, const Json& args, const EmitFn& emit);

Json op_apply_mix(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_clear_mix(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_adapter_inspect(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_adapter_export(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_adapter_convert(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_adapter_overlap(WorkerState& st, const Json& args, const EmitFn& emit);

Json op_train(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_sample(WorkerState& st, const Json& args, const EmitFn& emit);

Json op_tokenize(WorkerState& st, const Json& args, const EmitFn& emit);  // ops_text.cpp

Json op_judge_train(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_judge_score(WorkerState& st, const Json& args, const EmitFn& emit);
Json op_bench(WorkerState& st, const Json& args, const EmitFn& emit);
