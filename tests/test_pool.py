"""The warm worker pool under the sandbox and the math verifier: replies against a deadline,
a dead or worn-out worker never handed out again, workers kept apart by key and by process."""

import os
import subprocess
import time

import pytest

from distill.grading.pool import Pool, Worker, WorkerDied


def _cat(key=None) -> Worker:
    """A worker that answers every line with the same line."""
    return Worker(subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE), key)


def test_a_worker_answers_times_out_and_dies():
    w = _cat()
    assert w.send(b"one\ntwo\n") and w.jobs == 1
    assert w.readline(time.monotonic() + 5) == b"one"
    assert w.read_exact(4, time.monotonic() + 5) == b"two\n"
    with pytest.raises(TimeoutError):
        w.readline(time.monotonic() + 0.2)          # nothing asked: no answer comes
    w.proc.kill()
    w.proc.wait()
    assert not w.alive() and not w.send(b"x\n")
    with pytest.raises(WorkerDied):
        w.readline(time.monotonic() + 5)
    w.close()


def test_a_pool_hands_out_live_workers_by_key_and_retires_worn_ones():
    pool = Pool(_cat, max_jobs=2)
    a = pool.take("a")
    a.send(b"1\n")
    pool.give(a)
    assert pool.take("b") is not a                  # another key, another worker
    assert pool.take("a") is a
    a.send(b"2\n")
    pool.give(a)                                    # two jobs: retired
    assert not a.alive() and pool.take("a") is not a

    b = pool.take("b")
    pool.give(b)
    b.proc.kill()
    b.proc.wait()
    fresh = pool.take("b")                          # the dead one is not handed out
    assert fresh is not b and fresh.alive()
    new = pool.replace(fresh)
    assert not fresh.alive() and new.alive() and new.key == "b"
    pool.give(new)
    pool.close()
    assert not new.alive() and pool.idle == []


def test_a_forked_child_does_not_share_its_parents_workers():
    pool = Pool(_cat)
    w = pool.take()
    pool.give(w)
    r, wr = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child: a worker of its own
        os.write(wr, b"1" if pool.take() is not w else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    assert w.alive() and pool.take() is w           # the parent's worker is still there
    w.close()
