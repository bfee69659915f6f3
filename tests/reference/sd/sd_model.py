"""Stable Diffusion (SD-1.x, SD-2.x, SDXL) in plain PyTorch, with the parameter names of the ldm single-file layout.

A test oracle for the native worker, written from the architecture facts (README.md says which fact came from
where), not from upstream code. `SDModel.state_dict()` keys are exactly a checkpoint's keys: "model.diffusion_model.…"
(UNet), "first_stage_model.…" (VAE) and each text encoder's prefix ("cond_stage_model.transformer.text_model.",
"cond_stage_model.model.", "conditioner.embedders.N.…"). Plain ops only (no fused attention, no dropout), fp32
unless told otherwise. Runs on torch 1.13 (Debian's python3-torch) and 2.x.

Shapes: images [B, 3, H, W] in [-1, 1]; latents [B, 4, H/8, W/8]; token ids [B, 77] int64; timesteps [B].

The transformer block repeats ../model.py's on purpose (same maths, names equal in both layouts): that file mirrors
the built-in native model, this one ldm's, with per-level head size, depth and SD-2.1's attention upcast.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import configs


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces


def attention(q, k, v, heads, mask=None, upcast=False):
    """softmax(q kᵀ / √d [+ mask]) v per head. q [B, N, C], k/v [B, M, C] -> [B, N, C]. upcast: q·k and the softmax
    in fp32, the probabilities cast back before ·v (SD-2.1's _ATTN_PRECISION="fp32"; a no-op in fp32)."""
    B, N, C = q.shape
    M, d = k.shape[1], C // heads
    q = q.reshape(B, N, heads, d).transpose(1, 2)
    k = k.reshape(B, M, heads, d).transpose(1, 2)
    v = v.reshape(B, M, heads, d).transpose(1, 2)
    if upcast:
        q, k = q.float(), k.float()
    scores = torch.matmul(q, k.transpose(-1, -2)) * (d ** -0.5)
    if mask is not None:
        scores = scores + mask.to(scores.dtype)
    probs = scores.softmax(-1).to(v.dtype)
    return torch.matmul(probs, v).transpose(1, 2).reshape(B, N, C)


def causal_mask(n, device):
    """[n, n] additive mask, -inf above the diagonal: token i sees tokens 0..i (CLIP's text transformers)."""
    return torch.full((n, n), float("-inf"), device=device).triu(1)


class GroupNorm32(nn.GroupNorm):
    """ldm's GroupNorm32: normalises in fp32 and casts back (openaimodel.py `normalization`)."""

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding, cos half first (ldm/sgm `timestep_embedding`; diffusers flip_sin_to_cos=True,
    downscale_freq_shift=0). t [B] (int or float) -> [B, dim] fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def run_blocks(x, blocks):
    """[x, after block 1, …] through pre-LN text blocks under the causal mask. x [B, L, w]."""
    mask = causal_mask(x.shape[1], x.device)
    out = [x]
    for block in blocks:
        x = block(x, mask)
        out.append(x)
    return out


def quick_gelu(x):  # x·σ(1.702x), OpenAI CLIP's activation
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}


# ---------------------------------------------------------------------------------------------------------------
# HF CLIPTextModel ("…text_model.embeddings/encoder/final_layer_norm"): CLIP-L in SD-1 and SDXL embedders.0


class HFAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.v_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x, mask):
        return self.out_proj(attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, mask))


