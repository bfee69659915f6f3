// model_io/: safetensors, adapter files v2 (Struct/Rand regeneration, Rice, checksums, tampering), v1 and PEFT
// compatibility, PEFT export.
#include "test_util.h"

#include <algorithm>
#include <random>

#include "adapter/masks.h"
#include "adapter/rice.h"
#include "model_io/adapter_file.h"
#include "worker/worker.h"

namespace {

SHIRA_TEST(safetensors) {
    std::map<std::string, torch::Tensor> t = {
        {"f32", torch::randn({3, 4})},
        {"f16", torch::randn({5}).to(torch::kFloat16)},
        {"bf16", torch::randn({2, 2, 2}).to(torch::kBFloat16)},
        {"i32", torch::arange(7, torch::kInt32)},
        {"i64", torch::tensor(std::vector<int64_t>{int64_t(1) << 40, -3})},
        {"u8", torch::randint(0, 256, {2, 4, 4, 3}).to(torch::kUInt8)},
        {"empty", torch::zeros({0, 3})},
    };
    const std::string path = kTmp + "-rt.safetensors";
    safetensors_save(path, t, {{"captions", "[\"a\",\"b\"]"}});
    SafeTensors back = safetensors_load(path);
    EXPECT(back.tensors.size() == t.size());
    for (const auto& [k, v] : t) {
        EXPECT(back.tensors.count(k) && back.tensors[k].scalar_type() == v.scalar_type() &&
               torch::equal(back.tensors[k], v));
    }
    EXPECT(back.metadata["captions"] == "[\"a\",\"b\"]");
    EXPECT(throws_type(ERROR_TYPE_NOT_FOUND, [] { safetensors_load("/nonexistent/x.safetensors"); }));
    write_file_atomic(kTmp + "-bad.safetensors", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10));
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [] { safetensors_load(kTmp + "-bad.safetensors"); }));
    // Header claims more bytes than the file holds.
    write_file_atomic(kTmp + "-bad2.safetensors",
                      std::string("\x40\0\0\0\0\0\0\0", 8) +
                          "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}       ");
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [] { safetensors_load(kTmp + "-bad2.safetensors"); }));
    std::printf("  round-trip of F32/F16/BF16/I32/I64/U8 + metadata: bit-identical\n");
}

// An untrusted file: the spec's tiling rule (no overlap, no hole, nothing after
// the last tensor) and messages that quote no bytes of the file but a name made
// printable.
std::string raw_safetensors(const std::string& header, size_t data_bytes) {
    std::string prefix(8, '\0');
    for (int i = 0; i < 8; ++i) prefix[i] = (char)((header.size() >> (8 * i)) & 0xff);
    return prefix + header + std::string(data_bytes, '\x01');
}

std::string load_error(const std::string& bytes) {
    const std::string path = kTmp + "-hostile.safetensors";
    write_file_atomic(path, bytes);
    try {
        safetensors_load(path);
    } catch (const WorkerError& e) {
        return e.type == ERROR_TYPE_BAD_INPUT ? std::string(e.what()) : "wrong type: " + std::string(e.what());
    }
    return "loaded";
}

SHIRA_TEST(safetensors_untrusted) {
    const auto entry = [](const std::string& name, int n, int begin) {
        return "\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(n) + "],\"data_offsets\":[" +
               std::to_string(begin) + "," + std::to_string(begin + 4 * n) + "]}";
    };
    // Well-formed, tensors stored out of header order: loads.
    EXPECT(load_error(raw_safetensors("{" + entry("b", 2, 8) + "," + entry("a", 2, 0) + "}", 16)) == "loaded");
    const std::string overlap = load_error(raw_safetensors("{" + entry("a", 2, 0) + "," + entry("b", 2, 4) + "}", 12));
    EXPECT(overlap.find("overlapping tensors") != std::string::npos);
    const std::string hole = load_error(raw_safetensors("{" + entry("a", 2, 0) + "," + entry("b", 2, 12) + "}", 20));
    EXPECT(hole.find("4 bytes no tensor owns") != std::string::npos);
    const std::string tail = load_error(raw_safetensors("{" + entry("a", 2, 0) + "}", 9));
    EXPECT(tail.find("1 bytes after its last tensor") != std::string::npos);
    // A header that is not JSON: its bytes are not echoed.
    const std::string junk = load_error(raw_safetensors("{\"a\": SECRET-BYTES-HERE", 0));
    EXPECT(junk.find("not JSON") != std::string::npos && junk.find("SECRET") == std::string::npos);
    // A control character and a megabyte of name: printable and cut short in the message.
    const std::string long_name = "x\\u001b[31m" + std::string(1 << 20, 'n');
    const std::string named     = load_error(raw_safetensors("{\"" + long_name + "\":{\"dtype\":\"Q8\"}}", 0));
    EXPECT(named.find("malformed entry") != std::string::npos && named.find('\x1b') == std::string::npos &&
           named.size() < 300);
    std::printf("  overlap: %s\n  hole: %s\n  junk: %s\n", overlap.c_str(), hole.c_str(), junk.c_str());
}

