#include "model/diffusion_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <regex>

#include "core/errors.h"
#include "model_io/safetensors.h"

using json = nlohmann::json;
namespace nn = torch::nn;

const std::vector<std::string> kDefaultTargets = {"to_q", "to_k",     "to_v",    "to_out.0",
                                                  "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"};

// ---------------------------------------------------------------------------------------------
// Layer

LayerImpl::LayerImpl(LayerKind kind, int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                     bool has_bias)
    : kind(kind), in_features(in), out_features(out), kernel(kernel), stride(stride), padding(padding) {
    // Same init as torch.nn (kaiming_uniform with a=√5 ⇒ U(-1/√fan_in, 1/√fan_in)).
    const int64_t fan_in = in * kernel * kernel;
    const double  bound  = 1.0 / std::sqrt((double)fan_in);
    if (kind == LAYER_KIND_LINEAR) {
        weight = register_parameter("weight", torch::empty({out, in}).uniform_(-bound, bound));
    } else {
        weight = register_parameter("weight", torch::empty({out, in, kernel, kernel}).uniform_(-bound, bound));
    }
    if (has_bias) bias = register_parameter("bias", torch::empty({out}).uniform_(-bound, bound));
}

torch::Tensor LayerImpl::base_forward(const torch::Tensor& x) const {
    if (kind == LAYER_KIND_LINEAR) return torch::linear(x, weight, bias);
    return torch::conv2d(x, weight, bias, stride, padding);
}

torch::Tensor LayerImpl::forward(const torch::Tensor& x) {
    torch::Tensor y = shira ? shira_layer_forward(*this, x) : base_forward(x);
    if (lora) {
        torch::Tensor h;
        if (kind == LAYER_KIND_LINEAR) {
            h = torch::linear(torch::linear(x, lora->A), lora->B);
        } else {
            h = torch::conv2d(torch::conv2d(x, lora->A, {}, stride, padding), lora->B);
        }
        y = y + lora->scale * h;
    }
    return y;
}

// ---------------------------------------------------------------------------------------------
// Config

namespace {

template <typename T>
T get_or(const json& j, const char* key, T fallback) {
    if (!j.contains(key)) return fallback;
    try {
        return j.at(key).get<T>();
    } catch (const std::exception&) {
        throw_bad_input(std::string("model config: field '") + key + "' has the wrong type");
    }
}

void check(bool ok, const std::string& message) {
    if (!ok) throw_bad_input("model config: " + message);
}

}  // namespace

