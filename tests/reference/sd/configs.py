"""Model configurations of the Stable Diffusion families, full size and tiny, in the ldm (CompVis / SGM) vocabulary.

A config is a JSON-serialisable dict (fixtures carry it in their manifest, because a tiny ldm file cannot say its own
head count or group count: real loaders take those from the family, see README.md):

    family       "sd1" | "sd2" | "sd2v" | "sdxl" | "sdxl_refiner"
    prediction   "epsilon" | "v"
    unet         ldm UNetModel arguments (ldm/modules/diffusionmodules/openaimodel.py; sgm's copy for SDXL)
    vae          ldm AutoencoderKL ddconfig (ldm/modules/diffusionmodules/model.py) + scale_factor
    text         list of text encoders, in conditioner order; each {"kind": "hf_clip" | "open_clip", "prefix", ...}
    schedule     DDPM betas ("scaled_linear", β 0.00085 → 0.012, 1000 steps)

Full-size values: sd-formats.md §1 (UNet table), §2 (SDXL), §5 (text encoders), §6 (VAE); the configs in
Stability-AI/generative-models configs/inference/sd_xl_base.yaml and sd_xl_refiner.yaml.
"""

import copy

FAMILIES = ("sd1", "sd2", "sd2v", "sdxl", "sdxl_refiner")
# Variants a fixture may apply on top of a family (all refused by the app except none/vpred; see fixtures.py).
VARIANTS = (None, "inpaint", "pix2pix", "vpred")

SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
CLIP_POSITIONS = 77
CLIP_VOCAB = 49408  # 256 bytes + 256 "</w>" bytes + 48,894 merges + 2 specials (sd-formats.md §4)


def _unet(**kw):
    u = dict(in_channels=4, out_channels=4, model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=2,
             attention_resolutions=[4, 2, 1], num_heads=-1, num_head_channels=-1, transformer_depth=[1, 1, 1, 1],
             transformer_depth_middle=1, context_dim=768, use_linear_in_transformer=False, adm_in_channels=None,
             norm_groups=32, upcast_attention=False)
    u.update(kw)
    return u


def _vae(**kw):
    v = dict(ch=128, ch_mult=[1, 2, 4, 4], num_res_blocks=2, in_channels=3, out_ch=3, z_channels=4, embed_dim=4,
             norm_groups=32, scale_factor=0.18215)
    v.update(kw)
    return v


def _clip_l(prefix, output, **kw):
    """HF CLIPTextModel (openai/clip-vit-large-patch14). output: "last_ln" = final_layer_norm(hidden[-clip_skip])
    (SD1, A1111 clip skip); "penultimate" = hidden[-2] without the final norm (SDXL)."""
    t = dict(kind="hf_clip", prefix=prefix, output=output, width=768, layers=12, heads=12, mlp=3072,
             act="quick_gelu", vocab_size=CLIP_VOCAB, positions=CLIP_POSITIONS)
    t.update(kw)
    return t


def _open_clip(prefix, output, **kw):
    """open_clip text tower (resblocks with in_proj, gelu). output: "penultimate_ln" = ln_final(penultimate) (SD2
    FrozenOpenCLIPEmbedder); "penultimate" = penultimate without ln_final, plus pooled = ln_final(last)[eot] @
    text_projection (SDXL FrozenOpenCLIPEmbedder2)."""
    t = dict(kind="open_clip", prefix=prefix, output=output, width=1024, layers=24, heads=16, mlp=4096, act="gelu",
             vocab_size=CLIP_VOCAB, positions=CLIP_POSITIONS, projection=1024)
    t.update(kw)
    return t


