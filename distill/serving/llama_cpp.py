"""A GGUF file served as users serve it: llama.cpp's OpenAI-compatible server from
llama-cpp-python (`python -m llama_cpp.server`), which renders the chat template the file holds
and stops at the file's end-of-generation tokens. The evaluate stage asks it over the same client
and sampling as every other model; it answers one sample per request (`n` is not supported)."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Request fields that make llama-cpp-python's server sample as vLLM and distill's server do
# (temperature and top-p alone, nothing else). Its OpenAI routes default to repeat_penalty 1.1,
# top_k 40 and min_p 0.05: the repeat penalty alone changed 7 of 40 greedy toy_arith answers of an
# F16 file (a digit seen earlier in the trace pushed down where the sum needed it); asked with it
# at 1.0, the file scored 87.1% of 846 questions against the float model's 87.4%. top_k 0 is
# llama.cpp's "no top-k".
SAMPLE_AS_VLLM = {"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0}


@contextmanager
def serve_gguf(path: Path, name: str, log_path: Path, n_ctx: int = 4096,
               threads: int | None = None, startup_timeout_s: float = 300.0
               ) -> Iterator[tuple[str, str]]:
    from distill.serving.launcher import free_port, launched
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", name,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
           "--n_threads", str(threads or len(os.sched_getaffinity(0))), "--seed", "0",
           "--verbose", "false"]
    with launched(cmd, f"http://127.0.0.1:{port}/v1/models", log_path, startup_timeout_s,
                  what="llama.cpp server"):
        yield f"http://127.0.0.1:{port}/v1", name
