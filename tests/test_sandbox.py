"""The sandbox against hostile programs, one property per test, each on real bubblewrap: what
the program tried, the status it got, the reason it was stopped, and that the host (and the
next program in the same warm sandbox) saw nothing of it."""

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from distill.grading import sandbox
from distill.grading.sandbox import run_python

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")


def _alive(token: str) -> int:
    """Host processes whose command line carries `token`."""
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            n += token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            pass
    return n


# ---------------------------------------------------------------------------- plain runs

def test_runs_code_and_reports_ok():
    r = run_python("print(6 * 7)")
    assert r.status == "ok" and r.exit_code == 0 and r.stdout.strip() == "42"


def test_failure_keeps_the_error():
    r = run_python("assert 1 == 2, 'nope'")
    assert r.status == "fail" and r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == "AssertionError: nope"
    assert 'File "/work/main.py", line 1' in r.stderr


def test_exit_codes_and_main_module_semantics():
    assert run_python("import sys; sys.exit(3)").exit_code == 3
    assert run_python("raise SystemExit('bye')").stderr.strip() == "bye"
    # Dataclasses and pickling look the program up as sys.modules['__main__'].
    r = run_python("from dataclasses import dataclass\nimport pickle\n"
                   "@dataclass\nclass P:\n    x: int\n"
                   "print(pickle.loads(pickle.dumps(P(3))).x, __name__)")
    assert r.ok and r.stdout.split() == ["3", "__main__"]
    # atexit handlers and non-daemon threads finish, as at a normal interpreter exit.
    r = run_python("import atexit, threading, time\natexit.register(print, 'bye')\n"
                   "threading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()")
    assert r.ok and r.stdout.split() == ["late", "bye"]


def test_stdin_and_files():
    r = run_python("import sys; print(sys.stdin.read().upper()); print(open('data.txt').read())",
                   stdin="hello\n", files={"data.txt": "beside main"})
    assert r.ok and r.stdout.split() == ["HELLO", "beside", "main"]
    assert run_python("import sys; assert sys.stdin.read() == ''").ok


def test_output_tail_is_kept_and_marked_truncated():
    r = run_python("print('x' * 1_000_000, end=''); print('END')", output_bytes=1000)
    assert r.status == "ok" and len(r.stdout) == 1000 and r.stdout.endswith("END\n")
    assert r.truncated and not run_python("print(1)").truncated


def test_crash_by_signal_is_an_error():
    r = run_python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert r.status == "error" and r.exit_code == 128 + 11


def test_parallel_callers_get_separate_sandboxes():
    results = [None] * 8

    def work(i):
        results[i] = run_python(f"import time; time.sleep(0.3); print({i})")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(8)]
    assert time.monotonic() - start < 8 * 0.3    # they ran side by side, not one after another


# --------------------------------------------------------------------- hostile programs
#
# Each case: the program, the limits, and what containment looks like (status, and a reason
# that names what stopped it).

FORK_BOMB = """\
import os
n = 0
for _ in range(2000):
    try:
        pid = os.fork()
    except OSError as e:
        print("fork refused:", e.strerror, flush=True)
        break
    if pid == 0:
        os.execv('/usr/bin/sleep', ['sleep', '41.4141'])
    n += 1
print(n, flush=True)
"""

DAEMON = """\
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.closerange(0, 3)
        os.execv('/usr/bin/sleep', ['sleep', '43.4343'])
    os._exit(0)
print("parent done")
"""


def test_fork_bomb_hits_the_process_cap():
    r = run_python(FORK_BOMB, timeout_s=10, max_procs=16)
    assert r.status == "ok"
    lines = r.stdout.split("\n")
    assert lines[0] == "fork refused: Resource temporarily unavailable"
    assert int(lines[1]) <= 20
    assert subprocess.run(["true"]).returncode == 0         # the host still forks
    time.sleep(0.3)
    assert _alive("41.4141") == 0                           # nothing of it outlived the run


def test_memory_bomb_is_refused():
    r = run_python("x = bytearray(8 * 1024 ** 3)", memory_mb=512)
    assert r.status == "memory" and r.stderr.strip().endswith("MemoryError")


def test_infinite_loop_hits_the_cpu_limit():
    r = run_python("while True: pass", timeout_s=30, cpu_s=1)
    assert r.status == "timeout" and r.exit_code is None and r.duration_s < 10


def test_long_sleep_hits_the_wall_limit():
    start = time.monotonic()
    r = run_python("import time; time.sleep(3600)", timeout_s=1.0)
    assert r.status == "timeout" and r.exit_code is None
    assert time.monotonic() - start < 5


def test_network_is_unreachable():
    r = run_python("import socket\n"
                   "s = socket.socket()\ns.settimeout(3)\ns.connect(('1.1.1.1', 53))")
    assert r.status == "fail" and "Network is unreachable" in r.stderr


def test_host_loopback_is_not_the_sandbox_loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        r = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)")
    assert r.status == "fail" and "Connection refused" in r.stderr


def test_writing_outside_tmp_is_refused(tmp_path):
    target = tmp_path / "escape.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')")
    assert r.status == "fail" and "No such file or directory" in r.stderr
    assert not target.exists()
    r = run_python("open('/usr/escape.txt', 'w').write('x')")
    assert "Read-only file system" in r.stderr and not Path("/usr/escape.txt").exists()
    r = run_python("open('/escape.txt', 'w').write('x')")
    assert r.status == "fail" and ("Read-only file system" in r.stderr
                                   or "Permission denied" in r.stderr)