// PEFT export: keys "base_model.model.<module>.shira_weight|shira_indices" relative to the UNet, int32 [2, K]
// (row, col) indices, and an adapter_config.json PEFT can parse.
SHIRA_TEST(export) {
    auto    model         = model_init(tiny_config(), 3, torch::kCPU);
    Adapter A             = random_shira(*model, MASK_TYPE_STRUCT, 1, 0.1);
    A.metadata["mask"]    = "struct";
    A.metadata["seed"]    = "1";
    const std::string src = kTmp + "-exp.safetensors", dir = kTmp + "-peft";
    adapter_save(A, src, VALUES_DTYPE_F32);
    WorkerState st(torch::kCPU);
    Json        r    = worker_run_op(st, "adapter_export", {{"path", src}, {"out", dir}}, [](const Json&) {});
    SafeTensors peft = safetensors_load(dir + "/adapter_model.safetensors");
    EXPECT(peft.tensors.size() == 2 * A.shira.size());
    for (const auto& [name, t] : A.shira) {
        const std::string key = "base_model.model." + name.substr(5);  // drop "unet."
        EXPECT(peft.tensors.count(key + ".shira_weight") && peft.tensors.count(key + ".shira_indices"));
        if (!peft.tensors.count(key + ".shira_indices")) continue;
        const torch::Tensor& ij = peft.tensors.at(key + ".shira_indices");
        EXPECT(ij.scalar_type() == torch::kInt32 && ij.size(0) == 2 && ij.size(1) == t.idx.numel());
        EXPECT(torch::equal(ij[0].to(torch::kInt64) * t.cols + ij[1].to(torch::kInt64), t.idx));
        EXPECT(torch::equal(peft.tensors.at(key + ".shira_weight"), t.values));
    }
    std::ifstream in(dir + "/adapter_config.json");
    Json          cfg = Json::parse(in);
    EXPECT(cfg["peft_type"] == "SHIRA" && cfg["mask_type"] == "struct" && cfg["r"].get<int64_t>() >= 1);
    auto tm = cfg["target_modules"].get<std::vector<std::string>>();
    for (const char* want : {"to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"}) {
        EXPECT(std::find(tm.begin(), tm.end(), want) != tm.end());
    }
    std::printf("  PEFT export: %zu tensors, r=%lld, target_modules %s\n", peft.tensors.size(),
                (long long)cfg["r"].get<int64_t>(), cfg["target_modules"].dump().c_str());
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
        worker_run_op(st, "adapter_export", {{"path", src}, {"out", dir}, {"format", "onnx"}}, [](const Json&) {});
    }));
}

// The v1 writer (PEFT layout, as this app wrote adapters before format v2), for compatibility tests.
void write_v1(const Adapter& a, const std::string& path) {
    std::map<std::string, torch::Tensor> tensors;
    std::map<std::string, std::string>   meta   = a.metadata;
    Json                                 alphas = Json::object(), cols = Json::object();
    meta["kind"] = a.kind == ADAPTER_KIND_SHIRA ? "shira" : "lora";
    for (const auto& [name, t] : a.shira) {
        tensors[name + ".shira_weight"] = t.values.to(torch::kFloat32);
        tensors[name + ".shira_indices"] =
            torch::stack({torch::div(t.idx, t.cols, "floor"), t.idx.remainder(t.cols)}).to(torch::kInt32);
        cols[name] = t.cols;
    }
    if (!a.shira.empty()) meta["shira_cols"] = cols.dump();
    for (const auto& [name, t] : a.lora) {
        tensors[name + ".lora_A.weight"] = t.A;
        tensors[name + ".lora_B.weight"] = t.B;
        alphas[name]                     = t.alpha;
    }
    if (!a.lora.empty()) meta["alphas"] = alphas.dump();
    safetensors_save(path, tensors, meta);
}

