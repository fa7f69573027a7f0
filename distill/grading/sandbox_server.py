"""The fork server that runs inside one long-lived bubblewrap sandbox (see distill/grading/sandbox.py):
reads jobs from fd 0 (length-prefixed pickles written by the trusted host), runs each program
in a forked child with its own limits, and writes one length-prefixed JSON reply per job to
fd 1. Standard library only: the sandbox has no third-party packages. Never imported by the
host; its source is handed to the interpreter with `-c`.

Per job: the child starts a new session, gets /work/stdin as fd 0 and pipes as fd 1 and 2,
closes every other descriptor, sets RLIMIT_CPU/AS/NPROC/FSIZE/CORE, drops to the unprivileged
uid when the server runs as root, clears its environment, and executes the program as
`__main__` from /work/main.py. The server enforces the wall limit and the output cap; at the
end of the job it SIGKILLs every process of the sandbox but itself and the namespace's init
(`kill(-1)`: daemons that left the session die too), then empties /work, /tmp and /dev/shm, so
nothing of one job is seen by the next.
"""

import atexit
import builtins
import ctypes
import json
import os
import pickle
import resource
import select
import shutil
import signal
import struct
import sys
import threading
import time
import traceback
import types

WRITABLE = ("/work", "/tmp", "/dev/shm")
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8",
             "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
PR_SET_DUMPABLE = 4
_libc = ctypes.CDLL(None, use_errno=True)


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _send(obj):
    data = json.dumps(obj).encode()
    data = struct.pack("<I", len(data)) + data
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


def _limit(res, soft, hard):
    cap = resource.getrlimit(res)[1]
    if cap != resource.RLIM_INFINITY:
        soft, hard = min(soft, cap), min(hard, cap)
    resource.setrlimit(res, (soft, hard))


def _drop_privileges(uid):
    if os.getuid() == 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    # The uid change (and the server's own setting) made the process undumpable, which hides
    # /proc/self/fd from it; a job may look at its own process.
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def _child(job, out_w, err_w, ready_w):
    """Runs in the forked child; never returns."""
    code = 1
    try:
        os.setsid()
        os.dup2(job["stdin_fd"], 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        keep = ready_w
        os.closerange(3, keep)
        os.closerange(keep + 1, 65536)
        os.chdir("/work")
        _limit(resource.RLIMIT_CPU, job["cpu"], job["cpu"] + 1)
        _limit(resource.RLIMIT_AS, job["mem"], job["mem"])
        _limit(resource.RLIMIT_NPROC, job["nproc"], job["nproc"])
        _limit(resource.RLIMIT_FSIZE, job["fsize"], job["fsize"])
        _limit(resource.RLIMIT_CORE, 0, 0)
        _drop_privileges(job["uid"])
        os.environ.clear()
        os.environ.update(CLEAN_ENV)
        os.write(ready_w, b"1")
        os.close(ready_w)
    except BaseException as e:  # noqa: BLE001  (reported as a sandbox failure)
        try:
            os.write(2, f"sandbox setup failed: {type(e).__name__}: {e}\n".encode())
        finally:
            os._exit(120)
    try:
        code = _execute(job["code"])
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)


def _execute(source):
    main = types.ModuleType("__main__")
    main.__file__ = "/work/main.py"
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = ["/work/main.py"]
    code = 0
    try:
        exec(compile(source, "/work/main.py", "exec"), main.__dict__)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code & 0xFF
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException as e:  # noqa: BLE001  (the program's own error, printed as Python does)
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        traceback.print_exception(type(e), e, tb)
        code = 1
    # What the interpreter would do at the end: wait for non-daemon threads, run atexit.
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    return code


def _kill_all():
    """SIGKILLs every process of the sandbox except init and the server; returns when none is
    left. kill(-1) in a PID namespace reaches all of them, whatever session they moved to."""
    me = os.getpid()
    for _ in range(1000):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        alive = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        alive = [p for p in alive if _state(p) not in ("Z", "X", None)]
        if not alive:
            return True
        time.sleep(0.001)
    return False


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return None


def _rmtree_contents(root):
    def onerror(func, path, _exc):
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            func(path)
        except OSError:
            pass

    for name in os.listdir(root):
        path = os.path.join(root, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, onerror=onerror)
            else:
                os.unlink(path)
        except OSError:
            pass


