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
