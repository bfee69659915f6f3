"""Training step time, peak memory and adapter bytes: PEFT LoRA / PEFT SHiRA (random) on the PyTorch reference vs
the worker's LoRA, SHiRA (Rand, Struct, WM, Grad, SNIP; dense/sparse/auto gradient paths) and full fine-tuning,
plus plain-PyTorch full fine-tuning of the reference. Same model config (the shipped clipart-64), batch, data
(a fixed random batch in [-1, 1], caption "a red square"), AdamW (lr 1e-4, no weight decay), warm-up and timed
steps, at each --precision: fp32, and on CUDA bf16 autocast (what the worker's `train` uses there: matmuls and
convolutions in bf16, weights, adapter values and optimiser state fp32). One JSON object per row into OUT/train.jsonl.

    python3 scripts/gpu/bench_train.py --device cuda --out OUT [--batch 16 --warmup 5 --reps 30] [--precision fp32,bf16] [--quick]

Step time: median over the timed steps, each fenced by a device synchronise. Peak memory: CUDA allocator peak
(torch.cuda.max_memory_allocated here, the same allocator statistic in the worker's bench rows) from just before
the first step; on CPU, the process's VmHWM (not comparable across the two processes). Adapter bytes: the file a
short real training run writes (ours: format v2, f16 values; PEFT: save_pretrained's adapter_model.safetensors).
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import model as ref_model  # noqa: E402
import safetensors_io  # noqa: E402
from worker import Worker  # noqa: E402

SHIPPED = os.path.join(ROOT, "resources", "models", "clipart-64", "model.safetensors")


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def vm_hwm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return -1


def time_training(ref, params, device, batch, warmup, reps, precision="fp32", seed=0):
    """AdamW steps of the diffusion loss on a fixed random batch; -> (median ms, min ms, peak bytes, base bytes).
    bf16: the forward and loss under CUDA autocast, backward outside it (PyTorch's recipe; the backward ops follow
    the forward's casts either way)."""
    S = ref.config["unet"]["sample_size"]
    g = torch.Generator().manual_seed(seed)
    x0 = (torch.rand(batch, 3, S, S, generator=g) * 2 - 1).to(device)
    caps = ["a red square"] * batch
    ac = ref_model.alphas_cumprod(ref.config["diffusion"])
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = -1
    times = []
    for i in range(warmup + reps):
        sync(device)
        t0 = time.perf_counter()
        # The text encoder runs every step, as in the worker (frozen unless full fine-tuning).
        with torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext():
            loss = ref_model.diffusion_loss(ref, x0, ref.text_encoder.encode(caps), g, ac)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else vm_hwm_bytes()
    return statistics.median(times), min(times), peak, base


def lora_ranks(ref, density):
    """The worker's parameter-matched LoRA rank per layer: r = max(1, round(d·m·n / (m+n)))."""
    out = {}
    for name, m in ref.target_layers().items():
        rows, cols = m.weight.shape[0], m.weight[0].numel()
        out[name] = max(1, round(density * rows * cols / (rows + cols)))
    return out


def shira_r(ref, density):
    """PEFT SHiRA has one r for every layer (K = r(m+n)); the r whose total is closest to the worker's Σ d·m·n."""
    layers = ref.target_layers().values()
    want = sum(round(density * m.weight.numel()) for m in layers)
    per_r = sum(m.weight.shape[0] + m.weight[0].numel() for m in layers)
    return max(1, round(want / per_r))


def peft_rows(args, common, precision):
    rows = []
    try:
        import peft
        from peft import LoraConfig, ShiraConfig, get_peft_model
    except Exception as e:  # noqa: BLE001
        for method in ("lora", "shira"):
            rows.append(dict(common, impl="peft", method=method, precision=precision,
                             skipped=f"PEFT not importable: {type(e).__name__}: {e}"))
        return rows
    targets = ref_model.DEFAULT_TARGETS
    for method in ("lora", "shira"):
        ref = ref_model.load_model(args.model, device=args.device)
        if method == "lora":
            ranks = lora_ranks(ref, args.density)
            # rank_pattern keys match module paths relative to the wrapped UNet; alpha = r (scale 1), as ours
            pattern = {n[len("unet."):]: r for n, r in ranks.items()}
            cfg = LoraConfig(r=4, lora_alpha=4, target_modules=targets, rank_pattern=pattern, alpha_pattern=pattern,
                             lora_dropout=0.0, init_lora_weights=True)
            extra = {"rank_min": min(ranks.values()), "rank_max": max(ranks.values())}
        else:
            r = shira_r(ref, args.density)
            cfg = ShiraConfig(r=r, target_modules=targets, mask_type="random", random_seed=0)
            extra = {"r": r, "mask": "rand"}
        t_setup = time.perf_counter()
        pm = get_peft_model(ref.unet, cfg)
        setup_ms = (time.perf_counter() - t_setup) * 1000
        params = [p for p in pm.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in params)
        step, step_min, peak, base = time_training(ref, params, args.device, args.batch, args.warmup, args.reps, precision)
        with tempfile.TemporaryDirectory() as d:
            pm.save_pretrained(d)
            nbytes = os.path.getsize(os.path.join(d, "adapter_model.safetensors"))
        rows.append(dict(common, impl="peft", peft=peft.__version__, method=method, precision=precision, trainable=trainable, step_ms=step,
                         step_ms_min=step_min, peak_mem_bytes=peak, base_mem_bytes=base, setup_ms=setup_ms,
                         adapter_bytes=nbytes, bytes_per_value=nbytes / trainable, **extra))
        print(json.dumps(rows[-1]), flush=True)
        del pm, ref
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def pytorch_full_row(args, common, precision):
    ref = ref_model.load_model(args.model, device=args.device)
    params = list(ref.parameters())
    for p in params:
        p.requires_grad_(True)
    step, step_min, peak, base = time_training(ref, params, args.device, args.batch, args.warmup, args.reps, precision)
    row = dict(common, impl="pytorch", method="full", precision=precision, trainable=sum(p.numel() for p in params), step_ms=step,
               step_ms_min=step_min, peak_mem_bytes=peak, base_mem_bytes=base)
    print(json.dumps(row), flush=True)
    del ref
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def our_rows(args, common, config, precisions):
    rows = []
    with Worker(args.worker, device=args.device) as w:
        def on_event(e):
            if e.get("event") == "bench_row":
                r = e["row"]
                # the bench calls a config it is given "builtin"; here it is the shipped model's config
                rows.append(dict(common, impl="ours", **{k: v for k, v in r.items() if k not in ("device", "model")}))
                print(json.dumps(rows[-1]), flush=True)
        # quick=False adds the sparse and auto gradient paths for Struct and Rand (auto = what `train` uses)
        for precision in precisions:
            w.call("bench", on_event=on_event, kind="train", models="builtin", config=config, batch=args.batch,
                   warmup=args.warmup, reps=args.reps, density=args.density, quick=bool(args.quick), precision=precision)
        # Adapter bytes: what a real (1-step) training run writes, per method, on the shipped weights.
        w.call("load_model", path=args.model)
        with tempfile.TemporaryDirectory() as d:
            data = os.path.join(d, "data.safetensors")
            S = config["unet"]["sample_size"]
            g = torch.Generator().manual_seed(0)
            images = (torch.rand(args.batch, S, S, 3, generator=g) * 255).to(torch.uint8)
            safetensors_io.save(data, {"images": images}, {"captions": json.dumps(["a red square"] * args.batch)})
            for method, mask in (("shira", "rand"), ("shira", "struct"), ("shira", "snip"), ("lora", None)):
                out = os.path.join(d, f"{method}-{mask}.safetensors")
                kw = dict(mask=mask, density=args.density) if method == "shira" else dict(match_density=args.density)
                res = w.call("train", method=method, data=data, out=out, steps=1, batch=min(args.batch, 4), **kw)
                nbytes = os.path.getsize(out)
                row = dict(common, impl="ours", name="adapter_file", method=method, mask=mask, trainable=res["trainable"],
                           adapter_bytes=nbytes, bytes_per_value=nbytes / res["trainable"])
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--worker", default=None)
    ap.add_argument("--model", default=SHIPPED)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--density", type=float, default=0.02)
    ap.add_argument("--precision", default=None, help="comma list of fp32, bf16 (default: fp32,bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--quick", action="store_true", help="dense gradient path only (no sparse/auto cases) in ours")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    precisions = (args.precision or ("fp32,bf16" if cuda else "fp32")).split(",")
    for p in precisions:
        if p not in ("fp32", "bf16"):
            ap.error(f"--precision: '{p}' is not one of fp32, bf16")
        if p == "bf16" and not cuda:
            ap.error("--precision bf16 needs --device cuda (autocast is CUDA-only in the worker)")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.makedirs(args.out, exist_ok=True)
    _, meta = safetensors_io.load(args.model)
    config = json.loads(meta["config"])
    common = {"device": args.device, "model": config.get("name", "builtin"), "batch": args.batch, "warmup": args.warmup,
              "reps": args.reps, "density": args.density, "torch": torch.__version__}
    rows = our_rows(args, common, config, precisions)
    for precision in precisions:
        rows += peft_rows(args, common, precision)
        rows.append(pytorch_full_row(args, common, precision))
    with open(os.path.join(args.out, "train.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
