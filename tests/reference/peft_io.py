"""PEFT's SHiRA layout without PEFT (shared/reference/shira-notes.md §4.6), and applying adapters to the reference.

Folder: adapter_config.json ({"peft_type": "SHIRA", "r", "mask_type", "target_modules", ...}) and
adapter_model.safetensors with, per module (path relative to the wrapped component, e.g. the UNet):
  base_model.model.<module>.shira_weight   F32 [K]     trained values
  base_model.model.<module>.shira_indices  I32 [2, K]  row i (output feature), column j (input feature)
The worker's adapter_export writes the UNet's layers at the top and text-encoder layers in text_encoder/.
"""

import json
import os

import torch

import safetensors_io
from model import DEFAULT_TARGETS

PREFIX = "base_model.model."


def read_peft_shira(folder):
    """-> {layer path ("unet.<module>" | "text_encoder.<module>"): (values F32 [K], rows I64 [K], cols I64 [K])},
    config of the top folder. Checks PEFT's dtypes and shapes on the way."""
    layers, config = {}, None
    for component, sub in (("unet", folder), ("text_encoder", os.path.join(folder, "text_encoder"))):
        path = os.path.join(sub, "adapter_model.safetensors")
        if not os.path.exists(path):
            continue
        with open(os.path.join(sub, "adapter_config.json")) as f:
            cfg = json.load(f)
        assert cfg["peft_type"] == "SHIRA", cfg
        config = config or cfg
        tensors, _ = safetensors_io.load(path)
        for key, w in tensors.items():
            if not key.endswith(".shira_weight"):
                continue
            base = key[: -len(".shira_weight")]
            idx = tensors[base + ".shira_indices"]
            assert key.startswith(PREFIX), key
            assert w.dtype == torch.float32 and w.dim() == 1, (key, w.dtype, w.shape)
            assert idx.dtype == torch.int32 and tuple(idx.shape) == (2, w.numel()), (key, idx.dtype, idx.shape)
            idx = idx.long()
            layers[component + "." + base[len(PREFIX):]] = (w, idx[0], idx[1])
    return layers, config


def peft_random_mask(m, n, r, seed):
    """PEFT's random_mask: the first r·(m+n) of randperm(m·n) from a torch.Generator seeded with `seed`,
    returned as (rows, cols) in torch.where order (row-major), as ShiraLayer.update_layer stores them."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(m * n, generator=g)[: r * (m + n)].sort().values
    return flat // n, flat % n


def write_peft_shira(folder, layers, r, seed, component="unet"):
    """layers: {"unet.<module>": (values [K], rows [K], cols [K])} -> a PEFT folder for that component."""
    os.makedirs(folder, exist_ok=True)
    tensors, targets = {}, set()
    for name, (v, rows, cols) in layers.items():
        module = name[len(component) + 1:]
        tensors[PREFIX + module + ".shira_weight"] = v.float()
        tensors[PREFIX + module + ".shira_indices"] = torch.stack([rows, cols]).to(torch.int32)
        # PEFT matches target_modules as dotted suffixes; numeric leaves need their parents ("ff.net.2").
        targets.add(next((t for t in DEFAULT_TARGETS if module.endswith("." + t)), module.split(".")[-1]))
    safetensors_io.save(os.path.join(folder, "adapter_model.safetensors"), tensors, {"format": "pt"})
    config = {"peft_type": "SHIRA", "r": r, "mask_type": "random", "random_seed": seed, "target_modules": sorted(targets),
              "fan_in_fan_out": False, "init_weights": True, "inference_mode": True, "modules_to_save": None,
              "task_type": None, "base_model_name_or_path": None, "revision": None}
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def read_v2_lora(path):
    """The app's v2 LoRA file (docs/adapter-format.md): "<layer>.lora_A" [r, in(,kh,kw)], "<layer>.lora_B"
    [out, r(,1,1)], alpha in the "tensors" metadata entry. -> {layer: (A F32, B F32, alpha)}"""
    tensors, meta = safetensors_io.load(path)
    assert meta.get("format") == "shira-studio-adapter" and meta.get("kind") == "lora", meta.get("kind")
    entries = json.loads(meta["tensors"])
    return {name: (tensors[name + ".lora_A"].float(), tensors[name + ".lora_B"].float(), float(e["alpha"]))
            for name, e in entries.items()}


@torch.no_grad()
def apply_shira(model, layers, alpha=1.0):
    """W ← W + α·S with S sparse at (row, col) of the [out, numel/out] view (the worker's fused blend)."""
    mods = dict(model.named_modules())
    for name, (v, rows, cols) in layers.items():
        W = mods[name].weight
        W2 = W.view(W.shape[0], -1)
        W2.index_put_((rows.to(W.device), cols.to(W.device)), (alpha * v).to(W.device, W.dtype), accumulate=True)


@torch.no_grad()
def apply_lora(model, layers, alpha=1.0):
    """W ← W + α·(lora_alpha/r)·B A (Linear; LoCon convs: A the base-kernel conv, B 1×1)."""
    mods = dict(model.named_modules())
    for name, (A, B, lora_alpha) in layers.items():
        W = mods[name].weight
        r = A.shape[0]
        delta = B.reshape(B.shape[0], r) @ A.reshape(r, -1)
        W.add_((alpha * lora_alpha / r * delta).view(W.shape).to(W.device, W.dtype))
