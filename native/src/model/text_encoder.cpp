// The word text encoder (text_encoder.h): CLIPTextModel's pre-LayerNorm transformer layers over word ids, without
// CLIP's causal mask (tests/reference/model.py and src/main/core/ort/export.ts do the same).
#include "model/text_encoder.h"

#include "model/attention.h"
#include "model/layer.h"
#include "tokenizers/word_tokenizer.h"

namespace nn = torch::nn;

namespace {

struct CLIPLayerImpl : nn::Module {
    CLIPLayerImpl(int64_t w, int64_t heads) : heads(heads) {
        layer_norm1 = register_module("layer_norm1", nn::LayerNorm(nn::LayerNormOptions({w})));
        auto attn   = std::make_shared<nn::Module>();
        q_proj      = attn->register_module("q_proj", Layer(LAYER_KIND_LINEAR, w, w));
        k_proj      = attn->register_module("k_proj", Layer(LAYER_KIND_LINEAR, w, w));
        v_proj      = attn->register_module("v_proj", Layer(LAYER_KIND_LINEAR, w, w));
        out_proj    = attn->register_module("out_proj", Layer(LAYER_KIND_LINEAR, w, w));
        register_module("self_attn", attn);
        layer_norm2 = register_module("layer_norm2", nn::LayerNorm(nn::LayerNormOptions({w})));
        auto mlp    = std::make_shared<nn::Module>();
        fc1         = mlp->register_module("fc1", Layer(LAYER_KIND_LINEAR, w, 4 * w));
        fc2         = mlp->register_module("fc2", Layer(LAYER_KIND_LINEAR, 4 * w, w));
        register_module("mlp", mlp);
    }
    torch::Tensor forward(torch::Tensor x) {
        torch::Tensor h = layer_norm1(x);
        x               = x + out_proj(attention(q_proj(h), k_proj(h), v_proj(h), heads));
        return x + fc2(torch::gelu(fc1(layer_norm2(x))));
    }
    int64_t       heads;
    nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
    Layer         q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr}, fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(CLIPLayer);

struct WordTextEncoderModuleImpl : nn::Module {
    explicit WordTextEncoderModuleImpl(const TextConfig& c) {
        WordTokenizer tok(c.vocab, c.spare_buckets);
        auto          embeddings = std::make_shared<nn::Module>();
        token_embedding    = embeddings->register_module("token_embedding", nn::Embedding(tok.num_ids(), c.width));
        position_embedding = embeddings->register_module("position_embedding", nn::Embedding(c.max_length, c.width));
        register_module("embeddings", embeddings);
        auto encoder = std::make_shared<nn::Module>();
        layers       = encoder->register_module("layers", nn::ModuleList());
        for (int64_t i = 0; i < c.layers; ++i) layers->push_back(CLIPLayer(c.width, c.heads));
        register_module("encoder", encoder);
        final_layer_norm = register_module("final_layer_norm", nn::LayerNorm(nn::LayerNormOptions({c.width})));
    }
    // ids [B, L] -> [B, L, D]
    torch::Tensor forward(const torch::Tensor& ids) {
        torch::Tensor pos = torch::arange(ids.size(1), ids.options());
        torch::Tensor x   = token_embedding(ids) + position_embedding(pos).unsqueeze(0);
        for (auto& layer : *layers) x = layer->as<CLIPLayerImpl>()->forward(x);
        return final_layer_norm(x);
    }
    nn::Embedding  token_embedding{nullptr}, position_embedding{nullptr};
    nn::ModuleList layers{nullptr};
    nn::LayerNorm  final_layer_norm{nullptr};
};
TORCH_MODULE(WordTextEncoderModule);

struct WordTextEncoder : TextEncoder {
    explicit WordTextEncoder(const TextConfig& c) : config(c), tokenizer(c.vocab, c.spare_buckets), net(c) {}
    torch::Tensor encode(const std::vector<std::string>& prompts) override {
        std::vector<int64_t> ids;
        for (const auto& p : prompts) {
            auto row = tokenizer.encode(p, config.max_length);
            ids.insert(ids.end(), row.begin(), row.end());
        }
        const auto    device = net->token_embedding->weight.device();
        torch::Tensor t      = torch::tensor(ids, torch::kInt64).view({(int64_t)prompts.size(), config.max_length});
        return net->forward(t.to(device));
    }
    int64_t                     dim() const override { return config.width; }
    std::shared_ptr<nn::Module> module() override { return net.ptr(); }
    TextConfig                  config;
    WordTokenizer               tokenizer;
    WordTextEncoderModule       net;
};

}  // namespace

std::shared_ptr<TextEncoder> word_text_encoder_init(const TextConfig& config) {
    return std::make_shared<WordTextEncoder>(config);
}