FULL = {
    "sd1": dict(family="sd1", prediction="epsilon",
                unet=_unet(num_heads=8), vae=_vae(),
                text=[_clip_l("cond_stage_model.transformer.text_model.", "last_ln")]),
    "sd2": dict(family="sd2", prediction="epsilon",
                unet=_unet(num_head_channels=64, context_dim=1024, use_linear_in_transformer=True), vae=_vae(),
                text=[_open_clip("cond_stage_model.model.", "penultimate_ln")]),
    # SD-2.x 768-v: same shapes; v-prediction and the attention upcast (Stability-AI/stablediffusion
    # ldm/modules/attention.py _ATTN_PRECISION; diffusers `upcast_attention` in the 2.1 UNet config).
    "sd2v": dict(family="sd2v", prediction="v",
                 unet=_unet(num_head_channels=64, context_dim=1024, use_linear_in_transformer=True,
                            upcast_attention=True), vae=_vae(),
                 text=[_open_clip("cond_stage_model.model.", "penultimate_ln")]),
    "sdxl": dict(family="sdxl", prediction="epsilon",
                 unet=_unet(channel_mult=[1, 2, 4], attention_resolutions=[4, 2], num_head_channels=64,
                            transformer_depth=[1, 2, 10], transformer_depth_middle=10, context_dim=2048,
                            use_linear_in_transformer=True, adm_in_channels=2816),
                 vae=_vae(scale_factor=0.13025),
                 text=[_clip_l("conditioner.embedders.0.transformer.text_model.", "penultimate"),
                       _open_clip("conditioner.embedders.1.model.", "penultimate", width=1280, layers=32, heads=20,
                                  mlp=5120, projection=1280)],
                 size_embed=256, time_ids=["original_size", "crop_top_left", "target_size"]),
    # Refiner (sd_xl_refiner.yaml): bigG alone as embedders.0; added conditioning ends in an aesthetic score.
    "sdxl_refiner": dict(family="sdxl_refiner", prediction="epsilon",
                         unet=_unet(model_channels=384, channel_mult=[1, 2, 4, 4], attention_resolutions=[4, 2],
                                    num_head_channels=64, transformer_depth=[4, 4, 4, 4], transformer_depth_middle=4,
                                    context_dim=1280, use_linear_in_transformer=True, adm_in_channels=2560),
                         vae=_vae(scale_factor=0.13025),
                         text=[_open_clip("conditioner.embedders.0.model.", "penultimate", width=1280, layers=32,
                                          heads=20, mlp=5120, projection=1280)],
                         size_embed=256, time_ids=["original_size", "crop_top_left", "aesthetic_score"]),
}

# Tiny configs: every structural feature of the family (levels, which levels attend, res blocks per level, a channel
# change entering levels 1 and 2 but not 3, head count vs head size, conv vs linear proj_in, per-level transformer
# depth, label_emb width rule, 77 positions, penultimate/final-norm choices, schedule) at 1/40 of the channels, so a
# whole checkpoint stays under 5 MB. Multipliers [1, 2, 3, 3] stand for [1, 2, 4, 4] (same pattern of changes, half
# the weights at the deep levels); GroupNorm keeps its role with 4 groups (8 channels cannot hold 32).
# Token rows: a synthetic BPE of 512 byte tokens + 254 merges + 2 specials (fixtures.py); --vocab 49408 takes the
# app's real tokenizer ids.
TINY_VOCAB = 768
_T_UNET = dict(model_channels=8, norm_groups=4, channel_mult=[1, 2, 3, 3])
_T_VAE = dict(ch=8, norm_groups=4, ch_mult=[1, 2, 3, 3])
_T_L = dict(width=32, layers=3, heads=2, mlp=128, vocab_size=TINY_VOCAB)
_T_H = dict(width=48, layers=3, heads=2, mlp=192, vocab_size=TINY_VOCAB, projection=48)
_T_G = dict(width=64, layers=3, heads=2, mlp=256, vocab_size=TINY_VOCAB, projection=64)

TINY = {
    "sd1": dict(family="sd1", prediction="epsilon",
                unet=_unet(**_T_UNET, num_heads=2, context_dim=32), vae=_vae(**_T_VAE),
                text=[_clip_l("cond_stage_model.transformer.text_model.", "last_ln", **_T_L)]),
    "sd2": dict(family="sd2", prediction="epsilon",
                unet=_unet(**_T_UNET, num_head_channels=8, context_dim=48, use_linear_in_transformer=True),
                vae=_vae(**_T_VAE), text=[_open_clip("cond_stage_model.model.", "penultimate_ln", **_T_H)]),
    "sd2v": dict(family="sd2v", prediction="v",
                 unet=_unet(**_T_UNET, num_head_channels=8, context_dim=48, use_linear_in_transformer=True,
                            upcast_attention=True),
                 vae=_vae(**_T_VAE), text=[_open_clip("cond_stage_model.model.", "penultimate_ln", **_T_H)]),
    "sdxl": dict(family="sdxl", prediction="epsilon",
                 unet=_unet(**dict(_T_UNET, channel_mult=[1, 2, 3]), attention_resolutions=[4, 2], num_head_channels=8,
                            transformer_depth=[1, 2, 3], transformer_depth_middle=3, context_dim=96,
                            use_linear_in_transformer=True, adm_in_channels=64 + 6 * 256),
                 vae=_vae(**_T_VAE, scale_factor=0.13025),
                 text=[_clip_l("conditioner.embedders.0.transformer.text_model.", "penultimate", **_T_L),
                       _open_clip("conditioner.embedders.1.model.", "penultimate", **_T_G)],
                 size_embed=256, time_ids=["original_size", "crop_top_left", "target_size"]),
    "sdxl_refiner": dict(family="sdxl_refiner", prediction="epsilon",
                         unet=_unet(**_T_UNET, attention_resolutions=[4, 2], num_head_channels=8,
                                    transformer_depth=[2, 2, 2, 2], transformer_depth_middle=2, context_dim=64,
                                    use_linear_in_transformer=True, adm_in_channels=64 + 5 * 256),
                         vae=_vae(**_T_VAE, scale_factor=0.13025),
                         text=[_open_clip("conditioner.embedders.0.model.", "penultimate", **_T_G)],
                         size_embed=256, time_ids=["original_size", "crop_top_left", "aesthetic_score"]),
}

