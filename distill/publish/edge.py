"""The quantized students in the report: reads quantize/variants.json, eval/scores.json rows and
eval/comparisons.json; writes report/edge.md and the model card's quantization table.

Per variant and benchmark: the file's size, the memory it takes and its CPU tokens/s (measured by
the quantize stage), pass@1 with its interval, retention against the teacher and against the
unquantized student (paired over the same questions, with their intervals), the questions that
flipped against the unquantized student (solved by one and not the other), and the share of its
answers cut at the length cap or caught in a repetition loop: where quantization quietly breaks a
reasoning model.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.plan.text import size, table
from distill.publish.leaderboard import pct, retention_text
from distill.records import RunDir


def variants(run_dir: Path) -> list[dict]:
    """The quantize stage's variants (the unquantized student first), or [] when it did not
    run or quantized nothing."""
    stage = RunDir(run_dir).quantize
    if not stage.is_complete() or not (stage.path / "variants.json").exists():
        return []
    return json.loads((stage.path / "variants.json").read_text())


def _interval(lo, hi) -> str:
    return "" if lo is None or hi is None else f" [{lo:.2f}, {hi:.2f}]"


def edge_rows(found: list[dict], rows: list[dict], comparisons: list[dict]) -> list[dict]:
    """One row per variant and benchmark (its whole-benchmark category, pass@1)."""
    flips = {(c["a"], c["benchmark"], c["category"]): c for c in comparisons
             if c["b"] == "student" and c["metric"] == "pass@1"}
    by_role = {v["role"]: v for v in found}
    out = []
    for r in rows:
        v = by_role.get(r["role"])
        if v is None or r["metric"] != "pass@1" or "/" in r["category"]:
            continue
        f = flips.get((r["role"], r["benchmark"], r["category"]), {})
        out.append({"role": r["role"], "model": r["model"], "format": v["format"],
                    "qtype": v.get("qtype"), "bytes": v["bytes"],
                    "model_rss_bytes": v.get("model_rss_bytes"), "rss_bytes": v.get("rss_bytes"),
                    "tokens_per_s": v.get("tokens_per_s"), "benchmark": r["benchmark"],
                    "score": r["score"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                    "retention": r.get("retention"), "retention_ci_low": r.get("retention_ci_low"),
                    "retention_ci_high": r.get("retention_ci_high"),
                    "retention_student": r.get("retention_student"),
                    "retention_student_ci_low": r.get("retention_student_ci_low"),
                    "retention_student_ci_high": r.get("retention_student_ci_high"),
                    # the questions' ids: solved by the variant and not the unquantized student
                    # (gained), and the reverse (lost)
                    "gained": f.get("gained"), "lost": f.get("lost"), "p_value": f.get("p_value"),
                    "truncated": r.get("truncated"), "repetitive": r.get("repetitive")})
    order = {v["role"]: i for i, v in enumerate(found)}
    out.sort(key=lambda e: (e["benchmark"], order[e["role"]]))
    return out


def to_markdown(edge: list[dict]) -> str:
    """The table of report/edge.md and the model card."""
    body = []
    for e in edge:
        vs = "" if e["retention_student"] is None else \
            f"{e['retention_student']:.2f}" + _interval(e["retention_student_ci_low"],
                                                        e["retention_student_ci_high"])
        flipped = "" if e["gained"] is None else f"+{len(e['gained'])} / -{len(e['lost'])}"
        body.append([e["benchmark"], e["model"], e["qtype"] or e["format"], size(e["bytes"]),
                     size(e["model_rss_bytes"]) if e["model_rss_bytes"] else "",
                     f"{e['tokens_per_s']:,.0f}" if e["tokens_per_s"] else "",
                     f"{pct(e['score'])} [{pct(e['ci_low'])}, {pct(e['ci_high'])}]", retention_text(e),
                     vs, flipped, pct(e["truncated"]), pct(e["repetitive"])])
    return table(["benchmark", "model", "format", "file", "memory", "CPU tok/s", "pass@1 % [95% CI]",
                  "retention vs teacher", "vs unquantized", "flipped vs unquantized",
                  "cut %", "loops %"], body, right={3, 4, 5})


NOTE = ("File: the weights on disk. Memory: what loading the model added to its serving process "
        "(weights, KV cache, buffers). CPU tok/s: one stream, greedy, on the machine that ran the "
        "quantize stage. Retention: pass@1 / the teacher's, and / the unquantized student's, "
        "paired over the same questions (95% bootstrap intervals). Flipped: questions the "
        "variant solves and the unquantized student does not (+), and the reverse (-). Cut: "
        "answers that hit the length cap; loops: answers caught in a repetition loop.")


def write_edge(run_dir: Path, rows: list[dict], comparisons: list[dict], report: Path,
               title: str) -> list[dict]:
    """Writes report/edge.md when the run has quantized variants; returns its rows."""
    found = variants(run_dir)
    edge = edge_rows(found, rows, comparisons) if len(found) > 1 else []
    if edge:
        from distill.records import write_text
        write_text(report / "edge.md", f"# The student at the edge: {title}\n\n{to_markdown(edge)}"
                                       f"\n\n{NOTE}\n")
    return edge