// Loads, edits and rewrites a file's "tensors" metadata entry of `layer`.
void edit_entry(const std::string& path, const std::string& layer, const std::function<void(Json&)>& edit) {
    SafeTensors st = safetensors_load(path);
    Json        t  = Json::parse(st.metadata.at("tensors"));
    edit(t[layer]);
    st.metadata["tensors"] = t.dump();
    safetensors_save(path, st.tensors, st.metadata);
}

SHIRA_TEST(format) {
    // mask_rand = first K of torch::randperm (the O(K) Fisher–Yates prefix), mask_struct fast path = general path.
    for (auto [numel, K] :
         std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 7}, {1000, 20}, {100003, 2000}, {409600, 8192}}) {
        for (uint64_t seed : {0ull, 12345678901234567ull}) {
            at::Generator gen = at::detail::createCPUGenerator(seed);
            torch::Tensor ref = std::get<0>(
                torch::randperm(numel, gen, torch::TensorOptions().dtype(torch::kInt64)).slice(0, 0, K).sort());
            EXPECT(torch::equal(mask_rand(numel, K, seed), ref));
        }
    }
    std::mt19937_64 rng(5);
    int             struct_cases = 0;
    for (auto [m, n] :
         std::vector<std::pair<int64_t, int64_t>>{{40, 24}, {24, 40}, {64, 64}, {16, 144}, {7, 1}, {1, 9}, {0, 0}}) {
        if (m == 0) {  // plus random shapes and K
            m = 1 + (int64_t)(rng() % 90);
            n = 1 + (int64_t)(rng() % 90);
        }
        for (int64_t K : {int64_t(1), int64_t(5), std::max<int64_t>(1, m * n / 50), m * n / 3, m * n,
                          1 + (int64_t)(rng() % (m * n))}) {
            if (K < 1 || K > m * n) continue;
            ++struct_cases;
            EXPECT(torch::equal(mask_struct(m, n, K), mask_struct(m, n, K, torch::zeros({m * n}, torch::kBool))));
        }
    }
    for (int i = 0; i < 200; ++i) {
        const int64_t m = 1 + (int64_t)(rng() % 70), n = 1 + (int64_t)(rng() % 70), K = 1 + (int64_t)(rng() % (m * n));
        ++struct_cases;
        EXPECT(torch::equal(mask_struct(m, n, K), mask_struct(m, n, K, torch::zeros({m * n}, torch::kBool))));
    }
    std::printf("  mask_struct O(K) path == general path on %d (m, n, K); mask_rand == randperm prefix\n",
                struct_cases);
    // FNV-1a 64 over little-endian int64 (vectors computed independently in Python).
    EXPECT(checksum_hex(shira_index_checksum(torch::zeros({0}, torch::kInt64))) == "cbf29ce484222325");
    EXPECT(checksum_hex(shira_index_checksum(torch::tensor(std::vector<int64_t>{0}))) == "a8c7f832281a39c5");
    EXPECT(checksum_hex(shira_index_checksum(torch::tensor(std::vector<int64_t>{1, 256, int64_t(1) << 40}))) ==
           "746655c86da0b634");

    // Rice: round trip and minimal k (brute force over 0..40) on edge cases and realistic masks.
    std::vector<std::pair<std::string, std::pair<torch::Tensor, int64_t>>> sets = {
        {"[0]", {torch::tensor(std::vector<int64_t>{0}), 1}},
        {"[numel-1]", {torch::tensor(std::vector<int64_t>{999999}), 1000000}},
        {"contiguous", {torch::arange(5000, torch::kInt64), 5000}},
        {"struct 320x320", {mask_struct(320, 320, 2048), 102400}},
        {"rand 2%", {mask_rand(409600, 8192, 3), 409600}},
        {"huge first gap",
         {torch::tensor(std::vector<int64_t>{int64_t(1) << 36, (int64_t(1) << 36) + 1}), int64_t(1) << 37}},
    };
    for (auto& [name, set] : sets) {
        const auto& [idx, numel] = set;
        RiceCode code            = rice_encode(idx);
        EXPECT(torch::equal(rice_decode(code.bytes, code.k, idx.numel(), numel, name), idx));
        int64_t best = INT64_MAX;
        for (int k = 0; k <= 40; ++k) {
            int64_t bits = 0;
            for (int64_t i = 0; i < idx.numel(); ++i) {
                const int64_t g = i ? idx[i].item<int64_t>() - idx[i - 1].item<int64_t>() - 1 : idx[0].item<int64_t>();
                bits += (g >> k) + 1 + k;
            }
            best = std::min(best, bits);
        }
        EXPECT(code.bytes.numel() == (best + 7) / 8);
        std::printf("  rice %-16s K=%-6lld k=%-2d %lld bytes (optimum %lld bits)\n", name.c_str(),
                    (long long)idx.numel(), code.k, (long long)code.bytes.numel(), (long long)best);
    }

    auto         model = model_init(tiny_config(), 8, torch::kCPU);
    ShiraOptions o;
    o.density        = 0.05;
    o.seed           = 11;
    o.mask           = MASK_TYPE_STRUCT;
    Adapter S        = shira_with(*model, o, 1, false);
    o.mask           = MASK_TYPE_RAND;
    Adapter R        = shira_with(*model, o, 2, true);
    Adapter R_noseed = R;  // same masks, seed unknown: must fall back to Rice
    for (auto& [_, t] : R_noseed.shira) t.rand_seed.reset();
    o.mask    = MASK_TYPE_WM;
    Adapter W = shira_with(*model, o, 3, false);
    o.mask    = MASK_TYPE_RAND;
    o.seed    = 12;
    o.exclude = {&R};
    Adapter X =
        shira_with(*model, o, 4, true);  // non-overlap: excluded indices, so mask_rand(seed) does not regenerate it
    o.exclude.clear();
    Adapter L = random_lora(*model, 5);
    struct Case {
        const char* name;
        Adapter*    a;
        const char* index;
    };
    for (const Case& c :
         {Case{"struct", &S, "struct"}, Case{"rand", &R, "rand"}, Case{"rand, seed unknown", &R_noseed, "rice"},
          Case{"wm", &W, "rice"}, Case{"rand + exclude", &X, "rice"}, Case{"lora", &L, ""}}) {
        for (ValuesDtype vd : {VALUES_DTYPE_F16, VALUES_DTYPE_F32}) {
            const std::string path = kTmp + "-fmt.safetensors", again = kTmp + "-fmt2.safetensors";
            adapter_save(*c.a, path, vd);
            Adapter back  = adapter_load(path);
            bool    ok    = back.format_version == 2 && back.kind == c.a->kind;
            double  worst = 0;
            for (const auto& [name, t] : c.a->shira) {
                const ShiraTensor& b = back.shira.at(name);
                torch::Tensor      want =
                    vd == VALUES_DTYPE_F16 ? t.values.to(torch::kFloat16).to(torch::kFloat32) : t.values;
                ok = ok && torch::equal(b.idx, t.idx) && torch::equal(b.values, want) && b.shape == t.shape &&
                     back.storage.at(name).index == c.index;
                worst = std::max(worst, maxdiff(b.values, t.values));
            }
            for (const auto& [name, t] : c.a->lora) {
                const LoraTensor& b = back.lora.at(name);
                auto              q = [&](const torch::Tensor& x) {
                    return vd == VALUES_DTYPE_F16 ? x.to(torch::kFloat16).to(torch::kFloat32) : x;
                };
                ok    = ok && torch::equal(b.A, q(t.A)) && torch::equal(b.B, q(t.B)) && b.alpha == t.alpha;
                worst = std::max({worst, maxdiff(b.A, t.A), maxdiff(b.B, t.B)});
            }
            // Loaded and written again: the same bytes (f16 rounding is idempotent).
            adapter_save(back, again, vd);
            ok         = ok && file_bytes(path) == file_bytes(again);
            int64_t bv = 0, bi = 0;
            for (const auto& [_, info] : back.storage) {
                bv += info.bytes_values;
                bi += info.bytes_index;
            }
            std::printf("  %-20s %s: %s, %.3f B/value (values %lld B, index %lld B), maxdiff vs fp32 %.3e\n", c.name,
                        vd == VALUES_DTYPE_F16 ? "f16" : "f32", ok ? "bit-exact round trip" : "MISMATCH",
                        (double)(bv + bi) / (double)c.a->trainable(), (long long)bv, (long long)bi, worst);
            EXPECT(ok);
        }
    }

    // Tampering is caught and named.
    const std::string path = kTmp + "-tamper.safetensors";
    const std::string rl = R.shira.begin()->first, sl = S.shira.begin()->first, wl = W.shira.begin()->first;
    adapter_save(R, path);
    edit_entry(path, rl,
               [](Json& e) { e["rand_seed"] = std::to_string(std::stoull(e["rand_seed"].get<std::string>()) + 1); });
    expect_bad(
        "Rand: rand_seed altered", [&] { adapter_load(path); }, "no longer regenerate");
    adapter_save(S, path);
    edit_entry(path, sl, [](Json& e) {  // same numel, other [m, n] view
        e["shape"][0] = e["shape"][0].get<int64_t>() / 2;
        e["shape"][1] = e["shape"][1].get<int64_t>() * 2;
    });
    expect_bad(
        "Struct: shape altered", [&] { adapter_load(path); }, "no longer regenerate");
    adapter_save(R, path);
    edit_entry(path, rl, [](Json& e) { e["rand_seed"] = 5; });
    expect_bad(
        "Rand: rand_seed not a string", [&] { adapter_load(path); }, "rand_seed");
    adapter_save(W, path);
    SafeTensors good    = safetensors_load(path);
    auto        rewrite = [&](const std::function<void(SafeTensors&)>& f) {
        SafeTensors st = good;
        for (auto& [k, v] : st.tensors) v = v.clone();
        f(st);
        safetensors_save(path, st.tensors, st.metadata);
    };
    rewrite([&](SafeTensors& st) {
        auto& b = st.tensors.at(wl + ".index");
        b       = b.slice(0, 0, b.numel() - 1).clone();
    });
    expect_bad(
        "Rice: last byte cut", [&] { adapter_load(path); }, "end early");
    rewrite([&](SafeTensors& st) {
        auto& b = st.tensors.at(wl + ".index");
        b       = torch::cat({b, torch::zeros({1}, torch::kUInt8)});
    });
    expect_bad(
        "Rice: extra byte", [&] { adapter_load(path); }, "past the last index");
    rewrite([&](SafeTensors& st) { st.tensors.at(wl + ".index").data_ptr<uint8_t>()[3] ^= 0x10; });
    expect_bad(
        "Rice: one bit flipped", [&] { adapter_load(path); }, wl);
    rewrite([&](SafeTensors& st) { st.tensors["junk"] = torch::zeros({2}); });
    expect_bad(
        "unknown tensor", [&] { adapter_load(path); }, "junk");
    rewrite([&](SafeTensors& st) { st.tensors.erase(wl + ".values"); });
    expect_bad(
        "missing values", [&] { adapter_load(path); }, wl);
    rewrite(
        [&](SafeTensors& st) { st.tensors.at(wl + ".values") = st.tensors.at(wl + ".values").to(torch::kFloat32); });
    expect_bad(
        "values dtype differs from entry", [&] { adapter_load(path); }, wl);
    rewrite([&](SafeTensors& st) { st.metadata["format_version"] = "3"; });
    expect_bad(
        "format_version 3", [&] { adapter_load(path); }, "format_version");
    adapter_save(L, path);
    edit_entry(path, L.lora.begin()->first, [](Json& e) { e["b_shape"][1] = 99; });
    expect_bad(
        "LoRA b_shape altered", [&] { adapter_load(path); }, L.lora.begin()->first);
}