ModelConfig model_config_from_json(const json& j) {
    check(j.is_object(), "must be a JSON object");
    ModelConfig c;
    c.name          = get_or<std::string>(j, "name", c.name);
    const json unet = j.value("unet", json::object());
    const json text = j.value("text_encoder", json::object());
    const json diff = j.value("diffusion", json::object());
    check(unet.is_object() && text.is_object() && diff.is_object(), "unet/text_encoder/diffusion must be objects");

    UNetConfig& u           = c.unet;
    u.sample_size           = get_or(unet, "sample_size", u.sample_size);
    u.in_channels           = get_or(unet, "in_channels", u.in_channels);
    u.out_channels          = get_or(unet, "out_channels", u.out_channels);
    u.block_out_channels    = get_or(unet, "block_out_channels", u.block_out_channels);
    u.attention             = get_or(unet, "attention", std::vector<bool>(u.block_out_channels.size(), true));
    u.layers_per_block      = get_or(unet, "layers_per_block", u.layers_per_block);
    u.attention_heads       = get_or(unet, "attention_heads", u.attention_heads);
    u.norm_num_groups       = get_or(unet, "norm_num_groups", u.norm_num_groups);
    u.use_linear_projection = get_or(unet, "use_linear_projection", u.use_linear_projection);
    u.patch_size            = get_or(unet, "patch_size", u.patch_size);
    const size_t levels     = u.block_out_channels.size();
    check(levels >= 1 && levels <= 6, "unet.block_out_channels needs 1..6 entries");
    check(u.attention.size() == levels, "unet.attention must have one entry per block_out_channels entry");
    check(u.layers_per_block >= 1 && u.layers_per_block <= 8, "unet.layers_per_block must be in 1..8");
    check(u.in_channels >= 1 && u.out_channels >= 1, "unet channels must be positive");
    check(u.norm_num_groups >= 1, "unet.norm_num_groups must be positive");
    for (int64_t ch : u.block_out_channels) {
        check(ch > 0 && ch % u.norm_num_groups == 0, "every block_out_channels entry must be a multiple of norm_num_groups");
        check(ch % u.attention_heads == 0, "every block_out_channels entry must be a multiple of attention_heads");
    }
    check(u.patch_size >= 1 && u.patch_size <= 8, "unet.patch_size must be in 1..8");
    const int64_t down = (1ll << (levels - 1)) * u.patch_size;
    check(u.sample_size >= down && u.sample_size % down == 0,
          "unet.sample_size must be a multiple of patch_size * 2^(levels-1) = " + std::to_string(down));

    TextConfig& t = c.text;
    t.vocab       = get_or(text, "vocab", t.vocab);
    t.width       = get_or(text, "width", t.width);
    t.layers      = get_or(text, "layers", t.layers);
    t.heads       = get_or(text, "heads", t.heads);
    t.max_length  = get_or(text, "max_length", t.max_length);
    t.spare_buckets = get_or(text, "spare_buckets", t.spare_buckets);
    check(t.spare_buckets >= 0 && t.spare_buckets <= 65536, "text_encoder.spare_buckets must be in 0..65536");
    check(t.width > 0 && t.heads > 0 && t.width % t.heads == 0, "text_encoder.width must be a multiple of heads");
    check(t.layers >= 0 && t.layers <= 24, "text_encoder.layers must be in 0..24");
    check(t.max_length >= 2 && t.max_length <= 512, "text_encoder.max_length must be in 2..512");

    DiffusionConfig& d    = c.diffusion;
    d.num_train_timesteps = get_or(diff, "num_train_timesteps", d.num_train_timesteps);
    d.beta_start          = get_or(diff, "beta_start", d.beta_start);
    d.beta_end            = get_or(diff, "beta_end", d.beta_end);
    d.beta_schedule       = get_or(diff, "beta_schedule", d.beta_schedule);
    const std::string prediction = get_or<std::string>(diff, "prediction_type", "epsilon");
    check(prediction == "epsilon" || prediction == "v_prediction",
          "diffusion.prediction_type must be 'epsilon' or 'v_prediction'");
    d.prediction_type = prediction == "epsilon" ? PREDICTION_TYPE_EPSILON : PREDICTION_TYPE_V;
    d.sigma_data      = get_or(diff, "sigma_data", d.sigma_data);
    check(d.sigma_data > 0 && d.sigma_data <= 10, "diffusion.sigma_data must be in (0, 10]");
    check(d.sigma_data == 1.0 || d.prediction_type == PREDICTION_TYPE_V,
          "diffusion.sigma_data applies to prediction_type 'v_prediction' only");
    check(d.beta_schedule == "scaled_linear" || d.beta_schedule == "linear",
          "diffusion.beta_schedule must be 'scaled_linear' or 'linear'");
    check(d.num_train_timesteps >= 2 && d.num_train_timesteps <= 100000, "diffusion.num_train_timesteps out of range");
    check(d.beta_start > 0 && d.beta_end < 1 && d.beta_start < d.beta_end, "diffusion betas must satisfy 0<start<end<1");
    return c;
}

json model_config_to_json(const ModelConfig& c) {
    return {{"name", c.name},
            {"unet",
             {{"sample_size", c.unet.sample_size},
              {"in_channels", c.unet.in_channels},
              {"out_channels", c.unet.out_channels},
              {"block_out_channels", c.unet.block_out_channels},
              {"attention", c.unet.attention},
              {"layers_per_block", c.unet.layers_per_block},
              {"attention_heads", c.unet.attention_heads},
              {"norm_num_groups", c.unet.norm_num_groups},
              {"use_linear_projection", c.unet.use_linear_projection},
              {"patch_size", c.unet.patch_size}}},
            {"text_encoder",
             {{"vocab", c.text.vocab},
              {"width", c.text.width},
              {"layers", c.text.layers},
              {"heads", c.text.heads},
              {"max_length", c.text.max_length},
              {"spare_buckets", c.text.spare_buckets}}},
            {"diffusion",
             {{"num_train_timesteps", c.diffusion.num_train_timesteps},
              {"beta_start", c.diffusion.beta_start},
              {"beta_end", c.diffusion.beta_end},
              {"beta_schedule", c.diffusion.beta_schedule},
              {"prediction_type", c.diffusion.prediction_type == PREDICTION_TYPE_EPSILON ? "epsilon" : "v_prediction"},
              {"sigma_data", c.diffusion.sigma_data}}}};
}