class HFMLP(nn.Module):
    def __init__(self, width, mlp, act):
        super().__init__()
        self.act = ACTIVATIONS[act]
        self.fc1, self.fc2 = nn.Linear(width, mlp), nn.Linear(mlp, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class HFLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = HFAttention(c["width"], c["heads"])
        self.layer_norm1 = nn.LayerNorm(c["width"])
        self.mlp = HFMLP(c["width"], c["mlp"], c["act"])
        self.layer_norm2 = nn.LayerNorm(c["width"])

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class HFEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.token_embedding = nn.Embedding(c["vocab_size"], c["width"])
        self.position_embedding = nn.Embedding(c["positions"], c["width"])


class HFEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([HFLayer(c) for _ in range(c["layers"])])


class HFClipText(nn.Module):
    """Pre-LN transformer, causal mask, final_layer_norm. `position_ids` is not a parameter here: files carry it
    as a buffer a loader ignores (fixtures.py writes it)."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.embeddings = HFEmbeddings(c)
        self.encoder = HFEncoder(c)
        self.final_layer_norm = nn.LayerNorm(c["width"])

    def hidden_states(self, ids):
        """ids [B, L] -> [embeddings, after layer 1, …, after layer N], each [B, L, width] (HF hidden_states)."""
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.embeddings.token_embedding(ids) + self.embeddings.position_embedding(pos)[None]
        return run_blocks(x, self.encoder.layers)

    def encode(self, ids, clip_skip=1):
        """-> (context [B, L, width], pooled or None, hidden states).
        last_ln: final_layer_norm(hidden[-clip_skip]) — A1111's "clip skip" N (1 = last layer; diffusers clip_skip
        = N-1). penultimate: hidden[-2] without the final norm (SDXL's CLIP-L, sgm layer "hidden", layer_idx 11)."""
        hs = self.hidden_states(ids)
        if self.config["output"] == "last_ln":
            if not 1 <= clip_skip < len(hs):
                raise ValueError(f"clip_skip {clip_skip}: allowed 1..{len(hs) - 1}")
            return self.final_layer_norm(hs[-clip_skip]), None, hs
        return hs[-2], None, hs

    def unused(self):
        """Parameter names (relative) the output never reads."""
        return ["final_layer_norm.weight", "final_layer_norm.bias"] if self.config["output"] == "penultimate" else []


# ---------------------------------------------------------------------------------------------------------------
# open_clip text tower ("…model.token_embedding/positional_embedding/transformer.resblocks/ln_final/
# text_projection/logit_scale"): OpenCLIP-H in SD-2, bigG in SDXL. Attention is torch's MultiheadAttention layout:
# in_proj_weight [3w, w] holds q, k, v in that order.


class OCAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x, mask):
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self.out_proj(attention(q, k, v, self.heads, mask))


class OCMLP(nn.Module):
    def __init__(self, width, mlp, act):
        super().__init__()
        self.act = ACTIVATIONS[act]
        self.c_fc, self.c_proj = nn.Linear(width, mlp), nn.Linear(mlp, width)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class OCBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c["width"])
        self.attn = OCAttention(c["width"], c["heads"])
        self.ln_2 = nn.LayerNorm(c["width"])
        self.mlp = OCMLP(c["width"], c["mlp"], c["act"])

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class OCTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.resblocks = nn.ModuleList([OCBlock(c) for _ in range(c["layers"])])


