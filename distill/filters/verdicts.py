"""The verifier's stored grades (filter/verdicts/): keyed by what a grade depends on, kept
across runs, so a crashed or repeated filter run grades only the rest.

The store is JSONL shards (appended as grades are made, VERIFY_BATCH at a time: a crash loses
at most one batch). A run looks grades up in a SQLite copy of the store's keys built in the
filter's work folder, not in a dict: a million stored grades cost disk, not memory.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from pathlib import Path

from distill.records import RecordWriter, RunDir, record_id

log = logging.getLogger("distill.filter")

VERIFY_BATCH = 256
_VERIFIER_SOURCES = ("grading/verify.py", "grading/code.py", "grading/harness.py",
                     "grading/extract.py", "grading/sandbox.py", "grading/sandbox_server.py",
                     "grading/pool.py")


@functools.cache
def verifier_version() -> str:
    root = Path(__file__).resolve().parents[1]
    return record_id(*[(root / name).read_text() for name in _VERIFIER_SOURCES])


def verdict_key(gen: dict, settings: dict) -> str:
    """What a verdict depends on: the record (answer and gold; not the reasoning, the
    teacher's logprobs or its usage), the limits, and the verifier's code."""
    graded = {k: v for k, v in gen.items()
              if k not in ("reasoning", "teacher_logprobs", "usage", "latency_s", "cost")}
    return record_id(graded, settings, verifier_version())


class Grader:
    """Grades traces batch by batch, from the store where it can. A grade the grader failed
    to give (Verdict.infra: a sandbox that died, a math worker that crashed) is returned as
    "not graded: ..." and not stored, so the next run grades it again."""

    def __init__(self, cfg, run_dir: Path, work: Path):
        fc = cfg.filter
        self.settings = {"timeout_s": fc.code_timeout_s, "memory_mb": fc.code_memory_mb}
        self.workers, self.timeout_s, self.memory_mb = fc.workers, fc.code_timeout_s, fc.code_memory_mb
        self.store = RunDir(run_dir).verify_store
        self.db = sqlite3.connect(str(work / "verdicts.sqlite"))
        self.db.execute("CREATE TABLE v (id TEXT PRIMARY KEY, ok INTEGER, reason TEXT)")
        rows = ((r["id"], int(bool(r["ok"])), r["reason"]) for r in self.store.read(unique=False))
        self.db.executemany("INSERT OR IGNORE INTO v VALUES (?, ?, ?)", rows)
        self.db.commit()
        self.graded = self.stored = self.not_graded = 0
        self._writer: RecordWriter | None = None

    def grade(self, gens: list[dict]) -> list[tuple[bool, str]]:
        """(ok, reason) per trace, in order."""
        keys = [verdict_key(g, self.settings) for g in gens]
        known: dict[str, tuple[bool, str]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for k, ok, reason in self.db.execute(f"SELECT id, ok, reason FROM v WHERE id IN ({marks})", chunk):
                known[k] = (bool(ok), reason)
        todo = [(k, g) for k, g in zip(keys, gens) if k not in known]
        self.stored += len(gens) - len(todo)
        if todo:
            self._grade(todo, known)
        return [known[k] for k in keys]

    def _grade(self, todo: list[tuple[str, dict]], known: dict) -> None:
        from distill.grading.verify import verify_many

        if self._writer is None:
            self._writer = self.store.writer()
        for start in range(0, len(todo), VERIFY_BATCH):
            batch = todo[start:start + VERIFY_BATCH]
            graded = verify_many([(g, g.get("content") or "") for _, g in batch],
                                 workers=self.workers, timeout_s=self.timeout_s,
                                 memory_mb=self.memory_mb)
            for (key, _), v in zip(batch, graded):
                self.graded += 1
                if v.infra:
                    known[key] = (False, f"not graded: {v.reason}")
                    self.not_graded += 1
                    continue
                known[key] = (v.ok, v.reason)
                self._writer.write({"id": key, "ok": v.ok, "reason": v.reason})
                self.db.execute("INSERT OR IGNORE INTO v VALUES (?, ?, ?)", (key, int(v.ok), v.reason))

    def close(self) -> dict:
        """Closes the store's writer; returns how many were graded now and from the store."""
        if self._writer is not None:
            self._writer.close()
        self.db.close()
        if self.not_graded:
            log.warning("filter: %d traces could not be graded (the grader failed, not the "
                        "trace); they are left out of this run's set and graded again by the "
                        "next run", self.not_graded)
        out = {"graded": self.graded, "stored": self.stored}
        return {**out, "not_graded": self.not_graded} if self.not_graded else out
