// The "switch" benchmark: warm and cold adapter switches, file bytes per value, blending N adapters and α changes
// on one model (bench.h), SHiRA against parameter-matched LoRA.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "adapter/lora.h"
#include "adapter/masks.h"
#include "adapter/mix.h"
#include "adapter/shira.h"
#include "bench/bench_cases.h"
#include "core/device.h"
#include "core/json_args.h"
#include "core/timing.h"
#include "model_io/adapter_file.h"

namespace {

Adapter random_shira_adapter(DiffusionModel& model, MaskType mask, double density, uint64_t seed,
                             const std::vector<std::string>& targets = kDefaultTargets) {
    ShiraOptions o;
    o.mask      = mask;
    o.density   = density;
    o.seed      = seed;
    o.targets   = targets;
    auto params = shira_attach(model, o);
    {
        torch::NoGradGuard g;
        at::Generator      gen = at::detail::createCPUGenerator(seed);
        for (auto& v : params) v.copy_(torch::randn(v.sizes(), gen, torch::kFloat32).mul_(0.01));
    }
    Adapter a = shira_detach(model);
    if (mask == MASK_TYPE_RAND) {
        for (auto& [name, t] : a.shira) t.rand_seed = shira_layer_seed(seed, name);
    }
    return a;
}

// The index distribution of a Grad/SNIP mask under random scores: top-K of iid continuous scores is a uniform
// random K-subset, drawn here in O(K) (mask_rand with a seed the file does not know, so it is Rice-coded like
// a real top-K mask would be) instead of scoring and sorting every weight.
Adapter random_topk_adapter(const Adapter& like, uint64_t seed) {
    Adapter a = like;
    for (auto& [name, t] : a.shira) {
        int64_t numel = 1;
        for (int64_t d : t.shape) numel *= d;
        t.idx = mask_rand(numel, t.idx.numel(), shira_layer_seed(seed, name));
        t.rand_seed.reset();
    }
    return a;
}

Adapter random_lora_adapter(DiffusionModel& model, double density, uint64_t seed,
                            const std::vector<std::string>& targets = kDefaultTargets) {
    LoraOptions o;
    o.match_density = density;
    o.seed          = seed;
    o.targets       = targets;
    auto params     = lora_attach(model, o);
    {
        torch::NoGradGuard g;
        at::Generator      gen = at::detail::createCPUGenerator(seed + 1000);
        for (auto& v : params) v.copy_(torch::randn(v.sizes(), gen, torch::kFloat32).mul_(0.01));
    }
    return lora_detach(model);
}

int64_t file_bytes(const std::string& path) {
    std::error_code ec;
    const auto      n = std::filesystem::file_size(path, ec);
    return ec ? -1 : (int64_t)n;
}

std::string bench_temp(const std::string& stem) {
    static int n = 0;
    return (std::filesystem::temp_directory_path() /
            ("shira-bench-" + std::to_string(getpid()) + "-" + std::to_string(n++) + "-" + stem + ".safetensors"))
        .string();
}

// Temp adapter files of one model, deleted however the bench ends.
struct TempFiles {
    std::vector<std::string> paths;
    std::string              add(const std::string& stem) {
                     paths.push_back(bench_temp(stem));
                     return paths.back();
    }
    ~TempFiles() {
        for (const auto& p : paths) std::remove(p.c_str());
    }
};

// Warm whole-model switch A -> B -> A ...: A applied first (untimed), then `reps` timed switches; median ms.
double time_switch(DiffusionModel& model, torch::Device device, const Adapter& a, const Adapter& b, int64_t reps,
                   const std::function<void()>& stop_check) {
    MixState            st;
    std::vector<double> t;
    mix_apply(model, st, {{&a, 1.0}});
    for (int64_t r = 0; r < reps + 1; ++r) {  // rep 0 warms caches and the allocator
        stop_check();
        const Adapter& to = r % 2 == 0 ? b : a;
        device_sync(device);
        const double t0 = now_ms();
        mix_apply(model, st, {{&to, 1.0}});
        device_sync(device);
        if (r > 0) t.push_back(now_ms() - t0);
    }
    mix_clear(model, st);
    return median(t);
}

// Cold switch from files: the state holds B; read + decode A's v2 file (OS page cache warm: just written) and
// apply it, alternating A/B. Returns median {total, load (read + decode), apply} ms.
std::array<double, 3> time_cold_switch(DiffusionModel& model, torch::Device device, const std::string& fa,
                                       const std::string& fb, int64_t reps, const std::function<void()>& stop_check) {
    MixState            st;
    std::vector<double> total, load, apply;
    {
        Adapter b = adapter_load(fb);
        mix_apply(model, st, {{&b, 1.0}});
    }
    for (int64_t r = 0; r < reps; ++r) {
        stop_check();
        device_sync(device);
        const double t0 = now_ms();
        Adapter      a  = adapter_load(r % 2 == 0 ? fa : fb);
        const double t1 = now_ms();
        mix_apply(model, st, {{&a, 1.0}});
        device_sync(device);
        const double t2 = now_ms();
        total.push_back(t2 - t0);
        load.push_back(t1 - t0);
        apply.push_back(t2 - t1);
    }
    mix_clear(model, st);
    return {median(total), median(load), median(apply)};
}

Json storage_totals(const Adapter& a) {
    int64_t     bv = 0, bi = 0;
    std::string encoding;
    for (const auto& [_, info] : a.storage) {
        bv += info.bytes_values;
        bi += info.bytes_index;
        if (encoding.empty()) encoding = info.index;
        if (encoding != info.index) encoding = "mixed";
    }
    return {{"bytes_values", bv}, {"bytes_index", bi}, {"index_encoding", encoding}};
}

}  // namespace

