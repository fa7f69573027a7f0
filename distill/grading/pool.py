"""Warm, killable worker processes: the bubblewrap fork servers that run code (`sandbox`) and
the math-verify checkers (`verify`) are each a child process answering over its pipes, kept
between calls because starting one costs an interpreter (and bwrap, or a math-verify import).

A `Worker` reads its replies against a deadline (TimeoutError past it, `WorkerDied` when the
child exits with the question unanswered) and is killed outright, never asked to stop: a
caller that gives up on a reply kills it and takes another. A `Pool` keeps idle workers by
key, hands one to one caller at a time, replaces a dead one, retires a worker after `max_jobs`
jobs, forgets its parent's workers in a forked child, and kills its idle workers at exit.
Hand-written: multiprocessing's pools cannot kill one stuck task without losing the pool,
need a `__main__` guard in every caller, and cannot start their workers inside bwrap.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Generic, Hashable, TypeVar


class WorkerDied(RuntimeError):
    """The worker process exited (crashed, or was killed) with a question unanswered."""


class Worker:
    """One child process (`proc`, its stdin and stdout piped), used by one caller at a time.
    `kill_group`: the child leads its own session, and closing kills every process in it."""

    kill_group = False

    def __init__(self, proc: subprocess.Popen, key: Hashable = None):
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None, "a worker's stdin and stdout are pipes"
        self.stdin, self.stdout = proc.stdin, proc.stdout
        self.key = key
        self.jobs = 0
        self._buf = b""

    def send(self, data: bytes) -> bool:
        """Writes one question; False when the worker is gone (a read then says so)."""
        try:
            self.stdin.write(data)
            self.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        self.jobs += 1
        return True

    def readline(self, deadline: float) -> bytes:
        """The next line of output, without its newline. Reads the pipe itself: a buffered
        reader could hold a second reply that select() then never reports."""
        fd = self.stdout.fileno()
        while b"\n" not in self._buf:
            _wait_readable(fd, deadline)
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerDied("worker died")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def read_exact(self, n: int, deadline: float) -> bytearray:
        """The next `n` bytes of output. Into one preallocated buffer: replies of tens of
        megabytes arrive 64 KB at a time."""
        buf = bytearray(n)
        view = memoryview(buf)
        pos = min(n, len(self._buf))
        view[:pos], self._buf = self._buf[:pos], self._buf[pos:]
        fd = self.stdout.fileno()
        while pos < n:
            _wait_readable(fd, deadline)
            got = os.readv(fd, [view[pos:]])
            if got == 0:
                raise WorkerDied("worker died")
            pos += got
        return buf

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Kills the worker (a stuck one does not read a request to stop) and waits for it."""
        if self.proc.poll() is None:
            try:
                if self.kill_group:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.kill()
            except ProcessLookupError:
                pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass


def _wait_readable(fd: int, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([fd], [], [], left)[0]:
        raise TimeoutError


W = TypeVar("W", bound=Worker)


class Pool(Generic[W]):
    """Idle workers by key: `take(key)` hands out a live one (or starts one with
    `start(key)`), `give` takes it back, `replace` kills it and starts another in its place."""

    def __init__(self, start: Callable[[Any], W], max_jobs: int | None = None):
        self.start = start
        self.max_jobs = max_jobs
        self.lock = threading.Lock()
        self.idle: list[W] = []
        self.pid = os.getpid()
        atexit.register(self.close)

    def take(self, key: Hashable = None) -> W:
        dead = []
        found = None
        with self.lock:
            if self.pid != os.getpid():     # a forked caller must not share its parent's workers
                self.idle, self.pid = [], os.getpid()
            for i in range(len(self.idle) - 1, -1, -1):
                if self.idle[i].key == key:
                    worker = self.idle.pop(i)
                    if worker.alive():
                        found = worker
                        break
                    dead.append(worker)
        for worker in dead:
            worker.close()
        return found or self.start(key)

    def give(self, worker: W) -> None:
        """Back to the idle workers; a dead or worn-out one is closed instead."""
        if not worker.alive() or (self.max_jobs is not None and worker.jobs >= self.max_jobs):
            worker.close()
            return
        with self.lock:
            self.idle.append(worker)

    def replace(self, worker: W) -> W:
        worker.close()
        return self.start(worker.key)

    def close(self) -> None:
        """Kills the idle workers (the ones in use are closed by their callers)."""
        with self.lock:
            workers, self.idle = self.idle, []
        for worker in workers:
            worker.close()