// ---------------------------------------------------------------------------------------------
// Tokenizer + text encoder (CLIPTextModel names: embeddings.*, encoder.layers.N.*, final_layer_norm)

uint64_t fnv1a64(const std::string& s) {
    uint64_t h = 14695981039346656037ull;  // FNV-64 offset basis
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}

WordTokenizer::WordTokenizer(std::vector<std::string> words, int64_t spare) : spare_buckets(spare) {
    const std::vector<std::string> specials = {"<pad>", "<unk>", "<bos>", "<eos>"};
    vocab = specials;
    for (const auto& w : words) {
        if (std::find(specials.begin(), specials.end(), w) == specials.end()) vocab.push_back(w);
    }
    for (size_t i = 0; i < vocab.size(); ++i) ids.emplace(vocab[i], (int64_t)i);
}

std::vector<int64_t> WordTokenizer::encode(const std::string& text, int64_t max_length) const {
    std::vector<int64_t> out = {kBos};
    std::string          word;
    auto flush = [&] {
        if (word.empty()) return;
        auto it = ids.find(word);
        if (it != ids.end()) {
            out.push_back(it->second);
        } else {
            out.push_back(spare_buckets > 0 ? (int64_t)vocab.size() + (int64_t)(fnv1a64(word) % (uint64_t)spare_buckets) : kUnk);
        }
        word.clear();
    };
    for (char ch : text) {
        const unsigned char c = (unsigned char)ch;
        if (std::isalnum(c) || c == '\'') {
            word.push_back((char)std::tolower(c));
        } else {
            flush();
        }
    }
    flush();
    if ((int64_t)out.size() > max_length - 1) out.resize(max_length - 1);
    out.push_back(kEos);
    out.resize(max_length, kPad);
    return out;
}

namespace {

// Multi-head attention shared by the UNet (to_q/to_k/to_v/to_out.0) and the text encoder
// (q_proj/k_proj/v_proj/out_proj). q [B, N, C], context [B, M, Cc] -> [B, N, C].
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads) {
    const int64_t B = q.size(0), N = q.size(1), C = q.size(2), M = k.size(1), d = C / heads;
    auto split = [&](const torch::Tensor& t, int64_t L) { return t.view({B, L, heads, d}).transpose(1, 2); };
    torch::Tensor scores = torch::matmul(split(q, N), split(k, M).transpose(-1, -2)) / std::sqrt((double)d);
    torch::Tensor out    = torch::matmul(scores.softmax(-1), split(v, M));  // [B, h, N, d]
    return out.transpose(1, 2).reshape({B, N, C});
}

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
    int64_t           heads;
    nn::LayerNorm     layer_norm1{nullptr}, layer_norm2{nullptr};
    Layer             q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr}, fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(CLIPLayer);

struct WordTextEncoderModuleImpl : nn::Module {
    explicit WordTextEncoderModuleImpl(const TextConfig& c) {
        WordTokenizer tok(c.vocab, c.spare_buckets);
        auto          embeddings = std::make_shared<nn::Module>();
        token_embedding = embeddings->register_module("token_embedding", nn::Embedding(tok.num_ids(), c.width));
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
        const auto device = net->token_embedding->weight.device();
        torch::Tensor t = torch::tensor(ids, torch::kInt64).view({(int64_t)prompts.size(), config.max_length});
        return net->forward(t.to(device));
    }
    int64_t dim() const override { return config.width; }
    std::shared_ptr<nn::Module> module() override { return net.ptr(); }
    TextConfig            config;
    WordTokenizer         tokenizer;
    WordTextEncoderModule net;
};

}  // namespace

std::shared_ptr<TextEncoder> word_text_encoder_init(const TextConfig& config) {
    return std::make_shared<WordTextEncoder>(config);
}

// ---------------------------------------------------------------------------------------------
// UNet blocks (diffusers: ResnetBlock2D, Attention, FeedForward/GEGLU, BasicTransformerBlock,
// Transformer2DModel, Downsample2D, Upsample2D, UNet2DConditionModel)

namespace {

nn::GroupNorm group_norm(int64_t groups, int64_t channels, double eps = 1e-5) {
    return nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(eps));
}

