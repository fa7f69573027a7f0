"""The filter report: takes the verdicts of one filter run as they are made, writes nothing
itself; returns the counts (per filter, per source and category, per rejection reason, with examples and the
decontamination hits) as a dict for report.json, and the same as Markdown for report.md (which
the Prefect flow also publishes as an artifact)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

# Pipeline order, so tables read in the order the filters ran.
ORDER = ("truncated", "think", "empty", "answer", "repetition", "length", "decontaminate",
         "verify", "dedup", "select")
EXAMPLES_PER_KIND = 2
KINDS_PER_FILTER = 8


def reason_kind(reason: str) -> str:
    """The reason without its particulars: 'wrong answer: got 3, want 4' -> 'wrong answer'."""
    head = re.split(r"[:(]| on (?:test|input) | of | x\d", reason, maxsplit=1)[0].strip()
    return head[:60] or reason[:60]


def _excerpt(text: str | None, limit: int, tail: bool = False) -> str:
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    return "..." + text[-limit:] if tail else text[:limit] + "..."


def _share(kept: int, total: int) -> float:
    return round(kept / total, 4) if total else 0.0


class Counts:
    """The report's counts, fed one verdict at a time (`add`), so the filter never holds the
    traces: per filter, per source and category, per rejection reason with a few examples."""

    def __init__(self) -> None:
        self.total = self.kept = 0
        self.rejected: Counter = Counter()
        self.kinds: dict[str, Counter] = defaultdict(Counter)
        self.examples: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self.by: dict[str, dict] = {"source": {}, "category": {}}

    def add(self, gen: dict, failed: str | None, reasons: dict) -> None:
        self.total += 1
        self.kept += failed is None
        for key in ("source", "category"):
            slot = self.by[key].setdefault(str(gen.get(key)), {"total": 0, "kept": 0, "rejected": {}})
            slot["total"] += 1
            slot["kept"] += failed is None
            if failed is not None:
                slot["rejected"][failed] = slot["rejected"].get(failed, 0) + 1
        if failed is None:
            return
        self.rejected[failed] += 1
        reason = reasons[failed]
        kind = reason_kind(reason)
        self.kinds[failed][kind] += 1
        # The examples are the smallest ids of each kind: the same whatever order traces are read in.
        exs = self.examples[failed][kind]
        if len(exs) < EXAMPLES_PER_KIND or str(gen["id"]) < str(exs[-1]["id"]):
            prompt = " ".join(m.get("content") or "" for m in gen.get("messages") or []
                              if m.get("role") == "user")
            exs.append({
                "id": gen["id"], "prompt_id": gen.get("prompt_id"), "reason": reason,
                "prompt": _excerpt(prompt, 120),
                "answer_tail": _excerpt(gen.get("content"), 160, tail=True)})
            exs.sort(key=lambda e: str(e["id"]))
            del exs[EXAMPLES_PER_KIND:]

    def result(self, decontamination: dict | None, source: str) -> dict:
        for key in self.by:
            for slot in self.by[key].values():
                slot["kept_fraction"] = _share(slot["kept"], slot["total"])
        rejected, kinds = self.rejected, self.kinds
        order = [f for f in ORDER if f in rejected] + sorted(set(rejected) - set(ORDER))
        return {
            "input": source, "total": self.total, "kept": self.kept,
            "kept_fraction": _share(self.kept, self.total),
            "rejected": {f: rejected[f] for f in order},
            "reasons": {f: dict(kinds[f].most_common(KINDS_PER_FILTER)) for f in order},
            "by_source": self.by["source"], "by_category": self.by["category"],
            "examples": {f: {k: self.examples[f][k]
                             for k in list(dict(kinds[f].most_common(KINDS_PER_FILTER)))}
                         for f in order},
            "decontamination": decontamination,
        }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(c: dict) -> str:
    from distill.links import NOTE, markdown_link as view
    lines = ["# Filter report", "",
             f"Input: `{c['input']}`. Kept **{c['kept']} of {c['total']}** traces "
             f"({_pct(c['kept_fraction'])}). {NOTE}", "",
             "| filter | rejected | share of input | traces |", "|---|---|---|---|"]
    lines += [f"| {f} | {n} | {_pct(n / c['total'] if c['total'] else 0)} | "
              f"{view('view', 'traces', failed=f)} |" for f, n in c["rejected"].items()]
    for key, title in (("by_source", "source"), ("by_category", "category")):
        filters = [f for f in c["rejected"]]
        lines += ["", f"| {title} | total | kept | kept % | " + " | ".join(filters) + " | traces |",
                  "|---|---|---|---|" + "---|" * len(filters) + "---|"]
        for name, s in c[key].items():
            cells = " | ".join(str(s["rejected"].get(f, 0)) for f in filters)
            lines.append(f"| {name} | {s['total']} | {s['kept']} | {_pct(s['kept_fraction'])} | "
                         f"{cells} | {view('rejected', 'traces', status='rejected', **{title: name})} |")
    d = c.get("decontamination")
    if d is not None:
        lines += ["", "## Decontamination", "",
                  f"Word {d['ngram']}-gram overlap" + (f" and MinHash Jaccard >= "
                                                        f"{d['minhash_threshold']}"
                                                        if d["minhash_threshold"] else "")
                  + " against: " + (", ".join(f"{b} ({n} items)" for b, n in d["checked"].items())
                                    or "nothing") + "."]
        for b, why in d["skipped"].items():
            lines.append(f"- not checked: **{b}**: {why}")
        if d["hits"]:
            lines += ["", "| prompt | benchmark | item | method | evidence |", "|---|---|---|---|---|"]
            lines += [f"| `{h['prompt_id']}` | {h['benchmark']} | `{h['item']}` | {h['method']} | "
                      f"{h['evidence'].replace('|', '/')} |" for h in d["hits"]]
        else:
            lines += ["", "No prompt overlaps a benchmark item."]
    if c["examples"]:
        lines += ["", "## Rejections by reason, with examples", ""]
    for f, by_kind in c["examples"].items():
        lines += [f"### {f}", ""]
        for kind, exs in by_kind.items():
            lines.append(f"- **{kind}** ({c['reasons'][f][kind]}) "
                         f"{view('view all', 'traces', failed=f, reason=kind)}")
            for e in exs:
                lines.append(f"  - `{e['id']}`: {e['reason']}; prompt: \"{e['prompt']}\"; "
                             f"answer ends: \"{e['answer_tail']}\" {view('view', 'trace/' + e['id'])}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
