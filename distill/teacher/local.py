"""Where the teacher answers: a remote OpenAI-compatible endpoint from the recipe, a managed
`vllm serve` (`distill.teacher.vllm_serve`), or the project's own server started on a free
local port for the duration of a stage.

`serve_local(model)` yields (base_url, served_name); `teacher_endpoint(cfg.teacher)` yields
(base_url, model, api_key). A started server's log goes to a file (under `log_dir` when given,
and kept); if the server dies while starting, the error carries the tail of that log. Servers
run in their own process group, are stopped with SIGTERM then SIGKILL to the whole group, and
get SIGTERM if this process dies (even by kill -9). The API key is read from the environment
variable the recipe names and is never logged or written anywhere.
"""

from __future__ import annotations

import ctypes
import os
import signal
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


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


@contextmanager
def launched(cmd: list[str], health_url: str, log_path: Path, startup_timeout_s: float,
             what: str = "teacher server", stop_timeout_s: float = 30.0) -> Iterator[subprocess.Popen]:
    """Runs `cmd` with its output appended to `log_path`, waits until `health_url` answers 200,
    and stops the process and all its children on exit."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)
    try:
        _wait_healthy(proc, health_url, log_path, startup_timeout_s, what)
        yield proc
    finally:
        _stop(proc, stop_timeout_s)


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
    cmd = [sys.executable, "-m", "distill.teacher.server", "--model", path, "--port", str(port),
           "--served-name", model, "--parent-pid", str(os.getpid())]
    if revision:
        cmd += ["--revision", revision]
    cmd += extra_args or []
    with launched(cmd, f"http://127.0.0.1:{port}/health", Path(log_path), startup_timeout_s):
        yield f"http://127.0.0.1:{port}/v1", model


def _wait_healthy(proc: subprocess.Popen, url: str, log_path: Path, timeout_s: float,
                  what: str = "teacher server") -> None:
    import httpx
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the {what} exited with code {proc.returncode} while starting; "
                               f"log {log_path}:\n{_tail(log_path)}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the {what} was not healthy after {timeout_s:.0f} s; "
                       f"log {log_path}:\n{_tail(log_path)}")


def _stop(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM to the server's process group (vLLM's engine and workers are children), then
    SIGKILL after `timeout_s`."""
    try:
        own_group = os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:  # already reaped: its group may still hold children
        own_group = True

    def signal_group(sig: int) -> None:
        try:
            if own_group:
                os.killpg(proc.pid, sig)
            elif proc.poll() is None:  # not started in a session of its own: the process alone
                proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        signal_group(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(signal.SIGKILL)
            proc.wait()
    signal_group(signal.SIGKILL)  # children that outlived their parent


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
        from distill.teacher.vllm_serve import vllm_serve
        log_path = Path(log_dir or tempfile.mkdtemp(prefix="distill-vllm-")) / "vllm-serve.log"
        with vllm_serve(teacher_cfg, log_path) as base_url:
            yield base_url, teacher_cfg.model, api_key
        return
    log_path = Path(log_dir) / "teacher-server.log" if log_dir else None
    with serve_local(teacher_cfg.model, revision=teacher_cfg.revision, log_path=log_path) as (base_url, name):
        yield base_url, name, api_key
