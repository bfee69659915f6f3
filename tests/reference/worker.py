"""Drives `shira-worker serve` over its JSON-lines protocol (docs/architecture.md): one request per line
{"id", "op", "args"}, events {"event", "id", ...} while an op runs, then one reply {"id", "ok", "result"|"error"}.
No Node needed, so the reference checks run wherever the worker binary and PyTorch are."""

import json
import os
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_BINARY = os.path.join(ROOT, "native", "build", "shira-worker")


class WorkerError(RuntimeError):
    pass


class Worker:
    def __init__(self, binary=None, device="cpu", env=None):
        self.binary = binary or os.environ.get("SHIRA_WORKER") or DEFAULT_BINARY
        if not os.path.exists(self.binary):
            raise FileNotFoundError(f"worker binary not found: {self.binary} (build native/ or set SHIRA_WORKER)")
        e = dict(os.environ)
        e.setdefault("OMP_NUM_THREADS", "1")
        e.update(env or {})
        self.proc = subprocess.Popen([self.binary, "--device", device, "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=e, bufsize=1)
        ready = self._read()
        if ready.get("event") != "ready":
            raise WorkerError(f"worker did not start: {ready}")
        self.info = ready
        self.next_id = 0

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"worker exited (code {self.proc.poll()})")
        return json.loads(line)

    def call(self, op, on_event=None, **args):
        """Sends one request and returns its result; events of this request go to on_event."""
        self.next_id += 1
        rid = self.next_id
        self.proc.stdin.write(json.dumps({"id": rid, "op": op, "args": args}) + "\n")
        self.proc.stdin.flush()
        while True:
            msg = self._read()
            if msg.get("id") != rid:
                continue
            if "event" in msg:
                if on_event:
                    on_event(msg)
                continue
            if not msg.get("ok"):
                raise WorkerError(f"{op}: {msg.get('error')}")
            return msg["result"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("shutdown")
            except (WorkerError, BrokenPipeError):
                pass
            self.proc.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
