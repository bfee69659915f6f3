// Measuring ops, independent of the loaded model: the concept lab's style judge (eval/judge.h) and the benchmarks
// (bench/bench.h, which is not part of shira_core).
#include <string>
#include <vector>

#include "bench/bench.h"
#include "core/errors.h"
#include "eval/judge.h"
#include "model_io/safetensors.h"
#include "worker/ops.h"

// data: safetensors with "images" U8 [N, H, W, 3], "labels" I64 [N] and metadata "classes" (JSON array).
Json op_judge_train(WorkerState& st, const Json& args, const EmitFn& emit) {
    const std::string data = need_str(args, "data");
    const std::string out  = need_str(args, "out");
    JudgeTrainOptions o;
    o.steps             = get_int(args, "steps", o.steps, 1, 100000);
    o.batch             = get_int(args, "batch", o.batch, 2, 4096);
    o.lr                = get_num(args, "lr", o.lr, 1e-6, 1);
    o.heldout_fraction  = get_num(args, "heldout_fraction", o.heldout_fraction, 0.01, 0.9);
    o.noise             = get_num(args, "noise", o.noise, 0, 1);
    o.seed              = (uint64_t)get_int(args, "seed", 0, 0, INT64_MAX);
    SafeTensors st_data = safetensors_load(data);
    auto        images  = st_data.tensors.find("images");
    auto        labels  = st_data.tensors.find("labels");
    if (images == st_data.tensors.end() || labels == st_data.tensors.end())
        throw_bad_input("judge data needs 'images' and 'labels' tensors");
    std::vector<std::string> classes;
    try {
        classes = Json::parse(st_data.metadata.at("classes")).get<std::vector<std::string>>();
    } catch (const std::exception&) {
        throw_bad_input("judge data needs metadata 'classes' (a JSON array of names)");
    }
    const JudgeTrainResult r = judge_train(
        images->second, labels->second, classes, o, out, [&] { return st.cancel.load(); },
        [&](int64_t step, double loss) {
            emit({{"event", "progress"}, {"step", step}, {"steps", o.steps}, {"loss", loss}});
        });
    return {{"out", out},
            {"classes", classes},
            {"heldout_accuracy", r.heldout_accuracy},
            {"train_accuracy", r.train_accuracy},
            {"heldout_accuracy_per_class", r.heldout_accuracy_per_class},
            {"train_count", r.train_count},
            {"heldout_count", r.heldout_count},
            {"final_loss", r.final_loss},
            {"seconds", r.seconds}};
}

// Writes "probs" F32 [N, C] and "features" F32 [N, F] (metadata "classes") to `out`.
Json op_judge_score(WorkerState&, const Json& args, const EmitFn&) {
    const std::string judge = need_str(args, "judge");
    const std::string out   = need_str(args, "out");
    SafeTensors       in    = safetensors_load(need_str(args, "images"));
    auto              it    = in.tensors.find("images");
    if (it == in.tensors.end()) throw_bad_input("'images' file has no 'images' tensor");
    JudgeScores s = judge_score(judge, it->second);
    safetensors_save(out, {{"probs", s.probs}, {"features", s.features}}, {{"classes", Json(s.classes).dump()}});
    return {{"out", out}, {"classes", s.classes}, {"n", s.probs.size(0)}};
}

Json op_bench(WorkerState& st, const Json& args, const EmitFn& emit) {
    return bench_run(args, st.device, emit, [&] { return st.cancel.load(); });
}
