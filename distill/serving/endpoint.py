"""Where a model answers for a stage: the recipe's remote OpenAI-compatible endpoint, a managed
`vllm serve` (`distill.serving.vllm_serve`), or the project's own server (`serve_local`).

`teacher_endpoint(cfg.teacher)` yields (base_url, model, api_key). The API key is read from the
environment variable the recipe names and is never logged or written anywhere.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from distill.errors import InputError
from distill.serving.launcher import serve_local
from distill.serving.vllm_serve import vllm_serve


@contextmanager
def teacher_endpoint(teacher_cfg, log_dir: str | Path | None = None) -> Iterator[tuple[str, str, str | None]]:
    """Yields (base_url, model, api_key): the recipe's endpoint if `base_url` is set, a managed
    `vllm serve` for the vLLM backends, else the model served by distill's own server for as
    long as the block runs. Server logs go to `log_dir` (kept) or a temporary file."""
    api_key = os.environ.get(teacher_cfg.api_key_env) if teacher_cfg.api_key_env else None
    if teacher_cfg.api_key_env and not api_key and teacher_cfg.base_url:
        raise InputError(f"environment variable {teacher_cfg.api_key_env} is not set",
                         key="teacher.api_key_env")
    if teacher_cfg.base_url:
        yield teacher_cfg.base_url.rstrip("/"), teacher_cfg.model, api_key
        return
    if teacher_cfg.backend in ("vllm_serve", "vllm_offline"):
        # vllm_offline: stages that need an endpoint (evaluation) get a server with the same settings.
        log_path = Path(log_dir or tempfile.mkdtemp(prefix="distill-vllm-")) / "vllm-serve.log"
        with vllm_serve(teacher_cfg, log_path) as base_url:
            yield base_url, teacher_cfg.model, api_key
        return
    local_log = Path(log_dir) / "teacher-server.log" if log_dir else None
    with serve_local(teacher_cfg.model, revision=teacher_cfg.revision, log_path=local_log) as (base_url, name):
        yield base_url, name, api_key