# Numbers each size/crop entry contributes to the added conditioning (two for a size or a crop, one for a score).
TIME_ID_WIDTH = {"original_size": 2, "crop_top_left": 2, "target_size": 2, "aesthetic_score": 1}


def get(family, tiny=True, variant=None, vocab_size=None):
    """A validated copy of a family's config. variant "inpaint"/"pix2pix" widens the UNet input (9/8 channels,
    sd-formats.md §1 detection); "vpred" makes an SDXL model v-prediction (marker keys, §1)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; allowed: {', '.join(str(v) for v in VARIANTS)}")
    c = copy.deepcopy((TINY if tiny else FULL)[family])
    c["schedule"] = dict(SCHEDULE)
    c["variant"] = variant
    if variant == "inpaint":
        c["unet"]["in_channels"] = 9
    elif variant == "pix2pix":
        c["unet"]["in_channels"] = 8
    elif variant == "vpred":
        if not family.startswith("sdxl"):
            raise ValueError("variant 'vpred' marks SDXL files (v_pred/ztsnr keys); SD-2 v models are family 'sd2v'")
        c["prediction"] = "v"
    if vocab_size is not None:
        for t in c["text"]:
            t["vocab_size"] = int(vocab_size)
    validate(c)
    return c


def validate(c):
    """Errors name the field and what is allowed, before any module is built."""
    u, v = c["unet"], c["vae"]
    levels = len(u["channel_mult"])
    if len(u["transformer_depth"]) != levels:
        raise ValueError(f"unet.transformer_depth has {len(u['transformer_depth'])} entries, channel_mult {levels}")
    if (u["num_heads"] == -1) == (u["num_head_channels"] == -1):
        raise ValueError("unet: set exactly one of num_heads (SD-1, fixed head count) or num_head_channels (SD-2/XL)")
    for level, mult in enumerate(u["channel_mult"]):
        ch = u["model_channels"] * mult
        if ch % u["norm_groups"]:
            raise ValueError(f"unet level {level}: {ch} channels do not divide into {u['norm_groups']} groups")
        if 2 ** level in u["attention_resolutions"]:
            per = u["num_head_channels"] if u["num_heads"] == -1 else ch // u["num_heads"]
            if per <= 0 or ch % per:
                raise ValueError(f"unet level {level}: {ch} channels do not split into heads of {per}")
    for mult in v["ch_mult"]:
        if v["ch"] * mult % v["norm_groups"]:
            raise ValueError(f"vae: {v['ch'] * mult} channels do not divide into {v['norm_groups']} groups")
    for t in c["text"]:
        if t["kind"] not in ("hf_clip", "open_clip"):
            raise ValueError(f"text kind {t['kind']!r}; allowed: hf_clip, open_clip")
        if t["width"] % t["heads"]:
            raise ValueError(f"text {t['prefix']}: width {t['width']} is not a multiple of heads {t['heads']}")
    ctx = context_width(c)
    if ctx != u["context_dim"]:
        raise ValueError(f"unet.context_dim {u['context_dim']} != text context width {ctx}")
    if u["adm_in_channels"] is not None:
        adm = c["text"][-1]["projection"] + c["size_embed"] * sum(TIME_ID_WIDTH[k] for k in c["time_ids"])
        if adm != u["adm_in_channels"]:
            raise ValueError(f"unet.adm_in_channels {u['adm_in_channels']} != pooled + size embeddings {adm}")
    if c["prediction"] not in ("epsilon", "v"):
        raise ValueError(f"prediction {c['prediction']!r}; allowed: epsilon, v")


def context_width(c):
    return sum(t["width"] for t in c["text"])
