"""What the viewer's JSON endpoints answer, over one run's index (index.py): facet counts,
pages of traces filtered by source, category, status, filter, reason, finish reason and
length, one trace with its verdict, and the evaluation's flipped questions with every role's
answer. Plain dicts in, plain dicts out: the server only routes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from distill.view.index import load_index, read_at

FACETS = ("source", "category", "status", "failed", "reason", "finish")
PAGE = 50


class RunView:
    def __init__(self, run: Path):
        self.run = Path(run)
        self.name = self.run.name
        self.index = load_index(self.run)
        self._pos = {tid: i for i, tid in enumerate(self.index["traces"]["id"])}

    # -- traces
    def summary(self) -> dict[str, Any]:
        t = self.index["traces"]
        facets = {f: dict(Counter("" if v is None else str(v) for v in t[f]).most_common())
                  for f in FACETS}
        return {"run": self.name, "path": str(self.run), "traces": len(t["id"]),
                "facets": facets, **self.eval_choices(),
                "comparisons": [{k: c.get(k) for k in ("benchmark", "category", "metric", "a", "b",
                                                       "difference", "n")}
                                | {"gained": len(c.get("gained", [])), "lost": len(c.get("lost", []))}
                                for c in self.index["comparisons"]]}

    def traces(self, q: dict[str, str]) -> dict[str, Any]:
        t = self.index["traces"]
        wanted = {f: q[f] for f in FACETS if q.get(f)}
        lo, hi = int(q.get("min_chars") or 0), int(q.get("max_chars") or 0)
        hits = []
        for i in range(len(t["id"])):
            if any(("" if t[f][i] is None else str(t[f][i])) != v for f, v in wanted.items()):
                continue
            if t["chars"][i] < lo or (hi and t["chars"][i] > hi):
                continue
            hits.append(i)
        offset = max(int(q.get("offset") or 0), 0)
        limit = min(max(int(q.get("limit") or PAGE), 1), 500)
        rows = []
        for i in hits[offset:offset + limit]:
            rec = self._trace_record(i)
            user = [m["content"] for m in rec.get("messages", []) if m["role"] == "user"]
            rows.append({f: t[f][i] for f in ("id", *FACETS, "chars")}
                        | {"prompt": (user[-1] if user else "")[:200]})
        return {"total": len(hits), "offset": offset, "limit": limit, "rows": rows}

    def _trace_record(self, i: int) -> dict[str, Any]:
        t = self.index["traces"]
        return read_at(self.run, self.index["shards"][t["shard"][i]], t["offset"][i])

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        i = self._pos.get(trace_id)
        if i is None:
            return None
        t = self.index["traces"]
        rec = self._trace_record(i)
        rec.pop("teacher_logprobs", None)           # thousands of numbers nobody reads here
        verdict = None
        if t["vshard"][i] is not None:
            verdict = read_at(self.run, self.index["shards"][t["vshard"][i]], t["voffset"][i])
        return {"trace": rec, "verdict": verdict, "status": t["status"][i]}

    # -- evaluation
    def flips(self, q: dict[str, str]) -> dict[str, Any]:
        """The questions where roles a and b disagree, each with the first sample of every role
        that answered it: teacher, base, student and whatever other roles the run has
        (quantized students, ...). Which questions: the paired comparison's gained and lost
        lists (eval/comparisons.json) where the evaluation made one for a and b; for any other
        pair, the questions where their share of correct samples differs."""
        matches = [c for c in self.index["comparisons"]
                   if all(not q.get(k) or str(c.get(k)) == q[k] for k in ("benchmark", "category", "a", "b"))]
        flipped: dict[tuple[str, str], str] = {}
        for c in matches:
            for direction in ("gained", "lost"):
                for task in c.get(direction, []):
                    flipped.setdefault((c["benchmark"], task), f"{c['a']} {direction} vs {c['b']}")
        if not matches and q.get("a") and q.get("b"):
            flipped = self._disagreements(q.get("benchmark"), q.get("category"), q["a"], q["b"])
        keys = sorted(flipped)
        offset = max(int(q.get("offset") or 0), 0)
        limit = min(max(int(q.get("limit") or PAGE), 1), 200)
        page = keys[offset:offset + limit]
        wanted = set(page)
        e = self.index["eval"]
        answers: dict[tuple[str, str], dict[str, Any]] = {k: {} for k in page}
        for i in range(len(e["role"])):
            key = (e["benchmark"][i], e["task_id"][i])
            if key in wanted and e["sample"][i] == 0:
                rec = read_at(self.run, self.index["shards"][e["shard"][i]], e["offset"][i])
                answers[key][e["role"][i]] = {k: rec.get(k) for k in (
                    "model", "correct", "answer", "content", "reasoning", "reason", "finish_reason",
                    "categories")}
        roles = sorted({r for a in answers.values() for r in a} | {q[k] for k in ("a", "b") if q.get(k)},
                       key=_role_order)
        return {"total": len(keys), "offset": offset, "limit": limit, "roles": roles,
                "rows": [{"benchmark": b, "task_id": task, "flip": flipped[(b, task)],
                          "answers": answers[(b, task)]} for b, task in page]}

    def _disagreements(self, benchmark: str | None, category: str | None, a: str, b: str) -> dict[tuple[str, str], str]:
        e = self.index["eval"]
        scores: dict[tuple[str, str], dict[str, list[bool]]] = {}
        for i in range(len(e["role"])):
            if e["role"][i] in (a, b) and (not benchmark or e["benchmark"][i] == benchmark):
                scores.setdefault((e["benchmark"][i], e["task_id"][i]), {}).setdefault(
                    e["role"][i], []).append(e["correct"][i])
        cats = _categories(self.index["questions"])
        out = {}
        for key, by_role in scores.items():
            if a not in by_role or b not in by_role:
                continue
            if category and key in cats and category not in cats[key]:
                continue
            sa, sb = (sum(by_role[r]) / len(by_role[r]) for r in (a, b))
            if sa != sb:
                out[key] = f"{a} {'gained' if sa > sb else 'lost'} vs {b}"
        return out

    def eval_choices(self) -> dict[str, Any]:
        """What the page's pickers offer: benchmarks, each with its categories, and the roles."""
        benches: dict[str, set[str]] = {b: set() for b in self.index["eval"]["benchmark"]}
        for (bench, _), cats in _categories(self.index["questions"]).items():
            benches.setdefault(bench, set()).update(cats)
        return {"benchmarks": {b: sorted(c) for b, c in sorted(benches.items())},
                "roles": sorted(set(self.index["eval"]["role"]), key=_role_order)}


def _categories(questions: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    return {(r["benchmark"], r["task_id"]): r.get("categories") or [] for r in questions}


def _role_order(role: str) -> tuple[int, str]:
    # teacher, base, student first, then any other role (student-q4_k_m, ...) by name
    order = {"teacher": 0, "base": 1, "student": 2}
    return (order.get(role, 3), role)
