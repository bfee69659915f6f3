"""The built-in diffusion model written again in plain PyTorch: a test oracle for the native worker.

Mirrors native/src/model.{h,cpp} module for module, with the same parameter names ("unet.…", "text_encoder.…",
diffusers/transformers style), so a model.safetensors of the app loads here with a plain load_state_dict and
the worker's `forward` op can be compared output for output and gradient for gradient (tests/reference/parity.py).
Kept deliberately plain: no fused attention kernels, no dropout, fp32 unless told otherwise.

Shapes: images x [B, C, H, W] in [-1, 1]; timesteps t [B] int64; text context [B, L, D].
Runs on PyTorch 1.13 (Debian 12's python3-torch) and 2.x.
"""

import json
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

import safetensors_io

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
PAD, UNK, BOS, EOS = 0, 1, 2, 3
# native/src/model.cpp kDefaultTargets: the layers SHiRA/LoRA train unless told otherwise (dotted suffixes).
DEFAULT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]


# ---------------------------------------------------------------------------------------------------------------
# Config (model_config_from_json's defaults; the shipped file sets every field)


def config_with_defaults(j):
    unet = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=[32, 64], layers_per_block=1,
                attention_heads=4, norm_num_groups=8, use_linear_projection=False, patch_size=1)
    unet.update(j.get("unet", {}))
    unet.setdefault("attention", [True] * len(unet["block_out_channels"]))
    text = dict(vocab=[], width=64, layers=2, heads=4, max_length=16, spare_buckets=64)
    text.update(j.get("text_encoder", {}))
    diff = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon", sigma_data=1.0)
    diff.update(j.get("diffusion", {}))
    return {"name": j.get("name", "tiny"), "unet": unet, "text_encoder": text, "diffusion": diff}


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer (WordTokenizer)


def fnv1a64(data: bytes) -> int:
    h = 14695981039346656037  # FNV-64 offset basis
    for c in data:
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


class WordTokenizer:
    """Lower-case ASCII words split on anything but [a-z0-9'] (bytewise, as std::isalnum in the C locale:
    UTF-8 bytes >= 0x80 separate words), wrapped as <bos> w.. <eos> <pad>.. to max_length. An unknown word w
    maps to len(vocab) + fnv1a64(w) % spare_buckets (<unk> when spare_buckets == 0)."""

    def __init__(self, words, spare_buckets=0):
        self.vocab = SPECIALS + [w for w in words if w not in SPECIALS]
        self.ids = {}
        for i, w in enumerate(self.vocab):
            self.ids.setdefault(w, i)  # std::map::emplace keeps the first
        self.spare_buckets = spare_buckets

    def num_ids(self):
        return len(self.vocab) + self.spare_buckets

    def word_id(self, word: bytes):
        w = word.decode("latin-1")  # only ASCII bytes reach here
        if w in self.ids:
            return self.ids[w]
        return len(self.vocab) + fnv1a64(word) % self.spare_buckets if self.spare_buckets > 0 else UNK

    def encode(self, text: str, max_length: int):
        out = [BOS]
        for word in re.findall(rb"[A-Za-z0-9']+", text.encode("utf-8")):
            out.append(self.word_id(word.lower()))
        out = out[: max_length - 1] + [EOS]
        return out + [PAD] * (max_length - len(out))


# ---------------------------------------------------------------------------------------------------------------
# Shared attention: q [B, N, C], k/v [B, M, C] -> [B, N, C]; softmax(q kᵀ/√d) v per head, no mask.


def attention(q, k, v, heads):
    B, N, C = q.shape
    M, d = k.shape[1], C // heads
    q = q.view(B, N, heads, d).transpose(1, 2)
    k = k.view(B, M, heads, d).transpose(1, 2)
    v = v.view(B, M, heads, d).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
    return torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(B, N, C)


# ---------------------------------------------------------------------------------------------------------------
# Text encoder (CLIPTextModel names: embeddings.*, encoder.layers.N.*, final_layer_norm). Pre-LN, GELU, no
# causal mask (the native encoder attends over every position, padding included).


class CLIPAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.v_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, h):
        return self.out_proj(attention(self.q_proj(h), self.k_proj(h), self.v_proj(h), self.heads))


class CLIPMLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width)
        self.self_attn = CLIPAttention(width, heads)
        self.layer_norm2 = nn.LayerNorm(width)
        self.mlp = CLIPMLP(width)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, num_ids, width, max_length):
        super().__init__()
        self.token_embedding = nn.Embedding(num_ids, width)
        self.position_embedding = nn.Embedding(max_length, width)


class CLIPEncoder(nn.Module):
    def __init__(self, width, heads, layers):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(width, heads) for _ in range(layers)])


class WordTextEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.tokenizer = WordTokenizer(c["vocab"], c["spare_buckets"])
        self.embeddings = CLIPEmbeddings(self.tokenizer.num_ids(), c["width"], c["max_length"])
        self.encoder = CLIPEncoder(c["width"], c["heads"], c["layers"])
        self.final_layer_norm = nn.LayerNorm(c["width"])

    def token_ids(self, prompts):
        device = self.embeddings.token_embedding.weight.device
        return torch.tensor([self.tokenizer.encode(p, self.config["max_length"]) for p in prompts], device=device)

    def forward(self, ids):  # ids [B, L] -> [B, L, D]
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.embeddings.token_embedding(ids) + self.embeddings.position_embedding(pos).unsqueeze(0)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.final_layer_norm(x)

    def encode(self, prompts):
        return self.forward(self.token_ids(prompts))


# ---------------------------------------------------------------------------------------------------------------
# UNet (diffusers: ResnetBlock2D, Attention, GEGLU FeedForward, BasicTransformerBlock, Transformer2DModel,
# Downsample2D, Upsample2D, UNet2DConditionModel)


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):  # x [B, cin, H, W], temb [B, temb] -> [B, cout, H, W]
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class Attention(nn.Module):
    def __init__(self, dim, context_dim, heads):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])  # "to_out.0", as diffusers

    def forward(self, x, context):
        return self.to_out[0](attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads))


class GEGLU(nn.Module):  # h · gelu(gate), arXiv 2002.05202
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):  # "ff.net.0.proj" (dim -> 2·inner), "ff.net.2" (inner -> dim)
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, context_dim, heads):
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, context_dim, heads)
        self.norm3, self.ff = nn.LayerNorm(dim), FeedForward(dim)

    def forward(self, x, context):
        h = self.norm1(x)
        x = x + self.attn1(h, h)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    def __init__(self, ch, context_dim, heads, groups, linear_projection):
        super().__init__()
        self.linear_projection = linear_projection
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        make = (lambda: nn.Linear(ch, ch)) if linear_projection else (lambda: nn.Conv2d(ch, ch, 1))
        self.proj_in = make()
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(ch, context_dim, heads)])
        self.proj_out = make()

    def forward(self, x, context):  # x [B, C, H, W] -> tokens [B, H·W, C] -> back; residual around it all
        B, C, H, W = x.shape
        h = self.norm(x)
        if not self.linear_projection:
            h = self.proj_in(h)
        h = h.permute(0, 2, 3, 1).reshape(B, H * W, C)
        if self.linear_projection:
            h = self.proj_in(h)
        h = self.transformer_blocks[0](h, context)
        if self.linear_projection:
            h = self.proj_out(h)
        h = h.reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()
        if not self.linear_projection:
            h = self.proj_out(h)
        return h + x


class Downsample2D(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):  # one down/up level or the mid block: resnets[j] then attentions[j] (when present)
    def __init__(self):
        super().__init__()
        self.resnets = nn.ModuleList()
        self.attentions = nn.ModuleList()

    def layer(self, j, h, temb, context):
        h = self.resnets[j](h, temb)
        if len(self.attentions) > j:
            h = self.attentions[j](h, context)
        return h


