"""The SD reference as a test oracle: load a fixture (either layout) and compute what the worker computes.

    python3 tests/reference/sd/oracle.py inputs --fixture F --out in.safetensors [--batch 2] [--size 64] [--seed 0]
    python3 tests/reference/sd/oracle.py run --fixture F --inputs in.safetensors --out out.safetensors \\
        [--weights auto|ema|model] [--vae VAE.safetensors] [--device cpu|cuda] [--dtype fp32|fp16|bf16]

F is a fixture's manifest (NAME.manifest.json) or its checkpoint (NAME.safetensors or NAME/, the manifest beside
it), since a tiny ldm file cannot say its own head and group counts. Input tensors (all optional; each group present
asks for its outputs):

  ids.0, ids.1         I64 [B, 77]   token ids per text encoder, conditioner order (SDXL: CLIP-L padded with EOS,
                                     bigG padded with 0) -> context, pooled (SDXL), hidden.<i> [layers+1, B, 77, w]
  time_ids             F32 [B, 6|5]  SDXL added conditioning numbers -> y (needs ids for the pooled vector)
  x, t                 [B, 4, h, w], [B]  UNet input and timesteps -> out (context/y from the inputs `context`/`y`
                                     when given, else from ids/time_ids, in which case gradients reach the text
                                     encoders)
  probe                [B, 4, h, w]  gradients of Σ(out ⊙ probe) -> grad.<ldm parameter name>
  loss.x0, loss.noise, loss.t        L_simple with the model's ε or v target -> loss (and its gradients when there
                                     is no probe)
  encode.image         [B, 3, H, W] in [-1, 1] -> encode.mean, encode.logvar (unscaled), encode.latent (mean·scale)
  decode.latent        [B, 4, h, w] scaled -> decode.image
Metadata: "clip_skip" (A1111's N, SD-1; default 1), "grads" (JSON list of parameter names).
Output metadata records the fixture, the weights used (ema/model), dtype and device.
"""

import argparse
import json
import math
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import fixtures  # noqa: E402
import layouts  # noqa: E402
import safetensors_io  # noqa: E402
import sd_model  # noqa: E402

# What a loader reads past without error (sd-formats.md §1 "Keys to ignore"; sd.cpp's unused tensors list).
IGNORED_SUFFIXES = ("embeddings.position_ids",)
IGNORED_KEYS = set(fixtures.SCHEDULE_KEYS) | {"model_ema.decay", "model_ema.num_updates", "denoiser.sigmas", "v_pred",
                                              "ztsnr", "logvar"}
EMA_RULE = 100  # diffusers uses EMA weights when a file has more than 100 model_ema* keys
# Old SD-1 files lack "text_model."; A1111 inserts it (modules/sd_models.py checkpoint_dict_replacements).
LEGACY_CLIP = {f"cond_stage_model.transformer.{p}": f"cond_stage_model.transformer.text_model.{p}"
               for p in ("embeddings.", "encoder.", "final_layer_norm.")}


class LoadError(Exception):
    pass


