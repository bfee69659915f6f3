// The "switch" benchmark: warm and cold adapter switches, file bytes per value, blending N adapters and α changes
// on one model (bench.h), SHiRA against parameter-matched LoRA.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>

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

// The streaming bound of this machine at the current thread count, measured now (STREAM's copy c = a and triad
// a = b + s·c over arrays far larger than any cache, best of 5; bytes counted as STREAM does: read + written).
struct Bandwidth {
    double copy_gbps = 0, triad_gbps = 0;
    double limit() const { return std::max(copy_gbps, triad_gbps); }
};
Bandwidth measure_bandwidth(torch::Device device, int64_t floats, const std::function<void()>& stop_check) {
    auto          opt = torch::TensorOptions().dtype(torch::kFloat32).device(device);
    torch::Tensor a = torch::rand({floats}, opt), b = torch::rand({floats}, opt), c = torch::empty({floats}, opt);
    double        copy = 1e30, triad = 1e30;
    for (int rep = 0; rep < 6; ++rep) {  // rep 0 faults the pages in
        stop_check();
        device_sync(device);
        double t0 = now_ms();
        c.copy_(a);
        device_sync(device);
        if (rep) copy = std::min(copy, now_ms() - t0);
        t0 = now_ms();
        torch::add_out(a, b, c, 1.5);
        device_sync(device);
        if (rep) triad = std::min(triad, now_ms() - t0);
    }
    const double bytes = 4.0 * (double)floats;
    return {2 * bytes / copy / 1e6, 3 * bytes / triad / 1e6};
}

// What one layer had applied before a timed mix_apply, to count the bytes the apply had to move.
struct LayerBefore {
    torch::Tensor                            uni;
    std::vector<std::pair<uint64_t, double>> signature;
};
std::map<std::string, LayerBefore> snapshot_unions(const MixState& st) {
    std::map<std::string, LayerBefore> out;
    for (const auto& [name, b] : st.layers) out[name] = {b.shira_union, b.signature};
    return out;
}

// 64-byte lines holding an entry of either sorted index list (weights are 64-byte aligned).
int64_t lines_touched(const torch::Tensor& x, const torch::Tensor& y) {
    const int64_t  nx = x.defined() ? x.numel() : 0, ny = y.defined() ? y.numel() : 0;
    const int64_t* px = nx ? x.data_ptr<int64_t>() : nullptr;
    const int64_t* py = ny ? y.data_ptr<int64_t>() : nullptr;
    int64_t        i = 0, j = 0, last = -1, lines = 0;
    while (i < nx || j < ny) {
        const int64_t v = (j >= ny || (i < nx && px[i] < py[j])) ? px[i++] : py[j++];
        if ((v >> 4) != last) {
            ++lines;
            last = v >> 4;
        }
    }
    return lines;
}

// The bytes a CPU switch from `before` to the state now must move (mix.cpp's fused pass): every weight line holding
// an entry of the old or the new union of a re-blended layer, read and written back (128 B); the old union's indices
// and base values (12 B each, read); the new union's indices and base values (12 B each: captured, or read when
// only α's changed); each adapter's values (4 B) and, in a merged union, their positions (4 B).
int64_t switch_bytes(const std::map<std::string, LayerBefore>& before, const MixState& now) {
    int64_t bytes = 0;
    for (const auto& [name, b] : now.layers) {
        auto          it  = before.find(name);
        torch::Tensor old = it == before.end() ? torch::Tensor() : it->second.uni;
        if (it != before.end() && it->second.signature == b.signature) continue;  // not touched
        if (!b.shira_union.defined()) continue;                                   // LoRA only
        const bool same = old.defined() && old.is_same(b.shira_union);
        bytes += 128 * lines_touched(same ? torch::Tensor() : old, b.shira_union);
        bytes += 12 * b.shira_union.numel() + (same || !old.defined() ? 0 : 12 * old.numel());
        if (b.merged) {
            for (const auto& p : b.merged->pos) bytes += 8 * p.numel();
        } else {
            bytes += 4 * b.shira_union.numel();
        }
    }
    for (const auto& [name, l] : before) {
        if (!now.layers.count(name) && l.uni.defined()) bytes += 128 * lines_touched(l.uni, {}) + 12 * l.uni.numel();
    }
    return bytes;
}

// A LoRA switch's dense traffic per touched weight: the backup copy (read + write), B·A (written, read) and W += BA
// (read + write): 24 B.
int64_t lora_switch_bytes(DiffusionModel& model, const Adapter& a) {
    int64_t n = 0;
    for (const auto& [name, _] : a.lora) n += model.layers().at(name)->weight.numel();
    return 24 * n;
}

