// worker/: apply_mix through the adapter cache (LRU, file-change invalidation, base identity) and the op table.
#include "test_util.h"

#include <chrono>
#include <filesystem>
#include <set>

#include "adapter/mix.h"
#include "model_io/adapter_file.h"
#include "worker/worker.h"

namespace {

// apply_mix through the worker: LRU under a tiny budget, file-change invalidation, identity check.
SHIRA_TEST(cache) {
    WorkerState st(torch::kCPU);
    EmitFn      quiet = [](const Json&) {};
    Json        cfg   = model_config_to_json(tiny_config());
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 4}}, quiet);
    auto         w0 = snapshot(*st.model);
    ShiraOptions o;
    o.mask = MASK_TYPE_RAND;
    std::vector<Adapter>     ad;
    std::vector<std::string> path;
    for (int i = 0; i < 3; ++i) {
        o.seed = 30 + i;
        ad.push_back(shira_with(*st.model, o, 40 + i, true));
        path.push_back(kTmp + "-c" + std::to_string(i) + ".safetensors");
        adapter_save(ad.back(), path.back(), VALUES_DTYPE_F32);
    }
    const int64_t one = adapter_load(path[0]).decoded_bytes();
    // Room for 1.5 decoded adapters.
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 4}, {"cache_mb", 1.5 * (double)one / 1048576.0}}, quiet);
    auto apply = [&](std::vector<std::pair<int, double>> items) {
        Json list = Json::array();
        for (auto [i, a] : items) list.push_back({{"path", path[i]}, {"alpha", a}});
        return worker_run_op(st, "apply_mix", {{"adapters", list}}, quiet);
    };
    auto check = [&](const char* what, const Json& r, int64_t hits, int64_t misses, int64_t cached) {
        const bool ok = r["cache_hits"] == hits && r["cache_misses"] == misses && r["cache_bytes"] == cached * one;
        std::printf(
            "  %-34s hits %lld misses %lld cache %lld B (%lld adapters) reblended %lld unchanged %lld load %.2f ms: "
            "%s\n",
            what, (long long)r["cache_hits"].get<int64_t>(), (long long)r["cache_misses"].get<int64_t>(),
            (long long)r["cache_bytes"].get<int64_t>(), (long long)(r["cache_bytes"].get<int64_t>() / one),
            (long long)r["layers_reblended"].get<int64_t>(), (long long)r["layers_unchanged"].get<int64_t>(),
            r["load_ms"].get<double>(), ok ? "ok" : "UNEXPECTED");
        EXPECT(ok);
    };
    check("apply A", apply({{0, 1.0}}), 0, 1, 1);
    check("apply B (evicts A)", apply({{1, 1.0}}), 0, 1, 1);
    check("apply A (miss again, evicts B)", apply({{0, 1.0}}), 0, 1, 1);
    check("apply A+B (over budget: both kept)", apply({{0, 1.0}, {1, 0.5}}), 1, 1, 2);
    Json r = apply({{0, 1.0}, {1, -0.5}});
    check("alpha of B changed", r, 2, 0, 2);
    EXPECT(r["layers_unchanged"] == 0);  // both adapters cover every target layer
    check("apply A+C (B evicted, not in mix)", apply({{0, 1.0}, {2, 0.5}}), 1, 1, 2);
    // The result equals a direct blend of the same adapters.
    {
        auto     ref = model_init(tiny_config(), 4, torch::kCPU);
        Adapter  a0 = adapter_load(path[0]), a2 = adapter_load(path[2]);
        MixState ms;
        mix_apply(*ref, ms, {{&a0, 1.0}, {&a2, 0.5}});
        bool same = true;
        auto pr   = ref->named_parameters();
        for (const auto& [k, v] : st.model->named_parameters()) same = same && torch::equal(v, pr.at(k));
        std::printf("  cached A+C vs a direct blend: %s\n", same ? "bit-identical" : "DIFFERENT");
        EXPECT(same);
    }
    // A rewritten file (same size, new mtime) is decoded again.
    adapter_save(ad[1], path[2], VALUES_DTYPE_F32);
    std::filesystem::last_write_time(path[2], std::filesystem::last_write_time(path[2]) + std::chrono::seconds(2));
    check("C rewritten on disk", apply({{0, 1.0}, {2, 0.5}}), 1, 1, 2);
    worker_run_op(st, "clear_mix", Json::object(), quiet);
    EXPECT(bit_identical(*st.model, w0));
    // Identity: an adapter trained on another base is refused, naming both; an unknown identity on either side is not
    // checked.
    Adapter tagged                   = ad[0];
    tagged.metadata["base_identity"] = "aaaaaaaaaaaa-base-one";
    const std::string tp             = kTmp + "-tagged.safetensors";
    adapter_save(tagged, tp);
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 4}, {"identity", "bbbbbbbbbbbb-base-two"}}, quiet);
    expect_bad(
        "identity mismatch",
        [&] {
            worker_run_op(st, "apply_mix", {{"adapters", {{{"path", tp}}}}}, quiet);
        },
        "aaaaaaaaaaaa");
    EXPECT(error_of([&] {
               worker_run_op(st, "apply_mix", {{"adapters", {{{"path", tp}}}}}, quiet);
           }).find("bbbbbbbbbbbb") != std::string::npos);
    EXPECT(bit_identical(*st.model, w0));
    worker_run_op(st, "apply_mix", {{"adapters", {{{"path", path[0]}}}}}, quiet);  // no base_identity: accepted
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 4}, {"identity", "aaaaaaaaaaaa-base-one"}}, quiet);
    Json ok = worker_run_op(st, "apply_mix", {{"adapters", {{{"path", tp}}}}}, quiet);
    EXPECT(ok["adapters"] == 1);
    EXPECT(throws_type(ERROR_TYPE_NOT_FOUND, [&] {
        worker_run_op(st, "apply_mix", {{"adapters", {{{"path", kTmp + "-none.safetensors"}}}}}, quiet);
    }));
}

