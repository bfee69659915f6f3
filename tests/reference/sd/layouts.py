"""ldm single-file names <-> diffusers folder names, written from sd-formats.md §1 (UNet, VAE), §2 (bigG) and §3.

Driven by the model config (which levels attend, how many res blocks), not by guessing from key text, so every key
of a checkpoint maps or the conversion fails naming it. Tensor changes on the way (and back):
  * VAE mid attention q/k/v/proj_out: 1×1 conv [c, c, 1, 1] <-> Linear [c, c]
  * open_clip in_proj [3w, w] (q, k, v in that order) <-> q_proj/k_proj/v_proj; text_projection x@P <-> Linear Pᵀ
  * SD-2's diffusers text encoder drops the last block, the projection and logit_scale (it is built to return
    ln_final(penultimate) as its last_hidden_state), so those cannot come back from a diffusers folder.
"""

import torch

UNET = "model.diffusion_model."
VAE = "first_stage_model."

# ldm ResBlock child -> diffusers ResnetBlock2D child (sd-formats.md §1 "Resnet internals")
_UNET_RESNET = {"in_layers.0.": "norm1.", "in_layers.2.": "conv1.", "emb_layers.1.": "time_emb_proj.",
                "out_layers.0.": "norm2.", "out_layers.3.": "conv2.", "skip_connection.": "conv_shortcut."}


def unet_prefixes(u):
    """ldm module prefix -> diffusers module prefix, for every module of a UNet config."""
    m = {"time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
         "input_blocks.0.0.": "conv_in.", "out.0.": "conv_norm_out.", "out.2.": "conv_out.",
         "middle_block.1.": "mid_block.attentions.0."}
    if u["adm_in_channels"] is not None:
        m.update({"label_emb.0.0.": "add_embedding.linear_1.", "label_emb.0.2.": "add_embedding.linear_2."})

    def resnet(ldm, diff):
        for a, b in _UNET_RESNET.items():
            m[ldm + a] = diff + b

    resnet("middle_block.0.", "mid_block.resnets.0.")
    resnet("middle_block.2.", "mid_block.resnets.1.")
    n_res, levels = u["num_res_blocks"], len(u["channel_mult"])
    attends = [2 ** i in u["attention_resolutions"] for i in range(levels)]
    for i in range(levels):
        for j in range(n_res):
            n = 1 + i * (n_res + 1) + j
            resnet(f"input_blocks.{n}.0.", f"down_blocks.{i}.resnets.{j}.")
            if attends[i]:
                m[f"input_blocks.{n}.1."] = f"down_blocks.{i}.attentions.{j}."
        if i < levels - 1:
            m[f"input_blocks.{(i + 1) * (n_res + 1)}.0.op."] = f"down_blocks.{i}.downsamplers.0.conv."
    for i in range(levels):  # diffusers up_blocks.i runs ldm level levels-1-i
        level = levels - 1 - i
        for j in range(n_res + 1):
            n = i * (n_res + 1) + j
            resnet(f"output_blocks.{n}.0.", f"up_blocks.{i}.resnets.{j}.")
            if attends[level]:
                m[f"output_blocks.{n}.1."] = f"up_blocks.{i}.attentions.{j}."
        if level > 0:  # the upsampler follows the attention where the level has one (SD-1 up_blocks.0 has none)
            m[f"output_blocks.{i * (n_res + 1) + n_res}.{2 if attends[level] else 1}.conv."] = \
                f"up_blocks.{i}.upsamplers.0.conv."
    return m


