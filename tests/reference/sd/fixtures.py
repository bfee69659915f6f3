"""Tiny random Stable Diffusion checkpoints in the real layouts, written at test time (never committed).

    python3 tests/reference/sd/fixtures.py write --family sd1 --layout ldm --dtype fp16 --ema --out DIR
    python3 tests/reference/sd/fixtures.py write --family sdxl --layout diffusers --dtype fp16 --out DIR
    python3 tests/reference/sd/fixtures.py write --family sd1 --broken missing_key --out DIR
    python3 tests/reference/sd/fixtures.py write-vae --family sd1 [--latent-channels 16] --out DIR   # a VAE file
    python3 tests/reference/sd/fixtures.py write-all --out DIR          # the standard set + DIR/index.json

Each fixture is NAME.safetensors (ldm), NAME/ (diffusers folder) or NAME.ckpt, plus NAME.manifest.json: the model
config, every file with every key (dtype, shape, role), what a loader must do with it ("expect"), and for broken
fixtures the key or byte range that is wrong. `write` prints the manifest path. Roles:
  weight   read by the model            unused   a model weight no output reads (SD-2's last text block, …)
  ema      model_ema.<flattened name>   ignored  buffers real files carry (position_ids, schedule, EMA counters)
  marker   v_pred / ztsnr (empty tensors whose presence is the information)
  unknown  the misspelt key of a renamed_key fixture
Values are seeded: the same arguments give the same bytes.
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import configs  # noqa: E402
import layouts  # noqa: E402
import safetensors_io  # noqa: E402
import sd_model  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BROKEN = ("missing_key", "renamed_key", "lying_header", "truncated", "header_too_long")
DIFFUSERS_VERSION = "0.27.2"
TRANSFORMERS_VERSION = "4.38.2"
# A key every UNet has (cross-attention of the first attention level), for the missing/renamed fixtures.
PROBE_KEY = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"


# ---------------------------------------------------------------------------------------------------------------
# Weights


def init_weights(model, seed):
    """Seeded values for every parameter, in name order: norms ≈ 1 ± 0.1 and biases ±0.05·N, matrices and convs
    N(0, 1/fan_in), embeddings N(0, 0.5²). Nothing is zero (ldm zero-initialises its output convs, which would make
    a random model's prediction identically zero and a parity test vacuous)."""
    g = torch.Generator().manual_seed(seed)
    norms = {n for n, m in model.named_modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm))}
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g)
            owner, leaf = name.rsplit(".", 1)
            if owner in norms:
                p.copy_(1 + 0.1 * noise if leaf == "weight" else 0.05 * noise)
            elif leaf == "logit_scale":
                p.fill_(math.log(1 / 0.07))  # CLIP's initial temperature
            elif "embedding" in leaf or "embedding" in owner:
                p.copy_(0.5 * noise)
            elif leaf == "text_projection":  # used as x @ P: fan-in is the first dimension
                p.copy_(noise / math.sqrt(p.shape[0]))
            elif p.dim() >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.05 * noise)
    return model


def ema_weights(state, seed):
    """A plausible EMA copy that differs from the trained weights (so picking the wrong set is caught)."""
    g = torch.Generator().manual_seed(seed + 1)
    return {k: v + 0.1 * v.abs().mean() * torch.randn(v.shape, generator=g) for k, v in sorted(state.items())}


def ema_key(key):
    """model.diffusion_model.input_blocks.0.0.weight -> model_ema.diffusion_modelinput_blocks00weight (ldm LitEma:
    the first component dropped, every dot removed; sd-formats.md §1)."""
    return "model_ema." + "".join(key.split(".")[1:])


SCHEDULE_KEYS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2")


