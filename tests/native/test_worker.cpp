// worker/: apply_mix through the adapter cache (LRU, file-change invalidation, base identity).
#include "test_util.h"

#include <chrono>
#include <filesystem>

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
    auto    w0 = snapshot(*st.model);
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
        std::printf("  %-34s hits %lld misses %lld cache %lld B (%lld adapters) reblended %lld unchanged %lld load %.2f ms: %s\n", what,
                    (long long)r["cache_hits"].get<int64_t>(), (long long)r["cache_misses"].get<int64_t>(),
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
    // Identity: an adapter trained on another base is refused, naming both; an unknown identity on either side is not checked.
    Adapter tagged = ad[0];
    tagged.metadata["base_identity"] = "aaaaaaaaaaaa-base-one";
    const std::string tp = kTmp + "-tagged.safetensors";
    adapter_save(tagged, tp);
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 4}, {"identity", "bbbbbbbbbbbb-base-two"}}, quiet);
    expect_bad("identity mismatch", [&] { worker_run_op(st, "apply_mix", {{"adapters", {{{"path", tp}}}}}, quiet); }, "aaaaaaaaaaaa");
    EXPECT(error_of([&] { worker_run_op(st, "apply_mix", {{"adapters", {{{"path", tp}}}}}, quiet); }).find("bbbbbbbbbbbb") != std::string::npos);
    EXPECT(bit_identical(*st.model, w0));
    worker_run_op(st, "apply_mix", {{"adapters", {{{"path", path[0]}}}}}, quiet);  // no base_identity: accepted
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 4}, {"identity", "aaaaaaaaaaaa-base-one"}}, quiet);
    Json ok = worker_run_op(st, "apply_mix", {{"adapters", {{{"path", tp}}}}}, quiet);
    EXPECT(ok["adapters"] == 1);
    EXPECT(throws_type(ERROR_TYPE_NOT_FOUND, [&] { worker_run_op(st, "apply_mix", {{"adapters", {{{"path", kTmp + "-none.safetensors"}}}}}, quiet); }));
}


}  // namespace