class OpenClipText(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.token_embedding = nn.Embedding(c["vocab_size"], c["width"])
        self.positional_embedding = nn.Parameter(torch.empty(c["positions"], c["width"]))
        self.transformer = OCTransformer(c)
        self.ln_final = nn.LayerNorm(c["width"])
        self.text_projection = nn.Parameter(torch.empty(c["width"], c["projection"]))  # x @ P, not a Linear
        self.logit_scale = nn.Parameter(torch.empty(()))

    def hidden_states(self, ids):
        """[embeddings, after block 1, …] over the blocks the output needs: SD-2's encoder stops before its last
        block (ldm FrozenOpenCLIPEmbedder runs resblocks[:-1] for "penultimate")."""
        x = self.token_embedding(ids) + self.positional_embedding[None, : ids.shape[1]]
        blocks = self.transformer.resblocks
        return run_blocks(x, blocks[:-1] if self.config["output"] == "penultimate_ln" else blocks)

    def encode(self, ids, clip_skip=None):
        """-> (context, pooled, hidden states). penultimate_ln (SD-2): ln_final(penultimate). penultimate (SDXL):
        context hidden[-2] without ln_final; pooled = ln_final(hidden[-1])[eot] @ text_projection, eot = argmax(ids)
        (the end token has the largest id; with padding by EOS the first one wins)."""
        hs = self.hidden_states(ids)
        if self.config["output"] == "penultimate_ln":
            return self.ln_final(hs[-1]), None, hs
        last = self.ln_final(hs[-1])
        eot = ids.argmax(dim=-1)
        pooled = last[torch.arange(ids.shape[0], device=ids.device), eot] @ self.text_projection
        return hs[-2], pooled, hs

    def unused(self):
        n = self.config["layers"] - 1
        names = ["logit_scale"]
        if self.config["output"] == "penultimate_ln":  # SD-2: the last block and the projection feed nothing
            names += [k for k, _ in self.transformer.resblocks[n].named_parameters(prefix=f"transformer.resblocks.{n}")]
            names += ["text_projection"]
        return names


def make_text_encoder(c):
    return HFClipText(c) if c["kind"] == "hf_clip" else OpenClipText(c)


# ---------------------------------------------------------------------------------------------------------------
# UNet (ldm openaimodel.py UNetModel names: time_embed, label_emb, input_blocks, middle_block, output_blocks, out)


class ResBlock(nn.Module):
    """in_layers (norm, SiLU, conv3), emb_layers (SiLU, linear), out_layers (norm, SiLU, dropout, conv3),
    skip_connection (1×1 conv where channels change)."""

    def __init__(self, cin, cout, temb, groups):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(groups, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(temb, cout))
        self.out_layers = nn.Sequential(GroupNorm32(groups, cout), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    def __init__(self, dim, context_dim, heads, dim_head, upcast):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.upcast = heads, upcast
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

    def forward(self, x, context):
        return self.to_out(attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads,
                                     upcast=self.upcast))


class GEGLU(nn.Module):  # h · gelu(gate), Shazeer arXiv 2002.05202; proj: dim -> 2·inner, h first
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):  # "ff.net.0.proj", "ff.net.2"; inner = 4·dim
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, context_dim, heads, dim_head, upcast):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head, upcast)  # self-attention
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head, upcast)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context):
        h = self.norm1(x)
        x = x + self.attn1(h, h)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GroupNorm (eps 1e-6), proj_in (1×1 conv before flattening for SD-1; Linear after it for SD-2/XL), depth
    transformer blocks, proj_out, residual."""

    def __init__(self, ch, heads, dim_head, depth, context_dim, linear, groups, upcast):
        super().__init__()
        inner = heads * dim_head
        self.linear = linear
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.proj_in = nn.Linear(ch, inner) if linear else nn.Conv2d(ch, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, context_dim, heads, dim_head, upcast) for _ in range(depth)])
        self.proj_out = nn.Linear(inner, ch) if linear else nn.Conv2d(inner, ch, 1)

    def forward(self, x, context):
        B, C, H, W = x.shape
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
        h = h.permute(0, 2, 3, 1).reshape(B, H * W, -1)
        if self.linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear:
            h = self.proj_out(h)
        h = h.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
        if not self.linear:
            h = self.proj_out(h)
        return h + x


class Downsample(nn.Module):  # "op": 3×3 conv, stride 2, padding 1 (the UNet's; the VAE pads asymmetrically)
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):  # nearest 2×, then "conv" 3×3
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TimestepBlock(nn.ModuleList):
    """ldm TimestepEmbedSequential: children indexed 0, 1, 2 (so keys read "input_blocks.4.1.…")."""

    def forward(self, h, emb, context):
        for m in self:
            if isinstance(m, ResBlock):
                h = m(h, emb)
            elif isinstance(m, SpatialTransformer):
                h = m(h, context)
            else:
                h = m(h)
        return h


class UNetModel(nn.Module):
    def __init__(self, u):
        super().__init__()
        self.config = u
        mc, g, temb = u["model_channels"], u["norm_groups"], 4 * u["model_channels"]
        self.time_embed = nn.Sequential(nn.Linear(mc, temb), nn.SiLU(), nn.Linear(temb, temb))
        if u["adm_in_channels"] is not None:  # SDXL "sequential" class embedding: label_emb.0.0 / label_emb.0.2
            self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(u["adm_in_channels"], temb), nn.SiLU(),
                                                         nn.Linear(temb, temb)))

        def transformer(ch, depth):
            if u["num_head_channels"] == -1:  # SD-1: a fixed head count
                heads, dim_head = u["num_heads"], ch // u["num_heads"]
            else:  # SD-2/XL: a fixed head size
                heads, dim_head = ch // u["num_head_channels"], u["num_head_channels"]
            return SpatialTransformer(ch, heads, dim_head, depth, u["context_dim"], u["use_linear_in_transformer"],
                                      g, u["upcast_attention"])

        self.input_blocks = nn.ModuleList([TimestepBlock([nn.Conv2d(u["in_channels"], mc, 3, padding=1)])])
        skips, ch, ds = [mc], mc, 1
        levels = len(u["channel_mult"])
        for level, mult in enumerate(u["channel_mult"]):
            for _ in range(u["num_res_blocks"]):
                block = TimestepBlock([ResBlock(ch, mc * mult, temb, g)])
                ch = mc * mult
                if ds in u["attention_resolutions"]:
                    block.append(transformer(ch, u["transformer_depth"][level]))
                self.input_blocks.append(block)
                skips.append(ch)
            if level != levels - 1:
                self.input_blocks.append(TimestepBlock([Downsample(ch)]))
                skips.append(ch)
                ds *= 2
        self.middle_block = TimestepBlock([ResBlock(ch, ch, temb, g), transformer(ch, u["transformer_depth_middle"]),
                                           ResBlock(ch, ch, temb, g)])
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(u["channel_mult"]))):
            for i in range(u["num_res_blocks"] + 1):
                block = TimestepBlock([ResBlock(ch + skips.pop(), mc * mult, temb, g)])
                ch = mc * mult
                if ds in u["attention_resolutions"]:
                    block.append(transformer(ch, u["transformer_depth"][level]))
                if level and i == u["num_res_blocks"]:
                    block.append(Upsample(ch))  # index 1 where the level has no attention, else 2
                    ds //= 2
                self.output_blocks.append(block)
        self.out = nn.Sequential(GroupNorm32(g, ch), nn.SiLU(), nn.Conv2d(ch, u["out_channels"], 3, padding=1))

    def forward(self, x, t, context, y=None):
        """x [B, in, h, w], t [B], context [B, L, context_dim], y [B, adm] (SDXL) -> [B, out, h, w]."""
        emb = self.time_embed(timestep_embedding(t, self.config["model_channels"]).to(x.dtype))
        if hasattr(self, "label_emb"):
            if y is None:
                raise ValueError("this UNet has label_emb (SDXL): pass y, the pooled text + size embeddings")
            emb = emb + self.label_emb(y.to(x.dtype))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)


# ---------------------------------------------------------------------------------------------------------------
# VAE (ldm AutoencoderKL: encoder.down.i.block.j, decoder.up.i.block.j — up.i is the level *i*, built and run from
# the deepest level down, so the decoder runs up.3 first — mid.block_1/attn_1/block_2, quant_conv, post_quant_conv)


class VAEResnet(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class VAEAttention(nn.Module):
    """Single head over all H·W positions; q, k, v, proj_out are 1×1 convs ([c, c, 1, 1] in the file)."""

    def __init__(self, ch, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.q, self.k, self.v = nn.Conv2d(ch, ch, 1), nn.Conv2d(ch, ch, 1), nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        flat = lambda t: t.reshape(B, C, H * W).transpose(1, 2)  # noqa: E731  [B, HW, C]
        out = attention(flat(self.q(h)), flat(self.k(h)), flat(self.v(h)), 1)
        return x + self.proj_out(out.transpose(1, 2).reshape(B, C, H, W))


class VAEDownsample(nn.Module):
    """Pad right and bottom by one, then a 3×3 stride-2 conv with no padding (ldm model.py Downsample)."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Level(nn.Module):  # "block" (resnets); "attn" is empty in SD's VAEs (attn_resolutions: [])
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()