def schedule_buffers(config):
    """The DDPM buffers ldm's LatentDiffusion registers (Stability-AI/stablediffusion ldm/models/diffusion/ddpm.py
    register_schedule), fp64 maths stored as fp32."""
    betas = sd_model.betas(config["schedule"])
    ac = torch.cumprod(1 - betas, 0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    b = {"betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev, "sqrt_alphas_cumprod": ac.sqrt(),
         "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt(), "log_one_minus_alphas_cumprod": (1 - ac).log(),
         "sqrt_recip_alphas_cumprod": (1 / ac).sqrt(), "sqrt_recipm1_alphas_cumprod": (1 / ac - 1).sqrt(),
         "posterior_variance": post_var, "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
         "posterior_mean_coef1": betas * ac_prev.sqrt() / (1 - ac),
         "posterior_mean_coef2": (1 - ac_prev) * (1 - betas).sqrt() / (1 - ac)}
    return {k: b[k].float() for k in SCHEDULE_KEYS}


def sgm_sigmas(config):
    """SGM's DiscreteDenoiser buffer `denoiser.sigmas`: √((1-ᾱ)/ᾱ) over the 1000 steps, flipped (generative-models
    sgm/modules/diffusionmodules/denoiser.py, discretizer.py); sd.cpp lists it among tensors to ignore."""
    ac = schedule_buffers(config)["alphas_cumprod"].double()
    return ((1 - ac) / ac).sqrt().flip(0).float()


def reference_model(config, seed):
    return init_weights(sd_model.build(config), seed)


# ---------------------------------------------------------------------------------------------------------------
# Files


def save(path, tensors, metadata=None):
    """safetensors_io.save, plus 0-dim tensors (logit_scale, EMA counters), which it cannot view as bytes: they go
    in as [1] and the header is patched back to shape []."""
    scalars = [k for k, t in tensors.items() if t.dim() == 0]
    safetensors_io.save(path, {k: t.reshape(1) if t.dim() == 0 else t for k, t in tensors.items()}, metadata)
    if scalars:
        patch_header(path, lambda h: [h[k].update(shape=[]) for k in scalars])


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def patch_header(path, edit):
    """Rewrites a safetensors header through edit(header) (in place); the data section is kept byte for byte."""
    header, start = read_header(path)
    with open(path, "rb") as f:
        data = f.read()[start:]
    edit(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def describe(path):
    """{key: {dtype, shape}} and the metadata, from the file's own header."""
    header, _ = read_header(path)
    meta = header.pop("__metadata__", {}) or {}
    return {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in sorted(header.items())}, meta


def cast(tensors, dtype):
    """Float tensors to dtype; integers as they are; empty marker tensors stay F32 (as ComfyUI writes them)."""
    return {k: v.to(dtype) if v.is_floating_point() and v.numel() else v for k, v in tensors.items()}


# ---------------------------------------------------------------------------------------------------------------
# ldm single file


def ldm_tensors(config, model, ema, seed):
    """Every tensor of an ldm single file with its role: the model's weights (EMA weights under model_ema.* when
    asked), and the buffers real files carry."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    unused = set(model.unused_parameters())
    tensors, roles = {}, {}
    for k, v in state.items():
        tensors[k], roles[k] = v, "unused" if k in unused else "weight"
    sgm = config["family"].startswith("sdxl")
    if sgm:
        tensors["denoiser.sigmas"] = sgm_sigmas(config)
    else:
        tensors.update(schedule_buffers(config))
    for t in config["text"]:
        if t["kind"] == "hf_clip":  # the transformers buffer older files persisted
            tensors[t["prefix"] + "embeddings.position_ids"] = torch.arange(t["positions"], dtype=torch.int64)[None]
    for k in tensors:
        roles.setdefault(k, "ignored")
    if ema:
        unet = {k: v for k, v in state.items() if k.startswith(layouts.UNET)}
        for k, v in ema_weights(unet, seed).items():
            tensors[ema_key(k)], roles[ema_key(k)] = v, "ema"
        tensors["model_ema.decay"] = torch.tensor(0.9999)
        tensors["model_ema.num_updates"] = torch.tensor(123456, dtype=torch.int32)
        roles["model_ema.decay"] = roles["model_ema.num_updates"] = "ignored"
    if config["variant"] == "vpred":  # ComfyUI's marker keys (comfy/model_base.py state_dict_for_saving)
        for k in ("v_pred", "ztsnr"):
            tensors[k], roles[k] = torch.tensor([]), "marker"
    return tensors, roles


def legacy_clip_names(tensors, roles):
    """SD-1 files from before transformers 4.x nested names under text_model.: A1111 rewrites
    cond_stage_model.transformer.{embeddings,encoder,final_layer_norm}. (modules/sd_models.py)."""
    old = "cond_stage_model.transformer.text_model."
    rename = lambda k: "cond_stage_model.transformer." + k[len(old):] if k.startswith(old) else k  # noqa: E731
    return {rename(k): v for k, v in tensors.items()}, {rename(k): v for k, v in roles.items()}


# ---------------------------------------------------------------------------------------------------------------
# diffusers folder


def unet_config(config):
    u, fam = config["unet"], config["family"]
    levels = len(u["channel_mult"])
    attends = [2 ** i in u["attention_resolutions"] for i in range(levels)]
    chans = [u["model_channels"] * m for m in u["channel_mult"]]
    heads = [u["num_heads"] if u["num_head_channels"] == -1 else c // u["num_head_channels"] for c in chans]
    xl = u["adm_in_channels"] is not None
    depth = u["transformer_depth"]
    if u["transformer_depth_middle"] != depth[-1]:  # diffusers' mid block takes the last level's depth
        raise ValueError("a diffusers UNet needs transformer_depth_middle == transformer_depth[-1]")
    return {
        "_class_name": "UNet2DConditionModel", "_diffusers_version": DIFFUSERS_VERSION, "act_fn": "silu",
        "addition_embed_type": "text_time" if xl else None, "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": config.get("size_embed") if xl else None,
        # diffusers' historical misnomer: SD-1 stores the head *count* here (8), SD-2/XL per-level head counts.
        "attention_head_dim": heads[0] if u["num_head_channels"] == -1 else heads,
        "attention_type": "default", "block_out_channels": chans, "center_input_sample": False,
        "class_embed_type": None, "class_embeddings_concat": False, "conv_in_kernel": 3, "conv_out_kernel": 3,
        "cross_attention_dim": u["context_dim"], "cross_attention_norm": None,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "downsample_padding": 1, "dropout": 0.0, "dual_cross_attention": False, "encoder_hid_dim": None,
        "encoder_hid_dim_type": None, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": u["in_channels"],
        "layers_per_block": u["num_res_blocks"], "mid_block_only_cross_attention": None,
        "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
        "norm_num_groups": u["norm_groups"], "num_attention_heads": None, "num_class_embeds": None,
        "only_cross_attention": False, "out_channels": u["out_channels"],
        "projection_class_embeddings_input_dim": u["adm_in_channels"], "resnet_out_scale_factor": 1.0,
        "resnet_skip_time_act": False, "resnet_time_scale_shift": "default",
        "reverse_transformer_layers_per_block": None,
        "sample_size": {"sd1": 64, "sd2": 64, "sd2v": 96}.get(fam, 128), "time_cond_proj_dim": None,
        "time_embedding_act_fn": None, "time_embedding_dim": None, "time_embedding_type": "positional",
        "timestep_post_act": None,
        "transformer_layers_per_block": depth[0] if len(set(depth)) == 1 else depth,
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        "upcast_attention": u["upcast_attention"], "use_linear_projection": u["use_linear_in_transformer"],
    }


def vae_config(config):
    v = config["vae"]
    n = len(v["ch_mult"])
    return {"_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION, "act_fn": "silu",
            "block_out_channels": [v["ch"] * m for m in v["ch_mult"]], "down_block_types": ["DownEncoderBlock2D"] * n,
            "force_upcast": True, "in_channels": v["in_channels"], "latent_channels": v["z_channels"],
            "latents_mean": None, "latents_std": None, "layers_per_block": v["num_res_blocks"],
            "mid_block_add_attention": True, "norm_num_groups": v["norm_groups"], "out_channels": v["out_ch"],
            "sample_size": {"sd2v": 768, "sdxl": 1024, "sdxl_refiner": 1024}.get(config["family"], 512),
            "scaling_factor": v["scale_factor"],
            "shift_factor": None, "up_block_types": ["UpDecoderBlock2D"] * n, "use_post_quant_conv": True,
            "use_quant_conv": True}


def text_config(t, dtype):
    """HF CLIPTextConfig as transformers writes it. bos/eos/pad 0/2/1 are the wrong defaults real SD configs carry
    (the ids are 49406/49407): a loader must not trust them; HF itself pools at argmax(ids) when eos_token_id == 2."""
    proj = t["kind"] == "open_clip" and t["output"] == "penultimate"
    return {"architectures": ["CLIPTextModelWithProjection" if proj else "CLIPTextModel"], "attention_dropout": 0.0,
            "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": t["act"], "hidden_size": t["width"],
            "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": t["mlp"],
            "layer_norm_eps": 1e-05, "max_position_embeddings": t["positions"], "model_type": "clip_text_model",
            "num_attention_heads": t["heads"],
            "num_hidden_layers": t["layers"] - 1 if t["output"] == "penultimate_ln" else t["layers"],
            "pad_token_id": 1, "projection_dim": t.get("projection", t["width"]),
            "torch_dtype": {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype],
            "transformers_version": TRANSFORMERS_VERSION, "vocab_size": t["vocab_size"]}


def scheduler_config(config):
    xl = config["family"].startswith("sdxl")
    c = {"_class_name": "EulerDiscreteScheduler" if xl else "PNDMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
         "beta_end": config["schedule"]["beta_end"], "beta_schedule": config["schedule"]["beta_schedule"],
         "beta_start": config["schedule"]["beta_start"], "clip_sample": False,
         "num_train_timesteps": config["schedule"]["num_train_timesteps"],
         "prediction_type": "epsilon" if config["prediction"] == "epsilon" else "v_prediction",
         "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading",
         "trained_betas": None}
    if xl:
        c.update(interpolation_type="linear", sample_max_value=1.0, use_karras_sigmas=False,
                 rescale_betas_zero_snr=config["variant"] == "vpred")
    return c


def model_index(config):
    fam = config["family"]
    idx = {"_diffusers_version": DIFFUSERS_VERSION, "feature_extractor": [None, None], "image_encoder": [None, None],
           "scheduler": ["diffusers", scheduler_config(config)["_class_name"]],
           "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    texts = dict(layouts.text_components(config))
    for name in ("text_encoder", "text_encoder_2"):
        tok = name.replace("text_encoder", "tokenizer")
        if name in texts:
            t = texts[name]
            idx[name] = ["transformers", text_config(t, torch.float32)["architectures"][0]]
            idx[tok] = ["transformers", "CLIPTokenizer"]
        elif fam.startswith("sdxl"):
            idx[name], idx[tok] = [None, None], [None, None]
    if fam == "sdxl":
        idx.update(_class_name="StableDiffusionXLPipeline", force_zeros_for_empty_prompt=True)
    elif fam == "sdxl_refiner":
        idx.update(_class_name="StableDiffusionXLImg2ImgPipeline", force_zeros_for_empty_prompt=False,
                   requires_aesthetics_score=True)
    else:
        idx.update(_class_name="StableDiffusionPipeline", requires_safety_checker=False, safety_checker=[None, None])
    return dict(sorted(idx.items()))


# A synthetic CLIP-style BPE (real vocab files are not ours to ship in fixtures; the app ships CLIP's own): the
# real construction (sd-formats.md §4: byte tokens, byte</w> tokens, merges in order, then the two specials last)
# with 254 merges learned from these words, so a folder's tokenizer gives ids the app's built-in one does not.
_CORPUS = ("a photo of a cat sitting on a red chair in the garden , masterpiece best quality highly detailed "
           "painting portrait of a woman with long hair wearing a blue dress , watercolor landscape with mountains "
           "and a river at sunset , ink drawing of a dragon flying over the castle , oil painting still life with "
           "flowers and fruit on the table , anime girl with green eyes smiling in the rain , cinematic lighting "
           "dramatic shadows sharp focus , studio ghibli style forest with tall trees and soft light , pixel art "
           "spaceship in the night sky with stars , sketch of an old man reading a book by the window , vibrant "
           "colors concept art of a futuristic city street , cute dog playing with a ball on the beach").split()
TOKENIZER_MERGES = 254


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map (openai/CLIP simple_tokenizer.py)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def synthetic_bpe():
    """-> (vocab {token: id}, merges [(a, b)]): most frequent pair first, ties by the pair's text."""
    b2u = bytes_to_unicode()
    words = {}
    for w in _CORPUS:
        chars = [b2u[b] for b in w.encode()]
        key = tuple(chars[:-1] + [chars[-1] + "</w>"])
        words[key] = words.get(key, 0) + 1
    merges = []
    while len(merges) < TOKENIZER_MERGES:
        pairs = {}
        for w, n in words.items():
            for p in zip(w, w[1:]):
                pairs[p] = pairs.get(p, 0) + n
        if not pairs:
            raise RuntimeError("synthetic BPE corpus ran out of pairs")
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = {}
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    tokens = list(b2u.values())
    tokens += [t + "</w>" for t in tokens] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer(folder, pad_with_eos):
    """HF CLIPTokenizer files. SD-1 and SDXL's first tokenizer pad with <|endoftext|>; SD-2 and SDXL's second with
    "!" (id 0), sd-formats.md §4."""
    os.makedirs(folder, exist_ok=True)
    vocab, merges = synthetic_bpe()

    def special(s):
        return {"content": s, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    pad = "<|endoftext|>" if pad_with_eos else "!"
    files = {
        "vocab.json": vocab,
        "special_tokens_map.json": {"bos_token": special("<|startoftext|>"), "eos_token": special("<|endoftext|>"),
                                    "pad_token": pad, "unk_token": special("<|endoftext|>")},
        "tokenizer_config.json": {"add_prefix_space": False, "bos_token": special("<|startoftext|>"),
                                  "clean_up_tokenization_spaces": True, "do_lower_case": True,
                                  "eos_token": special("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
                                  "pad_token": pad, "tokenizer_class": "CLIPTokenizer",
                                  "unk_token": special("<|endoftext|>")}}
    for name, obj in files.items():
        _write_json(os.path.join(folder, name), obj)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return {"vocab_size": len(vocab), "bos": vocab["<|startoftext|>"], "eos": vocab["<|endoftext|>"],
            "pad": vocab[pad]}


def write_diffusers(folder, config, model, dtype):
    """A diffusers folder converted from the ldm weights by layouts.ldm_to_diffusers. fp16 uses the variant file
    names (diffusion_pytorch_model.fp16.safetensors, model.fp16.safetensors). -> {relative path: roles}."""
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    variant = ".fp16" if dtype == torch.float16 else ""
    comps = layouts.ldm_to_diffusers(config, {k: v.detach() for k, v in model.state_dict().items()})
    unused_hf = {"text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias"}
    files, tokenizers = {}, {}
    for name, sd in comps.items():
        os.makedirs(os.path.join(folder, name))
        is_text = name.startswith("text_encoder")
        rel = f"{name}/{'model' if is_text else 'diffusion_pytorch_model'}{variant}.safetensors"
        save(os.path.join(folder, rel), cast(sd, dtype), {"format": "pt"})
        if is_text:
            t = dict(layouts.text_components(config))[name]
            cfg = text_config(t, dtype)
            tok = name.replace("text_encoder", "tokenizer")
            tokenizers[tok] = write_tokenizer(os.path.join(folder, tok), pad_with_eos=t["kind"] == "hf_clip")
            unused = unused_hf if t["output"] == "penultimate" and t["kind"] == "hf_clip" else set()
        else:
            cfg = unet_config(config) if name == "unet" else vae_config(config)
            unused = set()
        _write_json(os.path.join(folder, name, "config.json"), cfg)
        files[rel] = {k: "unused" if k in unused else "weight" for k in sd}
    os.makedirs(os.path.join(folder, "scheduler"))
    _write_json(os.path.join(folder, "scheduler", "scheduler_config.json"), scheduler_config(config))
    _write_json(os.path.join(folder, "model_index.json"), model_index(config))
    return files, tokenizers


# ---------------------------------------------------------------------------------------------------------------
# Pickle checkpoints


def write_safe_ckpt(path, tensors):
    """A .ckpt as torch.save writes it (zip, persistent-id tensors; nothing but tensor rebuilds on load)."""
    torch.save({"state_dict": tensors, "global_step": 470000}, path)


def _pickle_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def write_malicious_ckpt(path, marker):
    """A torch-zip .ckpt whose data.pkl, when unpickled, calls builtins.exec(code) and the code creates `marker`.
    Written opcode by opcode (protocol 2), never by pickling a live object, so building it runs nothing:
      PROTO 2, EMPTY_DICT, MARK, "state_dict" EMPTY_DICT, "payload" GLOBAL builtins.exec (code,) REDUCE, SETITEMS, STOP
    A safe loader must refuse it (or read tensors only) and the marker must not appear."""
    code = f"open({marker!r}, 'w').write('this file ran code when unpickled')"
    pkl = (b"\x80\x02" + b"}" + b"(" + _pickle_str("state_dict") + b"}" + _pickle_str("payload")
           + b"cbuiltins\nexec\n" + _pickle_str(code) + b"\x85" + b"R" + b"u" + b".")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/byteorder", "little")
    return code


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


def fixture_name(family, layout="ldm", dtype="fp32", ema=False, variant=None, broken=None, vocab=None,
                 legacy_clip=False):
    parts = [family] + ([variant] if variant else []) + [layout, dtype] + (["ema"] if ema else [])
    parts += ([f"vocab{vocab}"] if vocab else []) + (["legacy-clip"] if legacy_clip else [])
    return "-".join(parts + ([broken.replace("_", "-")] if broken else []))


def expectation(config, broken, layout):
    """What a loader must do with the fixture (the app refuses other families and variants, issue 17/18)."""
    fam, var = config["family"], config["variant"]
    if broken:
        return {"load": False, "reason": broken}
    if var in ("inpaint", "pix2pix"):
        n = config["unet"]["in_channels"]
        return {"load": False,
                "reason": f"{var}: input_blocks.0.0.weight has {n} input channels (a txt2img UNet has 4)"}
    if fam == "sdxl_refiner":
        found = ("conditioner.embedders.0.model.* (bigG alone), no embedders.1" if layout == "ldm" else
                 "model_index.json: StableDiffusionXLImg2ImgPipeline with text_encoder_2 only")
        return {"load": False, "reason": f"SDXL refiner: {found}"}
    e = {"load": True, "family": fam, "prediction": config["prediction"]}
    if var == "vpred":
        e["zero_terminal_snr"] = True
    return e


def write_fixture(out, family, layout="ldm", dtype="fp32", ema=False, variant=None, broken=None, seed=0,
                  vocab=None, legacy_clip=False, metadata=None):
    """Writes one fixture into `out`; returns its manifest path."""
    if layout not in ("ldm", "diffusers", "ckpt"):
        raise ValueError(f"layout {layout!r}; allowed: ldm, diffusers, ckpt")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    if broken and (broken not in BROKEN or layout != "ldm"):
        raise ValueError(f"broken {broken!r}: allowed with --layout ldm: {', '.join(BROKEN)}")
    if vocab is not None and vocab < configs.TINY_VOCAB:
        raise ValueError(f"vocab {vocab}: at least {configs.TINY_VOCAB} (the synthetic tokenizer's ids)")
    config = configs.get(family, variant=variant, vocab_size=vocab)
    os.makedirs(out, exist_ok=True)
    name = fixture_name(family, layout, dtype, ema, variant, broken, vocab, legacy_clip)
    model = reference_model(config, seed)
    manifest = {"fixture": name, "family": family, "variant": variant, "layout": layout, "dtype": dtype, "ema": ema,
                "seed": seed, "prediction": config["prediction"], "config": config,
                "expect": expectation(config, broken, layout)}
    if layout == "diffusers":
        files, tokenizers = write_diffusers(os.path.join(out, name), config, model, DTYPES[dtype])
        manifest.update(path=name, tokenizers=tokenizers,
                        files={rel: _file_entry(os.path.join(out, name, rel), roles) for rel, roles in files.items()})
    elif layout == "ckpt":
        tensors, _ = ldm_tensors(config, model, ema, seed)
        rel = name + ".ckpt"
        write_safe_ckpt(os.path.join(out, rel), cast(tensors, DTYPES[dtype]))
        manifest.update(path=rel, files={rel: {"bytes": os.path.getsize(os.path.join(out, rel))}},
                        expect={"load": False, "or_read_tensors_only": True,
                                "reason": "pickle checkpoint: convert to .safetensors, or read it with a reader that "
                                "only rebuilds tensors (torch zip, persistent-id storages); the tensors equal the ldm "
                                "fixture's of the same family and dtype"})
    else:
        tensors, roles = ldm_tensors(config, model, ema, seed)
        if legacy_clip:
            tensors, roles = legacy_clip_names(tensors, roles)
        damage = None
        if broken in ("missing_key", "renamed_key"):
            value = tensors.pop(PROBE_KEY)
            roles.pop(PROBE_KEY)
            damage = {"kind": broken, "missing": [PROBE_KEY]}
            if broken == "renamed_key":
                new = PROBE_KEY.replace("attn2.to_k.", "attn2.to_kk.")
                tensors[new], roles[new] = value, "unknown"
                damage["unknown"] = [new]
        rel = name + ".safetensors"
        path = os.path.join(out, rel)
        save(path, cast(tensors, DTYPES[dtype]), metadata)
        manifest.update(path=rel, files={rel: _file_entry(path, roles)})
        if broken and damage is None:
            damage = damage_bytes(path, broken, manifest["files"][rel]["keys"])
        if damage:
            manifest["broken"] = damage
    manifest_path = os.path.join(out, name + ".manifest.json")
    _write_json(manifest_path, manifest)
    return manifest_path


def write_vae(out, family, dtype="fp16", latent_channels=None, seed=0):
    """A standalone VAE file as users download them (keys without first_stage_model., plus the EMA counters A1111
    ignores). latent_channels: a VAE of another shape (16: an SD3/Flux-style latent) that must be refused."""
    config = configs.get(family)
    v = dict(config["vae"])
    if latent_channels:
        v.update(z_channels=latent_channels, embed_dim=latent_channels)
    vae = init_weights(sd_model.AutoencoderKL(v), seed + 2)
    tensors = {k: t.detach() for k, t in vae.state_dict().items()}
    roles = dict.fromkeys(tensors, "weight")
    tensors.update({"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(840000)})
    roles.update({"model_ema.decay": "ignored", "model_ema.num_updates": "ignored"})
    name = f"{family}-vae-{dtype}" + (f"-z{latent_channels}" if latent_channels else "")
    os.makedirs(out, exist_ok=True)
    rel = name + ".safetensors"
    save(os.path.join(out, rel), cast(tensors, DTYPES[dtype]))
    expect = ({"load": True, "component": "vae", "family": family} if not latent_channels else
              {"load": False, "reason": f"VAE of another shape: {latent_channels} latent channels, the model's "
               f"{config['vae']['z_channels']} (encoder.conv_out, quant_conv, post_quant_conv, decoder.conv_in)"})
    manifest = {"fixture": name, "family": family, "layout": "vae", "dtype": dtype, "seed": seed, "path": rel,
                "config": dict(config, vae=v), "expect": expect,
                "files": {rel: _file_entry(os.path.join(out, rel), roles)}}
    path = os.path.join(out, name + ".manifest.json")
    _write_json(path, manifest)
    return path


def write_malicious(out, marker=None):
    """NAME.ckpt that would run code when unpickled, with its manifest; `marker` is the file its code creates."""
    os.makedirs(out, exist_ok=True)
    name = "malicious-pickle"
    marker = os.path.abspath(marker or os.path.join(out, name + ".ran-code"))
    code = write_malicious_ckpt(os.path.join(out, name + ".ckpt"), marker)
    manifest = {"fixture": name, "layout": "ckpt", "path": name + ".ckpt", "marker": marker, "payload": code,
                "files": {name + ".ckpt": {"bytes": os.path.getsize(os.path.join(out, name + ".ckpt"))}},
                "expect": {"load": False, "reason": "pickle that calls builtins.exec; must be refused without "
                           "unpickling (marker must not exist afterwards)"}}
    path = os.path.join(out, name + ".manifest.json")
    _write_json(path, manifest)
    return path


def damage_bytes(path, how, keys):
    """Damages a written ldm file (keys: its manifest entry, written before); -> what is now wrong."""
    size = os.path.getsize(path)
    if how == "lying_header":  # one tensor claims twice the rows its data_offsets hold
        key = "first_stage_model.decoder.conv_out.weight"
        claimed = [2 * keys[key]["shape"][0]] + keys[key]["shape"][1:]
        patch_header(path, lambda h: h[key].update(shape=claimed))
        return {"kind": how, "key": key, "claimed_shape": claimed, "stored_shape": keys[key]["shape"]}
    if how == "truncated":  # intact header, data cut at 60 %
        _, start = read_header(path)
        keep = start + (size - start) * 3 // 5
        with open(path, "r+b") as f:
            f.truncate(keep)
        return {"kind": how, "file_bytes": keep, "declared_bytes": size}
    with open(path, "r+b") as f:  # header_too_long: the u64 length points past the end of the file
        f.write(struct.pack("<Q", size + 1024))
    return {"kind": how, "declared_header_bytes": size + 1024, "file_bytes": size}


def _file_entry(path, roles):
    keys, meta = describe(path)
    for k in keys:
        keys[k]["role"] = roles[k]
    return {"bytes": os.path.getsize(path), "metadata": meta, "keys": keys}


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=False, ensure_ascii=False)
        f.write("\n")


# The standard set: every family in both layouts, each dtype once, EMA where real files have it (SD-1/2 fp16 to
# stay small), the refused variants, the broken files and the pickles (write_all adds the standalone VAEs).
def standard_set():
    rows = []
    for fam in configs.FAMILIES:
        rows += [dict(family=fam, layout="ldm", dtype="fp32"), dict(family=fam, layout="ldm", dtype="bf16"),
                 dict(family=fam, layout="ldm", dtype="fp16", ema=not fam.startswith("sdxl")),
                 dict(family=fam, layout="diffusers", dtype="fp32"), dict(family=fam, layout="diffusers", dtype="fp16")]
    rows += [dict(family="sdxl", layout="ldm", dtype="fp16", ema=True),
             dict(family="sd1", layout="ldm", dtype="fp16", variant="inpaint"),
             dict(family="sd1", layout="ldm", dtype="fp16", variant="pix2pix"),
             dict(family="sdxl", layout="ldm", dtype="fp16", variant="vpred"),
             dict(family="sdxl", layout="diffusers", dtype="fp16", variant="vpred"),
             dict(family="sd1", layout="ldm", dtype="fp16", legacy_clip=True),
             dict(family="sd1", layout="ldm", dtype="fp16", vocab=configs.CLIP_VOCAB),
             dict(family="sd1", layout="ckpt", dtype="fp16")]
    rows += [dict(family="sd1", layout="ldm", dtype="fp16", broken=b) for b in BROKEN]
    return rows


def write_all(out, seed=0):
    manifests = [write_fixture(out, seed=seed, **row) for row in standard_set()]
    manifests.append(write_malicious(out))
    manifests += [write_vae(out, "sd1", seed=seed), write_vae(out, "sdxl", seed=seed),
                  write_vae(out, "sd1", latent_channels=16, seed=seed)]
    index = os.path.join(out, "index.json")
    _write_json(index, {"fixtures": [os.path.basename(m) for m in manifests]})
    return index, manifests


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="one fixture")
    w.add_argument("--family", required=True, choices=configs.FAMILIES)
    w.add_argument("--layout", default="ldm", choices=["ldm", "diffusers", "ckpt"])
    w.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    w.add_argument("--ema", action="store_true", help="also write model_ema.* (ldm layout)")
    w.add_argument("--variant", choices=[v for v in configs.VARIANTS if v])
    w.add_argument("--broken", choices=BROKEN)
    w.add_argument("--vocab", type=int, help=f"token embedding rows (default {configs.TINY_VOCAB}; "
                   f"{configs.CLIP_VOCAB} to take the real tokenizer's ids)")
    w.add_argument("--legacy-clip", action="store_true", help="SD-1 text keys without text_model. (old files)")
    w.add_argument("--metadata", help="JSON object written as safetensors __metadata__ (ldm layout)")
    w.add_argument("--malicious", action="store_true", help="the code-running pickle instead (ignores the rest)")
    w.add_argument("--marker", help="with --malicious: the file its code would create")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--out", required=True)
    v = sub.add_parser("write-vae", help="a standalone VAE file")
    v.add_argument("--family", required=True, choices=configs.FAMILIES)
    v.add_argument("--dtype", default="fp16", choices=list(DTYPES))
    v.add_argument("--latent-channels", type=int, help="another latent width (16): a VAE the model must refuse")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--out", required=True)
    a = sub.add_parser("write-all", help="the standard set and index.json")
    a.add_argument("--out", required=True)
    a.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "write-all":
        index, manifests = write_all(args.out, args.seed)
        print(json.dumps({"index": index, "fixtures": len(manifests)}))
        return 0
    if args.cmd == "write-vae":
        print(write_vae(args.out, args.family, args.dtype, args.latent_channels, args.seed))
        return 0
    if args.malicious:
        print(write_malicious(args.out, args.marker))
        return 0
    if args.ema and args.layout != "ldm":
        ap.error("--ema: EMA weights exist only in the ldm single-file layout")
    metadata = json.loads(args.metadata) if args.metadata else None
    print(write_fixture(args.out, args.family, args.layout, args.dtype, args.ema, args.variant, args.broken,
                        args.seed, args.vocab, args.legacy_clip, metadata))
    return 0


if __name__ == "__main__":
    sys.exit(main())