// Median and best of timed reps, and the bytes one of them moves. The bound's fraction is taken at the best rep, as
// the bandwidth is STREAM's best of 5: on a shared machine neither then counts time the scheduler took away.
struct Timing {
    double  median_ms = 0, best_ms = 0;
    int64_t bytes = 0;
};
Timing timing_of(const std::vector<double>& t, int64_t bytes) {
    return {median(t), t.empty() ? -1 : *std::min_element(t.begin(), t.end()), bytes};
}

// Warm whole-model switch A -> B -> A ...: A applied first (untimed), then `reps` timed switches; the bytes one switch
// moves (switch_bytes) are counted in the untimed warm-up switch.
Timing time_switch(DiffusionModel& model, torch::Device device, const Adapter& a, const Adapter& b, int64_t reps,
                   const std::function<void()>& stop_check) {
    MixState            st;
    std::vector<double> t;
    int64_t             bytes = 0;
    mix_apply(model, st, {{&a, 1.0}});
    for (int64_t r = 0; r < reps + 1; ++r) {  // rep 0 warms caches and the allocator
        stop_check();
        const Adapter& to     = r % 2 == 0 ? b : a;
        const auto     before = r == 0 ? snapshot_unions(st) : std::map<std::string, LayerBefore>();
        device_sync(device);
        const double t0 = now_ms();
        mix_apply(model, st, {{&to, 1.0}});
        device_sync(device);
        if (r > 0) t.push_back(now_ms() - t0);
        if (r == 0) bytes = switch_bytes(before, st);
    }
    mix_clear(model, st);
    return timing_of(t, bytes);
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
    // Thread counts of the timed rows: 1 (kept for comparison) and `threads` (default: this machine's cores, as the
    // app's default); a CUDA device runs its kernels on the GPU, so it gets one set of rows.
    const int64_t        cores  = std::max<int64_t>(1, (int64_t)std::thread::hardware_concurrency());
    const int64_t        all    = get_int(args, "threads", cores, 1, 1024);
    std::vector<int64_t> counts = device.is_cuda() ? std::vector<int64_t>{all} : std::vector<int64_t>{1, all};
    counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
    const int     threads_before = torch::get_num_threads();
    const int64_t bw_floats =
        get_int(args, "bandwidth_floats", quick ? (int64_t(1) << 25) : (int64_t(1) << 26), 1 << 20, int64_t(1) << 30);
    // Whole-model switch A → B (warm: A is applied first, every adapter already in memory). SHiRA restores the kept
    // base values at A's union and scatters B in the same pass; LoRA restores the kept copies of every touched tensor,
    // then adds (alpha/r)·BA per layer. The LoRA pair does not depend on the mask, so it is timed once per thread
    // count and reported in every mask's row.
    Adapter           la = random_lora_adapter(model, density, 1), lb = random_lora_adapter(model, density, 2);
    const int64_t     lora_bytes = lora_switch_bytes(model, la);
    const std::string lfa = tmp.add("lora-a"), lfb = tmp.add("lora-b");
    adapter_save(la, lfa);
    adapter_save(lb, lfb);
    const double lora_bpv = (double)file_bytes(lfa) / (double)la.trainable();
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
    // Two adapters per mask. Grad/SNIP: top-K of iid random scores is a uniform K-subset (random_topk_adapter), the
    // index distribution a real calibration gives on random weights; Rice-coded like any top-K mask.
    std::vector<std::pair<MaskType, std::array<Adapter, 2>>> pairs;
    pairs.reserve(5);  // rand_like points into it
    for (MaskType mask : {MASK_TYPE_STRUCT, MASK_TYPE_RAND, MASK_TYPE_WM}) {
        stop_check();
        pairs.push_back(
            {mask, {random_shira_adapter(model, mask, density, 1), random_shira_adapter(model, mask, density, 2)}});
    }
    const Adapter& rand_like = pairs[1].second[0];
    for (MaskType mask : {MASK_TYPE_GRAD, MASK_TYPE_SNIP}) {
        const uint64_t seed = mask == MASK_TYPE_GRAD ? 77 : 78;
        pairs.push_back({mask, {random_topk_adapter(rand_like, seed), random_topk_adapter(rand_like, seed + 100)}});
    }
    // Cold: read + decode the v2 file, then apply (no decoded copy in memory beforehand); 1 thread, as before.
    torch::set_num_threads(1);
    const auto lora_cold = time_cold_switch(model, device, lfa, lfb, reps, stop_check);
    for (const auto& [mask, ab] : pairs) {
        stop_check();
        const std::string fa = tmp.add("shira-a"), fb = tmp.add("shira-b");
        adapter_save(ab[0], fa);
        adapter_save(ab[1], fb);
        const auto cold = time_cold_switch(model, device, fa, fb, reps, stop_check);
        Json       c    = common;
        c.update({{"name", "cold_switch"},
                  {"threads", 1},
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
        const bool topk = mask == MASK_TYPE_GRAD || mask == MASK_TYPE_SNIP;
        bytes_row(ab[0], mask,
                  topk                   ? "top-K of iid random scores (uniform K-subset)"
                  : mask == MASK_TYPE_WM ? "top-K of |W| (random init = iid random scores)"
                                         : "the mask itself");
    }
    // Blending N adapters (Rand SHiRA / parameter-matched LoRA, all on every default target).
    const std::vector<int64_t> ns         = {1, 2, 4, 8};
    const int64_t              blend_reps = get_int(args, "blend_reps", quick ? 3 : 5, 2, 100);
    std::vector<Adapter>       shira_n, lora_n;
    for (int64_t i = 0; i < ns.back(); ++i) {
        stop_check();
        shira_n.push_back(random_shira_adapter(model, MASK_TYPE_RAND, density, 100 + i));
        lora_n.push_back(random_lora_adapter(model, density, 100 + i));
    }
    // α change in a 2-adapter mix: A on the attention projections, B on the feed-forward and proj_in/out layers.
    const std::vector<std::string> attn = {"to_q", "to_k", "to_v", "to_out.0"},
                                   rest = {"ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"};
    Adapter sa2                         = random_shira_adapter(model, MASK_TYPE_RAND, density, 201, attn),
            sb2                         = random_shira_adapter(model, MASK_TYPE_RAND, density, 202, rest);
    Adapter la2 = random_lora_adapter(model, density, 201, attn), lb2 = random_lora_adapter(model, density, 202, rest);

    for (const int64_t T : counts) {
        torch::set_num_threads((int)T);
        stop_check();
        const Bandwidth bw = measure_bandwidth(device, bw_floats, stop_check);
        {
            Json r = common;
            r.update({{"name", "bandwidth"},
                      {"threads", T},
                      {"floats", bw_floats},
                      {"copy_gbps", bw.copy_gbps},
                      {"triad_gbps", bw.triad_gbps},
                      {"limit_gbps", bw.limit()}});
            push(r);
        }
        // The bound of a row: its bytes at the measured streaming bandwidth, and the fraction of it achieved.
        auto bound = [&](Json& r, const std::string& prefix, const Timing& t) {
            const double gbps               = (double)t.bytes / std::max(t.best_ms, 1e-9) / 1e6;
            r[prefix + "best_ms"]           = t.best_ms;
            r[prefix + "bytes"]             = t.bytes;
            r[prefix + "bound_ms"]          = (double)t.bytes / bw.limit() / 1e6;
            r[prefix + "achieved_gbps"]     = gbps;
            r[prefix + "fraction_of_limit"] = gbps / bw.limit();
        };
        Timing lora           = time_switch(model, device, la, lb, reps, stop_check);
        lora.bytes            = lora_bytes;
        double rand_switch_ms = 0;
        for (const auto& [mask, ab] : pairs) {
            stop_check();
            const Timing shira = time_switch(model, device, ab[0], ab[1], reps, stop_check);
            if (mask == MASK_TYPE_RAND) rand_switch_ms = shira.median_ms;
            Json row = common;
            row.update({{"name", "switch"},
                        {"threads", T},
                        {"mask", mask_type_name(mask)},
                        {"density", density},
                        {"reps", reps},
                        {"shira_switch_ms", shira.median_ms},
                        {"lora_switch_ms", lora.median_ms},
                        {"ratio", lora.median_ms / std::max(shira.median_ms, 1e-9)},
                        {"ratio_target", 20},
                        {"shira_params", ab[0].trainable()},
                        {"lora_params", la.trainable()},
                        {"layers", (int64_t)ab[0].shira.size()},
                        {"limit_gbps", bw.limit()}});
            bound(row, "", shira);
            bound(row, "lora_", lora);
            push(row);
        }
        // Each N: the first apply switches from the previous mix (N/2 adapters; the merge of the new adapter list is
        // part of it), then reps alternate α between 1 and 0.5 on the same N (the merged union is reused).
        struct Blend {
            double  first_ms = 0;
            Timing  warm;
            int64_t union_nnz = 0;
        };
        auto time_blend = [&](const std::vector<Adapter>& ads) {
            std::vector<Blend> out;
            MixState           st;
            mix_apply(model, st, {{&ads[0], 0.5}});
            for (int64_t n : ns) {
                std::vector<double> warm;
                Blend               b;
                int64_t             bytes = 0;
                for (int64_t r = 0; r < blend_reps; ++r) {
                    stop_check();
                    std::vector<std::pair<const Adapter*, double>> mix;
                    for (int64_t i = 0; i < n; ++i) mix.emplace_back(&ads[i], r % 2 == 0 ? 1.0 : 0.5);
                    const auto before = r == 1 ? snapshot_unions(st) : std::map<std::string, LayerBefore>();
                    device_sync(device);
                    const double t0 = now_ms();
                    mix_apply(model, st, mix);
                    device_sync(device);
                    const double ms_r = now_ms() - t0;
                    if (r == 0) {
                        b.first_ms = ms_r;
                    } else {
                        warm.push_back(ms_r);
                    }
                    if (r == 1) bytes = switch_bytes(before, st);
                }
                for (const auto& [_, l] : st.layers) b.union_nnz += l.shira_union.defined() ? l.shira_union.numel() : 0;
                b.warm = timing_of(warm, bytes);
                out.push_back(b);
            }
            mix_clear(model, st);
            return out;
        };
        const std::vector<Blend> sh = time_blend(shira_n), lo = time_blend(lora_n);
        for (size_t i = 0; i < ns.size(); ++i) {
            Json r = common;
            r.update({{"name", "blend_n"},
                      {"threads", T},
                      {"n", ns[i]},
                      {"mask", "rand"},
                      {"density", density},
                      {"reps", blend_reps - 1},
                      {"nnz_total", shira_n[0].trainable() * ns[i]},
                      {"union_nnz", sh[i].union_nnz},
                      {"lora_params_total", lora_n[0].trainable() * ns[i]},
                      {"shira_first_ms", sh[i].first_ms},
                      {"lora_first_ms", lo[i].first_ms},
                      {"shira_switch_ms", sh[i].warm.median_ms},
                      {"lora_switch_ms", lo[i].warm.median_ms},
                      {"ratio", lo[i].warm.median_ms / std::max(sh[i].warm.median_ms, 1e-9)},
                      {"single_switch_ms", rand_switch_ms},
                      {"vs_single_switch", sh[i].warm.median_ms / std::max(rand_switch_ms, 1e-9)},
                      {"limit_gbps", bw.limit()}});
            bound(r, "", sh[i].warm);
            push(r);
        }
        // Warm α change: B's α changes; only B's layers are re-blended (the union is kept, so the kept base is
        // rewritten with the new sum). "full" is clear + apply of both.
        const int64_t alpha_reps = quick ? 3 : reps;  // each rep also pays a full LoRA re-blend twice
        auto time_alpha = [&](const Adapter& a, const Adapter& b, Timing& inc_t, double& full_ms, MixStats& stats) {
            MixState            st;
            std::vector<double> inc, full;
            int64_t             bytes = 0;
            mix_apply(model, st, {{&a, 1.0}, {&b, 1.0}});
            for (int64_t r = 0; r < alpha_reps; ++r) {
                stop_check();
                const double alpha  = r % 2 == 0 ? 0.5 : 1.0;
                const auto   before = snapshot_unions(st);
                device_sync(device);
                double t0 = now_ms();
                mix_apply(model, st, {{&a, 1.0}, {&b, alpha}}, &stats);
                device_sync(device);
                inc.push_back(now_ms() - t0);
                bytes             = switch_bytes(before, st);
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
            inc_t   = timing_of(inc, bytes);
            full_ms = median(full);
        };
        Timing   s_inc, l_inc;
        double   s_full = 0, l_full = 0;
        MixStats s_stats, l_stats;
        time_alpha(sa2, sb2, s_inc, s_full, s_stats);
        time_alpha(la2, lb2, l_inc, l_full, l_stats);
        l_inc.bytes = lora_switch_bytes(model, lb2);
        Json r      = common;
        r.update({{"name", "alpha_change"},
                  {"threads", T},
                  {"n", 2},
                  {"mask", "rand"},
                  {"density", density},
                  {"reps", alpha_reps},
                  {"shira_switch_ms", s_inc.median_ms},
                  {"lora_switch_ms", l_inc.median_ms},
                  {"ratio", l_inc.median_ms / std::max(s_inc.median_ms, 1e-9)},
                  {"ratio_target", 10},
                  {"shira_full_ms", s_full},
                  {"lora_full_ms", l_full},
                  {"layers_reblended", s_stats.layers_reblended},
                  {"layers_total", s_stats.layers_reblended + s_stats.layers_unchanged},
                  {"changed_adapter_params", sb2.trainable()},
                  {"mix_params", sa2.trainable() + sb2.trainable()},
                  {"limit_gbps", bw.limit()}});
        bound(r, "", s_inc);
        bound(r, "lora_", l_inc);
        push(r);
    }
    torch::set_num_threads(threads_before);
}
