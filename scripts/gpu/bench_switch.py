"""Whole-model adapter switching on the worker (`bench --kind switch`): SHiRA scatter/restore vs LoRA fuse/unfuse,
warm and cold, bytes per trained value, blend of N adapters, α change. One JSON object per row into OUT/switch.jsonl.

    python3 scripts/gpu/bench_switch.py --device cuda --models sd15 --out OUT [--quick]

"sd15" is the SD-1.5 UNet (320/640/1280/1280 channels, 2 layers per block, 860 M parameters; native/src/bench/bench.cpp)
with the default targets at 2 % density: 192 layers, 5.3 M trained values per adapter.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "reference"))
from worker import Worker  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--worker", default=None)
    ap.add_argument("--models", default="sd15")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "switch.jsonl")
    with Worker(args.worker, device=args.device) as w, open(path, "w") as f:
        def on_event(e):
            if e.get("event") == "bench_row":
                f.write(json.dumps(e["row"]) + "\n")
                f.flush()
                print(json.dumps(e["row"]), flush=True)
        extra = {"reps": args.reps} if args.reps else {}
        w.call("bench", on_event=on_event, kind="switch", models=args.models, quick=bool(args.quick), **extra)


if __name__ == "__main__":
    main()
