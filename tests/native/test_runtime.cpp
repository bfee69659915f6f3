// runtime/: training (every method and mask through op "train"), caption tag dropout and category balance,
// checkpoint + resume bit for bit, samplers.
#include "test_util.h"

#include <filesystem>

#include "model_io/adapter_file.h"
#include "model_io/images.h"
#include "runtime/loss.h"
#include "runtime/sampler.h"
#include "runtime/train_data.h"
#include "worker/worker.h"

namespace {

double eval_loss(DiffusionModel& m, const std::string& data_path) {
    torch::NoGradGuard g;
    SafeTensors        st    = safetensors_load(data_path);
    torch::Tensor      x0    = images_to_model(st.tensors.at("images"));
    auto               caps  = Json::parse(st.metadata.at("captions")).get<std::vector<std::string>>();
    NoiseSchedule      noise = noise_schedule_init(m.config.diffusion);
    at::Generator      gen   = at::detail::createCPUGenerator(99);
    double             total = 0;
    for (int rep = 0; rep < 8; ++rep) total += diffusion_loss(m, noise, x0, m.text->encode(caps), gen).item<double>();
    return total / 8;
}

SHIRA_TEST(train) {
    const std::string data = write_dataset();
    WorkerState       st(torch::kCPU);
    auto              emit_count = std::make_shared<int>(0);
    EmitFn            emit       = [emit_count](const Json& e) {
        if (e.value("event", "") == "progress") ++*emit_count;
    };
    Json cfg = model_config_to_json(tiny_config());
    worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}}, emit);
    auto              w0     = snapshot(*st.model);
    const double      before = eval_loss(*st.model, data);
    const std::string out    = kTmp + "-shira.safetensors";
    Json              r      = worker_run_op(st, "train",
                                             {{"data", data},
                                              {"out", out},
                                              {"method", "shira"},
                                              {"mask", "struct"},
                                              {"density", 0.05},
                                              {"steps", 50},
                                              {"lr", 3e-3},
                                              {"batch", 4},
                                              {"seed", 1},
                                              {"progress_every", 10}},
                                             emit);
    EXPECT(bit_identical(*st.model, w0));  // training leaves the resident base untouched afterwards
    worker_run_op(st, "apply_mix", {{"adapters", {{{"path", out}, {"alpha", 1.0}}}}}, emit);
    const double after = eval_loss(*st.model, data);
    worker_run_op(st, "clear_mix", Json::object(), emit);
    std::printf(
        "  SHiRA-Struct 50 steps: eval loss %.4f -> %.4f (train loss %.4f -> %.4f), %d progress events, %.1f s\n",
        before, after, r["first_loss"].get<double>(), r["final_loss"].get<double>(), *emit_count,
        r["seconds"].get<double>());
    EXPECT(after < before);
    EXPECT(*emit_count == 5);
    for (const auto& gp : r["grad_paths"]) {
        std::printf("    %-70s %-6s sparse %.3f ms dense %.3f ms\n", gp["layer"].get<std::string>().c_str(),
                    gp["path"].get<std::string>().c_str(), gp["sparse_ms"].get<double>(), gp["dense_ms"].get<double>());
    }
    // Every other method/mask runs end to end for a few steps (Grad/SNIP with calibration; non-overlap; LoRA).
    for (const char* mask : {"rand", "wm", "grad", "snip"}) {
        Json    args = {{"data", data},
                        {"out", kTmp + "-" + mask + ".safetensors"},
                        {"mask", mask},
                        {"steps", 3},
                        {"calib_batches", 2},
                        {"exclude", {out}},
                        {"grad_path", std::string(mask) == "rand" ? "sparse" : "auto"}};
        Json    res  = worker_run_op(st, "train", args, emit);
        Adapter a = adapter_load(kTmp + "-" + mask + ".safetensors"), s = adapter_load(out);
        for (auto& [name, t] : a.shira) {
            torch::Tensor both = torch::cat({t.idx, s.shira.at(name).idx});
            EXPECT(std::get<0>(torch::_unique2(both)).numel() == both.numel());  // disjoint from the excluded adapter
        }
        EXPECT(res["trainable"].get<int64_t>() == a.trainable());
    }
    // Caption tag dropout and category balance: the helpers, then a run with both (needs categories).
    const float keep_first[] = {0.9f, 0.1f, 0.2f}, drop_all[] = {0.1f, 0.3f, 0.2f};
    EXPECT(caption_drop_tags("red bird,  birds , animals", keep_first, 3, 0.5) == "red bird");
    EXPECT(caption_drop_tags("red bird, birds, animals", drop_all, 3, 0.5) == "birds");  // one tag always stays
    EXPECT(caption_drop_tags("red bird, birds, animals", drop_all, 2, 0.5) == "birds, animals");  // past u: kept
    EXPECT(caption_drop_tags("red bird, birds, animals", drop_all, 3, 0.0) == "red bird, birds, animals");
    EXPECT(caption_drop_tags("one tag only", drop_all, 3, 1.0) == "one tag only");
    // A tag holding a keep word (the trigger) always stays, wherever it sits and in any case; it then replaces the
    // "largest u stays" rule, so the trigger alone is what the model sees when every other tag drops.
    EXPECT(caption_drop_tags("inkfx, red bird, birds", drop_all, 3, 0.5, {"inkfx"}) == "inkfx");
    EXPECT(caption_drop_tags("red bird, InkFX style, birds", drop_all, 3, 0.5, {"inkfx"}) == "InkFX style");
    EXPECT(caption_drop_tags("inkfxes, red bird, birds", drop_all, 3, 0.5, {"inkfx"}) ==
           "red bird");  // whole words only
    const float keep_second[] = {0.1f, 0.9f, 0.2f};
    EXPECT(caption_drop_tags("inkfx, red bird, birds", keep_second, 3, 0.5, {"inkfx"}) == "inkfx, red bird");
    torch::Tensor w = category_weights({"a", "a", "a", "b"}, 1.0);
    EXPECT(std::abs(w.slice(0, 0, 3).sum().item<double>() - w[3].item<double>()) < 1e-12);  // categories drawn equally
    EXPECT(category_weights({"a", "a", "b"}, 0.0).eq(1.0).all().item<bool>());
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
        worker_run_op(st, "train",
                      {{"data", data}, {"out", kTmp + "-b.safetensors"}, {"steps", 1}, {"category_balance", 0.5}},
                      emit);
    }));
    // Precision names are checked before anything runs; bf16 autocast exists only on CUDA, so the bench refuses it
    // here.
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
        worker_run_op(st, "train",
                      {{"data", data}, {"out", kTmp + "-b.safetensors"}, {"steps", 1}, {"precision", "fp16"}}, emit);
    }));
    EXPECT(!std::filesystem::exists(kTmp + "-b.safetensors"));
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
        worker_run_op(st, "bench", {{"kind", "train"}, {"precision", "bf16"}}, emit);
    }));
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
        worker_run_op(st, "bench", {{"kind", "train"}, {"precision", "fp16"}}, emit);
    }));
    {
        SafeTensors              d = safetensors_load(data);
        std::vector<std::string> cats;
        for (int i = 0; i < 8; ++i) cats.push_back(i % 3 == 0 ? "red" : "other");
        d.metadata["categories"] = Json(cats).dump();
        safetensors_save(kTmp + "-cat-data.safetensors", d.tensors, d.metadata);
        Json res = worker_run_op(st, "train",
                                 {{"data", kTmp + "-cat-data.safetensors"},
                                  {"out", kTmp + "-b.safetensors"},
                                  {"steps", 2},
                                  {"category_balance", 0.5},
                                  {"caption_tag_dropout", 0.5},
                                  {"caption_keep_words", {"red"}}},
                                 emit);
        EXPECT(std::isfinite(res["final_loss"].get<double>()));
        EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
            worker_run_op(
                st, "train",
                {{"data", data}, {"out", kTmp + "-b2.safetensors"}, {"steps", 1}, {"caption_keep_words", "red"}}, emit);
        }));
    }
    Json lr = worker_run_op(st, "train",
                            {{"data", data},
                             {"out", kTmp + "-lora.safetensors"},
                             {"method", "lora"},
                             {"match_density", 0.05},
                             {"steps", 3}},
                            emit);
    EXPECT(lr["trainable"].get<int64_t>() > 0);
    EXPECT(bit_identical(*st.model, w0));
    // Cancel takes effect before the next step.
    st.cancel = true;
    EXPECT(throws_type(ERROR_TYPE_CANCELLED, [&] {
        worker_run_op(st, "train", {{"data", data}, {"out", kTmp + "-c.safetensors"}, {"steps", 100}}, emit);
    }));
    st.cancel = false;
    EXPECT(bit_identical(*st.model, w0));
}

