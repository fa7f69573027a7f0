"""Runs untrusted Python in bubblewrap sandboxes; reads a program (plus optional data files and
stdin), writes nothing on the host, and returns a `Result`.

How: a pool (distill/grading/pool.py) of long-lived sandboxes, each a fork server
(distill/grading/sandbox_server.py) inside its own `bwrap`. A job is forked from the warm
server (about 2 ms instead of ~100 ms for a fresh bwrap and interpreter), runs with its own
limits, and when it ends every process left in that sandbox is killed and its writable
directories are emptied before the next job. One job runs at a time per sandbox; parallel
callers get parallel sandboxes. `run_python` is thread-safe.

What is contained:
- network: a fresh network namespace with only a loopback device, so nothing is reachable;
- files: the root is an empty read-only tmpfs; only /usr (with the /bin, /lib, /lib64 links)
  and the Python installation are bound in, read-only. $HOME (with ~/.cache/huggingface),
  /etc, /work of the host and the rest of the host are absent. The program writes to /work
  (its working directory), /tmp and /dev/shm: private size-capped tmpfs, emptied after every
  job and gone with the sandbox;
- privileges: environment cleared (a fixed PATH, HOME, LANG), all capabilities dropped,
  no_new_privs (setuid binaries do not elevate), a new session per job. When the caller is
  root the program runs as uid/gid 65534 (the kernel never applies RLIMIT_NPROC to root) and
  the server keeps only the capabilities to change uid and to kill; otherwise the server is
  undumpable, so a job cannot ptrace it or read its descriptors;
- resources: wall time (the server SIGKILLs every process of the sandbox, including ones that
  started a new session to outlive the job; the host kills the whole sandbox if the server
  stops answering), CPU seconds (RLIMIT_CPU), address space per process (RLIMIT_AS),
  processes (RLIMIT_NPROC: a fork bomb hits the cap), file size (RLIMIT_FSIZE), output
  (stdout + stderr past `file_mb` kill the job; only the tail of each is kept);
- a program that kills or stops its server is reported as an error (or a timeout) and the
  sandbox is replaced; the host is unaffected.

What is not contained:
- memory is capped per process, not per tree: up to `max_procs` x `memory_mb` in the worst
  case (cgroups would bound the tree but are not available to unprivileged users everywhere);
- the kernel's attack surface: no seccomp filter, so a kernel exploit escapes;
- CPU share: a program may use its CPU seconds on every core at once;
- the program sees the host's /usr and Python standard library (read-only), and third-party
  packages are not importable;
- System V IPC objects a job creates survive until its sandbox is recycled (every
  `MAX_JOBS` jobs); nothing reads them unless a later program looks for them;
- RLIMIT_NPROC counts the unprivileged uid across the machine, so a fork bomb in one sandbox
  can make a fork fail in a parallel one.

A sandbox that cannot be set up raises `SandboxUnavailable` instead of passing for a failing
program.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from distill.grading.pool import Pool, Worker, WorkerDied

STATUSES = ("ok", "fail", "timeout", "memory", "output", "error")
NOBODY = 65534
MAX_JOBS = 1000          # jobs per sandbox before it is replaced
ANSWER_GRACE_S = 10.0    # how long past a job's wall limit the host waits for its server
_SERVER_SOURCE = (Path(__file__).with_name("sandbox_server.py")).read_text()


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here."""


@dataclass
class Result:
    status: str            # ok | fail | timeout | memory | output (over the output cap) |
                           # error (killed by a signal: crash, file size limit; sandbox died)
    exit_code: int | None  # 128 + N when killed by signal N; None on timeout
    stdout: str            # tail, at most `output_bytes`
    stderr: str
    duration_s: float      # the program's own wall time, measured inside the sandbox
    truncated: bool = False    # stdout was longer than `output_bytes`

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _bwrap() -> str:
    path = shutil.which("bwrap") or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None)
    if path is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is required to run untrusted code and was not found on PATH. "
            "Install it: `apt-get install bubblewrap` (Debian/Ubuntu), `dnf install bubblewrap` "
            "(Fedora), `pacman -S bubblewrap` (Arch); unprivileged user namespaces must be enabled.")
    return path


