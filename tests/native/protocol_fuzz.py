#!/usr/bin/env python3
"""Protocol fuzz: drives the real shira-worker over stdin/stdout with bad input.

Every malformed, unknown, mistyped or out-of-range request must get exactly one error reply
({"ok": false, "error": {"type": ...}}) and the process must stay up (checked with info after each).
"""
import json
import os
import subprocess
import sys
import tempfile

worker = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="shira-fuzz-")
config = {"name": "fuzz", "unet": {"sample_size": 8, "block_out_channels": [8, 16], "attention": [False, True],
                                    "attention_heads": 2, "norm_num_groups": 4},
          "text_encoder": {"vocab": ["a"], "width": 16, "layers": 1, "heads": 2, "max_length": 4}}
with open(os.path.join(tmp, "garbage.safetensors"), "wb") as f:
    f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")

proc = subprocess.Popen([worker, "--device", "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                        env=dict(os.environ, OMP_NUM_THREADS="1"))
failures = 0


def send(line):
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def read():
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("worker died (stdout closed)")
    return json.loads(line)


def until_reply(rid):
    while True:
        msg = read()
        if msg.get("id") == rid and "ok" in msg:
            return msg


ready = read()
assert ready.get("event") == "ready" and "version" in ready and "device" in ready, ready

cases = [
    ("malformed JSON", '{"id": 1, "op": '),
    ("not an object", '[1, 2, 3]'),
    ("bare string", '"info"'),
    ("invalid utf-8", b'{"id":2,"op":"\xff\xfe"}'.decode("latin-1")),
    ("missing op", '{"id": 3}'),
    ("op wrong type", '{"id": 4, "op": 42}'),
    ("unknown op", '{"id": 5, "op": "make_coffee"}'),
    ("args wrong type", '{"id": 6, "op": "load_model", "args": [1]}'),
    ("load_model no args", '{"id": 7, "op": "load_model", "args": {}}'),
    ("missing model file", '{"id": 8, "op": "load_model", "args": {"path": "/nonexistent/m.safetensors"}}'),
    ("garbage model file", json.dumps({"id": 9, "op": "load_model", "args": {"path": os.path.join(tmp, "garbage.safetensors")}})),
    ("bad config", '{"id": 10, "op": "load_model", "args": {"config": {"unet": {"norm_num_groups": "x"}}}}'),
    ("sample without model", '{"id": 11, "op": "sample", "args": {}}'),
    ("apply_mix without model", '{"id": 12, "op": "apply_mix", "args": {"adapters": []}}'),
    ("inspect missing file", '{"id": 13, "op": "adapter_inspect", "args": {"path": "/nope.safetensors"}}'),
    ("inspect path wrong type", '{"id": 14, "op": "adapter_inspect", "args": {"path": 5}}'),
    ("convert missing file", '{"id": 17, "op": "adapter_convert", "args": {"path": "/nope.safetensors", "out": "%s/c.safetensors"}}' % tmp),
    ("convert bad values", json.dumps({"id": 18, "op": "adapter_convert", "args": {"path": os.path.join(tmp, "garbage.safetensors"), "out": os.path.join(tmp, "c.safetensors"), "values": "f8"}})),
    ("convert garbage file", json.dumps({"id": 19, "op": "adapter_convert", "args": {"path": os.path.join(tmp, "garbage.safetensors"), "out": os.path.join(tmp, "c.safetensors")}})),
    ("convert no out", '{"id": 20, "op": "adapter_convert", "args": {"path": "x"}}'),
    ("huge seed", '{"id": 15, "op": "load_model", "args": {"config": %s, "seed": 1e999}}' % json.dumps(config)),
    ("huge integer", '{"id": 16, "op": "load_model", "args": {"config": %s, "seed": 123456789012345678901234567890}}' % json.dumps(config)),
]
after_load = [
    ("huge steps", '{"id": 21, "op": "sample", "args": {"steps": 99999999999999999999}}'),
    ("negative batch", '{"id": 22, "op": "sample", "args": {"batch": -1}}'),
    ("steps wrong type", '{"id": 23, "op": "sample", "args": {"steps": "many"}}'),
    ("guidance NaN-ish", '{"id": 24, "op": "sample", "args": {"guidance": 1e400}}'),
    ("train missing data", '{"id": 25, "op": "train", "args": {"out": "%s/a.safetensors", "data": "/nope.safetensors"}}' % tmp),
    ("train bad mask", '{"id": 26, "op": "train", "args": {"out": "x", "data": "y", "mask": "nope"}}'),
    ("train bad method", '{"id": 27, "op": "train", "args": {"out": "x", "data": "y", "method": "dora"}}'),
    ("mix bad entries", '{"id": 28, "op": "apply_mix", "args": {"adapters": [1, 2]}}'),
    ("mix missing adapter", '{"id": 29, "op": "apply_mix", "args": {"adapters": [{"path": "/nope.safetensors"}]}}'),
    ("mix alpha wrong type", '{"id": 30, "op": "apply_mix", "args": {"adapters": [{"path": "x", "alpha": "big"}]}}'),
    ("load negative cache_mb", '{"id": 32, "op": "load_model", "args": {"config": %s, "cache_mb": -1}}' % json.dumps(config)),
    ("load identity wrong type", '{"id": 33, "op": "load_model", "args": {"config": %s, "identity": 7}}' % json.dumps(config)),
    ("train bad values_dtype", '{"id": 34, "op": "train", "args": {"out": "x", "data": "y", "values_dtype": "f8"}}'),
    ("sample size not multiple", '{"id": 31, "op": "sample", "args": {"size": 7}}'),
]


def check(name, line, rid):
    global failures
    send(line)
    # Nothing else is in flight, so the next reply belongs to this request (its id may be null when
    # the worker could not parse the line, e.g. a number JSON cannot represent).
    msg = read()
    while "ok" not in msg:
        msg = read()
    ok = msg.get("ok") is False and isinstance(msg.get("error"), dict) and msg["error"].get("type") in (
        "bad_input", "not_found")
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: {msg.get('error', msg)}"[:160])
    failures += 0 if ok else 1
    send('{"id": "alive", "op": "info"}')
    alive = until_reply("alive")
    if alive.get("ok") is not True:
        failures += 1
        print("  FAIL worker not serving info after", name)


def rid_of(line):
    try:
        obj = json.loads(line)
        return obj.get("id") if isinstance(obj, dict) else None
    except Exception:
        return None


for name, line in cases:
    check(name, line, rid_of(line))

send(json.dumps({"id": "load", "op": "load_model", "args": {"config": config}}))
loaded = until_reply("load")
assert loaded["ok"], loaded
for name, line in after_load:
    check(name, line, rid_of(line))

# A real sample still works after all that, and writes a uint8 [B, H, W, 3] file by rename.
out = os.path.join(tmp, "s.safetensors")
send(json.dumps({"id": "s", "op": "sample", "args": {"prompt": "a", "steps": 2, "batch": 2, "out": out}}))
res = until_reply("s")
if not (res.get("ok") and res["result"]["shape"] == [2, 8, 8, 3] and os.path.exists(out)):
    failures += 1
    print("  FAIL sample after fuzz:", res)
send('{"id": "bye", "op": "shutdown"}')
until_reply("bye")
proc.wait(timeout=30)
print(f"protocol fuzz: {len(cases) + len(after_load)} cases, {failures} failures, exit {proc.returncode}")
sys.exit(1 if failures or proc.returncode != 0 else 0)