// Full fine-tune: K steps straight vs K/2, a "kill" (cancel right after the checkpoint), resume, K/2 more,
// with EMA, flip and sampling on; the saved models must be bit-identical.
SHIRA_TEST(resume) {
    const std::string data = write_dataset();
    Json              cfg  = model_config_to_json(tiny_config());
    const std::string ck = kTmp + "-ck.safetensors", a_out = kTmp + "-fullA.safetensors",
                      b_out = kTmp + "-fullB.safetensors";
    const std::string sdir  = kTmp + "-samples";
    Json              base  = {{"data", data}, {"method", "full"}, {"steps", 6}, {"batch", 2},
                               {"lr", 1e-3},   {"seed", 3},        {"ema", 0.9}, {"flip", true}};
    EmitFn            quiet = [](const Json&) {};
    {
        WorkerState st(torch::kCPU);
        worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}}, quiet);
        Json args   = base;
        args["out"] = a_out;
        worker_run_op(st, "train", args, quiet);
    }
    std::vector<Json> events;
    {
        WorkerState st(torch::kCPU);
        worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}}, quiet);
        Json args                = base;
        args["out"]              = kTmp + "-never.safetensors";
        args["checkpoint_every"] = 3;
        args["checkpoint"]       = ck;
        args["sample_every"]     = 3;
        args["sample_prompts"]   = "red square, small|blue square";
        args["sample_steps"]     = 2;
        args["sample_dir"]       = sdir;
        EmitFn kill              = [&](const Json& e) {
            events.push_back(e);
            if (e.value("event", "") == "checkpoint") st.cancel = true;
        };
        EXPECT(throws_type(ERROR_TYPE_CANCELLED, [&] { worker_run_op(st, "train", args, kill); }));
    }
    {
        WorkerState st(torch::kCPU);  // a fresh process: fresh init from the config, then resume
        worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 99}}, quiet);
        Json args              = base;
        args["out"]            = b_out;
        args["resume"]         = ck;
        args["sample_every"]   = 3;
        args["sample_prompts"] = Json::array({"red square, small", "blue square"});
        args["sample_steps"]   = 2;
        args["sample_dir"]     = sdir;
        Json r                 = worker_run_op(st, "train", args, [&](const Json& e) { events.push_back(e); });
        EXPECT(r["start_step"] == 3);
    }
    SafeTensors A = safetensors_load(a_out), B = safetensors_load(b_out);
    double      worst = 0;
    bool        same  = A.tensors.size() == B.tensors.size();
    for (const auto& [k, t] : A.tensors) {
        same = same && B.tensors.count(k) && torch::equal(t, B.tensors.at(k));
        if (B.tensors.count(k)) worst = std::max(worst, maxdiff(t, B.tensors.at(k)));
    }
    std::printf("  full fine-tune 6 steps straight vs 3 + kill + resume + 3 (EMA 0.9, flip): %s, maxdiff %.3e\n",
                same ? "bit-identical" : "DIFFERENT", worst);
    EXPECT(same);
    int samples = 0;
    for (const auto& e : events) {
        if (e.value("event", "") != "sample") continue;
        ++samples;
        SafeTensors im = safetensors_load(e["path"].get<std::string>());
        EXPECT(im.tensors.at("images").sizes() == torch::IntArrayRef({2, 16, 16, 3}));
    }
    EXPECT(samples == 2);  // steps 3 (before the kill) and 6
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] {
        WorkerState st(torch::kCPU);
        worker_run_op(st, "load_model", {{"config", cfg}}, quiet);
        Json args      = base;
        args["out"]    = b_out;
        args["resume"] = ck;
        args["steps"]  = 8;  // another schedule: refused
        worker_run_op(st, "train", args, quiet);
    }));
}