def _clean(uid):
    """Empties the writable directories: a child with the job's uid removes what the job made
    (the server may not enter its private directories), then the server removes its own."""
    pid = os.fork()
    if pid == 0:
        try:
            _drop_privileges(uid)
            for root in WRITABLE:
                _rmtree_contents(root)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    for root in WRITABLE:
        _rmtree_contents(root)
    return not any(os.listdir(root) for root in WRITABLE)


class _Tail:
    def __init__(self, limit):
        self.limit, self.buf, self.total = limit, bytearray(), 0

    def add(self, data):
        self.total += len(data)
        self.buf += data
        if len(self.buf) > 2 * self.limit + 65536:
            del self.buf[: len(self.buf) - self.limit]

    def kept(self):
        return bytes(self.buf[-self.limit:] if self.limit else b"")

    def text(self):
        return self.kept().decode("utf-8", "replace")


def _place_files(job):
    for name, content in {"main.py": job["code"].encode("utf-8", "replace"),
                          **job["files"]}.items():
        with open(f"/work/{name}", "wb") as f:
            f.write(content)
        os.chmod(f"/work/{name}", 0o444)


def _run(job):
    try:
        _place_files(job)
    except OSError as e:        # e.g. files larger than the tmpfs
        _clean(job["uid"])
        return {"setup_error": f"cannot place the program's files: {e}"}
    # Standard input: a file the server opens and unlinks, so the job sees only the descriptor.
    with open("/tmp/.stdin", "wb") as f:
        f.write(job["stdin"] or b"")
    job["stdin_fd"] = os.open("/tmp/.stdin", os.O_RDONLY)
    os.unlink("/tmp/.stdin")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ready_r, ready_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(out_r), os.close(err_r), os.close(ready_r)
        _child(job, out_w, err_w, ready_w)
    os.close(out_w), os.close(err_w), os.close(ready_w)
    pidfd = os.pidfd_open(pid)
    tails = {out_r: _Tail(job["output_bytes"]), err_r: _Tail(job["output_bytes"])}
    deadline = start + job["timeout_s"]
    timed_out = over_output = False
    status = None
    open_fds = [out_r, err_r]
    while status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(open_fds + [pidfd], [], [], left)
        for fd in ready:
            if fd == pidfd:
                _, status = os.waitpid(pid, 0)
                continue
            data = os.read(fd, 1 << 20)
            if not data:
                open_fds.remove(fd)
                continue
            tails[fd].add(data)
            if tails[out_r].total + tails[err_r].total > job["max_output"]:
                over_output = True
        if over_output:
            break
    duration = time.monotonic() - start
    clean_kill = _kill_all()
    if status is None:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = None
    # Every writer is dead now: drain what is left in the pipes (bounded by the pipe size).
    for fd in open_fds:
        os.set_blocking(fd, False)
        try:
            while True:
                data = os.read(fd, 1 << 20)
                if not data:
                    break
                tails[fd].add(data)
        except BlockingIOError:
            pass
    started = bool(_read_nonblocking(ready_r))
    for fd in (out_r, err_r, ready_r, pidfd, job["stdin_fd"]):
        os.close(fd)
    exit_code = signum = None
    if status is not None:
        if os.WIFEXITED(status):
            exit_code = os.WEXITSTATUS(status)
        elif os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
    clean = _clean(job["uid"]) and clean_kill
    return {"started": started, "exit_code": exit_code, "signal": signum,
            "timed_out": timed_out, "over_output": over_output,
            "stdout": tails[out_r].text(), "stderr": tails[err_r].text(),
            "truncated": tails[out_r].total > len(tails[out_r].kept()), "duration_s": duration, "recycle": not clean}


def _read_nonblocking(fd):
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 16)
    except BlockingIOError:
        return b""


def main():
    # Undumpable: a job with the server's uid can neither ptrace it nor open its descriptors
    # through /proc.
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    os.environ.clear()
    os.environ.update(CLEAN_ENV)
    _send({"ready": True})
    while True:
        header = _read_exact(0, 4)
        if header is None:
            return
        job = pickle.loads(_read_exact(0, struct.unpack("<I", header)[0]))
        _send(_run(job))


main()
