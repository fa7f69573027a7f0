"""A managed `vllm serve`: the command line from the recipe's `teacher.vllm` settings (tensor,
pipeline, data and expert parallelism, context length, reasoning parser), started for the
duration of a stage on 127.0.0.1, waited on until GET /health answers, stopped with SIGTERM
to its process group (then SIGKILL), its log kept beside the stage's records.

vLLM is not a dependency of distill: `pip install distill[vllm]`, or point
`teacher.vllm.executable` at the `vllm` of another environment.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from distill.errors import InputError
from distill.serving.launcher import free_port, launched

# SIGTERM, then SIGKILL after this long: the longest a stop keeps the GPUs (generate.max_gpu_hours
# counts it).
STOP_TIMEOUT_S = 60.0


def serve_command(teacher_cfg, port: int) -> list[str]:
    v = teacher_cfg.vllm
    cmd = [v.executable, "serve", teacher_cfg.model, "--host", "127.0.0.1", "--port", str(port),
           "--served-model-name", teacher_cfg.model,
           "--tensor-parallel-size", str(v.tensor_parallel_size),
           "--pipeline-parallel-size", str(v.pipeline_parallel_size),
           "--data-parallel-size", str(v.data_parallel_size),
           "--gpu-memory-utilization", str(v.gpu_memory_utilization)]
    if v.expert_parallel:
        cmd.append("--enable-expert-parallel")
    if v.max_model_len:
        cmd += ["--max-model-len", str(v.max_model_len)]
    if v.reasoning_parser:
        cmd += ["--reasoning-parser", v.reasoning_parser]
    if v.dtype:
        cmd += ["--dtype", v.dtype]
    if teacher_cfg.revision:
        cmd += ["--revision", teacher_cfg.revision]
    return cmd + list(v.extra_args)


@contextmanager
def vllm_serve(teacher_cfg, log_path: Path) -> Iterator[str]:
    """Starts `vllm serve` and yields its base URL (http://127.0.0.1:PORT/v1)."""
    v = teacher_cfg.vllm
    if shutil.which(v.executable) is None:
        raise InputError(f"{v.executable!r} not found: install vLLM (pip install 'distill[vllm]') or "
                         "set teacher.vllm.executable to its path", key="teacher.vllm.executable")
    port = v.port or free_port()
    cmd = serve_command(teacher_cfg, port)
    with launched(cmd, f"http://127.0.0.1:{port}/health", log_path, v.startup_timeout_s,
                  what="vllm server", stop_timeout_s=STOP_TIMEOUT_S):
        yield f"http://127.0.0.1:{port}/v1"