void bench_switch_model(DiffusionModel& model, const Json& common, const BenchContext& ctx) {
    const Json&         args       = ctx.args;
    const bool          quick      = ctx.quick;
    const double        density    = ctx.density;
    const torch::Device device     = ctx.device;
    const auto&         push       = ctx.push;
    const auto&         stop_check = ctx.stop_check;
    const int64_t       reps       = get_int(args, "reps", quick ? 3 : 7, 1, 1000);
    TempFiles           tmp;
    // Whole-model switch A → B (warm: A is applied first, every adapter already in memory). SHiRA writes
    // the kept base values back at A's indices, then scatters B; LoRA restores the kept copies of every
    // touched tensor, then adds (alpha/r)·BA per layer. The LoRA pair does not depend on the mask, so it is
    // timed once per model and reported in every mask's row.
    Adapter           la = random_lora_adapter(model, density, 1), lb = random_lora_adapter(model, density, 2);
    const double      lora_ms = time_switch(model, device, la, lb, reps, stop_check);
    const std::string lfa = tmp.add("lora-a"), lfb = tmp.add("lora-b");
    adapter_save(la, lfa);
    adapter_save(lb, lfb);
    const auto   lora_cold = time_cold_switch(model, device, lfa, lfb, reps, stop_check);
    const double lora_bpv  = (double)file_bytes(lfa) / (double)la.trainable();
    // Bytes per trained value of this mask's file (f16 and f32 values) vs PEFT and fp16 LoRA.
    auto bytes_row = [&](const Adapter& a, MaskType m, const char* index_model) {
        for (ValuesDtype vd : {VALUES_DTYPE_F16, VALUES_DTYPE_F32}) {
            stop_check();
            const std::string f  = tmp.add("bpv");
            const double      t0 = now_ms();
            adapter_save(a, f, vd);
            const double  t1   = now_ms();
            const Adapter back = adapter_load(f);
            const double  t2   = now_ms();
            Json          tot  = storage_totals(back);
            Json          r    = common;
            const double  k    = (double)a.trainable();
            r.update({{"name", "bytes_per_value"},
                      {"mask", mask_type_name(m)},
                      {"density", density},
                      {"values_dtype", vd == VALUES_DTYPE_F16 ? "f16" : "f32"},
                      {"index_encoding", tot["index_encoding"]},
                      {"index_model", index_model},
                      {"trainable", a.trainable()},
                      {"file_bytes", file_bytes(f)},
                      {"bytes_values", tot["bytes_values"]},
                      {"bytes_index", tot["bytes_index"]},
                      {"bytes_per_value", (double)file_bytes(f) / k},
                      {"payload_bytes_per_value",
                       (tot["bytes_values"].get<double>() + tot["bytes_index"].get<double>()) / k},
                      {"peft_bytes_per_value", 12},
                      {"lora_bytes_per_value", lora_bpv},
                      {"encode_ms", t1 - t0},
                      {"decode_ms", t2 - t1}});
            push(r);
            std::remove(f.c_str());
        }
    };
    Adapter rand_like;  // a Rand adapter: its shapes and K per layer seed the Grad/SNIP index model
    for (MaskType mask : {MASK_TYPE_STRUCT, MASK_TYPE_RAND, MASK_TYPE_WM}) {
        stop_check();
        Adapter sa = random_shira_adapter(model, mask, density, 1), sb = random_shira_adapter(model, mask, density, 2);
        const double shira_ms = time_switch(model, device, sa, sb, reps, stop_check);
        Json         row      = common;
        row.update({{"name", "switch"},
                    {"mask", mask_type_name(mask)},
                    {"density", density},
                    {"reps", reps},
                    {"shira_switch_ms", shira_ms},
                    {"lora_switch_ms", lora_ms},
                    {"ratio", lora_ms / std::max(shira_ms, 1e-9)},
                    {"shira_params", sa.trainable()},
                    {"lora_params", la.trainable()},
                    {"layers", (int64_t)sa.shira.size()}});
        push(row);
        // Cold: read + decode the v2 file, then apply (no decoded copy in memory beforehand).
        const std::string fa = tmp.add("shira-a"), fb = tmp.add("shira-b");
        adapter_save(sa, fa);
        adapter_save(sb, fb);
        const auto cold = time_cold_switch(model, device, fa, fb, reps, stop_check);
        Json       c    = common;
        c.update({{"name", "cold_switch"},
                  {"mask", mask_type_name(mask)},
                  {"density", density},
                  {"reps", reps},
                  {"index_encoding", storage_totals(adapter_load(fa))["index_encoding"]},
                  {"values_dtype", "f16"},
                  {"shira_switch_ms", cold[0]},
                  {"shira_load_ms", cold[1]},
                  {"shira_apply_ms", cold[2]},
                  {"lora_switch_ms", lora_cold[0]},
                  {"lora_load_ms", lora_cold[1]},
                  {"lora_apply_ms", lora_cold[2]},
                  {"ratio", lora_cold[0] / std::max(cold[0], 1e-9)},
                  {"shira_file_bytes", file_bytes(fa)},
                  {"lora_file_bytes", file_bytes(lfa)}});
        push(c);
        if (mask == MASK_TYPE_RAND) rand_like = sa;
        bytes_row(sa, mask,
                  mask == MASK_TYPE_WM ? "top-K of |W| (random init = iid random scores)" : "the mask itself");
    }
    // Grad/SNIP: top-K of iid random scores (a uniform K-subset), so Rice-coded like any top-K mask.
    for (MaskType mask : {MASK_TYPE_GRAD, MASK_TYPE_SNIP}) {
        stop_check();
        bytes_row(random_topk_adapter(rand_like, mask == MASK_TYPE_GRAD ? 77 : 78), mask,
                  "top-K of iid random scores (uniform K-subset)");
    }
    // Blending N adapters (Rand SHiRA / parameter-matched LoRA, all on every default target): each timed
    // apply switches from the previous mix (the previous N, or the same N at the other α), so every layer
    // is restored and re-blended; median over reps per N.
    {
        const std::vector<int64_t> ns         = {1, 2, 4, 8};
        const int64_t              blend_reps = get_int(args, "blend_reps", quick ? 1 : 3, 1, 100);
        std::vector<Adapter>       shira_n, lora_n;
        for (int64_t i = 0; i < ns.back(); ++i) {
            stop_check();
            shira_n.push_back(random_shira_adapter(model, MASK_TYPE_RAND, density, 100 + i));
            lora_n.push_back(random_lora_adapter(model, density, 100 + i));
        }
        auto time_blend = [&](const std::vector<Adapter>& ads, std::vector<double>& out,
                              std::vector<int64_t>& union_nnz) {
            MixState st;
            mix_apply(model, st, {{&ads[0], 0.5}});
            for (int64_t n : ns) {
                std::vector<double> t;
                for (int64_t r = 0; r < blend_reps; ++r) {
                    stop_check();
                    std::vector<std::pair<const Adapter*, double>> mix;
                    for (int64_t i = 0; i < n; ++i) mix.emplace_back(&ads[i], r % 2 == 0 ? 1.0 : 0.5);
                    device_sync(device);
                    const double t0 = now_ms();
                    mix_apply(model, st, mix);
                    device_sync(device);
                    t.push_back(now_ms() - t0);
                }
                out.push_back(median(t));
                int64_t u = 0;
                for (const auto& [_, b] : st.layers) u += b.shira_union.defined() ? b.shira_union.numel() : 0;
                union_nnz.push_back(u);
            }
            mix_clear(model, st);
        };
        std::vector<double>  shira_t, lora_t;
        std::vector<int64_t> shira_u, lora_u;
        time_blend(shira_n, shira_t, shira_u);
        time_blend(lora_n, lora_t, lora_u);
        for (size_t i = 0; i < ns.size(); ++i) {
            Json r = common;
            r.update({{"name", "blend_n"},
                      {"n", ns[i]},
                      {"mask", "rand"},
                      {"density", density},
                      {"reps", blend_reps},
                      {"nnz_total", shira_n[0].trainable() * ns[i]},
                      {"union_nnz", shira_u[i]},
                      {"lora_params_total", lora_n[0].trainable() * ns[i]},
                      {"shira_switch_ms", shira_t[i]},
                      {"lora_switch_ms", lora_t[i]},
                      {"ratio", lora_t[i] / std::max(shira_t[i], 1e-9)}});
            push(r);
        }
    }
    // Warm α change in a 2-adapter mix: A on the attention projections, B on the feed-forward and proj_in/out
    // layers; B's α changes. Incremental re-blends only B's layers; "full" is clear + apply of both.
    {
        const std::vector<std::string> attn = {"to_q", "to_k", "to_v", "to_out.0"},
                                       rest = {"ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"};
        Adapter sa                          = random_shira_adapter(model, MASK_TYPE_RAND, density, 201, attn),
                sb                          = random_shira_adapter(model, MASK_TYPE_RAND, density, 202, rest);
        Adapter la2                         = random_lora_adapter(model, density, 201, attn),
                lb2                         = random_lora_adapter(model, density, 202, rest);
        auto time_alpha = [&](const Adapter& a, const Adapter& b, double& inc_ms, double& full_ms, MixStats& stats) {
            MixState            st;
            std::vector<double> inc, full;
            mix_apply(model, st, {{&a, 1.0}, {&b, 1.0}});
            const int64_t alpha_reps = quick ? 1 : reps;  // each rep also pays a full LoRA re-blend twice
            for (int64_t r = 0; r < alpha_reps; ++r) {
                stop_check();
                const double alpha = r % 2 == 0 ? 0.5 : 1.0;
                device_sync(device);
                double t0 = now_ms();
                mix_apply(model, st, {{&a, 1.0}, {&b, alpha}}, &stats);
                device_sync(device);
                inc.push_back(now_ms() - t0);
                const double back = r % 2 == 0 ? 1.0 : 0.5;  // full: from the state before this change
                mix_apply(model, st, {{&a, 1.0}, {&b, back}});
                device_sync(device);
                t0 = now_ms();
                mix_clear(model, st);
                mix_apply(model, st, {{&a, 1.0}, {&b, alpha}});
                device_sync(device);
                full.push_back(now_ms() - t0);
            }
            mix_clear(model, st);
            inc_ms  = median(inc);
            full_ms = median(full);
        };
        double   s_inc = 0, s_full = 0, l_inc = 0, l_full = 0;
        MixStats s_stats, l_stats;
        time_alpha(sa, sb, s_inc, s_full, s_stats);
        time_alpha(la2, lb2, l_inc, l_full, l_stats);
        Json r = common;
        r.update({{"name", "alpha_change"},
                  {"n", 2},
                  {"mask", "rand"},
                  {"density", density},
                  {"reps", quick ? 1 : reps},
                  {"shira_switch_ms", s_inc},
                  {"lora_switch_ms", l_inc},
                  {"ratio", l_inc / std::max(s_inc, 1e-9)},
                  {"shira_full_ms", s_full},
                  {"lora_full_ms", l_full},
                  {"layers_reblended", s_stats.layers_reblended},
                  {"layers_total", s_stats.layers_reblended + s_stats.layers_unchanged},
                  {"changed_adapter_params", sb.trainable()},
                  {"mix_params", sa.trainable() + sb.trainable()}});
        push(r);
    }
}