// v1 (PEFT layout) files and PEFT folders still load, mix and convert to v2.
SHIRA_TEST(compat) {
    WorkerState st(torch::kCPU);
    EmitFn      quiet = [](const Json&) {};
    worker_run_op(st, "load_model", {{"config", model_config_to_json(tiny_config())}, {"seed", 3}}, quiet);
    DiffusionModel& model = *st.model;
    ShiraOptions    o;
    o.mask                = MASK_TYPE_RAND;
    o.seed                = 21;
    Adapter R             = shira_with(model, o, 1, true);
    R.metadata            = {{"model", "tiny-test"}, {"method", "shira"}, {"mask", "rand"},
                             {"seed", "21"},         {"steps", "10"},     {"density", "0.02"}};
    o.mask                = MASK_TYPE_WM;
    Adapter W             = shira_with(model, o, 2, false);
    W.metadata            = {{"mask", "wm"}, {"seed", "0"}};
    Adapter           L   = random_lora(model, 6);
    const std::string v1r = kTmp + "-v1r.safetensors", v1w = kTmp + "-v1w.safetensors", v1l = kTmp + "-v1l.safetensors";
    write_v1(R, v1r);
    write_v1(W, v1w);
    write_v1(L, v1l);
    // Loads as before (no model needed to mix), with the v1 storage reported.
    Adapter r1   = adapter_load(v1r);
    bool    same = r1.format_version == 1 && r1.storage.begin()->second.index == "peft";
    for (const auto& [name, t] : R.shira)
        same = same && torch::equal(r1.shira.at(name).idx, t.idx) && torch::equal(r1.shira.at(name).values, t.values);
    EXPECT(same);
    Json mixed = worker_run_op(
        st, "apply_mix", {{"adapters", {{{"path", v1r}, {"alpha", 1.0}}, {{"path", v1l}, {"alpha", 0.5}}}}}, quiet);
    worker_run_op(st, "clear_mix", Json::object(), quiet);
    Json inspect = worker_run_op(st, "adapter_inspect", {{"path", v1r}}, quiet);
    std::printf("  v1 file loads and mixes (%.2f ms); inspect: format_version %d, %.1f B/value\n",
                mixed["ms"].get<double>(), inspect["format_version"].get<int>(),
                inspect["bytes_per_value"].get<double>());
    EXPECT(inspect["format_version"] == 1 && std::abs(inspect["bytes_per_value"].get<double>() - 12.0) < 1e-9);
    // Converting needs the layer shapes, which v1 files lack: refused without a model, fine with one.
    {
        WorkerState bare(torch::kCPU);
        expect_bad(
            "convert v1 without a model",
            [&] {
                worker_run_op(bare, "adapter_convert", {{"path", v1r}, {"out", kTmp + "-v2r.safetensors"}}, quiet);
            },
            "shape");
    }
    struct Case {
        std::string path;
        Adapter*    a;
        const char* encoding;
    };
    for (const Case& c : {Case{v1r, &R, "rand"}, Case{v1w, &W, "rice"}, Case{v1l, &L, "lora"}}) {
        const std::string out = kTmp + "-v2.safetensors";
        Json    r    = worker_run_op(st, "adapter_convert", {{"path", c.path}, {"out", out}, {"values", "f32"}}, quiet);
        Adapter back = adapter_load(out);
        bool ok = r["from_format_version"] == 1 && r["format_version"] == 2 && r["encodings"].value(c.encoding, 0) > 0;
        for (const auto& [name, t] : c.a->shira)
            ok = ok && torch::equal(back.shira.at(name).idx, t.idx) &&
                 torch::equal(back.shira.at(name).values, t.values);
        for (const auto& [name, t] : c.a->lora)
            ok = ok && torch::equal(back.lora.at(name).A, t.A) && back.lora.at(name).alpha == t.alpha;
        std::printf("  convert v1 -> v2 (%s): %s, %lld -> %lld bytes, encodings %s\n", c.encoding,
                    ok ? "exact" : "MISMATCH", (long long)file_size(c.path), (long long)file_size(out),
                    r["encodings"].dump().c_str());
        EXPECT(ok);
    }
    // PEFT folder (adapter_export) -> v2 through the loaded model's module names and shapes.
    const std::string v2 = kTmp + "-v2w.safetensors", dir = kTmp + "-peft2";
    adapter_save(W, v2, VALUES_DTYPE_F32);
    worker_run_op(st, "adapter_export", {{"path", v2}, {"out", dir}}, quiet);
    const std::string peft = dir + "/adapter_model.safetensors", out = kTmp + "-frompeft.safetensors";
    Json    r    = worker_run_op(st, "adapter_convert", {{"path", peft}, {"out", out}, {"values", "f32"}}, quiet);
    Adapter back = adapter_load(out);
    bool    ok   = back.shira.size() == W.shira.size();
    for (const auto& [name, t] : W.shira)
        ok = ok && back.shira.count(name) && torch::equal(back.shira.at(name).idx, t.idx) &&
             torch::equal(back.shira.at(name).values, t.values);
    std::printf("  PEFT folder -> v2: %s (%lld -> %lld bytes)\n", ok ? "exact" : "MISMATCH", (long long)file_size(peft),
                (long long)file_size(out));
    EXPECT(ok);
    {
        WorkerState bare(torch::kCPU);
        expect_bad(
            "PEFT file without a model",
            [&] {
                worker_run_op(bare, "adapter_convert", {{"path", peft}, {"out", out}}, quiet);
            },
            "PEFT");
    }
}

}  // namespace