def test_writable_directories_are_private_to_one_run():
    assert run_python("open('/tmp/a', 'w').write('x'); open('b', 'w').write('y');"
                      "import os; os.makedirs('/tmp/d/e'); os.chmod('/tmp/d', 0);"
                      "open('/dev/shm/s', 'w').write('z')").ok
    # The same warm sandbox runs the next job: it sees none of that.
    r = run_python("import os; print(os.listdir('/tmp'), os.listdir('.'), os.listdir('/dev/shm'))")
    assert r.ok and r.stdout.strip() == "[] ['main.py'] []"


def test_env_secrets_and_tokens_are_not_visible(monkeypatch):
    token = Path.home() / ".cache" / "distill" / "sandbox-test-token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text("hf_secret")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    sandbox.close_sandboxes()          # a sandbox started now, with the secrets in our env
    try:
        r = run_python("import os; print(sorted(os.environ))")
        assert r.ok and r.stdout.strip() == \
            "['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'PYTHONHASHSEED']"
        for path in (token, Path.home() / ".cache" / "huggingface" / "token"):
            r = run_python(f"print(open({str(path)!r}).read())")
            assert r.status == "fail" and "No such file or directory" in r.stderr
            assert "hf_secret" not in r.stdout
        r = run_python(f"import os; print(os.listdir({str(Path.home())!r}))")
        assert r.status == "fail" or r.stdout.strip() in ("[]", "['.pyenv']")
        r = run_python("print(open('/etc/passwd').read())")
        assert r.status == "fail" and "No such file" in r.stderr
    finally:
        token.unlink()


def test_daemon_does_not_outlive_the_run():
    r = run_python(DAEMON, timeout_s=5)
    assert r.status == "ok" and r.stdout.strip() == "parent done"
    time.sleep(0.3)
    assert _alive("43.4343") == 0
    # Nor is it still inside the warm sandbox for the next job to meet.
    r = run_python("import os; print([p for p in os.listdir('/proc') if p.isdigit()])")
    assert r.ok and len(eval(r.stdout)) == 3     # init, the server, this job


def test_killed_tree_leaves_no_process_behind():
    program = ("import os\nfor _ in range(3):\n    os.fork()\n"
               "os.execv('/usr/bin/sleep', ['sleep', '42.4242'])\n")
    r = run_python(program, timeout_s=1.5)
    assert r.status == "timeout"
    time.sleep(0.3)
    assert _alive("42.4242") == 0


def test_100_mb_of_output_is_cut_off():
    start = time.monotonic()
    r = run_python("import sys\nchunk = 'y' * 1_000_000 + '\\n'\n"
                   "for _ in range(100):\n    sys.stdout.write(chunk)", file_mb=16, timeout_s=30)
    assert r.status == "output" and len(r.stdout) <= 8192 and r.truncated
    assert time.monotonic() - start < 10


def test_file_size_and_tmpfs_limits():
    r = run_python("open('/tmp/big', 'wb').write(b'x' * (32 << 20))", file_mb=8)
    assert r.status == "fail" and r.stderr.strip().endswith("File too large")
    r = run_python("for i in range(8):\n    open(f'/tmp/{i}', 'wb').write(b'x' * (4 << 20))",
                   file_mb=8)
    assert r.status == "fail" and "No space left on device" in r.stderr


def test_killing_the_parent_is_contained():
    program = ("import os, signal\n"
               "for pid in (os.getppid(), 1):\n"
               "    try:\n"
               "        os.kill(pid, signal.SIGKILL)\n"
               "    except PermissionError:\n"
               "        print('refused', pid)\n"
               "import time; time.sleep(1)\n")
    r = run_python(program, timeout_s=5)
    # As root the job runs as nobody and may not signal its server; otherwise the server dies
    # and the run is reported as an error. Either way the next run works.
    if os.geteuid() == 0:
        assert r.ok and r.stdout.split("\n")[:2] == ["refused 2", "refused 1"]
    else:
        assert r.status == "error" and r.stderr == "sandbox died during the run"
    assert run_python("print('next')").stdout == "next\n"


def test_segfault_through_ctypes():
    r = run_python("import ctypes\nctypes.string_at(0)")
    assert r.status == "error" and r.exit_code == 128 + 11
    assert run_python("print('next')").ok


# ------------------------------------------------------------------------ no sandbox here

def test_missing_bwrap_says_how_to_install(monkeypatch):
    sandbox.close_sandboxes()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    monkeypatch.setattr(sandbox.os.path, "exists", lambda p: False)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        run_python("print(1)")


def test_a_sandbox_that_cannot_start_raises(monkeypatch):
    sandbox.close_sandboxes()
    make = sandbox._args
    monkeypatch.setattr(sandbox, "_args", lambda *a: make(*a)[:1] + [
        "--ro-bind", "/does/not/exist", "/x"] + make(*a)[1:])
    with pytest.raises(sandbox.SandboxUnavailable, match="could not set up"):
        run_python("print(1)")
    sandbox.close_sandboxes()


def test_files_too_big_for_the_sandbox_are_an_error_not_a_crash():
    r = run_python("print(1)", files={"big.bin": b"x" * (9 << 20)}, file_mb=8)
    assert r.status == "error" and "cannot place the program's files" in r.stderr
    assert run_python("print('next')", file_mb=8).ok
    r = run_python("print('\\ud800')")          # a lone surrogate in the source
    assert r.status == "fail" and "UnicodeEncodeError" in r.stderr
