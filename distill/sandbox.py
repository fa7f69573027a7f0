"""Runs untrusted Python in a bubblewrap sandbox; reads a program (plus optional data files),
writes nothing on the host but a temporary directory it removes, and returns a `Result`.

What is contained:
- network: a fresh network namespace with only a loopback device, so nothing is reachable;
- files: the root is an empty read-only tmpfs; only /usr (with the /bin, /lib, /lib64 links)
  and the Python installation are bound in, read-only. $HOME, /etc, /work and the rest of the
  host are absent. The program writes to /work (its working directory) and /tmp, two private
  size-capped tmpfs that vanish with the sandbox;
- privileges: environment cleared, all capabilities dropped, no_new_privs (setuid binaries do
  not elevate), a new session (no terminal injection). When the caller is root the program
  runs as uid/gid 65534, because the kernel never applies RLIMIT_NPROC to root;
- resources: wall time (the whole process tree is SIGKILLed: it lives in its own PID
  namespace, which dies with its init), CPU seconds (RLIMIT_CPU), address space per process
  (RLIMIT_AS), processes (RLIMIT_NPROC: a fork bomb hits the cap), file size and output size
  (RLIMIT_FSIZE; only the tail of stdout/stderr is kept).

What is not contained:
- memory is capped per process, not per tree: up to `max_procs` x `memory_mb` in the worst
  case (cgroups would bound the tree but are not available to unprivileged users everywhere);
- the kernel's attack surface: no seccomp filter, so a kernel exploit escapes;
- CPU share: a program may use its CPU seconds on every core at once;
- the program sees the host's /usr and Python standard library (read-only), and third-party
  packages are not importable.

Each run starts a fresh sandbox (about 0.1 s on 2 cores, mostly interpreter start-up): simple,
and no state leaks from one program to the next. A sandbox that cannot be set up raises
`SandboxUnavailable` instead of passing for a failing program.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("ok", "fail", "timeout", "memory", "error")
NOBODY = 65534

# Runs inside the sandbox before the program: reports that the sandbox is up, sets the
# limits (here rather than in a preexec_fn, which is unsafe in a threaded caller), as root
# drops to an unprivileged uid (the kernel never applies RLIMIT_NPROC to root), then execs
# the interpreter on the program.
_LAUNCHER = """\
import os, resource, sys
def limit(res, soft, hard):
    cap = resource.getrlimit(res)[1]
    if cap != resource.RLIM_INFINITY:
        soft, hard = min(soft, cap), min(hard, cap)
    resource.setrlimit(res, (soft, hard))
limit(resource.RLIMIT_CPU, {cpu}, {cpu} + 1)
limit(resource.RLIMIT_AS, {mem}, {mem})
limit(resource.RLIMIT_NPROC, {nproc}, {nproc})
limit(resource.RLIMIT_FSIZE, {fsize}, {fsize})
limit(resource.RLIMIT_CORE, 0, 0)
if os.getuid() == 0:
    os.setgroups([])
    os.setresgid({uid}, {uid}, {uid})
    os.setresuid({uid}, {uid}, {uid})
os.write({fd}, b"1")
os.close({fd})
os.execv(sys.executable, [sys.executable, "-S", "-s", "-P", "-B", "/work/main.py"])
"""


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here."""


@dataclass
class Result:
    status: str            # ok | fail | timeout | memory | error (killed by a signal: crash,
                           # file/output size limit)
    exit_code: int | None
    stdout: str            # tail, at most `output_bytes`
    stderr: str
    duration_s: float

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


def _count_processes(uid: int) -> int:
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _tail(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - limit))
        return f.read().decode("utf-8", "replace")


