"""One writer per stage and run directory: `<run_dir>/.locks/<stage>.lock`, an exclusive
`flock` held for the stage's whole life; the file names its holder (pid, host, since).

Why flock rather than a pid file: the kernel drops the lock when the holder's last descriptor
closes, so a holder that dies in any way (kill -9, the OOM killer, a lost machine's lease)
leaves nothing to clean up by hand. The file itself stays and is reused, never deleted: were a
released lock file deleted, a waiter could lock the old inode while a newcomer locks a new one.
A flock belongs to an open file description, not to a process, so two attempts inside one
process (a retry on another thread) exclude each other too, on local disks.

The holder's pid, host and start time are written into the file after the lock is taken, so
a refused run can name the holder; a clean release empties the file again.

Child processes: Python opens descriptors non-inheritable, so a process started with exec
(`accelerate launch`, a model server) does not hold the lock. A child forked without exec (a
worker pool) shares the open file description: the lock then lasts until the last of them
exits, which is what we want (a forked writer that outlives a killed parent still keeps other
runs out); only the process that took the lock unlocks it, since an unlock from a forked child
would unlock the parent's lock too.

Where it holds: local disks, NFSv4 and the cluster filesystems that implement flock (GPFS,
CephFS, Lustre mounted with `-o flock`). On NFS, Linux emulates flock with NFS byte-range locks:
holders on different machines exclude each other, a crashed machine's lock is freed when its
lease expires (about 90 s), and two attempts inside one process are not told apart. A
filesystem without locks is refused with a message rather than run unguarded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from distill.errors import InputError

log = logging.getLogger(__name__)

LOCKS = ".locks"   # the folder of the lock files, under the run directory


def lock_path(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / LOCKS / f"{stage}.lock"


def read_holder(path: Path) -> dict[str, Any] | None:
    """What the lock file says of its holder (pid, host, since, stage), or None when it says
    nothing readable (free, or taken a moment ago and not written yet)."""
    try:
        return _parse(path.read_bytes())
    except OSError:
        return None


@contextlib.contextmanager
def stage_lock(run_dir: str | Path, stage: str, *, wait: bool = False) -> Iterator[dict[str, Any]]:
    """Holds stage `stage`'s lock of `run_dir` for the `with` block; yields the holder record
    written into the file. Held elsewhere: bad input naming the holder, or with `wait`, a log
    line naming it and a wait until it is free."""
    path = lock_path(run_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd, path):
            what = f"stage {stage} of {run_dir} is running in {_describe(_holder(fd))} (lock {path})"
            if not wait:
                raise InputError(f"{what}; wait for it, or pass --wait")
            log.info("%s; waiting for it", what)
            start = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            log.info("stage %s of %s: lock free after %.0f s", stage, run_dir,
                     time.monotonic() - start)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "stage": stage}
        _write(fd, json.dumps(me).encode() + b"\n")
        try:
            yield me
        finally:
            if os.getpid() == me["pid"]:   # not in a forked child unwinding this frame
                _write(fd, b"")
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _try_lock(fd: int, path: Path) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise InputError(f"this filesystem does not support locks ({e.strerror}): put the "
                             "run directory on a local disk, NFSv4 or a cluster filesystem with "
                             "flock (Lustre: mount with -o flock)", file=str(path)) from None
        raise


def _holder(fd: int) -> dict[str, Any] | None:
    """The holder as its file says, read through our own descriptor; the holder writes it just
    after taking the lock, so an empty file is given a moment."""
    for _ in range(10):
        holder = _parse(os.pread(fd, 4096, 0))
        if holder is not None:
            return holder
        time.sleep(0.05)
    return None


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "another process"
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('since')}"


def _parse(blob: bytes) -> dict[str, Any] | None:
    try:
        holder = json.loads(blob)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _write(fd: int, blob: bytes) -> None:
    os.ftruncate(fd, 0)
    if blob:
        os.pwrite(fd, blob, 0)
        os.fsync(fd)   # to the server first, for readers on other machines (NFS)