class Mid(nn.Module):
    def __init__(self, ch, groups):
        super().__init__()
        self.block_1 = VAEResnet(ch, ch, groups)
        self.attn_1 = VAEAttention(ch, groups)
        self.block_2 = VAEResnet(ch, ch, groups)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, v):
        super().__init__()
        g, ch = v["norm_groups"], v["ch"]
        self.conv_in = nn.Conv2d(v["in_channels"], ch, 3, padding=1)
        self.down = nn.ModuleList()
        cur = ch
        for i, mult in enumerate(v["ch_mult"]):
            level = Level()
            for _ in range(v["num_res_blocks"]):
                level.block.append(VAEResnet(cur, ch * mult, g))
                cur = ch * mult
            if i != len(v["ch_mult"]) - 1:
                level.downsample = VAEDownsample(cur)
            self.down.append(level)
        self.mid = Mid(cur, g)
        self.norm_out = nn.GroupNorm(g, cur, eps=1e-6)
        self.conv_out = nn.Conv2d(cur, 2 * v["z_channels"], 3, padding=1)  # mean and log-variance

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, v):
        super().__init__()
        g, ch, mults = v["norm_groups"], v["ch"], v["ch_mult"]
        cur = ch * mults[-1]
        self.conv_in = nn.Conv2d(v["z_channels"], cur, 3, padding=1)
        self.mid = Mid(cur, g)
        levels = [None] * len(mults)
        for i in reversed(range(len(mults))):
            level = Level()
            for _ in range(v["num_res_blocks"] + 1):
                level.block.append(VAEResnet(cur, ch * mults[i], g))
                cur = ch * mults[i]
            if i != 0:
                level.upsample = Upsample(cur)
            levels[i] = level
        self.up = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(g, cur, eps=1e-6)
        self.conv_out = nn.Conv2d(cur, v["out_ch"], 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.config = v
        self.encoder, self.decoder = Encoder(v), Decoder(v)
        self.quant_conv = nn.Conv2d(2 * v["z_channels"], 2 * v["embed_dim"], 1)
        self.post_quant_conv = nn.Conv2d(v["embed_dim"], v["z_channels"], 1)

    def encode(self, x):
        """x [B, 3, H, W] in [-1, 1] -> (mean, logvar clamped to [-30, 20]), each [B, 4, H/8, W/8], unscaled."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z):
        """z [B, 4, h, w], unscaled (divide a diffusion latent by scale_factor first) -> image [B, 3, 8h, 8w]."""
        return self.decoder(self.post_quant_conv(z))


# ---------------------------------------------------------------------------------------------------------------
# The checkpoint


class Node(nn.Module):
    """An empty module that only carries a name component ("model", "transformer", "embedders", "0")."""


def _attach(root, dotted, module):
    """Places module at root.<dotted path> so state_dict keys carry the checkpoint's prefix."""
    *parents, name = dotted.rstrip(".").split(".")
    cur = root
    for p in parents:
        if p not in cur._modules:
            cur.add_module(p, Node())
        cur = cur._modules[p]
    cur.add_module(name, module)


def _find(root, dotted):
    cur = root
    for p in dotted.rstrip(".").split("."):
        cur = cur._modules[p]
    return cur


class SDModel(nn.Module):
    """The whole single-file checkpoint. Sub-modules: unet, vae, text_encoders (also reachable under their ldm names,
    which are what state_dict() reports)."""

    def __init__(self, config):
        super().__init__()
        configs.validate(config)
        self.config = config
        _attach(self, "model.diffusion_model", UNetModel(config["unet"]))
        _attach(self, "first_stage_model", AutoencoderKL(config["vae"]))
        for t in config["text"]:
            _attach(self, t["prefix"], make_text_encoder(t))

    @property
    def unet(self):
        return self.model.diffusion_model

    @property
    def vae(self):
        return self.first_stage_model

    def text_encoders(self):
        return [_find(self, t["prefix"]) for t in self.config["text"]]

    def unused_parameters(self):
        """Full names of parameters no output reads (loaders may skip them; gradients are zero)."""
        return [t["prefix"] + n for t, m in zip(self.config["text"], self.text_encoders()) for n in m.unused()]

    # -- conditioning -------------------------------------------------------------------------------------------

    def encode_text(self, ids, clip_skip=1):
        """ids: one [B, 77] int64 tensor per text encoder (SD-1/2: one; SDXL: CLIP-L ids padded with EOS, bigG ids
        padded with 0). -> (context [B, 77, context_dim], pooled [B, proj] or None, hidden states per encoder)."""
        if len(ids) != len(self.config["text"]):
            raise ValueError(f"{len(ids)} id tensors for {len(self.config['text'])} text encoders")
        ctx, pooled, hidden = [], None, []
        for enc, i in zip(self.text_encoders(), ids):
            c, p, hs = enc.encode(i, clip_skip)
            ctx.append(c)
            hidden.append(hs)
            pooled = p if p is not None else pooled
        return torch.cat(ctx, dim=-1), pooled, hidden

    def added_conditioning(self, pooled, time_ids):
        """SDXL y = [pooled, emb(n₁), emb(n₂), …] with each number through a 256-wide sinusoidal embedding
        (sgm ConcatTimestepEmbedderND; diffusers add_time_proj). time_ids [B, 6] = original (h, w), crop (top,
        left), target (h, w); refiner [B, 5] = original (h, w), crop (top, left), aesthetic score."""
        width = sum(configs.TIME_ID_WIDTH[k] for k in self.config["time_ids"])
        if time_ids.shape[-1] != width:
            raise ValueError(f"time_ids has {time_ids.shape[-1]} numbers, this model takes {width}: "
                             f"{', '.join(self.config['time_ids'])}")
        B, n = time_ids.shape
        w = self.config["size_embed"]
        emb = timestep_embedding(time_ids.reshape(-1), w).reshape(B, n * w)
        return torch.cat([pooled.to(emb.dtype), emb], dim=-1)

    # -- diffusion ----------------------------------------------------------------------------------------------

    def alphas_cumprod(self):
        return torch.cumprod(1.0 - betas(self.config["schedule"]), 0)

    def loss(self, x0, noise, t, context, y=None):
        """L_simple (DDPM eq. 14) at the given t and ε: x_t = √ᾱ x0 + √(1-ᾱ) ε; target ε, or
        v = √ᾱ ε − √(1-ᾱ) x0 (Salimans & Ho 2022) for v-prediction models. x0: scaled latents
        [B, 4, h, w]."""
        a = self.alphas_cumprod()[t.cpu()].to(x0.device, torch.float32).view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = noise if self.config["prediction"] == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        pred = self.unet(x_t, t, context, y)
        return F.mse_loss(pred.float(), target.float())


def betas(schedule):
    """SD's "scaled_linear" β: linspace over √β, squared (fp64)."""
    if schedule["beta_schedule"] != "scaled_linear":
        raise ValueError(f"beta_schedule {schedule['beta_schedule']!r}; allowed: scaled_linear")
    start, end = schedule["beta_start"] ** 0.5, schedule["beta_end"] ** 0.5
    return torch.linspace(start, end, schedule["num_train_timesteps"], dtype=torch.float64) ** 2


def build(config, device=None):
    """An SDModel with uninitialised parameters (device "meta": shapes only, for counting full-size models)."""
    if device != "meta":
        return SDModel(config)
    from torch.overrides import TorchFunctionMode

    factories = {torch.empty, torch.zeros, torch.ones, torch.full, torch.tensor}

    class Meta(TorchFunctionMode):  # torch 1.13 has no `with torch.device("meta")`
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in factories and kwargs.get("device") is None:
                kwargs["device"] = "meta"
            return func(*args, **kwargs)

    with Meta():
        return SDModel(config)
