"""Serving processes: `launched(cmd)` starts a server, waits for its health URL and stops it
with all its children; `serve_local(model)` runs the project's own OpenAI-compatible server on
a free local port and yields (base_url, served_name).

A started server's log goes to a file (kept where the caller says); if the server dies while
starting, the error carries the tail of that log. Servers run in their own process group, are
stopped with SIGTERM then SIGKILL to the whole group, and get SIGTERM if this process dies
(even by kill -9).
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


def die_with_parent() -> None:
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
                                start_new_session=True, preexec_fn=die_with_parent)
    try:
        wait_healthy(proc, health_url, log_path, startup_timeout_s, what)
        yield proc
    finally:
        stop(proc, stop_timeout_s)


@contextmanager
def serve_local(model: str, *, revision: str | None = None, log_path: str | Path | None = None,
                startup_timeout_s: float = 600.0, extra_args: list[str] | None = None
                ) -> Iterator[tuple[str, str]]:
    """Serves `model` (a directory, a Hub id or a toy: name) on 127.0.0.1 and yields
    (base_url, served_name); the served name is `model` as given. The server is stopped on exit,
    and exits by itself if this process dies."""
    from distill.models import resolve_model
    path = resolve_model(model)
    port = free_port()
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"distill-teacher-{port}-", suffix=".log")
        os.close(fd)
        log_path = name
    cmd = [sys.executable, "-m", "distill.serving.server", "--model", path, "--port", str(port),
           "--served-name", model, "--parent-pid", str(os.getpid())]
    if revision:
        cmd += ["--revision", revision]
    cmd += extra_args or []
    with launched(cmd, f"http://127.0.0.1:{port}/health", Path(log_path), startup_timeout_s):
        yield f"http://127.0.0.1:{port}/v1", model


def wait_healthy(proc: subprocess.Popen, url: str, log_path: Path, timeout_s: float,
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


def stop(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
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