def _args(bwrap: str, as_root: bool, tmp_mb: int) -> list[str]:
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    args = [bwrap]
    if as_root:
        # No user namespace: jobs must become a real unprivileged uid. The server keeps the
        # capabilities to do that and to kill the jobs' processes; jobs lose them with the uid.
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                 "--unshare-cgroup-try", "--cap-drop", "ALL", "--cap-add", "CAP_SETUID",
                 "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
    else:
        args += ["--unshare-all", "--cap-drop", "ALL"]
    args += ["--die-with-parent", "--new-session", "--clearenv",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/work",
             "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0",
             "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
             "--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = os.readlink(f"/{link}") if os.path.islink(f"/{link}") else None
        if target:
            args += ["--symlink", target, f"/{link}"]
        elif os.path.isdir(f"/{link}"):
            args += ["--ro-bind", f"/{link}", f"/{link}"]
    if not prefix.startswith("/usr/"):
        # Parents that bwrap creates would be 0700: unreadable to the unprivileged uid.
        parents = Path(prefix).parents
        for parent in reversed([p for p in parents if str(p) != "/"]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", prefix, prefix]
    if not exe.startswith(prefix + "/") and not exe.startswith("/usr/"):
        args += ["--ro-bind", exe, exe]
    size = str(tmp_mb * 1024 * 1024)
    args += ["--proc", "/proc", "--dev", "/dev"]
    for path in ("/tmp", "/work", "/dev/shm"):
        args += ["--perms", "1777", "--size", size, "--tmpfs", path]
    args += ["--remount-ro", "/", "--chdir", "/work", exe, "-S", "-s", "-P", "-B", "-c",
             _SERVER_SOURCE]
    return args


# bwrap's --die-with-parent follows the thread that started it: servers are started from
# this one long-lived thread, so a caller's worker thread may come and go.
_spawner = ThreadPoolExecutor(1, thread_name_prefix="distill-sandbox-spawn")


class _Server(Worker):
    """One bwrap sandbox running the fork server; used by one caller at a time."""

    kill_group = True

    def __init__(self, tmp_mb: int):
        as_root = os.geteuid() == 0
        args = _args(_bwrap(), as_root, tmp_mb)
        super().__init__(_spawner.submit(
            subprocess.Popen, args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True).result(), tmp_mb)
        hello = self._read(30.0)
        if hello != {"ready": True}:
            err = self._stderr()
            self.close()
            raise SandboxUnavailable("bubblewrap could not set up the sandbox (are user "
                                     f"namespaces allowed here?): {err.strip()[-500:]}")

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode("utf-8", "replace") if self.proc.stderr else ""

    def _read(self, timeout: float) -> dict | None:
        """One reply, or None when the server died or said nothing within `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            header = self.read_exact(4, deadline)
            return json.loads(self.read_exact(struct.unpack("<I", header)[0], deadline))
        except (TimeoutError, WorkerDied):
            return None

    def run(self, job: dict) -> dict | None:
        data = pickle.dumps(job, protocol=4)
        if not self.send(struct.pack("<I", len(data)) + data):
            return None
        return self._read(job["timeout_s"] + ANSWER_GRACE_S)


# Idle servers by tmpfs size; a caller takes one (or starts one) and gives it back.
_pool = Pool(_Server, max_jobs=MAX_JOBS)


def close_sandboxes() -> None:
    """Stops the idle sandboxes (they are also stopped at exit and die with this process)."""
    _pool.close()


_nproc_cache: dict[int, tuple[float, int]] = {}


def _count_processes(uid: int) -> int:
    """Processes of `uid` on the machine, re-counted at most every half second."""
    now = time.monotonic()
    hit = _nproc_cache.get(uid)
    if hit and now - hit[0] < 0.5:
        return hit[1]
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    n += 1
            except OSError:
                pass
    _nproc_cache[uid] = (now, n)
    return n


def run_python(code: str, *, timeout_s: float = 10.0, memory_mb: int = 1024,
               cpu_s: float | None = None, max_procs: int = 16, output_bytes: int = 8192,
               files: Mapping[str, str | bytes] | None = None, file_mb: int = 64,
               stdin: str | bytes | None = None) -> Result:
    """Runs `code` as /work/main.py in a sandbox, with `stdin` as its standard input. `files`
    are placed read-only beside it. Status: ok (exit 0), fail (non-zero exit), timeout (wall
    or CPU time), memory (allocation refused), output (stdout + stderr over `file_mb`), error
    (killed by a signal, or the sandbox died). Raises `SandboxUnavailable` when bubblewrap is
    missing or cannot set up the sandbox."""
    files = dict(files or {})
    for name in files:
        if "/" in name or name.startswith(".") or name == "main.py":
            raise ValueError(f"sandbox file names must be plain names, got {name!r}")
    as_root = os.geteuid() == 0
    run_uid = NOBODY if as_root else os.geteuid()
    # RLIMIT_NPROC counts every process of the uid, so leave room for the ones it already has.
    nproc = _count_processes(run_uid) + max_procs + 4
    job = {"code": code,
           "files": {k: v.encode() if isinstance(v, str) else bytes(v) for k, v in files.items()},
           "stdin": stdin.encode() if isinstance(stdin, str) else stdin,
           "timeout_s": float(timeout_s), "cpu": int(cpu_s if cpu_s is not None else timeout_s) + 1,
           "mem": memory_mb * 1024 * 1024, "nproc": nproc, "fsize": file_mb * 1024 * 1024,
           "max_output": file_mb * 1024 * 1024, "output_bytes": output_bytes, "uid": NOBODY}
    server = _pool.take(file_mb)
    start = time.monotonic()
    try:
        reply = server.run(job)
    except BaseException:
        server.close()
        raise
    if reply is None:
        # The server died (the job killed it) or stopped answering (the job stopped it).
        server.close()
        late = time.monotonic() - start >= timeout_s
        return Result("timeout" if late else "error", None, "",
                      "sandbox stopped answering" if late else "sandbox died during the run",
                      time.monotonic() - start)
    if "setup_error" in reply:
        _pool.give(server)
        return Result("error", None, "", reply["setup_error"], 0.0)
    if reply["recycle"]:
        server.close()
    else:
        _pool.give(server)
    if not reply["started"] and not reply["timed_out"]:
        raise SandboxUnavailable(f"the sandbox could not start the program: "
                                 f"{reply['stderr'].strip()[-500:]}")
    return _result(reply)


def _result(r: dict) -> Result:
    code = r["exit_code"] if r["signal"] is None else 128 + r["signal"]
    if r["timed_out"] or r["signal"] == signal.SIGXCPU:
        status, code = "timeout", None
    elif r["over_output"]:
        status = "output"
    elif r["signal"] is not None:
        status = "error"
    elif code == 0:
        status = "ok"
    else:
        last = r["stderr"].strip().splitlines()[-1] if r["stderr"].strip() else ""
        status = "memory" if last.startswith("MemoryError") or "Cannot allocate memory" in last \
            else "fail"
    return Result(status, code, r["stdout"], r["stderr"], r["duration_s"], r["truncated"])
