"""The sandbox, one property per test: each runs real bubblewrap."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from distill import sandbox
from distill.sandbox import run_python

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")


def test_runs_code_and_reports_ok():
    r = run_python("print(6 * 7)")
    assert r.status == "ok" and r.exit_code == 0 and r.stdout.strip() == "42"


def test_failure_keeps_the_error():
    r = run_python("assert 1 == 2, 'nope'")
    assert r.status == "fail" and r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == "AssertionError: nope"


def test_no_network():
    r = run_python("import socket\n"
                   "s = socket.socket()\ns.settimeout(3)\ns.connect(('1.1.1.1', 53))")
    assert r.status == "fail"
    assert "Network is unreachable" in r.stderr


def test_cannot_write_outside_tmp(tmp_path):
    target = tmp_path / "escape.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')")
    assert r.status == "fail" and not target.exists()
    r = run_python("open('/usr/escape.txt', 'w').write('x')")
    assert "Read-only file system" in r.stderr and not Path("/usr/escape.txt").exists()
    # Its own working directory and /tmp are writable, and private to this run.
    assert run_python("open('/tmp/a', 'w').write('x'); open('b', 'w').write('y')").ok
    assert run_python("import os; assert not os.path.exists('/tmp/a')").ok


def test_cannot_read_home_or_etc():
    home = os.path.expanduser("~")
    r = run_python(f"import os; print(os.listdir({home!r}))")
    assert r.status == "fail" or r.stdout.strip() in ("[]", "['.pyenv']")
    r = run_python("print(open('/etc/passwd').read())")
    assert r.status == "fail" and "No such file" in r.stderr
    r = run_python("import os; print(sorted(os.environ))")
    assert "HF_TOKEN" not in r.stdout and "PATH" in r.stdout


def test_infinite_loop_times_out():
    start = time.monotonic()
    r = run_python("while True: pass", timeout_s=1.5)
    assert r.status == "timeout" and r.exit_code is None
    assert time.monotonic() - start < 5


def test_cpu_limit_stops_a_busy_program_even_with_a_long_wall_limit():
    r = run_python("while True: pass", timeout_s=30, cpu_s=1)
    assert r.status == "timeout" and r.duration_s < 10


def test_memory_bomb_is_refused():
    r = run_python("x = bytearray(8 * 1024 ** 3)", memory_mb=512)
    assert r.status == "memory"


def test_fork_bomb_is_contained():
    program = (
        "import os, sys, time\n"
        "n = 0\n"
        "for _ in range(2000):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        os.execv('/usr/bin/sleep', ['sleep', '41.4141'])\n"
        "    n += 1\n"
        "print(n, flush=True)\n")
    r = run_python(program, timeout_s=10, max_procs=16)
    assert r.status == "ok"
    assert int(r.stdout.strip()) <= 20
    # The host still forks, and nothing of the sandbox outlives it.
    assert subprocess.run(["true"]).returncode == 0
    time.sleep(0.5)
    assert _alive("41.4141") == 0


def test_killed_tree_leaves_no_process_behind():
    program = ("import os\nfor _ in range(3):\n    os.fork()\n"
               "os.execv('/usr/bin/sleep', ['sleep', '42.4242'])\n")
    r = run_python(program, timeout_s=1.5)
    assert r.status == "timeout"
    time.sleep(0.5)
    assert _alive("42.4242") == 0


def test_output_is_capped():
    r = run_python("print('x' * 1_000_000)", output_bytes=1000)
    assert r.status == "ok" and len(r.stdout) == 1000


def test_missing_bwrap_says_how_to_install(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    monkeypatch.setattr(sandbox.os.path, "exists", lambda p: False)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        run_python("print(1)")


def _alive(token: str) -> int:
    """Host processes whose command line carries `token`."""
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            n += token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            pass
    return n


def test_a_sandbox_that_cannot_start_raises(monkeypatch):
    make = sandbox._args
    monkeypatch.setattr(sandbox, "_args", lambda *a: make(*a)[:1] + [
        "--ro-bind", "/does/not/exist", "/x"] + make(*a)[1:])
    with pytest.raises(sandbox.SandboxUnavailable, match="could not set up"):
        run_python("print(1)")


def test_crash_by_signal_is_an_error():
    r = run_python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert r.status == "error" and r.exit_code == 128 + 11