SHIRA_TEST(sample) {
    auto          model = model_init(tiny_config(), 6, torch::kCPU);
    NoiseSchedule s     = noise_schedule_init(model->config.diffusion);
    SampleParams  p;
    p.prompts       = {"red square"};
    p.batch         = 2;
    p.steps         = 5;
    p.seed          = 42;
    torch::Tensor a = sample_images(*model, s, p);
    torch::Tensor b = sample_images(*model, s, p);
    p.seed          = 43;
    torch::Tensor c = sample_images(*model, s, p);
    EXPECT(a.scalar_type() == torch::kUInt8 && a.sizes() == torch::IntArrayRef({2, 16, 16, 3}));
    EXPECT(torch::equal(a, b));
    EXPECT(!torch::equal(a, c));
    std::printf("  ddim: same seed -> identical uint8 images; other seed -> %lld of %lld bytes differ\n",
                (long long)a.ne(c).sum().item<int64_t>(), (long long)a.numel());
    // Euler: deterministic per seed, different from DDIM's images, guidance changes the result.
    p.sampler        = SAMPLER_TYPE_EULER;
    p.seed           = 42;
    torch::Tensor e1 = sample_images(*model, s, p), e2 = sample_images(*model, s, p);
    p.seed           = 43;
    torch::Tensor e3 = sample_images(*model, s, p);
    p.seed           = 42;
    p.guidance       = 1.0;
    torch::Tensor e4 = sample_images(*model, s, p);
    EXPECT(e1.sizes() == a.sizes() && torch::equal(e1, e2));
    EXPECT(!torch::equal(e1, e3) && !torch::equal(e1, e4) && !torch::equal(e1, a));
    std::printf(
        "  euler: same seed identical; other seed %lld, guidance 1 vs 5 %lld, euler vs ddim %lld bytes differ\n",
        (long long)e1.ne(e3).sum().item<int64_t>(), (long long)e1.ne(e4).sum().item<int64_t>(),
        (long long)e1.ne(a).sum().item<int64_t>());
    // v-prediction models sample through both samplers.
    Json v                            = model_config_to_json(tiny_config());
    v["diffusion"]["prediction_type"] = "v_prediction";
    auto vm                           = model_init(model_config_from_json(v), 6, torch::kCPU);
    for (SamplerType sampler : {SAMPLER_TYPE_DDIM, SAMPLER_TYPE_EULER}) {
        p.sampler = sampler;
        EXPECT(sample_images(*vm, noise_schedule_init(vm->config.diffusion), p).sizes() == a.sizes());
    }
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [] { str_to_sampler_type("plms"); }));
}