def find_manifest(path):
    if path.endswith(".manifest.json"):
        return path
    base = path.rstrip("/")
    for suffix in (".safetensors", ".ckpt"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    candidate = base + ".manifest.json"
    if not os.path.exists(candidate):
        raise LoadError(f"{path}: no manifest at {candidate} (tiny fixtures need theirs for the config)")
    return candidate


ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def check_safetensors(path):
    """The header checks a loader makes before trusting a file: the header fits in the file, every tensor's byte
    range lies inside the data section and holds exactly shape × dtype bytes, ranges do not overlap."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise LoadError(f"{path}: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise LoadError(f"{path}: header length {n} runs past the end of the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise LoadError(f"{path}: header is not JSON ({e})") from None
    data = size - 8 - n
    ranges = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info.get("dtype") not in ITEMSIZE:
            raise LoadError(f"{path}: tensor {key!r} has dtype {info.get('dtype')!r}")
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= data:
            raise LoadError(f"{path}: tensor {key!r} data_offsets [{begin}, {end}] run past the end of the data "
                            f"({data} bytes; truncated file?)")
        want = math.prod(info["shape"]) * ITEMSIZE[info["dtype"]]
        if end - begin != want:
            raise LoadError(f"{path}: tensor {key!r} has shape {info['shape']} {info['dtype']} ({want} bytes) but "
                            f"data_offsets hold {end - begin} bytes")
        ranges.append((begin, end, key))
    ranges.sort()
    for (b0, e0, k0), (b1, e1, k1) in zip(ranges, ranges[1:]):
        if b1 < e0:
            raise LoadError(f"{path}: tensors {k0!r} and {k1!r} overlap")


def read_ldm(path, model, weights):
    """-> (state dict in the model's names, "ema" | "model"). Every key is consumed, ignored by rule, or an error."""
    check_safetensors(path)
    tensors, _ = safetensors_io.load(path)
    for old, new in LEGACY_CLIP.items():
        tensors = {new + k[len(old):] if k.startswith(old) else k: v for k, v in tensors.items()}
    ema_keys = [k for k in tensors if k.startswith("model_ema")]
    use_ema = weights == "ema" or (weights == "auto" and len(ema_keys) > EMA_RULE)
    if weights == "ema" and len(ema_keys) <= EMA_RULE:
        raise LoadError(f"{path}: asked for EMA weights, the file has {len(ema_keys)} model_ema keys")
    state = {}
    expected = model.state_dict()
    for k in expected:
        if k in tensors:
            state[k] = tensors[k]
        if use_ema and k.startswith(layouts.UNET):
            ek = fixtures.ema_key(k)
            if ek not in tensors:
                raise LoadError(f"{path}: EMA weights lack {ek} (for {k})")
            state[k] = tensors[ek]
    unknown = [k for k in tensors if k not in expected and k not in IGNORED_KEYS and not k.startswith("model_ema.")
               and not k.endswith(IGNORED_SUFFIXES)]
    if unknown:
        raise LoadError(f"{path}: unknown tensor {unknown[0]!r}{_more(unknown)}")
    return state, "ema" if use_ema else "model"


def _more(keys):
    return f" (+{len(keys) - 1} more)" if len(keys) > 1 else ""


def read_diffusers(folder, config):
    """-> state dict in ldm names (without what the diffusers layout cannot carry)."""
    comps = {}
    for name in ["unet", "vae"] + [n for n, _ in layouts.text_components(config)]:
        stem = "model" if name.startswith("text_encoder") else "diffusion_pytorch_model"
        candidates = [os.path.join(folder, name, f"{stem}{v}.safetensors") for v in ("", ".fp16")]
        path = next((p for p in candidates if os.path.exists(p)), None)
        if path is None:
            raise LoadError(f"{folder}: no {name}/{stem}[.fp16].safetensors")
        check_safetensors(path)
        # older transformers saved the position_ids buffer in text encoders too
        comps[name] = {k: v for k, v in safetensors_io.load(path)[0].items() if not k.endswith(IGNORED_SUFFIXES)}
    try:
        return layouts.diffusers_to_ldm(config, comps)
    except KeyError as e:
        raise LoadError(f"{folder}: {e.args[0]}") from None


def read_vae(path, model):
    """A standalone VAE file (keys without first_stage_model.) -> its tensors in the model's names, checked against
    the model's VAE: every key, every shape."""
    check_safetensors(path)
    tensors = {k: v for k, v in safetensors_io.load(path)[0].items() if k not in IGNORED_KEYS}
    expected = model.vae.state_dict()
    for k in sorted(set(expected) | set(tensors)):
        if k not in tensors:
            raise LoadError(f"{path}: VAE tensor {k!r} is missing")
        if k not in expected:
            raise LoadError(f"{path}: unknown VAE tensor {k!r}")
        if tuple(tensors[k].shape) != tuple(expected[k].shape):
            raise LoadError(f"{path}: VAE tensor {k!r} has shape {tuple(tensors[k].shape)}, this model's VAE "
                            f"{tuple(expected[k].shape)} (a VAE of another model?)")
    return {layouts.VAE + k: v for k, v in tensors.items()}


def load_fixture(fixture, weights="auto", device="cpu", dtype=torch.float32, vae=None):
    """-> (SDModel in eval mode without gradients, manifest, weights used). Missing or mis-shaped tensors are
    errors naming the key; a diffusers folder may lack only what it cannot carry (model.unused_parameters()).
    vae: a standalone VAE file that replaces the checkpoint's."""
    manifest_path = find_manifest(fixture)
    with open(manifest_path) as f:
        manifest = json.load(f)
    if manifest.get("layout") not in ("ldm", "diffusers"):
        raise LoadError(f"{manifest_path}: layout {manifest.get('layout')!r} is not loadable (pickle checkpoints are "
                        "refused)")
    model = sd_model.build(manifest["config"])
    path = os.path.join(os.path.dirname(manifest_path), manifest["path"])
    if manifest["layout"] == "ldm":
        state, used = read_ldm(path, model, weights)
        may_lack = set()
    else:
        if weights == "ema":
            raise LoadError(f"{path}: diffusers folders carry no EMA weights")
        state, used, may_lack = read_diffusers(path, manifest["config"]), "model", set(model.unused_parameters())
    if vae:
        state.update(read_vae(vae, model))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and k not in may_lack]
    if missing:
        raise LoadError(f"{path}: missing tensor {missing[0]!r}{_more(missing)}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise LoadError(f"{path}: tensor {k!r} has shape {tuple(v.shape)}, "
                            f"the config wants {tuple(expected[k].shape)}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    with torch.no_grad():  # what the layout cannot carry is never read; NaN makes any read of it visible
        params = dict(model.named_parameters())
        for k in set(expected) - set(state):
            params[k].fill_(float("nan"))
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype).eval(), manifest, used


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def token_ids(config, batch, generator):
    """Plausible ids per text encoder: BOS, words, EOS, then padding (EOS for CLIP-L, 0 for open_clip), with the
    specials the last two ids of the vocabulary as in CLIP's (49406/49407 at full size)."""
    out = []
    lengths = [5 + 9 * b for b in range(batch)]
    for t in config["text"]:
        V, L = t["vocab_size"], t["positions"]
        bos, eos, pad = V - 2, V - 1, (V - 1 if t["kind"] == "hf_clip" else 0)
        rows = []
        for n in lengths:
            words = torch.randint(1, V - 2, (min(n, L - 2),), generator=generator).tolist()
            row = [bos] + words + [eos]
            rows.append(row + [pad] * (L - len(row)))
        out.append(torch.tensor(rows, dtype=torch.int64))
    return out


def make_inputs(config, batch=2, size=64, seed=0):
    """A full input set for `run` (latent size size/8 for the UNet, images size×size for the VAE)."""
    g = torch.Generator().manual_seed(seed)
    u, h = config["unet"], size // 8
    ins = {f"ids.{i}": ids for i, ids in enumerate(token_ids(config, batch, g))}
    ins["x"] = torch.randn(batch, u["in_channels"], h, h, generator=g)
    ins["t"] = torch.tensor([17, 650, 999, 1][:batch] + [500] * max(0, batch - 4), dtype=torch.int64)
    ins["probe"] = torch.randn(batch, u["out_channels"], h, h, generator=g)
    if u["adm_in_channels"] is not None:
        rows = {"original_size": [size, size], "crop_top_left": [0, 8], "target_size": [size, size],
                "aesthetic_score": [6.0]}
        ins["time_ids"] = torch.tensor([sum((rows[k] for k in config["time_ids"]), [])] * batch, dtype=torch.float32)
    ins["loss.x0"] = torch.randn(batch, u["out_channels"], h, h, generator=g)
    ins["loss.noise"] = torch.randn(batch, u["out_channels"], h, h, generator=g)
    ins["loss.t"] = torch.tensor([100, 900][:batch] + [500] * max(0, batch - 2), dtype=torch.int64)
    ins["encode.image"] = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    ins["decode.latent"] = torch.randn(batch, config["vae"]["z_channels"], h, h, generator=g)
    return ins


DEFAULT_GRADS = [  # both ends of the UNet, a resnet, cross-attention, the added conditioning, both text encoders
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.time_embed.0.weight",
    "model.diffusion_model.input_blocks.4.0.in_layers.2.weight",
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.middle_block.1.transformer_blocks.0.ff.net.0.proj.weight",
    "model.diffusion_model.label_emb.0.0.weight",
    "model.diffusion_model.output_blocks.3.0.skip_connection.weight",
    "model.diffusion_model.out.2.bias",
]


def default_grads(model):
    names = dict(model.named_parameters())
    grads = [n for n in DEFAULT_GRADS if n in names]
    for t in model.config["text"]:
        names = (["encoder.layers.0.mlp.fc1.weight", "embeddings.token_embedding.weight"] if t["kind"] == "hf_clip"
                 else ["transformer.resblocks.0.attn.in_proj_weight", "token_embedding.weight"])
        grads += [t["prefix"] + n for n in names]
    return grads


# ---------------------------------------------------------------------------------------------------------------
# Run


def run(model, ins, meta=None):
    """-> dict of outputs (see the module docstring)."""
    meta = meta or {}
    params = dict(model.named_parameters())
    grads = json.loads(meta["grads"]) if "grads" in meta else []
    unknown = [g for g in grads if g not in params]
    if unknown:
        raise ValueError(f"grads: no parameter {unknown[0]!r}")
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    get = lambda k: ins[k].to(device) if k in ins else None  # noqa: E731
    fl = lambda k: ins[k].to(device, dtype) if k in ins else None  # noqa: E731
    for g in grads:
        params[g].requires_grad_(True)
        params[g].grad = None
    out = {}
    with torch.enable_grad():
        ids = [get(f"ids.{i}") for i in range(len(model.config["text"]))]
        context, pooled = fl("context"), None
        if all(i is not None for i in ids):
            ctx, pooled, hidden = model.encode_text(ids, int(meta.get("clip_skip", 1)))
            out["context"] = ctx
            for i, hs in enumerate(hidden):
                out[f"hidden.{i}"] = torch.stack(hs)
            if pooled is not None:
                out["pooled"] = pooled
            context = ctx if context is None else context
        y = fl("y")
        if y is None and "time_ids" in ins:
            if pooled is None:
                raise ValueError("time_ids need ids (the pooled text vector) or give y directly")
            y = model.added_conditioning(pooled, fl("time_ids"))
            out["y"] = y
        objective = None
        if "x" in ins:
            if context is None:
                raise ValueError("x needs a context: give ids.N or context")
            pred = model.unet(fl("x"), get("t"), context, y)
            out["out"] = pred
            if "probe" in ins:
                objective = (pred.float() * ins["probe"].to(device).float()).sum()
        if "loss.x0" in ins:
            if context is None:
                raise ValueError("loss needs a context: give ids.N or context")
            loss = model.loss(fl("loss.x0"), fl("loss.noise"), get("loss.t"), context, y)
            out["loss"] = loss.reshape(1)
            objective = loss if objective is None else objective
        if grads:
            if objective is None:
                raise ValueError("grads need probe (with x, t) or loss.x0/loss.noise/loss.t")
            objective.backward()
            for g in grads:
                grad = params[g].grad
                out["grad." + g] = grad if grad is not None else torch.zeros_like(params[g])
    for g in grads:
        params[g].requires_grad_(False)
        params[g].grad = None
    with torch.no_grad():
        if "encode.image" in ins:
            mean, logvar = model.vae.encode(fl("encode.image"))
            out.update({"encode.mean": mean, "encode.logvar": logvar,
                        "encode.latent": mean * model.config["vae"]["scale_factor"]})
        if "decode.latent" in ins:
            out["decode.image"] = model.vae.decode(fl("decode.latent") / model.config["vae"]["scale_factor"])
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("inputs", help="a random input set for a fixture")
    i.add_argument("--fixture", required=True)
    i.add_argument("--out", required=True)
    i.add_argument("--batch", type=int, default=2)
    i.add_argument("--size", type=int, default=64, help="image size (latents size/8)")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--clip-skip", type=int, default=1)
    r = sub.add_parser("run", help="reference outputs and gradients")
    r.add_argument("--fixture", required=True)
    r.add_argument("--inputs", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--weights", default="auto", choices=["auto", "ema", "model"])
    r.add_argument("--vae", help="a standalone VAE file replacing the checkpoint's")
    r.add_argument("--device", default="cpu")
    r.add_argument("--dtype", default="fp32", choices=list(fixtures.DTYPES))
    args = ap.parse_args(argv)
    try:
        if args.cmd == "inputs":
            with open(find_manifest(args.fixture)) as f:
                manifest = json.load(f)
            model = sd_model.build(manifest["config"], "meta")
            ins = make_inputs(manifest["config"], args.batch, args.size, args.seed)
            meta = {"clip_skip": str(args.clip_skip), "grads": json.dumps(default_grads(model))}
            safetensors_io.save(args.out, ins, meta)
            print(args.out)
            return 0
        model, manifest, used = load_fixture(args.fixture, args.weights, args.device, fixtures.DTYPES[args.dtype],
                                             args.vae)
        ins, meta = safetensors_io.load(args.inputs)
        outs = run(model, ins, meta)
        safetensors_io.save(args.out, outs, {"fixture": manifest["fixture"], "weights": used, "dtype": args.dtype,
                                             "device": args.device, "torch": torch.__version__})
        print(json.dumps({"out": args.out, "weights": used, "tensors": len(outs)}))
        return 0
    except (LoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
