"""Summary of one scripts/gpu/run.sh run: OUT/env.json, parity.json, train.jsonl, switch.jsonl -> OUT/summary.md
(tables ready for docs/benchmarks.md) and OUT/summary.json (the issue-8 targets with pass/fail).

    python3 scripts/gpu/summarize.py OUT
"""

import json
import os
import sys

MiB = 1 << 20


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def read_jsonl(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    rows.append(json.loads(line))
    except OSError:
        pass
    return rows


def fmt(v, spec=".1f"):
    return "—" if v is None else format(v, spec)


def mib(v):
    return None if v is None or v < 0 else v / MiB


def main(out):
    env = read_json(os.path.join(out, "env.json"), {})
    parity = read_json(os.path.join(out, "parity.json"), {})
    train = read_jsonl(os.path.join(out, "train.jsonl"))
    switch = read_jsonl(os.path.join(out, "switch.jsonl"))
    md = [f"Run {env.get('date', '?')} on {env.get('gpu', env.get('device', '?'))}; torch {env.get('torch', '?')}, "
          f"PEFT {env.get('peft', 'not installed')}, worker libtorch {env.get('worker_torch', '?')}, "
          f"CPU {env.get('cpu', '?')}.", ""]

    # Parity
    checks = parity.get("checks", [])
    failed = [c for c in checks if not c["ok"]]
    md += [f"### Parity and PEFT round trip ({parity.get('device', '?')}): {len(checks) - len(failed)} passed, "
           f"{len(failed)} failed", "", "| check | max abs diff | scale | tol | |", "|---|---:|---:|---:|---|"]
    for c in checks:
        md.append(f"| {c['check']} | {c['maxdiff']:.2e} | {c['scale']:.2e} | {c['tol']:.1e} | "
                  f"{'ok' if c['ok'] else 'FAIL ' + c.get('error', '')} |")
    md.append("")

    # Training, one table per precision (rows written before precision existed count as fp32)
    steps = [r for r in train if r.get("step_ms") is not None or r.get("skipped")]
    for r in steps:
        r.setdefault("precision", "fp32")
    precisions = [p for p in ("fp32", "bf16") if any(r["precision"] == p for r in steps)]
    for prec in precisions:
        label = "fp32" if prec == "fp32" else "bf16 autocast, fp32 weights and optimiser state"
        md += [f"### Training step (same model, batch, data, AdamW; {label})", "",
               "| impl | method | mask | grad path | trainable | step ms (median) | min | peak MiB | peak − base MiB | adapter bytes | B/value |",
               "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in steps if r["precision"] == prec):
            if r.get("skipped"):
                md.append(f"| {r['impl']} | {r['method']} | | | | skipped: {r['skipped']} | | | | | |")
                continue
            path = r.get("grad_path", "")
            if path == "auto" and "auto_sparse_layers" in r:
                path = f"auto ({r['auto_sparse_layers']}/{r.get('layers', '?')} sparse)"
            over = None if r.get("base_mem_bytes", -1) < 0 else r["peak_mem_bytes"] - r["base_mem_bytes"]
            md.append(f"| {r['impl']} | {r['method']} | {r.get('mask') or ''} | {path} | {r.get('trainable', '')} | "
                      f"{fmt(r.get('step_ms'), '.2f')} | {fmt(r.get('step_ms_min'), '.2f')} | {fmt(mib(r.get('peak_mem_bytes')))} | "
                      f"{fmt(mib(over))} | {r.get('adapter_bytes', '')} | {fmt(r.get('bytes_per_value'), '.2f')} |")
        md.append("")
    files = [r for r in train if r.get("name") == "adapter_file"]
    if files:
        md += ["", "Adapter files of a real 1-step training run on the shipped model (ours, format v2, f16 values; "
               "the JSON header is a large share at this size):", "", "| method | mask | trainable | bytes | B/value |",
               "|---|---|---:|---:|---:|"]
        for r in files:
            md.append(f"| {r['method']} | {r.get('mask') or ''} | {r['trainable']} | {r['adapter_bytes']} | {r['bytes_per_value']:.2f} |")
    md.append("")

    # Switching
    sw = [r for r in switch if r.get("name") == "switch"]
    bpv = [r for r in switch if r.get("name") == "bytes_per_value"]
    if sw:
        md += ["### Whole-model switch (warm, A → B)", "", "| device | model | mask | SHiRA ms | LoRA ms | LoRA/SHiRA | trained values |",
               "|---|---|---|---:|---:|---:|---:|"]
        for r in sw:
            md.append(f"| {r['device']} | {r['model']} | {r['mask']} | {r['shira_switch_ms']:.3f} | {r['lora_switch_ms']:.3f} | "
                      f"{r['ratio']:.1f}× | {r['shira_params']} |")
        md.append("")
    if bpv:
        md += ["| mask | values | index | bytes per trained value (file) | payload only |", "|---|---|---|---:|---:|"]
        for r in bpv:
            md.append(f"| {r['mask']} | {r['values_dtype']} | {r['index_encoding']} | {r['bytes_per_value']:.3f} | "
                      f"{r['payload_bytes_per_value']:.3f} |")
        md.append("")

    # Targets (issue 8), all from this run
    def pick(impl, method, precision, mask=None, path=None):
        for r in steps:
            if r.get("skipped") or r.get("impl") != impl or r.get("method") != method or r["precision"] != precision:
                continue
            if mask and r.get("mask") != mask:
                continue
            if path and r.get("grad_path") != path:
                continue
            return r
        return None

    targets = []

    def target(name, value, limit, detail):
        ok = None if value is None else value <= limit
        targets.append({"target": name, "value": value, "limit": limit, "ok": ok, "detail": detail})

    for prec in precisions or ["fp32"]:
        ours_shira = pick("ours", "shira", prec, "rand", "auto") or pick("ours", "shira", prec, "rand")
        peft_shira, peft_lora = pick("peft", "shira", prec), pick("peft", "lora", prec)
        target(f"our SHiRA step / PEFT SHiRA step ({prec})",
               ours_shira and peft_shira and ours_shira["step_ms"] / peft_shira["step_ms"], 0.6,
               "ours: Rand mask, grad_path auto (what `train` uses); PEFT: random mask")
        # Comparable only as two CUDA allocator peaks (a worker built without the CUDA headers reports its RSS).
        same_kind = ours_shira and ours_shira.get("peak_mem_kind", "").startswith("cuda")
        target(f"our SHiRA peak memory / PEFT LoRA peak ({prec})",
               same_kind and peft_lora and ours_shira["peak_mem_bytes"] / peft_lora["peak_mem_bytes"] or None, 0.85,
               "CUDA allocator peak, each process's own (both hold the same fp32 model)")
    f16 = [r for r in bpv if r.get("values_dtype") == "f16" and r.get("model") == "sd15"]
    target("bytes per trained value (max over masks, f16, SD-1.5 scale)", max((r["bytes_per_value"] for r in f16), default=None), 3.0,
           "file bytes / trained values, header included")
    cuda_sw = [r for r in sw if str(r.get("device", "")).startswith("cuda") and r.get("model") == "sd15"]
    target("whole-model SHiRA switch on CUDA, SD-1.5 UNet (ms, max over masks)",
           max((r["shira_switch_ms"] for r in cuda_sw), default=None), 2.0, "warm A → B, 192 layers, 2 % density")
    md += ["### Targets (issue 8)", "", "| target | value | limit | |", "|---|---:|---:|---|"]
    for t in targets:
        state = "n/a" if t["ok"] is None else ("met" if t["ok"] else "missed")
        md.append(f"| {t['target']} | {fmt(t['value'], '.3f')} | {t['limit']} | {state} |")
    md.append("")

    text = "\n".join(md)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"env": env, "parity_passed": len(checks) - len(failed), "parity_failed": len(failed), "targets": targets}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "."))
