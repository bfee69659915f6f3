// model/ and tokenizers/: diffusers/CLIP parameter names, save/load, the word tokenizer and its spare buckets,
// config validation, v-prediction.
#include "test_util.h"

#include "core/hash.h"
#include "model_io/model_file.h"
#include "runtime/loss.h"
#include "tokenizers/word_tokenizer.h"

namespace {

SHIRA_TEST(model) {
    auto model = model_init(tiny_config(), 5, torch::kCPU);
    auto names = model->named_parameters();
    for (const char* k :
         {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
          "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.weight",
          "unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
          "unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.weight",
          "unet.mid_block.attentions.0.proj_in.weight", "unet.up_blocks.0.resnets.1.conv_shortcut.weight",
          "unet.down_blocks.0.downsamplers.0.conv.weight", "unet.up_blocks.0.upsamplers.0.conv.weight",
          "unet.time_embedding.linear_1.weight", "unet.down_blocks.0.resnets.0.time_emb_proj.weight",
          "text_encoder.encoder.layers.0.self_attn.q_proj.weight", "text_encoder.embeddings.token_embedding.weight"}) {
        if (!names.count(k)) std::fprintf(stderr, "  missing parameter %s\n", k);
        EXPECT(names.count(k));
    }
    EXPECT(names.at("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight").size(1) ==
           32);  // context dim
    Probe         p = make_probe(*model);
    torch::Tensor y = model->predict(p.x, p.t, p.ctx).detach();
    EXPECT(y.sizes() == p.x.sizes());
    const std::string path = kTmp + "-model.safetensors";
    model_save(*model, path);
    auto back = model_load(path, torch::kCPU);
    check_close("model save/load forward", back->predict(p.x, p.t, p.ctx).detach(), y, 0);
    WordTokenizer tok({"red", "square"});
    EXPECT((tok.encode("Red, SQUARE! dog", 6) == std::vector<int64_t>{2, 4, 5, 1, 3, 0}));
    EXPECT((tok.encode("red red red red red red", 4) == std::vector<int64_t>{2, 4, 4, 3}));
    // Spare buckets: an unknown word gets vocab.size() + FNV-1a64(word) % buckets, stable and distinct from <unk>.
    WordTokenizer spare({"red", "square"}, 64);
    const int64_t nv = (int64_t)spare.vocab.size();
    auto ink = spare.encode("red inkfx", 5), ink2 = spare.encode("InkFX square", 5), zorp = spare.encode("zorp", 4);
    EXPECT(spare.num_ids() == nv + 64);
    EXPECT(ink[2] == nv + (int64_t)(fnv1a64("inkfx") % 64) && ink[2] == ink2[1] && ink[2] != WordTokenizer::kUnk);
    EXPECT(zorp[1] >= nv && zorp[1] < nv + 64 && zorp[1] != ink[2]);
    EXPECT(fnv1a64("") == 14695981039346656037ull &&
           fnv1a64("a") == 0xaf63dc4c8601ec8cull);  // published FNV-1a 64 vectors
    EXPECT(model->config.text.spare_buckets == 64 &&
           names.at("text_encoder.embeddings.token_embedding.weight").size(0) ==
               (int64_t)model->config.text.vocab.size() + 4 + 64);
    {
        torch::NoGradGuard g;
        torch::Tensor      e = model->text->encode({"inkfx", "inkfx", "zorp"});
        // Not bit-exact: the GEMM kernels may block batch rows differently (3.6e-7 seen on an AMD EPYC with
        // OMP_NUM_THREADS=1), so rows of one batch agree to float rounding, far below the 1e-3 that tells words apart.
        check_close("same unknown word -> same context", e[0], e[1], 1e-5);
        EXPECT(maxdiff(e[0], e[2]) > 1e-3);
        std::printf("  spare buckets: 'inkfx' -> id %lld, 'zorp' -> id %lld (vocab %lld + 64)\n", (long long)ink[2],
                    (long long)zorp[1], (long long)nv);
    }
    // A file written before spare buckets existed (config without the field) still loads, with none.
    {
        Json old                             = model_config_to_json(tiny_config());
        old["text_encoder"]["spare_buckets"] = 0;
        auto om                              = model_init(model_config_from_json(old), 1, torch::kCPU);
        model_save(*om, path);
        SafeTensors raw = safetensors_load(path);
        Json        cfg = Json::parse(raw.metadata.at("config"));
        cfg["text_encoder"].erase("spare_buckets");
        raw.metadata["config"] = cfg.dump();
        safetensors_save(path, raw.tensors, raw.metadata);
        EXPECT(model_load(path, torch::kCPU)->config.text.spare_buckets == 0);
    }
    Json bad                       = model_config_to_json(tiny_config());
    bad["unet"]["norm_num_groups"] = 7;
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { model_config_from_json(bad); }));
    bad                                 = model_config_to_json(tiny_config());
    bad["diffusion"]["prediction_type"] = "x0";
    EXPECT(throws_type(ERROR_TYPE_BAD_INPUT, [&] { model_config_from_json(bad); }));
    // v-prediction configs train and sample through the same code.
    Json v                            = model_config_to_json(tiny_config());
    v["diffusion"]["prediction_type"] = "v_prediction";
    auto          vm                  = model_init(model_config_from_json(v), 5, torch::kCPU);
    at::Generator gen                 = at::detail::createCPUGenerator(0);
    EXPECT(std::isfinite(diffusion_loss(*vm, noise_schedule_init(vm->config.diffusion), torch::zeros({1, 3, 16, 16}),
                                        vm->text->encode({"red"}), gen)
                             .item<double>()));
}

}  // namespace
