// The UNet (unet.h): diffusers' blocks, and a forward in UNet2DConditionModel.forward's numbered steps.
#include "model/unet.h"

#include <cmath>

#include <torch/torch.h>

#include "model/attention.h"
#include "model/layer.h"

namespace nn = torch::nn;

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
        norm                 = register_module("norm", group_norm(groups, ch, 1e-6));
        const LayerKind kind = linear_projection ? LAYER_KIND_LINEAR : LAYER_KIND_CONV;
        proj_in              = register_module("proj_in", Layer(kind, ch, ch));
        auto blocks          = register_module("transformer_blocks", nn::ModuleList());
        block                = TransformerBlock(ch, context_dim, heads);
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
    SamplerImpl(int64_t ch, bool up) : up(up) {
        conv = register_module("conv", Layer(LAYER_KIND_CONV, ch, ch, 3, up ? 1 : 2, 1));
    }
    torch::Tensor forward(const torch::Tensor& x) {
        if (!up) return conv(x);
        return conv(torch::nn::functional::interpolate(x, torch::nn::functional::InterpolateFuncOptions()
                                                              .scale_factor(std::vector<double>{2.0, 2.0})
                                                              .mode(torch::kNearest)));
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
        const int64_t temb  = 4 * ch[0];
        const int64_t p2    = c.patch_size * c.patch_size;
        conv_in             = register_module("conv_in", Layer(LAYER_KIND_CONV, c.in_channels * p2, ch[0], 3, 1, 1));
        auto time_embedding = register_module("time_embedding", std::make_shared<nn::Module>());
        linear_1            = time_embedding->register_module("linear_1", Layer(LAYER_KIND_LINEAR, ch[0], temb));
        linear_2            = time_embedding->register_module("linear_2", Layer(LAYER_KIND_LINEAR, temb, temb));

        // Skip channels are tracked as a stack while building so the up path mirrors the down path.
        std::vector<int64_t> skips     = {ch[0]};
        auto                 down_list = register_module("down_blocks", nn::ModuleList());
        int64_t              cur       = ch[0];
        for (int64_t i = 0; i < levels; ++i) {
            Block b;
            for (int64_t j = 0; j < c.layers_per_block; ++j) {
                b->resnets->push_back(ResnetBlock(cur, ch[i], temb, g));
                cur = ch[i];
                if (c.attention[i])
                    b->attentions->push_back(Transformer2D(cur, context_dim, heads, g, c.use_linear_projection));
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
                if (c.attention[i])
                    b->attentions->push_back(Transformer2D(cur, context_dim, heads, g, c.use_linear_projection));
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
    const int64_t half = dim / 2;
    torch::Tensor exponent =
        -std::log(10000.0) * torch::arange(half, t.options().dtype(torch::kFloat32)) / (double)half;
    torch::Tensor args = t.to(torch::kFloat32).unsqueeze(1) * exponent.exp().unsqueeze(0);
    torch::Tensor emb  = torch::cat({args.cos(), args.sin()}, -1);
    if (dim % 2) emb = torch::nn::functional::pad(emb, torch::nn::functional::PadFuncOptions({0, 1}));
    return emb;
}

torch::Tensor run_block_layer(Block& b, int64_t j, torch::Tensor h, const torch::Tensor& temb,
                              const torch::Tensor& ctx) {
    h = b->resnets[j]->as<ResnetBlockImpl>()->forward(h, temb);
    if ((int64_t)b->attentions->size() > j) h = b->attentions[j]->as<Transformer2DImpl>()->forward(h, ctx);
    return h;
}

}  // namespace

UNetPtr unet_init(const UNetConfig& config, int64_t context_dim) {
    return std::make_shared<UNetImpl>(config, context_dim);
}

torch::nn::Module& unet_module(UNetImpl& unet) { return unet; }

torch::Tensor unet_forward(UNetImpl& u, const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& context) {
    // 1. time
    torch::Tensor temb = u.linear_2(torch::silu(u.linear_1(timestep_embedding(t, u.config.block_out_channels[0]))));
    // 2. pre-process
    const int64_t              p     = u.config.patch_size;
    torch::Tensor              h     = u.conv_in(p > 1 ? torch::pixel_unshuffle(x, p) : x);
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