struct ResnetBlockImpl : nn::Module {
    ResnetBlockImpl(int64_t in, int64_t out, int64_t temb, int64_t groups) {
        norm1         = register_module("norm1", group_norm(groups, in));
        conv1         = register_module("conv1", Layer(LAYER_KIND_CONV, in, out, 3, 1, 1));
        time_emb_proj = register_module("time_emb_proj", Layer(LAYER_KIND_LINEAR, temb, out));
        norm2         = register_module("norm2", group_norm(groups, out));
        conv2         = register_module("conv2", Layer(LAYER_KIND_CONV, out, out, 3, 1, 1));
        if (in != out) conv_shortcut = register_module("conv_shortcut", Layer(LAYER_KIND_CONV, in, out, 1));
    }
    // x [B, in, H, W], temb [B, temb] -> [B, out, H, W]
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb) {
        torch::Tensor h = conv1(torch::silu(norm1(x)));
        h               = h + time_emb_proj(torch::silu(temb)).unsqueeze(-1).unsqueeze(-1);
        h               = conv2(torch::silu(norm2(h)));
        return (conv_shortcut ? conv_shortcut(x) : x) + h;
    }
    nn::GroupNorm norm1{nullptr}, norm2{nullptr};
    Layer         conv1{nullptr}, conv2{nullptr}, time_emb_proj{nullptr}, conv_shortcut{nullptr};
};
TORCH_MODULE(ResnetBlock);

struct AttentionImpl : nn::Module {
    AttentionImpl(int64_t dim, int64_t context_dim, int64_t heads) : heads(heads) {
        to_q   = register_module("to_q", Layer(LAYER_KIND_LINEAR, dim, dim, 1, 1, 0, false));
        to_k   = register_module("to_k", Layer(LAYER_KIND_LINEAR, context_dim, dim, 1, 1, 0, false));
        to_v   = register_module("to_v", Layer(LAYER_KIND_LINEAR, context_dim, dim, 1, 1, 0, false));
        auto l = register_module("to_out", nn::ModuleList());
        to_out = Layer(LAYER_KIND_LINEAR, dim, dim);
        l->push_back(to_out);  // "to_out.0"; diffusers keeps a Dropout at index 1
    }
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context) {
        return to_out(attention(to_q(x), to_k(context), to_v(context), heads));
    }
    int64_t heads;
    Layer   to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out{nullptr};
};
TORCH_MODULE(Attention);

// "ff.net.0.proj" (GEGLU, dim -> 2·inner) and "ff.net.2" (inner -> dim); index 1 is Dropout in diffusers.
struct FeedForwardImpl : nn::Module {
    explicit FeedForwardImpl(int64_t dim) {
        const int64_t inner = 4 * dim;
        auto          net   = register_module("net", std::make_shared<nn::Module>());
        auto          geglu = net->register_module("0", std::make_shared<nn::Module>());
        proj                = geglu->register_module("proj", Layer(LAYER_KIND_LINEAR, dim, 2 * inner));
        out                 = net->register_module("2", Layer(LAYER_KIND_LINEAR, inner, dim));
    }
    torch::Tensor forward(const torch::Tensor& x) {
        auto parts = proj(x).chunk(2, -1);  // GEGLU: h · gelu(gate), arXiv 2002.05202
        return out(parts[0] * torch::gelu(parts[1]));
    }
    Layer proj{nullptr}, out{nullptr};
};
TORCH_MODULE(FeedForward);

struct TransformerBlockImpl : nn::Module {
    TransformerBlockImpl(int64_t dim, int64_t context_dim, int64_t heads) {
        norm1 = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions({dim})));
        attn1 = register_module("attn1", Attention(dim, dim, heads));
        norm2 = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions({dim})));
        attn2 = register_module("attn2", Attention(dim, context_dim, heads));
        norm3 = register_module("norm3", nn::LayerNorm(nn::LayerNormOptions({dim})));
        ff    = register_module("ff", FeedForward(dim));
    }
    torch::Tensor forward(torch::Tensor x, const torch::Tensor& context) {
        torch::Tensor h = norm1(x);
        x               = x + attn1(h, h);
        x               = x + attn2(norm2(x), context);
        return x + ff(norm3(x));
    }
    nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
    Attention     attn1{nullptr}, attn2{nullptr};
    FeedForward   ff{nullptr};
};
TORCH_MODULE(TransformerBlock);

