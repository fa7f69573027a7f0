"""The filter's whole-set decisions (dedup, select) on small per-trace columns: no trace text
is in memory here, only numpy columns of one row per trace (about 60 bytes each, plus the
MinHash signatures and band hashes on disk), so a million traces decide in flat memory.

    Columns          id, prompt id, first failing filter, text length, exact key per trace
    decide(...)      exact duplicates, near-duplicate prompts and traces, selection; fills
                     `failed` and `ref` (the row whose copy was kept), in the order the old
                     in-memory filter applied them, with the same tie-breaks

Every rule depends on the set, never on the order traces were read in: the kept copy of a
duplicate is the smallest id (exact), the prompt with most surviving traces then the
smallest id (near prompts), the shortest then the smallest id (near traces); selection sorts
by (length, id) and takes at most k in id order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Filters in pipeline order; `failed` holds the position in this tuple + 1 (0: not failed).
ORDER = ("truncated", "think", "empty", "answer", "repetition", "length", "decontaminate",
         "verify", "dedup", "select")
CODE = {name: i + 1 for i, name in enumerate(ORDER)}
REPEAT = len(ORDER) + 1     # a record id read twice: the second copy is not a trace of its own

# how a dedup / select rejection reads, by `why`
EXACT, NEAR_PROMPT, NEAR_TRACE, NOT_SHORTEST, OVER_K = 1, 2, 3, 4, 5


@dataclass
class Columns:
    """One row per record read, in read order."""
    ids: list = field(default_factory=list)        # chunks of bytes arrays, joined by `freeze`
    pids: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    length: list = field(default_factory=list)
    key: list = field(default_factory=list)
    sig_row: list = field(default_factory=list)    # row in the trace SignatureFile, or -1

    def add(self, ids, pids, failed, length, key, sig_row) -> None:
        self.ids.append(np.array(ids, dtype=bytes))
        self.pids.append(np.array(pids, dtype=bytes))
        self.failed.append(np.array(failed, dtype=np.int8))
        self.length.append(np.array(length, dtype=np.int64))
        self.key.append(np.array(key, dtype=np.uint64))
        self.sig_row.append(np.array(sig_row, dtype=np.int64))

    def freeze(self) -> "Frozen":
        def cat(chunks, dtype):
            return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)
        return Frozen(ids=cat(self.ids, "S1"), pids=cat(self.pids, "S1"),
                      failed=cat(self.failed, np.int8), length=cat(self.length, np.int64),
                      key=cat(self.key, np.uint64), sig_row=cat(self.sig_row, np.int64))


@dataclass
class Frozen:
    ids: np.ndarray
    pids: np.ndarray
    failed: np.ndarray
    length: np.ndarray
    key: np.ndarray
    sig_row: np.ndarray
    ref: np.ndarray = field(init=False)     # row of the copy kept instead, or -1
    why: np.ndarray = field(init=False)     # EXACT ... OVER_K

    def __post_init__(self) -> None:
        self.ref = np.full(len(self.ids), -1, dtype=np.int64)
        self.why = np.zeros(len(self.ids), dtype=np.int8)
        self.dedup_seen = np.zeros(len(self.ids), dtype=bool)   # reached dedup
        self.select_seen = np.zeros(len(self.ids), dtype=bool)  # marked by select

    def alive(self) -> np.ndarray:
        return np.flatnonzero(self.failed == 0)

    def reject(self, rows, name: str, why: int, ref) -> None:
        self.failed[rows] = CODE[name]
        self.why[rows] = why
        self.ref[rows] = ref


def mark_repeats(t: Frozen) -> int:
    """A record id read twice (two writers once wrote one sample): only its first copy is a
    trace; the others are left out of the verdicts and the counts. Returns how many."""
    _, first = np.unique(t.ids, return_index=True)
    repeat = np.ones(len(t.ids), dtype=bool)
    repeat[first] = False
    t.failed[repeat] = REPEAT
    return int(repeat.sum())


def exact(t: Frozen) -> None:
    """Two samples of one prompt with equal reasoning and answer (whitespace aside): the
    smallest id is kept."""
    rows = t.alive()
    t.dedup_seen[rows] = True
    order = rows[np.lexsort((t.ids[rows], t.key[rows]))]
    keys = t.key[order]
    first = np.r_[True, keys[1:] != keys[:-1]]
    head = order[np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))]
    dup = ~first
    t.reject(order[dup], "dedup", EXACT, head[dup])


def near_prompts(t: Frozen, prompt_sigs, prompt_pids: np.ndarray) -> None:
    """Near-duplicate prompts (the same problem from two sources, or reworded): the prompt with
    the most surviving traces is kept (then the smallest id), with all its traces.
    `prompt_sigs` is the prompts' SignatureFile, row k for `prompt_pids[k]`."""
    rows = t.alive()
    pids, counts = np.unique(t.pids[rows], return_counts=True)
    # the first signature row of each prompt that still has traces
    sig_pids, first = np.unique(prompt_pids, return_index=True)
    have = np.isin(sig_pids, pids)
    members = first[have]
    clusters = prompt_sigs.clusters(members)
    if not clusters:
        return
    def count_of(pid: bytes) -> int:     # surviving traces of a prompt (pids is sorted)
        return int(counts[np.searchsorted(pids, pid)])
    loser_to_winner: dict[bytes, bytes] = {}
    for cluster in clusters.values():
        names = [prompt_pids[r] for r in cluster]
        winner = min(names, key=lambda p: (-count_of(p), p))
        loser_to_winner.update({p: winner for p in names if p != winner})
    losers = np.array(sorted(loser_to_winner), dtype=t.pids.dtype if len(t.pids) else bytes)
    hit = rows[np.isin(t.pids[rows], losers)]
    if len(hit) == 0:
        return
    # ref: any row of the kept prompt (its pid is what the reason names)
    winners = np.array([loser_to_winner[p] for p in t.pids[hit].tolist()])
    alive_pids = t.pids[rows]
    order = np.argsort(alive_pids, kind="stable")
    at = np.searchsorted(alive_pids[order], winners)
    t.reject(hit, "dedup", NEAR_PROMPT, rows[order[at]])


