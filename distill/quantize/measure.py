"""What a quantized file costs to run on the CPU, measured in a child process of its own so the
numbers are that model's alone: resident memory (the process's peak, and what the model added to
it: weights, KV cache and compute buffers, the runtime itself left out), load seconds and single-stream decode tokens/s at a fixed length.

    python -m distill.quantize.measure GGUF_PATH TOKENS THREADS PROMPT_ID [PROMPT_ID ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def status_bytes(field: str) -> int:
    """A field of /proc/self/status in bytes: VmRSS (now), VmHWM (the peak). Not getrusage's
    ru_maxrss: Linux carries that over exec, so a child started from a Python that holds a
    model reports the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure(path: str, tokens: int, threads: int, prompt: list[int]) -> dict:
    from llama_cpp import Llama
    before = status_bytes("VmRSS")   # the runtime loaded, no model yet
    start = time.perf_counter()
    llm = Llama(path, n_ctx=len(prompt) + tokens + 8, n_threads=threads, verbose=False, seed=0)
    loaded = time.perf_counter()
    llm.eval(prompt)
    # Llama.generate never stops by itself: exactly `tokens` new tokens, EOS or not.
    decode_start, n = time.perf_counter(), 0
    for _ in llm.generate([], temp=0.0, reset=False):
        n += 1
        if n == tokens:
            break
    decode_s = time.perf_counter() - decode_start
    return {"load_s": round(loaded - start, 3), "tokens_per_s": round(n / decode_s, 1),
            "model_rss_bytes": status_bytes("VmHWM") - before, "rss_bytes": status_bytes("VmHWM"),
            "threads": threads, "tokens": n}


def measure_gguf(path: Path, prompt_ids: list[int], tokens: int, threads: int | None = None) -> dict:
    threads = threads or len(os.sched_getaffinity(0))
    cmd = [sys.executable, "-m", "distill.quantize.measure", str(path), str(tokens), str(threads),
           *map(str, prompt_ids)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"measuring {path} failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    a = sys.argv[1:]
    print(json.dumps(_measure(a[0], int(a[1]), int(a[2]), [int(x) for x in a[3:]])))
