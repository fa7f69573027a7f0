"""The toy models as local directories: `resolve_model("toy:teacher")` returns the path of a
trained teacher (trained once, cached by config hash), `resolve_model("toy:teacher-bpe")` the
same teacher trained over a byte-level BPE tokenizer (distill.toy.bpe) instead of the
student's characters; `resolve_model("toy:student")` (or `toy:student-l`) the path of an
untrained base student. Any other name (a Hub id or a local path) is returned unchanged.
The architectures are `distill.toy.arch`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from distill.toy.arch import STUDENTS, TEACHER, build_student
from distill.toy.teacher import train_teacher

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ the cache

def cache_root() -> Path:
    return Path(os.environ.get("DISTILL_CACHE") or "~/.cache/distill").expanduser()


def _source_hash(*modules) -> str:
    h = hashlib.sha256()
    for m in modules:
        h.update(Path(m.__file__).read_bytes())
    return h.hexdigest()


def model_key(kind: str) -> str:
    """What a cached toy model depends on: its config, its training config, and the code of
    the tokenizer and the tasks it was trained on. A change to any of them is a new key."""
    from distill.toy import bpe, tasks, teacher, tokenizer
    blob: dict[str, object] = {"kind": kind, "tokenizer": _source_hash(tokenizer)}
    if kind in ("teacher", "teacher-bpe"):
        blob |= {"config": TEACHER, "train": teacher.TRAIN, "tasks": _source_hash(tasks)}
        if kind == "teacher-bpe":  # its tokenizer is trained on the tasks' text, too
            blob["bpe"] = _source_hash(bpe)
    else:
        blob |= {"config": STUDENTS[kind], "seed": 0}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def _cached(kind: str, make: Callable[[Path], None]) -> Path:
    """`<cache>/toy/<kind>-<key>/`, made once. `make` writes into a temp dir that is renamed
    into place only when complete, under a file lock: a crash leaves no half model, and a
    second process waits for the first instead of training again."""
    root = cache_root() / "toy"
    final = root / f"{kind}-{model_key(kind)}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
        try:
            make(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _save_student(name: str) -> Callable[[Path], None]:
    def save(path: Path) -> None:
        model, tok = build_student(name=name)
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return save


def _train_teacher(path: Path) -> None:
    log.info("training the toy teacher once (cached in %s)", cache_root() / "toy")
    train_teacher(path)


def _train_bpe_teacher(path: Path) -> None:
    from distill.toy.bpe import build_bpe_tokenizer
    log.info("training the toy teacher with a BPE tokenizer once (cached in %s)", cache_root() / "toy")
    train_teacher(path, tokenizer=build_bpe_tokenizer())


def resolve_model(name: str) -> str:
    """`toy:teacher` / `toy:teacher-bpe` / `toy:student` / `toy:student-l` -> a local model
    directory; anything else unchanged."""
    if name == "toy:teacher":
        return str(_cached("teacher", _train_teacher))
    if name == "toy:teacher-bpe":
        return str(_cached("teacher-bpe", _train_bpe_teacher))
    kind = name.removeprefix("toy:")
    if name.startswith("toy:") and kind in STUDENTS:
        return str(_cached(kind, _save_student(kind)))
    return name