struct Transformer2DImpl : nn::Module {
    Transformer2DImpl(int64_t ch, int64_t context_dim, int64_t heads, int64_t groups, bool linear_projection)
        : linear_projection(linear_projection) {
        norm = register_module("norm", group_norm(groups, ch, 1e-6));
        const LayerKind kind = linear_projection ? LAYER_KIND_LINEAR : LAYER_KIND_CONV;
        proj_in = register_module("proj_in", Layer(kind, ch, ch));
        auto blocks = register_module("transformer_blocks", nn::ModuleList());
        block       = TransformerBlock(ch, context_dim, heads);
        blocks->push_back(block);
        proj_out = register_module("proj_out", Layer(kind, ch, ch));
    }
    // x [B, C, H, W] -> tokens [B, H·W, C] -> back; residual around the whole block.
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context) {
        const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
        torch::Tensor h = norm(x);
        if (!linear_projection) h = proj_in(h);
        h = h.permute({0, 2, 3, 1}).reshape({B, H * W, C});
        if (linear_projection) h = proj_in(h);
        h = block(h, context);
        if (linear_projection) h = proj_out(h);
        h = h.reshape({B, H, W, C}).permute({0, 3, 1, 2}).contiguous();
        if (!linear_projection) h = proj_out(h);
        return h + x;
    }
    bool             linear_projection;
    nn::GroupNorm    norm{nullptr};
    Layer            proj_in{nullptr}, proj_out{nullptr};
    TransformerBlock block{nullptr};
};
TORCH_MODULE(Transformer2D);

struct SamplerImpl : nn::Module {  // Downsample2D (stride-2 conv) or Upsample2D (nearest ×2, conv)
    SamplerImpl(int64_t ch, bool up) : up(up) { conv = register_module("conv", Layer(LAYER_KIND_CONV, ch, ch, 3, up ? 1 : 2, 1)); }
    torch::Tensor forward(const torch::Tensor& x) {
        if (!up) return conv(x);
        return conv(torch::nn::functional::interpolate(
            x, torch::nn::functional::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)));
    }
    bool  up;
    Layer conv{nullptr};
};
TORCH_MODULE(Sampler);

struct BlockImpl : nn::Module {  // one down/up level or the mid block
    BlockImpl() {
        resnets    = register_module("resnets", nn::ModuleList());
        attentions = register_module("attentions", nn::ModuleList());
    }
    nn::ModuleList resnets{nullptr}, attentions{nullptr}, samplers{nullptr};
};
TORCH_MODULE(Block);

}  // namespace

struct UNetImpl : nn::Module {
    UNetImpl(const UNetConfig& c, int64_t context_dim) : config(c) {
        const auto&   ch     = c.block_out_channels;
        const int64_t levels = (int64_t)ch.size(), g = c.norm_num_groups, heads = c.attention_heads;
        const int64_t temb   = 4 * ch[0];
        const int64_t p2     = c.patch_size * c.patch_size;
        conv_in              = register_module("conv_in", Layer(LAYER_KIND_CONV, c.in_channels * p2, ch[0], 3, 1, 1));
        auto time_embedding  = register_module("time_embedding", std::make_shared<nn::Module>());
        linear_1             = time_embedding->register_module("linear_1", Layer(LAYER_KIND_LINEAR, ch[0], temb));
        linear_2             = time_embedding->register_module("linear_2", Layer(LAYER_KIND_LINEAR, temb, temb));

        // Skip channels are tracked as a stack while building so the up path mirrors the down path.
        std::vector<int64_t> skips = {ch[0]};
        auto down_list = register_module("down_blocks", nn::ModuleList());
        int64_t cur = ch[0];
        for (int64_t i = 0; i < levels; ++i) {
            Block b;
            for (int64_t j = 0; j < c.layers_per_block; ++j) {
                b->resnets->push_back(ResnetBlock(cur, ch[i], temb, g));
                cur = ch[i];
                if (c.attention[i]) b->attentions->push_back(Transformer2D(cur, context_dim, heads, g, c.use_linear_projection));
                skips.push_back(cur);
            }
            if (i + 1 < levels) {
                b->samplers = b->register_module("downsamplers", nn::ModuleList());
                b->samplers->push_back(Sampler(cur, false));
                skips.push_back(cur);
            }
            down_list->push_back(b);
            down_blocks.push_back(b);
        }
        mid_block = register_module("mid_block", Block());
        mid_block->resnets->push_back(ResnetBlock(cur, cur, temb, g));
        mid_block->attentions->push_back(Transformer2D(cur, context_dim, heads, g, c.use_linear_projection));
        mid_block->resnets->push_back(ResnetBlock(cur, cur, temb, g));

        auto up_list = register_module("up_blocks", nn::ModuleList());
        for (int64_t i = levels - 1; i >= 0; --i) {
            Block b;
            for (int64_t j = 0; j < c.layers_per_block + 1; ++j) {
                const int64_t skip = skips.back();
                skips.pop_back();
                b->resnets->push_back(ResnetBlock(cur + skip, ch[i], temb, g));
                cur = ch[i];
                if (c.attention[i]) b->attentions->push_back(Transformer2D(cur, context_dim, heads, g, c.use_linear_projection));
            }
            if (i > 0) {
                b->samplers = b->register_module("upsamplers", nn::ModuleList());
                b->samplers->push_back(Sampler(cur, true));
            }
            up_list->push_back(b);
            up_blocks.push_back(b);
        }
        conv_norm_out = register_module("conv_norm_out", group_norm(g, cur));
        conv_out      = register_module("conv_out", Layer(LAYER_KIND_CONV, cur, c.out_channels * p2, 3, 1, 1));
    }