def near_traces(t: Frozen, trace_sigs) -> None:
    """Near-duplicate traces anywhere in the set: the shortest is kept, then the smallest id."""
    rows = t.alive()
    rows = rows[t.sig_row[rows] >= 0]
    row_of = np.full(trace_sigs.count, -1, dtype=np.int64)    # signature row -> record row
    row_of[t.sig_row[rows]] = rows
    for cluster in trace_sigs.clusters(t.sig_row[rows]).values():
        members = row_of[cluster].tolist()
        winner = min(members, key=lambda r: (int(t.length[r]), t.ids[r]))
        losers = [r for r in members if r != winner]
        t.reject(np.array(losers), "dedup", NEAR_TRACE, winner)


def select(t: Frozen, shortest: bool, max_per_prompt: int | None) -> None:
    """Per prompt: the shortest correct sample (by length, then id), and/or at most k samples
    in id order."""
    rows = t.alive()
    if len(rows) == 0:
        return
    if shortest:
        order = rows[np.lexsort((t.ids[rows], t.length[rows], t.pids[rows]))]
        first = np.r_[True, t.pids[order][1:] != t.pids[order][:-1]]
        head = order[np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))]
        t.reject(order[~first], "select", NOT_SHORTEST, head[~first])
        t.select_seen[order[~first]] = True
        rows = order[first]
    if max_per_prompt is not None:
        t.select_seen[rows] = True
        order = rows[np.lexsort((t.ids[rows], t.pids[rows]))]
        first = np.r_[True, t.pids[order][1:] != t.pids[order][:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        over = (np.arange(len(order)) - start) >= max_per_prompt
        t.reject(order[over], "select", OVER_K, -1)


def reason(t: Frozen, row: int, max_per_prompt: int | None) -> str:
    """The dedup / select rejection of `row`, as the report reads it."""
    why, ref = int(t.why[row]), int(t.ref[row])
    text = {EXACT: "duplicate of {id}", NEAR_PROMPT: "near-duplicate prompt of {pid}",
            NEAR_TRACE: "near-duplicate trace of {id}",
            NOT_SHORTEST: "not the shortest correct (kept {id})",
            OVER_K: f"over {max_per_prompt} per prompt"}[why]
    if ref < 0:
        return text
    return text.format(id=t.ids[ref].decode(), pid=t.pids[ref].decode())
