"""Where the teacher answers: a remote OpenAI-compatible endpoint from the recipe, or the
project's own server started on a free local port for the duration of a stage.

`serve_local(model)` yields (base_url, served_name); `teacher_endpoint(cfg.teacher)` yields
(base_url, model, api_key). The server's log goes to a file; if the server dies while starting,
the error carries the tail of that log. The API key is read from the environment variable the
recipe names and is never logged or written anywhere.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from distill.errors import InputError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def resolve(model: str) -> str:
    """`toy:...` names become local model directories; anything else is returned unchanged."""
    if not model.startswith("toy:"):
        # An absolute or ./ path that is missing is a typo, not a Hub id: say so before a
        # server spends its start-up on it.
        if (os.path.isabs(model) or model.startswith(".")) and not os.path.exists(model):
            raise InputError("model directory not found", key="teacher.model", file=model)
        return model
    from distill.toy import resolve_model
    return resolve_model(model)


@contextmanager
def serve_local(model: str, *, revision: str | None = None, log_path: str | Path | None = None,
                startup_timeout_s: float = 600.0, extra_args: list[str] | None = None
                ) -> Iterator[tuple[str, str]]:
    """Serves `model` (a directory, a Hub id or a toy: name) on 127.0.0.1 and yields
    (base_url, served_name); the served name is `model` as given. The server is stopped on exit,
    and exits by itself if this process dies."""
    path = resolve(model)
    port = free_port()
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"distill-teacher-{port}-", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    cmd = [sys.executable, "-m", "distill.teacher.server", "--model", path, "--port", str(port),
           "--served-name", model, "--parent-pid", str(os.getpid())]
    if revision:
        cmd += ["--revision", revision]
    cmd += extra_args or []
    base_url = f"http://127.0.0.1:{port}/v1"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}/health", log_path, startup_timeout_s)
        yield base_url, model
    finally:
        _stop(proc)


def _wait_healthy(proc: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> None:
    import httpx
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the teacher server exited with code {proc.returncode} while starting; "
                               f"log {log_path}:\n{_tail(log_path)}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the teacher server was not healthy after {timeout_s:.0f} s; "
                       f"log {log_path}:\n{_tail(log_path)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def teacher_endpoint(teacher_cfg) -> Iterator[tuple[str, str, str | None]]:
    """Yields (base_url, model, api_key): the recipe's endpoint if `base_url` is set, else the
    model served locally for as long as the block runs."""
    api_key = os.environ.get(teacher_cfg.api_key_env) if teacher_cfg.api_key_env else None
    if teacher_cfg.base_url:
        if teacher_cfg.api_key_env and not api_key:
            raise InputError(f"environment variable {teacher_cfg.api_key_env} is not set",
                             key="teacher.api_key_env")
        yield teacher_cfg.base_url.rstrip("/"), teacher_cfg.model, api_key
        return
    with serve_local(teacher_cfg.model, revision=teacher_cfg.revision) as (base_url, name):
        yield base_url, name, api_key