    UNetConfig         config;
    Layer              conv_in{nullptr}, linear_1{nullptr}, linear_2{nullptr}, conv_out{nullptr};
    std::vector<Block> down_blocks, up_blocks;
    Block              mid_block{nullptr};
    nn::GroupNorm      conv_norm_out{nullptr};
};

namespace {

// Sinusoidal timestep embedding (DDPM §3 / diffusers get_timestep_embedding with flip_sin_to_cos=True,
// downscale_freq_shift=0, as SD uses). t [B] -> [B, dim].
torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim) {
    const int64_t half     = dim / 2;
    torch::Tensor exponent = -std::log(10000.0) * torch::arange(half, t.options().dtype(torch::kFloat32)) / (double)half;
    torch::Tensor args     = t.to(torch::kFloat32).unsqueeze(1) * exponent.exp().unsqueeze(0);
    torch::Tensor emb      = torch::cat({args.cos(), args.sin()}, -1);
    if (dim % 2) emb = torch::nn::functional::pad(emb, torch::nn::functional::PadFuncOptions({0, 1}));
    return emb;
}

torch::Tensor run_block_layer(Block& b, int64_t j, torch::Tensor h, const torch::Tensor& temb, const torch::Tensor& ctx) {
    h = b->resnets[j]->as<ResnetBlockImpl>()->forward(h, temb);
    if ((int64_t)b->attentions->size() > j) h = b->attentions[j]->as<Transformer2DImpl>()->forward(h, ctx);
    return h;
}

}  // namespace

UNetPtr unet_init(const UNetConfig& config, int64_t context_dim) { return std::make_shared<UNetImpl>(config, context_dim); }

torch::Tensor unet_forward(UNetImpl& u, const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& context) {
    // 1. time
    torch::Tensor temb = u.linear_2(torch::silu(u.linear_1(timestep_embedding(t, u.config.block_out_channels[0]))));
    // 2. pre-process
    const int64_t              p = u.config.patch_size;
    torch::Tensor              h = u.conv_in(p > 1 ? torch::pixel_unshuffle(x, p) : x);
    std::vector<torch::Tensor> skips = {h};
    // 3. down
    for (auto& b : u.down_blocks) {
        for (int64_t j = 0; j < (int64_t)b->resnets->size(); ++j) {
            h = run_block_layer(b, j, h, temb, context);
            skips.push_back(h);
        }
        if (b->samplers) {
            h = b->samplers[0]->as<SamplerImpl>()->forward(h);
            skips.push_back(h);
        }
    }
    // 4. mid
    h = u.mid_block->resnets[0]->as<ResnetBlockImpl>()->forward(h, temb);
    h = u.mid_block->attentions[0]->as<Transformer2DImpl>()->forward(h, context);
    h = u.mid_block->resnets[1]->as<ResnetBlockImpl>()->forward(h, temb);
    // 5. up
    for (auto& b : u.up_blocks) {
        for (int64_t j = 0; j < (int64_t)b->resnets->size(); ++j) {
            h = torch::cat({h, skips.back()}, 1);
            skips.pop_back();
            h = run_block_layer(b, j, h, temb, context);
        }
        if (b->samplers) h = b->samplers[0]->as<SamplerImpl>()->forward(h);
    }
    // 6. post-process
    torch::Tensor out = u.conv_out(torch::silu(u.conv_norm_out(h)));
    return p > 1 ? torch::pixel_shuffle(out, p) : out;
}