def _args(bwrap: str, as_root: bool, fds: dict[str, int], tmp_mb: int, launcher: str) -> list[str]:
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    args = [bwrap]
    if as_root:
        # No user namespace: the launcher must become a real unprivileged uid. It needs
        # CAP_SETUID/SETGID for that, and they vanish with the uid change.
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                 "--unshare-cgroup-try", "--cap-drop", "ALL",
                 "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
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
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
             "--perms", "1777", "--size", size, "--tmpfs", "/work"]
    for name, fd in fds.items():
        args += ["--perms", "0444", "--file", str(fd), f"/work/{name}"]
    args += ["--remount-ro", "/", "--chdir", "/work", exe, "-S", "-s", "-P", "-B", "-c",
             launcher]
    return args


def run_python(code: str, *, timeout_s: float = 10.0, memory_mb: int = 1024,
               cpu_s: float | None = None, max_procs: int = 16, output_bytes: int = 8192,
               files: dict[str, str | bytes] | None = None, file_mb: int = 64) -> Result:
    """Runs `code` as /work/main.py in a fresh sandbox. `files` are placed read-only beside
    it. Status: ok (exit 0), fail (non-zero exit), timeout (wall or CPU time), memory
    (allocation refused), error (killed by a signal). Raises `SandboxUnavailable` when
    bubblewrap is missing or cannot set up the sandbox."""
    bwrap = _bwrap()
    as_root = os.geteuid() == 0
    run_uid = NOBODY if as_root else os.geteuid()
    # RLIMIT_NPROC counts every process of the uid, so leave room for the ones it already has.
    nproc = _count_processes(run_uid) + max_procs + 4
    cpu = int(cpu_s if cpu_s is not None else timeout_s) + 1
    mem = memory_mb * 1024 * 1024
    fsize = file_mb * 1024 * 1024

    with tempfile.TemporaryDirectory(prefix="distill-sandbox-") as tmp:
        tmpdir = Path(tmp)
        handles = {}
        for name, content in {"main.py": code, **(files or {})}.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"sandbox file names must be plain names, got {name!r}")
            p = tmpdir / name
            p.write_bytes(content.encode() if isinstance(content, str) else content)
            handles[name] = open(p, "rb")
        out_path, err_path = tmpdir / "stdout", tmpdir / "stderr"
        start = time.monotonic()
        timed_out = False
        # The launcher writes a byte once the sandbox and its limits are in place: silence
        # means the sandbox failed, which must not pass for a wrong program.
        info_r, info_w = os.pipe()
        try:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                fds = {name: h.fileno() for name, h in handles.items()}
                launcher = _LAUNCHER.format(fd=info_w, cpu=cpu, mem=mem, nproc=nproc,
                                            fsize=fsize, uid=NOBODY)
                proc = subprocess.Popen(
                    _args(bwrap, as_root, fds, file_mb, launcher), stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, pass_fds=[*fds.values(), info_w],
                    start_new_session=True, close_fds=True)
                os.close(info_w)
                info_w = -1
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    # bwrap leads its own process group; the sandboxed tree lives in a PID
                    # namespace whose init dies with bwrap, taking every process with it.
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            os.set_blocking(info_r, False)
            try:
                started = bool(os.read(info_r, 4096))
            except BlockingIOError:
                started = True
        finally:
            for h in handles.values():
                h.close()
            os.close(info_r)
            if info_w >= 0:
                os.close(info_w)
        duration = time.monotonic() - start
        code_ = proc.returncode
        stdout, stderr = _tail(out_path, output_bytes), _tail(err_path, output_bytes)
        if not started and not timed_out:
            raise SandboxUnavailable("bubblewrap could not set up the sandbox (are user "
                                     f"namespaces allowed here?): {stderr.strip()[-500:]}")
    return Result(_status(code_, stderr, timed_out), None if timed_out else code_, stdout,
                  stderr, duration)


def _status(code: int, stderr: str, timed_out: bool) -> str:
    if timed_out or code in (128 + signal.SIGXCPU, -signal.SIGXCPU):
        return "timeout"
    if code == 0:
        return "ok"
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if last.startswith("MemoryError") or "Cannot allocate memory" in last:
        return "memory"
    if code > 128:    # bwrap reports a child killed by signal N as 128 + N
        return "error"
    return "fail"
