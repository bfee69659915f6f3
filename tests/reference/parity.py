"""Parity of the native worker with the PyTorch reference (model.py) on the shipped model, and PEFT interop.

    python3 tests/reference/parity.py [--device cpu|cuda] [--model M.safetensors] [--json OUT.json]

Checks (each prints its max abs diff, the reference's max |value| as scale, and the tolerance):
  base/*          UNet prediction, text context and parameter gradients ∂Σ(out⊙probe)/∂θ, no adapter
  shira_mix/*     a SHiRA-Rand adapter trained by the worker (2 steps), applied at α = 0.7 by apply_mix (fused),
                  vs the reference with the sparse delta read from the worker's PEFT export (adapter_export)
  peft_export/*   the exported folder's layout: PEFT key names, F32 [K] values, I32 [2, K] indices, config
  lora_mix/*      a LoRA trained by the worker (2 steps), applied at α = 0.5, vs the reference with W + α·(a/r)·BA
  peft_import/*   a PEFT-layout SHiRA written here (PEFT's random_mask rule, r = 1) imported with adapter_convert,
                  applied at α = 1, vs the reference with the same delta
  peft_lib/*      only when `import peft` works: our exported adapter loaded into the reference UNet through
                  PEFT (ShiraConfig/get_peft_model/set_peft_model_state_dict, PEFT's own unmerged forward) vs the
                  worker; and a SHiRA trained by PEFT on the reference, saved with save_pretrained, imported into
                  the worker, vs PEFT's forward

Tolerance: |ours − ref|max ≤ rtol·max(1, |ref|max). fp32 CPU: rtol 1e-5 for outputs and context, 1e-4 for
gradients (sums over every pixel and token reorder differently). CUDA: rtol 5e-3, since cuDNN convolutions use
TF32 by default in both libtorch and PyTorch (10-bit mantissa inputs), and the two may pick different algorithms.
Exit status 1 when any check fails. The last line is "reference: N passed, M failed".
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback

import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as ref_model  # noqa: E402
import peft_io  # noqa: E402
import safetensors_io  # noqa: E402
from worker import ROOT, Worker  # noqa: E402

SHIPPED = os.path.join(ROOT, "resources", "models", "clipart-64", "model.safetensors")
# Parameters whose gradients are compared: both ends of the UNet, a resnet, cross-attention (text → UNet),
# a targeted layer, the time embedding and the text encoder down to the token embedding.
GRAD_PARAMS = [
    "unet.conv_in.weight",
    "unet.time_embedding.linear_1.weight",
    "unet.down_blocks.1.resnets.0.conv1.weight",
    "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "unet.mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
    "unet.up_blocks.0.resnets.0.norm1.weight",
    "unet.conv_out.bias",
    "text_encoder.encoder.layers.1.mlp.fc1.weight",
    "text_encoder.embeddings.token_embedding.weight",
]
# Mixed case, punctuation, an out-of-vocabulary trigger word (spare bucket), a UTF-8 word separator, and a
# prompt long enough to be cut at max_length.
PROMPTS = ["A red Star icon, flat", "inkfx lemon café computer's theme and symbols signs flags people shapes food animals map"]


class Checks:
    def __init__(self, device):
        self.cuda = device.startswith("cuda")
        self.rows, self.failed = [], 0

    def compare(self, name, ours, ref, kind="out"):
        ours, ref = ours.detach().float().cpu(), ref.detach().float().cpu()
        if ours.shape != ref.shape:
            self.record(name, float("inf"), 0.0, 0.0, f"shape {tuple(ours.shape)} vs {tuple(ref.shape)}")
            return
        rtol = 5e-3 if self.cuda else (1e-4 if kind == "grad" else 1e-5)
        scale = ref.abs().max().item() if ref.numel() else 0.0
        maxdiff = (ours - ref).abs().max().item() if ref.numel() else 0.0
        self.record(name, maxdiff, scale, rtol * max(1.0, scale))

    def require(self, name, ok, detail=""):
        self.record(name, 0.0 if ok else float("inf"), 0.0, 0.0, "" if ok else detail or "failed")

    def record(self, name, maxdiff, scale, tol, error=""):
        ok = not error and maxdiff <= tol
        self.failed += not ok
        self.rows.append({"check": name, "maxdiff": maxdiff, "scale": scale, "tol": tol, "ok": ok, "error": error})
        if error:
            print(f"{'ok  ' if ok else 'FAIL'} {name:58s} {error}", flush=True)
        else:
            print(f"{'ok  ' if ok else 'FAIL'} {name:58s} maxdiff {maxdiff:.3e}  scale {scale:.3e}  tol {tol:.1e}", flush=True)


def make_inputs(ref, tmp, B=2, seed=0):
    """x [B, C, H, W] ~ N(0, 1) (a noised sample), t spread over the schedule, a random probe for the gradients."""
    c = ref.config["unet"]
    g = torch.Generator().manual_seed(seed)
    S = c["sample_size"]
    x = torch.randn(B, c["in_channels"], S, S, generator=g)
    t = torch.tensor([17, 650][:B] + [999] * max(0, B - 2), dtype=torch.int64)
    probe = torch.randn(B, c["out_channels"], S, S, generator=g)
    path = os.path.join(tmp, "inputs.safetensors")
    safetensors_io.save(path, {"x": x, "t": t, "probe": probe}, {"prompts": json.dumps(PROMPTS[:B])})
    return path, x, t, probe


def make_dataset(path, n=4, size=64, seed=0):
    """A tiny packed dataset as the worker's train op reads it: "images" U8 [N, H, W, 3] (smooth colour fields,
    so the loss is not pure noise) and metadata "captions"."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 8, size // 8, generator=g)
    images = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    images = (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    caps = ["inkfx red star", "inkfx lemon", "inkfx computer icon", "inkfx flags"][:n]
    safetensors_io.save(path, {"images": images}, {"captions": json.dumps(caps)})


def ref_forward(ref, x, t, probe, device, grads):
    """Reference prediction, context and ∂Σ(out⊙probe)/∂θ for θ in grads (the worker's forward op)."""
    params = dict(ref.named_parameters())
    for name in grads:
        params[name].requires_grad_(True)
        params[name].grad = None
    out, ctx = ref(x.to(device), t.to(device), PROMPTS[: x.shape[0]])
    result = {"out": out.detach(), "context": ctx.detach()}
    if grads:
        (out * probe.to(device)).sum().backward()
        for name in grads:
            result["grad." + name] = params[name].grad.detach().clone()
            params[name].grad = None
            params[name].requires_grad_(False)
    return result


def worker_forward(w, inputs, tmp, grads, tag):
    out = os.path.join(tmp, f"forward-{tag}.safetensors")
    w.call("forward", inputs=inputs, out=out, grads=grads)
    return safetensors_io.load(out)[0]


def compare_all(checks, prefix, ours, ref, grads):
    checks.compare(prefix + "/out", ours["out"], ref["out"])
    checks.compare(prefix + "/context", ours["context"], ref["context"])
    for name in grads:
        checks.compare(prefix + "/grad." + name.replace("transformer_blocks.0.", "tb0."), ours["grad." + name],
                       ref["grad." + name], kind="grad")


def restore(ref, base_state):
    ref.load_state_dict(base_state)


def peft_checks(checks, w, ref, base_state, x, t, probe, inputs, tmp, device, export_dir, alpha, worker_mix_out):
    """Through PEFT itself (GPU machine: PyTorch 2.x + PEFT ≥ 0.17)."""
    try:
        import peft
        from peft import ShiraConfig, get_peft_model, set_peft_model_state_dict
    except Exception as e:  # noqa: BLE001 - any import failure means "no PEFT here"
        print(f"skip peft_lib/*: PEFT not importable ({type(e).__name__}: {e})", flush=True)
        return
    print(f"peft {peft.__version__}, torch {torch.__version__}", flush=True)
    targets = ref_model.DEFAULT_TARGETS
    # (a) our export -> PEFT. ShiraConfig sizes every layer as K = r(m+n); ours has per-layer K = round(d·m·n), so
    # the adapter is created with r = 1 and each shira_weight is resized to the file's K before PEFT's own
    # set_peft_model_state_dict loads the values and (its SHiRA remap) the indices.
    restore(ref, base_state)
    layers, cfg = peft_io.read_peft_shira(export_dir)
    tensors, _ = safetensors_io.load(os.path.join(export_dir, "adapter_model.safetensors"))
    pm = get_peft_model(ref.unet, ShiraConfig(r=1, target_modules=cfg["target_modules"], mask_type="random", random_seed=0))
    for name, mod in pm.named_modules():
        if hasattr(mod, "shira_weight") and "default" in getattr(mod, "shira_weight", {}):
            key = name[len(peft_io.PREFIX):] if name.startswith(peft_io.PREFIX) else name
            K = layers["unet." + key][0].numel()
            mod.shira_weight["default"] = torch.nn.Parameter(torch.zeros(K, device=mod.shira_weight["default"].device))
            mod.set_scale("default", alpha)
    res = set_peft_model_state_dict(pm, {k: v.to(device) for k, v in tensors.items()})
    unexpected = [k for k in getattr(res, "unexpected_keys", []) if "shira" in k]
    # What PEFT now holds must be the file's values and (row, col) indices, layer for layer.
    same = 0
    for name, mod in pm.named_modules():
        if hasattr(mod, "shira_weight") and "default" in getattr(mod, "shira_weight", {}):
            v, rows, cols = layers["unet." + name[len(peft_io.PREFIX):]]
            ij = mod.shira_indices["default"].long().cpu()
            same += bool(torch.equal(mod.shira_weight["default"].detach().cpu(), v) and torch.equal(ij[0], rows) and torch.equal(ij[1], cols))
    checks.require("peft_lib/export_loads_into_peft", not unexpected and same == len(layers),
                   f"{same}/{len(layers)} layers loaded as in the file; unexpected keys {unexpected[:3]}")
    with torch.no_grad():
        out, _ = ref(x.to(device), t.to(device), PROMPTS[: x.shape[0]])
    checks.compare("peft_lib/our_export_in_peft_vs_worker/out", worker_mix_out, out)
    ref.unet = pm.unload()  # back to plain Linear layers (weights untouched: the adapter was never merged)
    restore(ref, base_state)

    # (b) SHiRA trained by PEFT on the reference -> our library.
    torch.manual_seed(0)
    pm = get_peft_model(ref.unet, ShiraConfig(r=2, target_modules=targets, mask_type="random", random_seed=7))
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(2, 3, x.shape[2], x.shape[3], generator=g) * 2 - 1).to(device)
    ctx = ref.text_encoder.encode(["inkfx red star", "inkfx lemon"]).detach()
    for _ in range(3):
        loss = ref_model.diffusion_loss(ref, x0, ctx, g)
        loss.backward()
        opt.step()
        opt.zero_grad()
    peft_dir = os.path.join(tmp, "peft-trained")
    pm.save_pretrained(peft_dir)
    with torch.no_grad():
        peft_out, _ = ref(x.to(device), t.to(device), PROMPTS[: x.shape[0]])
    ref.unet = pm.unload()
    restore(ref, base_state)
    conv = os.path.join(tmp, "peft-trained.safetensors")
    w.call("adapter_convert", path=os.path.join(peft_dir, "adapter_model.safetensors"), out=conv, values="f32")
    w.call("apply_mix", adapters=[{"path": conv, "alpha": 1.0}])
    ours = worker_forward(w, inputs, tmp, [], "peft-trained")
    w.call("clear_mix")
    checks.compare("peft_lib/peft_trained_in_worker_vs_peft/out", ours["out"], peft_out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=SHIPPED)
    ap.add_argument("--worker", default=None, help="shira-worker binary (default native/build/shira-worker or $SHIRA_WORKER)")
    ap.add_argument("--json", default=None, help="write every check as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (adapters, PEFT folders)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t_start = time.time()
    device = args.device
    checks = Checks(device)
    tmp = tempfile.mkdtemp(prefix="shira-reference-")
    ref = ref_model.load_model(args.model, device=device)
    base_state = {k: v.clone() for k, v in ref.state_dict().items()}
    inputs, x, t, probe = make_inputs(ref, tmp)
    try:
        run_checks(args, checks, ref, base_state, inputs, x, t, probe, tmp, device)
    except Exception:  # noqa: BLE001 - report, count as a failure, still print the summary line
        traceback.print_exc()
        checks.record("run", float("inf"), 0.0, 0.0, "crashed (traceback above)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"device": device, "torch": torch.__version__, "seconds": time.time() - t_start,
                       "checks": checks.rows}, f, indent=1)
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    passed = len(checks.rows) - checks.failed
    print(f"({time.time() - t_start:.1f} s)")
    print(f"reference: {passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


def run_checks(args, checks, ref, base_state, inputs, x, t, probe, tmp, device):
    print(f"reference: torch {torch.__version__}, device {device}, model {os.path.relpath(args.model, ROOT)}, "
          f"{sum(p.numel() for p in ref.parameters()):,} parameters", flush=True)
    with Worker(args.worker, device=device) as w:
        print(f"worker: {w.binary} (torch {w.info.get('torch')}, device {w.info.get('device')})", flush=True)
        w.call("load_model", path=args.model)

        # 1. base model
        compare_all(checks, "base", worker_forward(w, inputs, tmp, GRAD_PARAMS, "base"),
                    ref_forward(ref, x, t, probe, device, GRAD_PARAMS), GRAD_PARAMS)

        # A parameter first asked for in a later call must get one backward's gradient, not one per earlier call.
        fresh = "unet.conv_out.weight"
        compare_all(checks, "base_second_call", worker_forward(w, inputs, tmp, [fresh], "base2"),
                    ref_forward(ref, x, t, probe, device, [fresh]), [fresh])

        # 2. SHiRA-Rand trained by the worker, fused by apply_mix; the reference reads the PEFT export
        data = os.path.join(tmp, "data.safetensors")
        make_dataset(data, size=ref.config["unet"]["sample_size"])
        shira = os.path.join(tmp, "shira-rand.safetensors")
        common = dict(data=data, steps=2, batch=2, lr=1e-2, seed=3, caption_dropout=0.0, progress_every=1)
        w.call("train", method="shira", mask="rand", density=0.02, out=shira, **common)
        export_dir = os.path.join(tmp, "shira-rand-peft")
        w.call("adapter_export", path=shira, out=export_dir)
        layers, cfg = peft_io.read_peft_shira(export_dir)
        n_targets = len(ref.target_layers())
        checks.require("peft_export/layout", cfg["peft_type"] == "SHIRA" and len(layers) == n_targets,
                       f"{len(layers)} layers in the export, {n_targets} targets")
        nonzero = sum(int((v != 0).sum()) for v, _, _ in layers.values())
        checks.require("peft_export/values_trained", nonzero > 0, "all exported values are 0")
        alpha = 0.7
        mix_grads = GRAD_PARAMS[:2] + ["unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"]
        w.call("apply_mix", adapters=[{"path": shira, "alpha": alpha}])
        ours_mix = worker_forward(w, inputs, tmp, mix_grads, "shira")
        peft_io.apply_shira(ref, layers, alpha)
        compare_all(checks, "shira_mix", ours_mix, ref_forward(ref, x, t, probe, device, mix_grads), mix_grads)
        restore(ref, base_state)
        # The export read back by the worker is the same adapter: same fused output, bit for bit.
        back = os.path.join(tmp, "shira-rand-back.safetensors")
        w.call("adapter_convert", path=os.path.join(export_dir, "adapter_model.safetensors"), out=back, values="f32")
        w.call("apply_mix", adapters=[{"path": back, "alpha": alpha}])
        checks.compare("peft_export/reimported_vs_original/out", worker_forward(w, inputs, tmp, [], "back")["out"], ours_mix["out"])
        w.call("clear_mix")

        # 3. LoRA trained by the worker (parameter-matched rank), fused at α = 0.5
        lora = os.path.join(tmp, "lora.safetensors")
        w.call("train", method="lora", match_density=0.02, out=lora, **common)
        w.call("apply_mix", adapters=[{"path": lora, "alpha": 0.5}])
        ours = worker_forward(w, inputs, tmp, GRAD_PARAMS[:1], "lora")
        w.call("clear_mix")
        peft_io.apply_lora(ref, peft_io.read_v2_lora(lora), 0.5)
        compare_all(checks, "lora_mix", ours, ref_forward(ref, x, t, probe, device, GRAD_PARAMS[:1]), GRAD_PARAMS[:1])
        restore(ref, base_state)

        # 4. PEFT-layout SHiRA written here -> adapter_convert (model loaded: shapes and components come from it)
        g = torch.Generator().manual_seed(11)
        written = {}
        for i, (name, mod) in enumerate(sorted(ref.target_layers().items())):
            m, n = mod.weight.shape[0], mod.weight[0].numel()
            rows, cols = peft_io.peft_random_mask(m, n, 1, seed=100 + i)
            written[name] = (torch.randn(rows.numel(), generator=g) * 0.05, rows, cols)
        peft_dir = os.path.join(tmp, "peft-written")
        peft_io.write_peft_shira(peft_dir, written, r=1, seed=100)
        conv = os.path.join(tmp, "peft-written.safetensors")
        res = w.call("adapter_convert", path=os.path.join(peft_dir, "adapter_model.safetensors"), out=conv, values="f32")
        checks.require("peft_import/convert", res.get("trainable") == sum(v.numel() for v, _, _ in written.values()),
                       f"trainable {res.get('trainable')}")
        w.call("apply_mix", adapters=[{"path": conv, "alpha": 1.0}])
        ours = worker_forward(w, inputs, tmp, GRAD_PARAMS[:1], "peft-written")
        w.call("clear_mix")
        peft_io.apply_shira(ref, written, 1.0)
        compare_all(checks, "peft_import", ours, ref_forward(ref, x, t, probe, device, GRAD_PARAMS[:1]), GRAD_PARAMS[:1])
        restore(ref, base_state)

        # 5. PEFT itself, where installed
        peft_checks(checks, w, ref, base_state, x, t, probe, inputs, tmp, device, export_dir, alpha, ours_mix["out"])


if __name__ == "__main__":
    sys.exit(main())
