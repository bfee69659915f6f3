"""Self-tests of the SD reference and its fixtures, on the CPU in seconds (no worker needed).

    python3 tests/reference/sd/selftest.py [--keep DIR] [--json OUT.json]

Groups (each line: ok/FAIL, the check, what was measured):
  full/*      full-size configs built on the meta device match the published parameter and tensor counts, and the
              key facts sd-formats.md states (upsampler indices, detection shapes, the ldm->diffusers names)
  layout/*    per family: the ldm file and the diffusers folder load into the reference with bit-identical weights
              and outputs; ldm -> diffusers -> ldm is exact; the diffusers layout drops exactly what it cannot carry
  fixture/*   manifests list exactly the files' keys with roles; EMA naming and diffusers' >100 rule; seeded bytes;
              sizes; the refused variants carry what detection looks for
  broken/*    each damaged file fails with an error naming the key or the byte range
  pickle/*    the tensor-only .ckpt loads with weights_only; the malicious one is refused by weights_only, is shown
              to call builtins.exec without running it, and (in a child process, with a marker in a temp folder)
              really runs code under plain pickle, so a refusal test on it is not vacuous
  ref/*       the reference's semantics against independent formulations (torch's MultiheadAttention for the
              open_clip layout, causality, pooling at the first EOS, clip skip, SDXL size embeddings, v target,
              unused weights never read)
  cli/*       fixtures.py / oracle.py as subprocesses: deterministic outputs, both layouts equal
Exit status 1 when a check fails. The last line is "sd-reference: N passed, M failed".
"""

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import pickletools
import shutil
import subprocess
import sys
import tempfile
import traceback
import zipfile

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import configs  # noqa: E402
import fixtures  # noqa: E402
import layouts  # noqa: E402
import oracle  # noqa: E402
import safetensors_io  # noqa: E402
import sd_model  # noqa: E402

# Published counts (README.md cites where each was printed).
PUBLISHED = {
    "sd1.unet": (859_520_964, 686), "sd2.unet": (865_910_724, 686), "sdxl.unet": (2_567_463_684, 1680),
    "vae": (83_653_863, 248), "clip_l": (123_060_480, 196), "sd2.text_encoder": (340_387_840, 372),
    "bigG.text_encoder_2": (694_659_840, 517),
}


class Checks:
    def __init__(self):
        self.rows, self.failed = [], 0

    def check(self, name, ok, detail=""):
        ok = bool(ok)
        self.failed += not ok
        self.rows.append({"check": name, "ok": ok, "detail": detail})
        print(f"{'ok  ' if ok else 'FAIL'} {name:52s} {detail}", flush=True)

    def run(self, name, fn):
        try:
            fn()
        except Exception as e:  # a crashing group is one failure, and the rest still run
            traceback.print_exc()
            self.check(name, False, f"{type(e).__name__}: {e}")


class Store:
    """The standard set written once (fixtures.write_all); any other fixture written on first use."""

    def __init__(self, folder):
        self.dir = folder
        self.index, self.manifests = fixtures.write_all(folder)

    def __call__(self, family, layout="ldm", dtype="fp32", **kw):
        path = os.path.join(self.dir, fixtures.fixture_name(family, layout, dtype, **kw) + ".manifest.json")
        return path if os.path.exists(path) else fixtures.write_fixture(self.dir, family, layout, dtype, **kw)


def data_file(manifest):
    return manifest[: -len(".manifest.json")] + ".safetensors"


def count(params):
    return sum(p.numel() for p in params), len(list(params))


# ---------------------------------------------------------------------------------------------------------------