// ---------------------------------------------------------------------------------------------
// DiffusionModel

std::map<std::string, torch::Tensor> DiffusionModel::named_parameters() const {
    std::map<std::string, torch::Tensor> out;
    for (const auto& p : unet->named_parameters()) out["unet." + p.key()] = p.value();
    for (const auto& p : text->module()->named_parameters()) out["text_encoder." + p.key()] = p.value();
    return out;
}

const std::map<std::string, std::shared_ptr<LayerImpl>>& DiffusionModel::layers() const {
    if (!layers_cache_.empty()) return layers_cache_;
    auto& out = layers_cache_;
    for (const auto& m : unet->named_modules()) {
        if (auto l = std::dynamic_pointer_cast<LayerImpl>(m.value())) out["unet." + m.key()] = l;
    }
    for (const auto& m : text->module()->named_modules()) {
        if (auto l = std::dynamic_pointer_cast<LayerImpl>(m.value())) out["text_encoder." + m.key()] = l;
    }
    return out;
}

torch::Tensor DiffusionModel::predict(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& context) {
    return unet_forward(*unet, x, t, context);
}

std::unique_ptr<DiffusionModel> model_init(const ModelConfig& config, uint64_t seed, torch::Device device) {
    torch::manual_seed(seed);
    auto m    = std::make_unique<DiffusionModel>();
    m->config = config;
    m->text   = word_text_encoder_init(config.text);
    m->unet   = unet_init(config.unet, config.text.width);
    m->unet->to(device);
    m->text->module()->to(device);
    m->device = device;
    return m;
}

std::unique_ptr<DiffusionModel> model_load(const std::string& path, torch::Device device) {
    SafeTensors st = safetensors_load(path);
    auto        it = st.metadata.find("config");
    if (it == st.metadata.end()) throw_bad_input("model '" + path + "' has no config in its __metadata__");
    json config_json;
    try {
        config_json = json::parse(it->second);
    } catch (const std::exception& e) {
        throw_bad_input(std::string("model config is not JSON: ") + e.what());
    }
    // Files written before spare buckets existed have none; the default (64) would not fit their embedding.
    if (config_json.is_object() && config_json.contains("text_encoder") && config_json["text_encoder"].is_object() &&
        !config_json["text_encoder"].contains("spare_buckets")) {
        config_json["text_encoder"]["spare_buckets"] = 0;
    }
    auto m      = model_init(model_config_from_json(config_json), 0, torch::kCPU);
    auto params = m->named_parameters();
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : params) {
        auto src = st.tensors.find(name);
        if (src == st.tensors.end()) throw_bad_input("model '" + path + "' lacks tensor '" + name + "'");
        if (src->second.sizes() != p.sizes()) throw_bad_input("model tensor '" + name + "' has the wrong shape");
        p.copy_(src->second.to(p.scalar_type()));
    }
    for (const auto& [name, t] : st.tensors) {
        if (!params.count(name)) throw_bad_input("model '" + path + "' has unknown tensor '" + name + "'");
    }
    m->unet->to(device);
    m->text->module()->to(device);
    m->device = device;
    return m;
}

void model_save(const DiffusionModel& model, const std::string& path) {
    safetensors_save(path, model.named_parameters(),
                     {{"config", model_config_to_json(model.config).dump()}, {"format", "shira-studio-model"}});
}

bool layer_matches(const std::string& name, const std::vector<std::string>& patterns) {
    for (const auto& p : patterns) {
        if (p.rfind("re:", 0) == 0) {
            try {
                if (std::regex_search(name, std::regex(p.substr(3)))) return true;
            } catch (const std::regex_error& e) {
                throw_bad_input("bad target pattern '" + p + "': " + e.what());
            }
        } else if (name == p || (name.size() > p.size() && name.compare(name.size() - p.size(), p.size(), p) == 0 &&
                                 name[name.size() - p.size() - 1] == '.')) {
            return true;
        }
    }
    return false;
}