class TimestepEmbedding(nn.Module):
    def __init__(self, ch, temb):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(ch, temb), nn.Linear(temb, temb)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


def timestep_embedding(t, dim):
    """Sinusoidal embedding, diffusers get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0) as SD.
    t [B] -> [B, dim]"""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    args = t.float()[:, None] * exponent.exp()[None, :]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class UNet2DConditionModel(nn.Module):
    def __init__(self, c, context_dim):
        super().__init__()
        self.config = c
        ch, g, heads, lp = c["block_out_channels"], c["norm_num_groups"], c["attention_heads"], c["use_linear_projection"]
        levels, temb, p2 = len(ch), 4 * ch[0], c["patch_size"] ** 2
        self.conv_in = nn.Conv2d(c["in_channels"] * p2, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        # Skip channels as a stack while building, so the up path mirrors the down path.
        skips, cur = [ch[0]], ch[0]
        self.down_blocks = nn.ModuleList()
        for i in range(levels):
            b = Block()
            for _ in range(c["layers_per_block"]):
                b.resnets.append(ResnetBlock2D(cur, ch[i], temb, g))
                cur = ch[i]
                if c["attention"][i]:
                    b.attentions.append(Transformer2DModel(cur, context_dim, heads, g, lp))
                skips.append(cur)
            if i + 1 < levels:
                b.downsamplers = nn.ModuleList([Downsample2D(cur)])
                skips.append(cur)
            self.down_blocks.append(b)
        self.mid_block = Block()
        self.mid_block.resnets.append(ResnetBlock2D(cur, cur, temb, g))
        self.mid_block.attentions.append(Transformer2DModel(cur, context_dim, heads, g, lp))
        self.mid_block.resnets.append(ResnetBlock2D(cur, cur, temb, g))
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(levels)):
            b = Block()
            for _ in range(c["layers_per_block"] + 1):
                skip = skips.pop()
                b.resnets.append(ResnetBlock2D(cur + skip, ch[i], temb, g))
                cur = ch[i]
                if c["attention"][i]:
                    b.attentions.append(Transformer2DModel(cur, context_dim, heads, g, lp))
            if i > 0:
                b.upsamplers = nn.ModuleList([Upsample2D(cur)])
            self.up_blocks.append(b)
        self.conv_norm_out = nn.GroupNorm(g, cur, eps=1e-5)
        self.conv_out = nn.Conv2d(cur, c["out_channels"] * p2, 3, padding=1)

    def forward(self, x, t, context):
        p = self.config["patch_size"]
        # 1. time
        temb = self.time_embedding(timestep_embedding(t, self.config["block_out_channels"][0]))
        # 2. pre-process: space-to-depth by p, so every level runs at 1/p² of the pixels
        h = self.conv_in(F.pixel_unshuffle(x, p) if p > 1 else x)
        skips = [h]
        # 3. down
        for b in self.down_blocks:
            for j in range(len(b.resnets)):
                h = b.layer(j, h, temb, context)
                skips.append(h)
            if hasattr(b, "downsamplers"):
                h = b.downsamplers[0](h)
                skips.append(h)
        # 4. mid
        h = self.mid_block.resnets[0](h, temb)
        h = self.mid_block.attentions[0](h, context)
        h = self.mid_block.resnets[1](h, temb)
        # 5. up
        for b in self.up_blocks:
            for j in range(len(b.resnets)):
                h = b.layer(j, torch.cat([h, skips.pop()], dim=1), temb, context)
            if hasattr(b, "upsamplers"):
                h = b.upsamplers[0](h)
        # 6. post-process
        out = self.conv_out(F.silu(self.conv_norm_out(h)))
        return F.pixel_shuffle(out, p) if p > 1 else out


# ---------------------------------------------------------------------------------------------------------------
# The whole model


class DiffusionModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config_with_defaults(config)
        self.text_encoder = WordTextEncoder(self.config["text_encoder"])
        self.unet = UNet2DConditionModel(self.config["unet"], self.config["text_encoder"]["width"])

    def forward(self, x, t, prompts):
        """-> (prediction [B, C, H, W], context [B, L, D]); what the worker's `forward` op returns."""
        context = self.text_encoder.encode(prompts)
        return self.unet(x, t, context), context

    def adaptable_layers(self):
        """Every Linear/Conv2d by module path ("unet.mid_block.attentions.0.proj_in"), as DiffusionModel::layers()."""
        return {n: m for n, m in self.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}

    def target_layers(self, targets=DEFAULT_TARGETS):
        return {n: m for n, m in self.adaptable_layers().items() if layer_matches(n, targets)}


def layer_matches(name, patterns):
    """"re:<regex>" or a dotted suffix ("to_out.0" matches "...attn1.to_out.0"), as native layer_matches."""
    for p in patterns:
        if p.startswith("re:"):
            if re.search(p[3:], name):
                return True
        elif name == p or name.endswith("." + p):
            return True
    return False


def load_model(path, config=None, device="cpu", dtype=torch.float32):
    """Loads an app model.safetensors: the config from its __metadata__["config"] (or `config`, a dict or a
    config.json path), every tensor by name (fp16 -> dtype). Missing, unknown or mis-shaped tensors are errors,
    as in native model_load."""
    tensors, meta = safetensors_io.load(path)
    if config is None:
        config = json.loads(meta["config"])
        # Files written before spare buckets existed have none; the default (64) would not fit their embedding.
        config.setdefault("text_encoder", {}).setdefault("spare_buckets", 0)
    elif isinstance(config, str):
        with open(config) as f:
            config = json.load(f)
    model = DiffusionModel(config)
    state = model.state_dict()
    missing = sorted(set(state) - set(tensors))
    unknown = sorted(set(tensors) - set(state))
    if missing or unknown:
        raise ValueError(f"{path}: missing tensors {missing[:5]}, unknown tensors {unknown[:5]}")
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(state[name].shape):
            raise ValueError(f"{path}: tensor {name} has shape {tuple(t.shape)}, model wants {tuple(state[name].shape)}")
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------------------------
# Diffusion objective (native diffusion_loss), for training benchmarks on the reference (PEFT runs)


def alphas_cumprod(d):
    T = d["num_train_timesteps"]
    if d["beta_schedule"] == "scaled_linear":
        betas = torch.linspace(math.sqrt(d["beta_start"]), math.sqrt(d["beta_end"]), T, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(d["beta_start"], d["beta_end"], T, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def diffusion_loss(model, x0, context, generator, ac=None):
    """L_simple (DDPM eq. 14): t ~ U{0..T-1}, ε ~ N(0, I) drawn on the CPU generator, target ε or v
    (Salimans & Ho; σ_d-generalised v as native v_scales). x0 [B, C, H, W] in [-1, 1], context [B, L, D]."""
    d = model.config["diffusion"]
    ac = alphas_cumprod(d) if ac is None else ac
    B = x0.shape[0]
    t = torch.randint(0, d["num_train_timesteps"], (B,), generator=generator)
    eps = torch.randn(x0.shape, generator=generator).to(x0.device)
    a64 = ac[t]
    a = a64.float().to(x0.device).view(B, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    if d["prediction_type"] == "epsilon":
        target, scale_in = eps, None
    elif d.get("sigma_data", 1.0) == 1.0:
        target, scale_in = a.sqrt() * eps - (1 - a).sqrt() * x0, None
    else:
        sd = d["sigma_data"]
        D = 1 - a64 + a64 * sd * sd
        col = lambda v: v.float().to(x0.device).view(B, 1, 1, 1)
        scale_in = col(1 / D.sqrt())
        target = col(sd * a64.sqrt() / D.sqrt()) * eps - col((1 - a64).sqrt() / (sd * D.sqrt())) * x0
    pred = model.unet(x_t if scale_in is None else x_t * scale_in, t.to(x0.device), context)
    return F.mse_loss(pred, target)