def full_size(c):
    models = {f: sd_model.build(configs.get(f, tiny=False), "meta") for f in ("sd1", "sd2", "sdxl", "sdxl_refiner")}
    comps = {f: layouts.ldm_to_diffusers(m.config, m.state_dict()) for f, m in models.items()}

    def expect(name, got):
        want = PUBLISHED[name]
        c.check(f"full/{name}", got == want, f"{got[0]:,} params, {got[1]} tensors (published {want[0]:,}, {want[1]})")

    expect("sd1.unet", count(list(models["sd1"].unet.parameters())))
    expect("sd2.unet", count(list(models["sd2"].unet.parameters())))
    expect("sdxl.unet", count(list(models["sdxl"].unet.parameters())))
    expect("vae", count(list(comps["sd1"]["vae"].values())))
    expect("clip_l", count(list(comps["sd1"]["text_encoder"].values())))
    expect("sd2.text_encoder", count(list(comps["sd2"]["text_encoder"].values())))
    expect("bigG.text_encoder_2", count(list(comps["sdxl"]["text_encoder_2"].values())))
    n, t = count(list(models["sdxl_refiner"].unet.parameters()))
    c.check("full/sdxl_refiner.unet", n > 0, f"{n:,} params, {t} tensors (no published figure found; not asserted)")

    sd = {f: m.state_dict() for f, m in models.items()}
    U = layouts.UNET
    facts = [
        ("sd1 upsampler of up_blocks.0 at output_blocks.2.1", U + "output_blocks.2.1.conv.weight" in sd["sd1"]
         and U + "output_blocks.5.2.conv.weight" in sd["sd1"]),
        ("sd1 proj_in is a 1x1 conv", sd["sd1"][U + "input_blocks.1.1.proj_in.weight"].dim() == 4),
        ("sd2 proj_in is linear", sd["sd2"][U + "input_blocks.1.1.proj_in.weight"].dim() == 2),
        ("sd2 detection: input_blocks.2.1 attn2.to_k is [320, 1024]",
         tuple(sd["sd2"][U + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"].shape) == (320, 1024)),
        ("sd1 token embedding width 768",
         sd["sd1"]["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"].shape[1] == 768),
        ("sdxl label_emb.0.0 is [1280, 2816]", tuple(sd["sdxl"][U + "label_emb.0.0.weight"].shape) == (1280, 2816)),
        ("sdxl depth 2 at level 1, 10 at level 2 and middle",
         U + "input_blocks.4.1.transformer_blocks.1.norm1.weight" in sd["sdxl"]
         and U + "input_blocks.7.1.transformer_blocks.9.norm1.weight" in sd["sdxl"]
         and U + "middle_block.1.transformer_blocks.9.norm1.weight" in sd["sdxl"]
         and U + "input_blocks.1.1.norm.weight" not in sd["sdxl"]),
        ("sdxl context 2048 = 768 + 1280",
         sd["sdxl"][U + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"].shape[1] == 2048),
        ("refiner: bigG alone at embedders.0, adm 2560",
         "conditioner.embedders.0.model.ln_final.weight" in sd["sdxl_refiner"]
         and not any(k.startswith("conditioner.embedders.1") for k in sd["sdxl_refiner"])
         and tuple(sd["sdxl_refiner"][U + "label_emb.0.0.weight"].shape) == (1536, 2560)),
        ("vae mid attention q is a 1x1 conv [512, 512, 1, 1]",
         tuple(sd["sd1"]["first_stage_model.encoder.mid.attn_1.q.weight"].shape) == (512, 512, 1, 1)),
    ]
    for name, ok in facts:
        c.check(f"full/fact: {name}", ok)
    um, vm = layouts.unet_prefixes(models["sd1"].config["unet"]), layouts.vae_prefixes(models["sd1"].config["vae"])
    names = [  # sd-formats.md §1 mapping lines
        (um, "output_blocks.2.1.conv.", "up_blocks.0.upsamplers.0.conv."),
        (um, "output_blocks.5.2.conv.", "up_blocks.1.upsamplers.0.conv."),
        (um, "input_blocks.3.0.op.", "down_blocks.0.downsamplers.0.conv."),
        (um, "input_blocks.4.1.", "down_blocks.1.attentions.0."),
        (um, "output_blocks.3.0.skip_connection.", "up_blocks.1.resnets.0.conv_shortcut."),
        (um, "middle_block.1.", "mid_block.attentions.0."),
        (vm, "decoder.up.3.block.0.conv1.", "decoder.up_blocks.0.resnets.0.conv1."),
        (vm, "decoder.up.1.upsample.conv.", "decoder.up_blocks.2.upsamplers.0.conv."),
        (vm, "encoder.mid.attn_1.proj_out.", "encoder.mid_block.attentions.0.to_out.0."),
        (layouts.unet_prefixes(models["sdxl"].config["unet"]), "label_emb.0.2.", "add_embedding.linear_2."),
    ]
    for m, ldm, diff in names:
        c.check(f"full/name: {ldm} -> {diff}", m.get(ldm) == diff, f"got {m.get(ldm)}")


# ---------------------------------------------------------------------------------------------------------------


def params_equal(a, b, skip=()):
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    bad = [k for k in pa if k not in skip and not torch.equal(pa[k], pb[k])]
    return bad


def layouts_and_fixtures(c, fx):
    for fam in configs.FAMILIES:
        ldm, dif = fx(fam, "ldm", "fp32"), fx(fam, "diffusers", "fp32")
        a, man, _ = oracle.load_fixture(ldm)
        b, _, _ = oracle.load_fixture(dif)
        unused = set(a.unused_parameters())
        bad = params_equal(a, b, skip=unused)
        c.check(f"layout/{fam}: ldm vs diffusers weights", not bad, f"{len(bad)} differ {bad[:1]}")
        ins = oracle.make_inputs(man["config"], batch=2, size=64, seed=1)
        meta = {"grads": json.dumps(oracle.default_grads(a))}
        oa, ob = oracle.run(a, ins, meta), oracle.run(b, ins, meta)
        diff = [k for k in oa if not torch.equal(oa[k], ob[k])]
        finite = all(torch.isfinite(v).all() for v in ob.values())
        c.check(f"layout/{fam}: ldm vs diffusers outputs", not diff and finite and oa.keys() == ob.keys(),
                f"{len(oa)} tensors identical" if not diff else f"differ: {diff[:3]}")
        state = {k: v for k, v in a.state_dict().items()}
        back = layouts.diffusers_to_ldm(man["config"], layouts.ldm_to_diffusers(man["config"], state))
        exact = all(torch.equal(back[k], state[k]) for k in back)
        c.check(f"layout/{fam}: ldm -> diffusers -> ldm exact", exact and set(state) - set(back) <= unused,
                f"not carried: {sorted(set(state) - set(back))[:2]}{'…' if len(set(state) - set(back)) > 2 else ''}")
        check_manifest(c, fx.dir, man, f"fixture/{fam}-ldm-fp32")
        with open(dif) as f:
            check_manifest(c, fx.dir, json.load(f), f"fixture/{fam}-diffusers-fp32")
        if fam not in ("sd1", "sdxl"):  # dtypes are layout-independent; these two cover both text encoder kinds
            continue
        # fp16/bf16: the same rounding in both layouts; bf16 is the fp32 weights rounded
        h1, _, _ = oracle.load_fixture(fx(fam, "ldm", "fp16"))
        h2, _, _ = oracle.load_fixture(fx(fam, "diffusers", "fp16"))
        bad16 = params_equal(h1, h2, skip=unused)
        pa = dict(a.named_parameters())
        want16 = all(torch.equal(p, pa[k].half().float()) for k, p in h1.named_parameters())
        c.check(f"layout/{fam}: fp16 ldm vs fp16 diffusers", not bad16 and want16, f"{len(bad16)} differ")
        bf, _, _ = oracle.load_fixture(fx(fam, "ldm", "bf16"))
        want_bf = all(torch.equal(p, pa[k].bfloat16().float()) for k, p in bf.named_parameters())
        c.check(f"layout/{fam}: bf16 = fp32 rounded", want_bf)

    # the diffusers layout drops exactly what sd-formats.md §5 says
    sd2 = sd_model.build(configs.get("sd2"))
    dropped = set(sd2.state_dict()) - set(layouts.diffusers_to_ldm(sd2.config, layouts.ldm_to_diffusers(
        sd2.config, init_state(sd2))))
    last = sd2.config["text"][0]["layers"] - 1
    want = {k for k in sd2.state_dict() if k.startswith(f"cond_stage_model.model.transformer.resblocks.{last}.")}
    want |= {"cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale"}
    c.check("layout/sd2: diffusers drops last block, projection, logit_scale", dropped == want, f"{len(dropped)} keys")


def init_state(model):
    return fixtures.init_weights(model, 0).state_dict()


def check_manifest(c, tmp, man, name):
    base = os.path.join(tmp, man["path"]) if man["layout"] == "diffusers" else tmp
    ok, detail = True, ""
    total = 0
    for rel, entry in man["files"].items():
        keys, _ = fixtures.describe(os.path.join(base, rel))
        total += entry["bytes"]
        if set(keys) != set(entry["keys"]) or any(keys[k]["shape"] != entry["keys"][k]["shape"] or
                                                  keys[k]["dtype"] != entry["keys"][k]["dtype"] for k in keys):
            ok, detail = False, f"{rel}: header and manifest disagree"
        roles = {v["role"] for v in entry["keys"].values()}
        if not roles <= {"weight", "unused", "ema", "ignored", "marker"}:
            ok, detail = False, f"roles {roles}"
        ignored = [k for k, v in entry["keys"].items() if v["role"] == "ignored"]
        if any(k not in oracle.IGNORED_KEYS and not k.endswith(oracle.IGNORED_SUFFIXES) for k in ignored):
            ok, detail = False, "an ignored key the reference loader does not ignore"
    if man["layout"] == "ldm":
        model = sd_model.build(man["config"])
        weights = {k for k, v in next(iter(man["files"].values()))["keys"].items() if v["role"] in ("weight", "unused")}
        if weights != set(model.state_dict()):
            ok, detail = False, "weight keys != the reference's parameters"
    c.check(f"{name}: manifest = file headers", ok, detail or f"{sum(len(e['keys']) for e in man['files'].values())} "
            f"keys, {total / 1e6:.2f} MB")


def ema_and_variants(c, fx):
    tmp = fx.dir
    for fam in ("sd1", "sdxl"):
        path = fx(fam, "ldm", "fp16", ema=True)
        with open(path) as f:
            man = json.load(f)
        keys = next(iter(man["files"].values()))["keys"]
        n = sum(k.startswith("model_ema") for k in keys)
        sample = "model_ema.diffusion_modelinput_blocks00weight" in keys
        c.check(f"fixture/{fam}-ema: > 100 model_ema keys, flattened names", n > oracle.EMA_RULE and sample,
                f"{n} keys")
        ema, _, used = oracle.load_fixture(path)
        plain, _, used2 = oracle.load_fixture(path, weights="model")
        tensors, _ = safetensors_io.load(os.path.join(tmp, man["path"]))
        k = "model.diffusion_model.out.2.weight"
        got_ema = torch.equal(dict(ema.named_parameters())[k], tensors[fixtures.ema_key(k)].float())
        got_model = torch.equal(dict(plain.named_parameters())[k], tensors[k].float())
        c.check(f"fixture/{fam}-ema: auto loads EMA, --weights model the rest",
                used == "ema" and used2 == "model" and got_ema and got_model and
                not torch.equal(tensors[k], tensors[fixtures.ema_key(k)]))

    digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()  # noqa: E731
    again = os.path.join(tmp, "again")
    fixtures.write_fixture(again, "sd1", "ldm", "fp16")
    fixtures.write_fixture(os.path.join(again, "seed1"), "sd1", "ldm", "fp16", seed=1)
    first = digest(data_file(fx("sd1", "ldm", "fp16")))
    c.check("fixture/seeded: same arguments, same bytes",
            digest(os.path.join(again, "sd1-ldm-fp16.safetensors")) == first)
    c.check("fixture/seeded: another seed, other bytes",
            digest(os.path.join(again, "seed1", "sd1-ldm-fp16.safetensors")) != first)

    legacy, _, _ = oracle.load_fixture(fx("sd1", "ldm", "fp16", legacy_clip=True))
    with open(fx("sd1", "ldm", "fp16", legacy_clip=True)) as f:
        lk = next(iter(json.load(f)["files"].values()))["keys"]
    plain, _, _ = oracle.load_fixture(fx("sd1", "ldm", "fp16"))
    c.check("fixture/sd1 legacy CLIP names (no text_model.) load as A1111 rewrites them",
            not params_equal(legacy, plain) and "cond_stage_model.transformer.embeddings.token_embedding.weight" in lk)

    for variant, n in (("inpaint", 9), ("pix2pix", 8)):
        with open(fx("sd1", "ldm", "fp16", variant=variant)) as f:
            man = json.load(f)
        shape = next(iter(man["files"].values()))["keys"]["model.diffusion_model.input_blocks.0.0.weight"]["shape"]
        c.check(f"fixture/sd1-{variant}: input_blocks.0.0 takes {n} channels, expect refusal",
                shape[1] == n and man["expect"]["load"] is False, f"shape {shape}")
    with open(fx("sdxl", "ldm", "fp16", variant="vpred")) as f:
        man = json.load(f)
    keys = next(iter(man["files"].values()))["keys"]
    c.check("fixture/sdxl-vpred: v_pred and ztsnr marker keys, F32 [0]",
            all(keys[k] == {"dtype": "F32", "shape": [0], "role": "marker"} for k in ("v_pred", "ztsnr"))
            and man["expect"]["prediction"] == "v")
    path = fx("sdxl", "diffusers", "fp16", variant="vpred")
    with open(os.path.join(tmp, "sdxl-vpred-diffusers-fp16", "scheduler", "scheduler_config.json")) as f:
        sched = json.load(f)
    c.check("fixture/sdxl-vpred diffusers: scheduler v_prediction, zero terminal SNR",
            sched["prediction_type"] == "v_prediction" and sched["rescale_betas_zero_snr"] is True and path)
    with open(fx("sdxl_refiner", "ldm", "fp16")) as f:
        keys = next(iter(json.load(f)["files"].values()))["keys"]
    c.check("fixture/sdxl_refiner: embedders.0.model only", any(k.startswith("conditioner.embedders.0.model.")
            for k in keys) and not any(k.startswith("conditioner.embedders.1") for k in keys))
    vocab, merges = fixtures.synthetic_bpe()
    known, ok = set(fixtures.bytes_to_unicode().values()), True
    known |= {t + "</w>" for t in known}
    for x, y in merges:  # every merge joins two tokens that exist before it
        ok &= x in known and y in known
        known.add(x + y)
    sd1_path = fx("sd1", "ldm", "fp16")
    base, _, _ = oracle.load_fixture(sd1_path)
    swapped, _, _ = oracle.load_fixture(sd1_path, vae=os.path.join(tmp, "sd1-vae-fp16.safetensors"))
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        changed = not torch.equal(base.vae.decode(z), swapped.vae.decode(z))
    c.check("fixture/standalone VAE replaces the checkpoint's", changed and
            not params_equal(base.unet, swapped.unet) and params_equal(base.vae, swapped.vae))
    try:
        oracle.load_fixture(sd1_path, vae=os.path.join(tmp, "sd1-vae-fp16-z16.safetensors"))
        c.check("fixture/a VAE of another shape is refused naming the tensor", False, "loaded")
    except oracle.LoadError as e:
        c.check("fixture/a VAE of another shape is refused naming the tensor", "has shape" in str(e),
                str(e).split(": ", 1)[1][:90])
    c.check("fixture/tokenizer: CLIP construction, specials last", ok and len(vocab) == configs.TINY_VOCAB and
            vocab["<|endoftext|>"] == configs.TINY_VOCAB - 1 and vocab["!"] == 0, f"{len(vocab)} tokens")

    sizes = {}
    for m in fx.manifests:
        with open(m) as f:
            man = json.load(f)
        sizes[man["fixture"]] = sum(e["bytes"] for e in man["files"].values())
    big = max(sizes, key=sizes.get)
    c.check("fixture/standard set: every fixture under 5 MB", sizes[big] < 5e6,
            f"{len(sizes)} fixtures, largest {big} {sizes[big] / 1e6:.2f} MB")


def broken(c, fx):
    want = {"missing_key": fixtures.PROBE_KEY, "renamed_key": "attn2.to_kk.weight",
            "lying_header": "first_stage_model.decoder.conv_out.weight", "truncated": "truncated file",
            "header_too_long": "runs past the end of the file"}
    for how, text in want.items():
        path = fx("sd1", "ldm", "fp16", broken=how)
        try:
            oracle.load_fixture(path)
            c.check(f"broken/{how}", False, "loaded")
        except oracle.LoadError as e:
            c.check(f"broken/{how}", text in str(e), str(e).split(": ", 1)[1][:90])


def pickles(c, fx):
    tmp = fx.dir
    with open(fx("sd1", "ckpt", "fp16")) as f:
        man = json.load(f)
    ckpt = torch.load(os.path.join(tmp, man["path"]), map_location="cpu", weights_only=True)
    with open(fx("sd1", "ldm", "fp16")) as f:
        ref, _ = safetensors_io.load(os.path.join(tmp, json.load(f)["path"]))
    same = ckpt["state_dict"].keys() == ref.keys() and all(torch.equal(ckpt["state_dict"][k], ref[k]) for k in ref)
    c.check("pickle/tensor-only ckpt loads with weights_only=True", same and ckpt["global_step"] == 470000,
            f"{len(ckpt['state_dict'])} tensors = the ldm fixture's")
    with open(os.path.join(tmp, "malicious-pickle.manifest.json")) as f:
        man = json.load(f)
    mpath, marker = os.path.join(tmp, man["path"]), man["marker"]
    data = zipfile.ZipFile(mpath).read("archive/data.pkl")
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    c.check("pickle/malicious: GLOBAL builtins exec then REDUCE (read, not run)",
            ("GLOBAL", "builtins exec") in ops and ("REDUCE", None) in ops and not os.path.exists(marker))
    try:
        torch.load(mpath, map_location="cpu", weights_only=True)
        refused = False
    except Exception as e:  # torch raises UnpicklingError naming the global
        refused = "exec" in str(e) or "GLOBAL" in str(e) or "Unsupported" in str(e)
    c.check("pickle/malicious: weights_only refuses, nothing ran", refused and not os.path.exists(marker))
    child = subprocess.run([sys.executable, "-c", "import pickle, sys, zipfile; "
                            "pickle.loads(zipfile.ZipFile(sys.argv[1]).read('archive/data.pkl'))", mpath],
                           capture_output=True, timeout=60)
    c.check("pickle/malicious: plain pickle in a child process runs its code", child.returncode == 0 and
            os.path.exists(marker), "marker created" if os.path.exists(marker) else child.stderr.decode()[-200:])


def reference_semantics(c):
    torch.manual_seed(0)
    cfg = configs.get("sdxl")
    m = fixtures.reference_model(cfg, 0).eval()
    L, G = m.text_encoders()
    g = torch.Generator().manual_seed(3)
    ids_l, ids_g = oracle.token_ids(cfg, 2, g)
    with torch.no_grad():
        # open_clip's in_proj layout is torch's MultiheadAttention layout: compare with torch's own module
        blk = G.transformer.resblocks[0]
        mha = torch.nn.MultiheadAttention(G.config["width"], G.config["heads"], batch_first=True)
        mha.in_proj_weight.copy_(blk.attn.in_proj_weight)
        mha.in_proj_bias.copy_(blk.attn.in_proj_bias)
        mha.out_proj.load_state_dict(blk.attn.out_proj.state_dict())
        x = torch.randn(2, 77, G.config["width"], generator=g)
        mask = sd_model.causal_mask(77, "cpu")
        ours, theirs = blk.attn(x, mask), mha(x, x, x, attn_mask=mask, need_weights=False)[0]
        c.check("ref/open_clip attention = torch MultiheadAttention", torch.allclose(ours, theirs, atol=1e-5),
                f"maxdiff {(ours - theirs).abs().max():.1e}")
        for name, enc, ids in (("CLIP-L", L, ids_l), ("bigG", G, ids_g)):
            changed = ids.clone()
            changed[:, 10] = (changed[:, 10] + 1) % (enc.config["vocab_size"] - 2)
            a, b = enc.hidden_states(ids)[-1], enc.hidden_states(changed)[-1]
            c.check(f"ref/{name}: causal (position 10 changes nothing before it)",
                    torch.equal(a[:, :10], b[:, :10]) and not torch.equal(a[:, 10:], b[:, 10:]))
        ctx, pooled, hs = m.encode_text([ids_l, ids_g])
        eot = (ids_g == G.config["vocab_size"] - 1).int().argmax(-1)  # first EOS
        want = G.ln_final(hs[1][-1])[torch.arange(2), eot] @ G.text_projection
        c.check("ref/sdxl: pooled = ln_final(last)[first EOS] @ text_projection", torch.equal(pooled, want))
        c.check("ref/sdxl: context = [CLIP-L hidden[-2], bigG hidden[-2]], no final norm",
                torch.equal(ctx, torch.cat([hs[0][-2], hs[1][-2]], -1)) and ctx.shape[-1] == cfg["unet"]["context_dim"])
        time_ids = torch.tensor([[1024.0, 768.0, 0.0, 16.0, 1024.0, 1024.0]] * 2)
        y = m.added_conditioning(pooled, time_ids)
        w = cfg["size_embed"]
        first = y[0, pooled.shape[1]: pooled.shape[1] + w]
        freqs = torch.exp(-math.log(10000) * torch.arange(w // 2) / (w // 2))
        c.check("ref/sdxl: y = [pooled, cos|sin(n·f) per number]",
                torch.allclose(first, torch.cat([torch.cos(1024 * freqs), torch.sin(1024 * freqs)]), atol=1e-5)
                and y.shape[1] == cfg["unet"]["adm_in_channels"] and torch.equal(y[:, : pooled.shape[1]], pooled))
    sd1 = fixtures.reference_model(configs.get("sd1"), 0).eval()
    ids = oracle.token_ids(sd1.config, 1, g)[0]
    with torch.no_grad():
        enc = sd1.text_encoders()[0]
        hs = enc.hidden_states(ids)
        c.check("ref/sd1: clip skip 2 = final_layer_norm(hidden[-2])",
                torch.equal(sd1.encode_text([ids], clip_skip=2)[0], enc.final_layer_norm(hs[-2]))
                and torch.equal(sd1.encode_text([ids])[0], enc.final_layer_norm(hs[-1])))
        try:
            sd1.encode_text([ids], clip_skip=len(hs))
            c.check("ref/sd1: clip skip out of range is an error", False)
        except ValueError as e:
            c.check("ref/sd1: clip skip out of range is an error", "allowed 1.." in str(e))
        x = torch.rand(1, 3, 64, 48) * 2 - 1
        mean, logvar = sd1.vae.encode(x)
        c.check("ref/vae: 64x48 image -> 8x6 latents, decode back to 64x48",
                mean.shape == (1, 4, 8, 6) and sd1.vae.decode(mean).shape == (1, 3, 64, 48))
        down = sd1.vae.encoder.down[0].downsample
        h = torch.randn(1, down.conv.in_channels, 8, 8)
        c.check("ref/vae: downsample pads right/bottom only",
                torch.equal(down(h), F.conv2d(F.pad(h, (0, 1, 0, 1)), down.conv.weight, down.conv.bias, stride=2)))
    v = fixtures.reference_model(configs.get("sd2v"), 0).eval()
    ctx = torch.randn(1, 77, 48, generator=g)
    x0, noise, t = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g), torch.tensor([300])
    with torch.no_grad():
        a = v.alphas_cumprod()[300].float()
        pred = v.unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, ctx)
        want = F.mse_loss(pred, a.sqrt() * noise - (1 - a).sqrt() * x0)
        c.check("ref/sd2v: loss target v = √ᾱ ε − √(1−ᾱ) x0",
                torch.allclose(v.loss(x0, noise, t, ctx), want))
    sd2 = fixtures.reference_model(configs.get("sd2"), 0)
    ins = oracle.make_inputs(sd2.config, 1, 64, 0)
    out = oracle.run(sd2, ins, {"grads": json.dumps(sd2.unused_parameters())})
    zero = all(not out["grad." + k].any() for k in sd2.unused_parameters())
    c.check("ref/sd2: unused weights get no gradient", zero, f"{len(sd2.unused_parameters())} tensors")


def cli(c, fx):
    """The command lines the C++ tests and the parity runner call, across process boundaries."""
    run = lambda *a: subprocess.run([sys.executable, *a], capture_output=True, text=True, timeout=300)  # noqa: E731
    d = os.path.join(fx.dir, "cli")
    r = run(os.path.join(HERE, "fixtures.py"), "write", "--family", "sdxl", "--layout", "ldm", "--dtype", "fp16",
            "--ema", "--out", d)
    manifest = r.stdout.strip()
    c.check("cli/fixtures.py write: the same bytes as in-process", r.returncode == 0 and
            open(data_file(manifest), "rb").read() == open(data_file(fx("sdxl", "ldm", "fp16", ema=True)), "rb").read(),
            r.stderr[-200:])
    ins, out = os.path.join(d, "in.safetensors"), os.path.join(d, "out.safetensors")
    with contextlib.redirect_stdout(io.StringIO()):
        code = oracle.main(["inputs", "--fixture", manifest, "--out", ins])
    r = run(os.path.join(HERE, "oracle.py"), "run", "--fixture", manifest, "--inputs", ins, "--out", out,
            "--weights", "model")
    if code or r.returncode:
        c.check("cli/oracle.py inputs + run", False, r.stderr[-300:])
        return
    got, meta = safetensors_io.load(out)
    model, _, _ = oracle.load_fixture(fx("sdxl", "diffusers", "fp16"))
    want = oracle.run(model, *safetensors_io.load(ins))
    c.check("cli/oracle.py run (ldm, model weights) = in-process run on the diffusers folder",
            got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
            and meta["weights"] == "model",
            f"{len(got)} tensors, {sum(k.startswith('grad.') for k in got)} gradients")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = oracle.main(["run", "--fixture", fx("sd1", "ldm", "fp16", broken="truncated"), "--inputs", ins,
                            "--out", os.path.join(d, "bad.safetensors")])
    c.check("cli/oracle.py: a damaged fixture exits 2 naming it", code == 2 and "truncated" in err.getvalue(),
            err.getvalue().strip()[-100:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", help="write fixtures here and keep them")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = args.keep or tempfile.mkdtemp(prefix="sd-reference-")
    os.makedirs(tmp, exist_ok=True)
    c = Checks()
    try:
        c.run("full", lambda: full_size(c))
        fx = Store(tmp)
        c.run("layout", lambda: layouts_and_fixtures(c, fx))
        c.run("fixture", lambda: ema_and_variants(c, fx))
        c.run("broken", lambda: broken(c, fx))
        c.run("pickle", lambda: pickles(c, fx))
        c.run("ref", lambda: reference_semantics(c))
        c.run("cli", lambda: cli(c, fx))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(c.rows, f, indent=1)
    passed = len(c.rows) - c.failed
    print(f"sd-reference: {passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