// The op table is the protocol: dispatch, the unknown-op error, the job/busy rules, info's op list and the CLI.
SHIRA_TEST(ops) {
    WorkerState           st(torch::kCPU);
    EmitFn                quiet   = [](const Json&) {};
    const std::string     unknown = error_of([&] { worker_run_op(st, "make_coffee", Json::object(), quiet); });
    std::set<std::string> names, cli;
    for (const WorkerOp& op : worker_ops()) {
        EXPECT(names.insert(op.name).second);  // one row per op
        EXPECT(worker_op(op.name) == &op);
        EXPECT(unknown.find(op.name) != std::string::npos);  // the error lists every op
        EXPECT(!(op.long_running && op.read_only));
        if (op.cli) {
            EXPECT(cli.insert(op.cli).second && op.handler && op.cli_args);
            EXPECT(worker_cli_op(op.cli) == &op);
        }
        if (!op.handler)
            expect_bad(
                "protocol-only op through worker_run_op", [&] { worker_run_op(st, op.name, Json::object(), quiet); },
                op.name);
    }
    std::printf("  %zu ops, %zu CLI subcommands; unknown op -> %s\n", names.size(), cli.size(),
                unknown.substr(0, 90).c_str());
    EXPECT(unknown.rfind("bad_input: unknown op 'make_coffee'", 0) == 0);
    EXPECT(!worker_op("make_coffee") && !worker_cli_op("serve"));
    // The job rules the protocol has always had: these run on the job thread, these are answered beside one.
    std::set<std::string> long_ops, read_only;
    for (const WorkerOp& op : worker_ops()) {
        if (op.long_running) long_ops.insert(op.name);
        if (op.read_only) read_only.insert(op.name);
    }
    EXPECT((long_ops == std::set<std::string>{"train", "sample", "bench", "judge_train"}));
    EXPECT((read_only == std::set<std::string>{"info", "adapter_inspect", "cancel"}));
    EXPECT((cli == std::set<std::string>{"info", "init", "train", "sample", "inspect", "export", "convert", "bench"}));
    EXPECT(std::string(worker_cli_op("init")->name) == "save_model" &&
           worker_cli_op("sample")->cli_setup == CLI_SETUP_MODEL_AND_MIX);
    // info reports the table as served.
    const Json info = worker_run_op(st, "info", Json::object(), quiet);
    EXPECT(info["ops"].size() == names.size());
    for (const auto& op : info["ops"]) {
        const WorkerOp* row = worker_op(op["name"].get<std::string>());
        EXPECT(row && op["long_running"] == row->long_running && op["read_only"] == row->read_only);
    }
    expect_bad(
        "args not an object", [&] { worker_run_op(st, "info", Json::array(), quiet); }, "'args' must be an object");
}

}  // namespace