def vae_prefixes(v):
    m = {"quant_conv.": "quant_conv.", "post_quant_conv.": "post_quant_conv."}
    levels = len(v["ch_mult"])
    for side in ("encoder", "decoder"):
        s = side + "."
        m.update({s + "conv_in.": s + "conv_in.", s + "conv_out.": s + "conv_out.",
                  s + "norm_out.": s + "conv_norm_out.",
                  s + "mid.attn_1.norm.": s + "mid_block.attentions.0.group_norm.",
                  s + "mid.attn_1.q.": s + "mid_block.attentions.0.to_q.",
                  s + "mid.attn_1.k.": s + "mid_block.attentions.0.to_k.",
                  s + "mid.attn_1.v.": s + "mid_block.attentions.0.to_v.",
                  s + "mid.attn_1.proj_out.": s + "mid_block.attentions.0.to_out.0."})
        for k in (1, 2):
            for part in ("norm1.", "conv1.", "norm2.", "conv2."):
                m[f"{s}mid.block_{k}.{part}"] = f"{s}mid_block.resnets.{k - 1}.{part}"
    for i in range(levels):
        for j in range(v["num_res_blocks"]):
            _vae_resnet(m, f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.")
        if i < levels - 1:
            m[f"encoder.down.{i}.downsample.conv."] = f"encoder.down_blocks.{i}.downsamplers.0.conv."
    for i in range(levels):  # the index order is reversed: decoder.up.{levels-1-i} -> up_blocks.i
        level = levels - 1 - i
        for j in range(v["num_res_blocks"] + 1):
            _vae_resnet(m, f"decoder.up.{level}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.")
        if level > 0:
            m[f"decoder.up.{level}.upsample.conv."] = f"decoder.up_blocks.{i}.upsamplers.0.conv."
    return m


def _vae_resnet(m, ldm, diff):
    for part in ("norm1.", "conv1.", "norm2.", "conv2."):
        m[ldm + part] = diff + part
    m[ldm + "nin_shortcut."] = diff + "conv_shortcut."


def _rename(key, prefixes, what):
    best = max((p for p in prefixes if key.startswith(p)), key=len, default=None)
    if best is None:
        raise KeyError(f"{what}: no mapping for {key!r}")
    return prefixes[best] + key[len(best):]


def _is_vae_attn_conv(ldm_key):
    return ".mid.attn_1." in ldm_key and ldm_key.endswith(".weight") and not ldm_key.endswith("norm.weight")


def text_components(config):
    """[(diffusers folder, text config)] in the folder order of the pipeline: SD-1/2 text_encoder; SDXL
    text_encoder (CLIP-L) and text_encoder_2 (bigG); refiner text_encoder_2 only."""
    names = ["text_encoder", "text_encoder_2"]
    texts = config["text"]
    if config["family"] == "sdxl_refiner":
        return [("text_encoder_2", texts[0])]
    return list(zip(names, texts))


_OC_BLOCK = (("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.out_proj.", "self_attn.out_proj."),
             ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."))


def _text_layers(t):
    """Blocks a diffusers text encoder keeps: SD-2's drops its last (it returns ln_final(penultimate))."""
    return t["layers"] - 1 if t["output"] == "penultimate_ln" else t["layers"]


def _open_clip_pairs(t):
    """(open_clip key, HF key) for the tensors that only change name."""
    pairs = [("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
             ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
             ("ln_final.weight", "text_model.final_layer_norm.weight"),
             ("ln_final.bias", "text_model.final_layer_norm.bias")]
    for n in range(_text_layers(t)):
        for x, y in _OC_BLOCK:
            pairs += [(f"transformer.resblocks.{n}.{x}{p}", f"text_model.encoder.layers.{n}.{y}{p}")
                      for p in ("weight", "bias")]
    return pairs


def _open_clip_to_hf(t, sd):
    """open_clip text tower (keys relative to its prefix) -> HF CLIPTextModel(WithProjection) keys."""
    out = {h: sd[o] for o, h in _open_clip_pairs(t)}
    if t["output"] == "penultimate":  # SDXL's bigG keeps its projection, as a Linear: x @ P = x Wᵀ with W = Pᵀ
        out["text_projection.weight"] = sd["text_projection"].t().contiguous()
    for n in range(_text_layers(t)):
        for p in ("weight", "bias"):
            for q, part in zip("qkv", sd[f"transformer.resblocks.{n}.attn.in_proj_{p}"].chunk(3, dim=0)):
                out[f"text_model.encoder.layers.{n}.self_attn.{q}_proj.{p}"] = part.contiguous()
    return out


def hf_text_keys(t):
    """The keys a diffusers text encoder folder holds for text config t (HF CLIPTextModel[WithProjection];
    current transformers no longer saves the position_ids buffer)."""
    keys = ["text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
            "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias"]
    for n in range(_text_layers(t)):
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "layer_norm1",
                  "layer_norm2", "mlp.fc1", "mlp.fc2"):
            keys += [f"text_model.encoder.layers.{n}.{m}.weight", f"text_model.encoder.layers.{n}.{m}.bias"]
    if t["kind"] == "open_clip" and t["output"] == "penultimate":
        keys.append("text_projection.weight")
    return keys


def _hf_to_open_clip(t, sd):
    """Inverse of _open_clip_to_hf (sd holds exactly hf_text_keys(t))."""
    out = {o: sd[h] for o, h in _open_clip_pairs(t)}
    if "text_projection.weight" in sd:
        out["text_projection"] = sd["text_projection.weight"].t().contiguous()
    for n in range(_text_layers(t)):
        for p in ("weight", "bias"):
            out[f"transformer.resblocks.{n}.attn.in_proj_{p}"] = torch.cat(
                [sd[f"text_model.encoder.layers.{n}.self_attn.{q}_proj.{p}"] for q in "qkv"], dim=0)
    return out


def ldm_to_diffusers(config, sd):
    """sd: a model state dict in ldm names (weights only, no buffers or EMA) -> {component: {diffusers key: tensor}}
    for unet, vae and the text encoders. Raises KeyError naming any key without a mapping."""
    up, vp = unet_prefixes(config["unet"]), vae_prefixes(config["vae"])
    comps = {"unet": {}, "vae": {}}
    text = {t["prefix"]: (name, t) for name, t in text_components(config)}
    text_sd = {p: {} for p in text}
    for key, value in sd.items():
        if key.startswith(UNET):
            comps["unet"][_rename(key[len(UNET):], up, "unet")] = value
        elif key.startswith(VAE):
            k = key[len(VAE):]
            comps["vae"][_rename(k, vp, "vae")] = value[:, :, 0, 0].contiguous() if _is_vae_attn_conv(k) else value
        else:
            prefix = next((p for p in text if key.startswith(p)), None)
            if prefix is None:
                raise KeyError(f"no component for {key!r}")
            text_sd[prefix][key[len(prefix):]] = value
    for prefix, (name, t) in text.items():
        if t["kind"] == "hf_clip":
            comps[name] = {"text_model." + k: v for k, v in text_sd[prefix].items()}
        else:
            comps[name] = _open_clip_to_hf(t, text_sd[prefix])
    return comps


def diffusers_to_ldm(config, comps):
    """{component: {diffusers key: tensor}} -> ldm-named state dict. Raises KeyError naming any diffusers key
    without a mapping (a renamed or foreign key)."""
    out = {}
    for comp, prefixes, root in (("unet", unet_prefixes(config["unet"]), UNET),
                                 ("vae", vae_prefixes(config["vae"]), VAE)):
        inverse = {b: a for a, b in prefixes.items()}
        for key, value in comps[comp].items():
            k = _rename(key, inverse, comp)
            out[root + k] = value[:, :, None, None] if comp == "vae" and _is_vae_attn_conv(k) else value
    for name, t in text_components(config):
        sd = comps[name]
        expected = set(hf_text_keys(t))
        foreign, missing = sorted(set(sd) - expected), sorted(expected - set(sd))
        if foreign:
            raise KeyError(f"{name}: no mapping for {foreign[0]!r}")
        if missing:
            raise KeyError(f"{name}: missing {missing[0]!r}")
        if t["kind"] == "hf_clip":
            out.update({t["prefix"] + k[len("text_model."):]: v for k, v in sd.items()})
        else:
            out.update({t["prefix"] + k: v for k, v in _hf_to_open_clip(t, sd).items()})
    return out