// SHiRA (SNIP mask with calibration, sparse gradient) and LoRA: K straight steps vs K/2 + kill + resume + K/2.
SHIRA_TEST(resume_adapter) {
    const std::string data  = write_dataset();
    Json              cfg   = model_config_to_json(tiny_config());
    EmitFn            quiet = [](const Json&) {};
    for (const char* method : {"shira", "lora"}) {
        const std::string ck = kTmp + "-ck-" + method + ".safetensors", a_out = kTmp + "-" + method + "A.safetensors",
                          b_out = kTmp + "-" + method + "B.safetensors",
                          never = kTmp + "-" + method + "-never.safetensors";
        Json base               = {{"data", data},
                                   {"method", method},
                                   {"steps", 6},
                                   {"batch", 2},
                                   {"lr", 3e-3},
                                   {"seed", 5},
                                   {"flip", true},
                                   {"values_dtype", "f32"},
                                   {"mask", "snip"},
                                   {"calib_batches", 2},
                                   {"grad_path", "sparse"},
                                   {"rank", 2}};
        {
            WorkerState st(torch::kCPU);
            worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}, {"identity", "base-xyz"}}, quiet);
            Json args   = base;
            args["out"] = a_out;
            worker_run_op(st, "train", args, quiet);
        }
        std::remove(never.c_str());
        {
            WorkerState st(torch::kCPU);
            worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}}, quiet);
            Json args                = base;
            args["out"]              = never;
            args["checkpoint_every"] = 3;
            args["checkpoint"]       = ck;
            EmitFn kill              = [&](const Json& e) {
                if (e.value("event", "") == "checkpoint") st.cancel = true;
            };
            EXPECT(throws_type(ERROR_TYPE_CANCELLED, [&] { worker_run_op(st, "train", args, kill); }));
        }
        EXPECT(!std::ifstream(never).good());  // `out` is written only at the end
        {
            WorkerState st(torch::kCPU);
            worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}, {"identity", "base-xyz"}}, quiet);
            auto w0        = snapshot(*st.model);
            Json args      = base;
            args["out"]    = b_out;
            args["resume"] = ck;
            Json r         = worker_run_op(st, "train", args, quiet);
            EXPECT(r["start_step"] == 3);
            EXPECT(bit_identical(*st.model, w0));
        }
        SafeTensors A = safetensors_load(a_out), B = safetensors_load(b_out);
        double      worst = 0;
        bool        same  = A.tensors.size() == B.tensors.size() && A.metadata == B.metadata;
        for (const auto& [k, t] : A.tensors) {
            same = same && B.tensors.count(k) && torch::equal(t, B.tensors.at(k));
            if (B.tensors.count(k)) worst = std::max(worst, maxdiff(t, B.tensors.at(k)));
        }
        std::printf("  %s 6 steps straight vs 3 + kill + resume + 3: %s, maxdiff %.3e; base_identity '%s'\n", method,
                    same ? "bit-identical" : "DIFFERENT", worst, A.metadata["base_identity"].c_str());
        EXPECT(same);
        EXPECT(A.metadata["base_identity"] == "base-xyz" && A.metadata["format_version"] == "2");
        // Other settings or other masks are refused with a reason.
        WorkerState st(torch::kCPU);
        worker_run_op(st, "load_model", {{"config", cfg}, {"seed", 7}}, quiet);
        Json args      = base;
        args["out"]    = b_out;
        args["resume"] = ck;
        args["lr"]     = 1e-3;
        expect_bad(
            "resume with another lr", [&] { worker_run_op(st, "train", args, quiet); }, "lr");
        if (std::string(method) == "shira") {
            // Other data: the SNIP calibration picks other entries, so the re-attached masks differ.
            torch::Tensor     images = torch::randint(0, 256, {8, 16, 16, 3}).to(torch::kUInt8);
            const std::string other  = kTmp + "-data2.safetensors";
            safetensors_save(other, {{"images", images}});
            args           = base;
            args["out"]    = b_out;
            args["resume"] = ck;
            args["data"]   = other;
            expect_bad(
                "resume with masks that differ", [&] { worker_run_op(st, "train", args, quiet); }, "mask of layer");
            args           = base;
            args["method"] = "lora";
            args["out"]    = b_out;
            args["resume"] = ck;
            expect_bad(
                "resume a shira checkpoint as lora", [&] { worker_run_op(st, "train", args, quiet); }, "method");
        }
    }
}

}  // namespace
